"""The state dir of a native container: written and removed with few syscalls;
and, for a ``ptc-runtime`` container, the host objects its ``state.json`` names.

``<state_root>/<id>``: ``config.json``, ``owner``, ``stdout``, ``stderr``,
``rootfs/`` (the overlay's mount point, mounted only inside the container),
``upper/`` and ``work/`` (the overlay's; ``work/work`` is overlayfs's own); for a
``ptc-runtime`` container ``state.json`` (and its ``.tmp``) and ``exec.fifo``
(:mod:`.state`). On a
filesystem mounted with ``discard`` every freed block is a synchronous discard
(0.1-2 ms each), so removal does one ``unlink``/``rmdir`` per entry and walks
only what the container left behind.

A ``ptc-runtime`` container's cgroup (``linux.cgroupsPath``) is recorded as ours
in ``state.json`` before ``create`` makes it (:func:`take_over_cgroup` first
makes room for it), with the parents it makes (:func:`missing_parents`), so
that :func:`destroy` (``delete``, the sweep) removes it whatever point a killed
``create`` reached. A rootless container's is recorded as its path from the
hierarchy root (:func:`~.rootless.host_cgroup_path`; ``""`` when it has none) and
opened again below the cgroup delegated to the user (:func:`saved_cgroup`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_containers.exceptions import ContainerStartError

from ..linux import hostmounts
from ..linux.cgroups import DEFAULT_ROOT, CgroupV1, CgroupV2, open_cgroup
from .rootless import NoCgroup, open_rootless_cgroup
from .state import ContainerState, process_alive

__all__ = ["destroy", "missing_parents", "release_cgroup", "remove_parents",
           "remove_state_dir", "saved_cgroup", "take_over_cgroup", "write_file"]

#: seconds :func:`destroy` waits for a SIGKILLed init to be gone before it unmounts
_INIT_GONE_TIMEOUT = 10.0


def _remove_tree(path: Path) -> None:
    """``rm -r`` tolerating what is already gone."""
    def onexc(func, p, exc):  # noqa: ANN001
        if isinstance(exc, FileNotFoundError):
            return
        raise exc

    shutil.rmtree(path, onerror=lambda f, p, info: onexc(f, p, info[1]))


#: the state dir's files, and its dirs deepest first (``work/work``: overlayfs's own)
_STATE_FILES = ("config.json", "owner", "stdout", "stderr", "exec.fifo", "state.json",
                "state.json.tmp", "hostmounts.json", "hostmounts.json.tmp")
_STATE_DIRS = ("rootfs", "work/work", "work", "upper")


def _empty_dir(path: str) -> None:
    """Remove what is in ``path`` (not following symlinks); the container that wrote
    it is dead, nothing changes it meanwhile."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _empty_dir(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)


def remove_state_dir(path: Path) -> None:
    """Remove a state dir: its known files and dirs one syscall each, ``upper`` and
    ``work`` emptied first when the container left something there; ``rm -r``
    (:func:`_remove_tree`) for anything else. Tolerates what is already gone."""
    base = str(path)
    try:
        for name in _STATE_FILES:
            try:
                os.unlink(f"{base}/{name}")
            except FileNotFoundError:
                pass
        for name in _STATE_DIRS:
            target = f"{base}/{name}"
            try:
                os.rmdir(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                _empty_dir(target)
                os.rmdir(target)
        os.rmdir(base)
        return
    except FileNotFoundError:
        if not os.path.lexists(base):
            return
    except OSError:
        pass
    _remove_tree(path)


def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Create (or truncate) ``path`` and write ``data``: ``open``, ``write``, ``close``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# -- what a ptc-runtime container holds on the host -------------------------------------


def missing_parents(cgroup: CgroupV1 | CgroupV2 | NoCgroup) -> list[str]:
    """The ancestors of ``cgroup`` that do not exist yet, relative paths, deepest
    last: ``delete`` removes those it made (when empty)."""
    if isinstance(cgroup, NoCgroup):
        return []
    parts = cgroup.path.strip("/").split("/")[:-1]
    base = cgroup.root / cgroup.hierarchies()[0] if isinstance(cgroup, CgroupV1) else cgroup.root
    out = []
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        if not (base / rel).is_dir():
            out.append(rel)
    return out


def remove_parents(cgroup: CgroupV1 | CgroupV2, parents: Sequence[str]) -> None:
    """rmdir ``parents`` (:func:`missing_parents`), deepest first, in each hierarchy of
    ``cgroup``; one still in use (EBUSY, ENOTEMPTY) or gone stays as it is."""
    roots = [cgroup.root / c for c in cgroup.hierarchies()] if isinstance(cgroup, CgroupV1) \
        else [cgroup.root]
    for rel in sorted(parents, key=lambda p: -p.count("/")):
        for base in roots:
            try:
                os.rmdir(base / rel)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise


def _cgroup_exists(cgroup: CgroupV1 | CgroupV2 | NoCgroup) -> bool:
    """Whether ``cgroup`` has a directory in any of its hierarchies."""
    if isinstance(cgroup, NoCgroup):
        return False
    if isinstance(cgroup, CgroupV1):
        return any(cgroup.dir(c).is_dir() for c in cgroup.hierarchies())
    return cgroup.dir_path.is_dir()


def take_over_cgroup(cgroup: CgroupV1 | CgroupV2 | NoCgroup, container_id: str) -> None:
    """Make room for the container's cgroup at ``linux.cgroupsPath``. runc reuses an
    existing cgroup; ours are made by ``create`` (with the config's limits, and
    removed by ``delete``), so an existing one without a process in its subtree (a
    leftover: of a create killed before it wrote its state, of another runtime) is
    removed here to be made anew. One with processes belongs to a live container:
    ``ContainerStartError`` naming ``linux.cgroupsPath``."""
    if not _cgroup_exists(cgroup):
        return
    pids = cgroup.pids(recursive=True)
    if pids:
        shown = ", ".join(str(p) for p in pids[:5]) + (", ..." if len(pids) > 5 else "")
        raise ContainerStartError(
            f"linux.cgroupsPath: cgroup {cgroup.path} of container {container_id!r} already "
            f"holds processes ({shown}): another container uses it", container_id=container_id,
            argv=[], step="cgroup", field="linux.cgroupsPath")
    cgroup.remove()


def saved_cgroup(saved: ContainerState, cgroup_root: Path | None = None
                 ) -> CgroupV1 | CgroupV2 | NoCgroup:
    """The container's cgroup as ``state.json`` names it (``cgroup_root``: another
    cgroupfs root, for tests): :class:`~.rootless.NoCgroup` for a rootless one without
    a cgroup (no path); for a rootless caller, rooted at the cgroup delegated to it
    (:func:`~.rootless.open_rootless_cgroup`), as ``create`` made it."""
    if not saved.cgroup_path:
        return NoCgroup()
    root = DEFAULT_ROOT if cgroup_root is None else cgroup_root
    if os.geteuid() != 0:
        return open_rootless_cgroup(saved.cgroup_path, fs_root=root)
    return open_cgroup(saved.cgroup_path, root=root)


def release_cgroup(saved: ContainerState, cgroup_root: Path | None = None) -> None:
    """Kill every process of the container's cgroup and remove it with the parents
    ``create`` made (when empty); only a cgroup that is ours (``cgroup_created``, or
    any at the path while ``creating``: ``create`` refuses a busy one)."""
    if not saved.cgroup_path or not (saved.cgroup_created or saved.status == "creating"):
        return
    cgroup = saved_cgroup(saved, cgroup_root)
    if isinstance(cgroup, NoCgroup):
        return
    cgroup.kill_all()
    cgroup.remove()
    remove_parents(cgroup, saved.cgroup_parents)


def destroy(state_dir: Path, saved: ContainerState, *, cgroup_root: Path | None = None
            ) -> None:
    """Remove what a ``ptc-runtime`` container holds on the host, in whatever state
    it is, one whose ``create`` was killed half-way included (the module
    docstring): its init SIGKILLed while it is that process (pid and start time),
    every process of its cgroup killed and the cgroup removed (ours only, see
    :func:`release_cgroup`; ``cgroup_root``: another cgroupfs root, for tests),
    without a mount namespace the mounts it made in ours (once the init is gone:
    :func:`~..linux.hostmounts.undo`), whatever is mounted at or under the state
    dir unmounted (``MNT_DETACH``, deepest first), then the state dir. No hook runs (``poststop`` is
    :func:`~.lifecycle.delete`'s). Raises ``CgroupError`` when the cgroup stays busy and
    ``OSError`` (EBUSY) when a mount stays; the state dir is kept then, for the
    next try. Used by ``delete`` (:mod:`.lifecycle`) and by the sweep (:mod:`~..sweep`)."""
    from ..linux.mounts import unmount
    from ..sweep import mounts_under

    if process_alive(saved.pid, saved.start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(saved.pid, signal.SIGKILL)
    release_cgroup(saved, cgroup_root)
    if hostmounts.load(state_dir) is not None:
        # a killed init still setting up could mount again: gone first
        deadline = time.monotonic() + _INIT_GONE_TIMEOUT
        while process_alive(saved.pid, saved.start_time) and time.monotonic() < deadline:
            time.sleep(0.002)
        hostmounts.undo(state_dir)
    for target in mounts_under(state_dir):
        unmount(Path(target))
    left = mounts_under(state_dir)
    if left:
        raise OSError(errno.EBUSY, f"still mounted: {', '.join(left)}")
    remove_state_dir(state_dir)
