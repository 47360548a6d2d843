"""Garbage collection of containers whose owner process is dead, for every backend.

Every backend keeps one state dir per container, ``<state_root>/<id>``, with
``owner``: the pid of the process that started it, written before anything
that could leak. When that process is gone (``kill -9`` of pytest), the
container's processes died with it (the native engine's pdeathsig chain; the
OCI command line backend's waiter, which SIGKILLs the init), but host objects
remain. Two kinds of state dir, told apart by their contents:

- native engine: the cgroup ``ptc/<id>`` and the state dir remain (and, for a
  config without a mount namespace, its overlay and the mounts below it in our
  namespace, all under the state dir: unmounted like any mount there);
- runc-compatible command line (:mod:`~.ocicli`): also ``<binary>-root``, the
  runtime's own ``--root`` (it still lists the container), and the overlay
  mounted on the host at ``bundle/rootfs``; runc makes ``ptc/<id>`` in every
  hierarchy (``name=systemd`` and ``unified`` too);
- ``ptc-runtime`` (:mod:`~.native.lifecycle`, same state root by default): a
  ``state.json`` names the init (pid and start time) and the cgroup
  (``linux.cgroupsPath``, any path, and whether ``create`` made it). Its
  ``owner`` is the ``create`` command until the container is created, or a
  foreground ``run`` for its whole life.

Detached ``ptc-runtime`` containers (created by ``create`` or ``run
--detach``) have no ``owner``: like runc's, they stay, running or stopped
(``state`` keeps answering "stopped", which podman and the OCI test suite
read), until ``ptc-runtime delete``. The sweep never touches them, alive or
dead; it sweeps only what a killed ``create`` or foreground ``run`` left.

:func:`sweep` removes them. It runs at every session start, so with nothing to
do it costs one ``scandir`` of the state root and, per state dir, one read of
``owner`` and one ``kill(pid, 0)``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

from .linux import cgroups, mounts
from .spec import DEFAULT_CGROUP_PARENT, cgroups_path
from .state import default_state_root

__all__ = ["mounts_under", "owner_alive", "owner_pid", "session_cgroup_path", "sweep",
           "sweep_session_cgroups"]

#: name prefix of a session's parent cgroup under ``/ptc``
SESSION_PREFIX = "ptc-session-"

#: seconds for ``BINARY --root ROOT delete --force ID``
DELETE_TIMEOUT = 30.0
#: suffix of the runtime state dir of a command line backend's container
_RUNTIME_ROOT_SUFFIX = "-root"


def owner_pid(state_dir: Path) -> int | None:
    """The pid in ``state_dir/owner``; ``None`` without a readable one."""
    try:
        return int((state_dir / "owner").read_text().split()[0])
    except (FileNotFoundError, NotADirectoryError, ValueError, IndexError):
        return None


def owner_alive(state_dir: Path) -> bool | None:
    """Whether the pid in ``state_dir/owner`` is alive; ``None`` without a readable owner."""
    pid = owner_pid(state_dir)
    return None if pid is None else _pid_alive(pid)


def sweep(state_root: Path | None = None, *, cgroup_root: Path | None = None) -> list[str]:
    """Remove every container under ``state_root`` (default:
    ``default_state_root()``) whose owner process is dead.

    For each: ``BINARY --root DIR delete --force ID`` for each ``<binary>-root``
    dir whose binary is on PATH (its errors, "does not exist" included, are
    covered by the next steps), SIGKILL what is left in the cgroup, unmount
    (``MNT_DETACH``) whatever is mounted under the state dir, deepest first,
    remove the cgroup ``ptc/<id>`` (in every mounted hierarchy for a command
    line backend's container), then the state dir. A ``ptc-runtime`` dir
    (``state.json``) goes as ``delete --force`` would remove it
    (:func:`~.native.statedir.destroy`): its init SIGKILLed if it is still that
    process, its cgroup (from ``state.json``, recorded before it is made) emptied
    and removed with the parents ``create`` made, only if it is ours.

    Dirs without a readable ``owner`` (detached ``ptc-runtime`` containers among
    them) and dirs whose owner is alive are never touched; a dir another sweep is
    working on, or a ``ptc-runtime`` command (``flock``), is skipped. A dir that
    cannot be cleaned (a busy cgroup) is reported with a ``RuntimeWarning``, kept
    for the next sweep, and not listed. Returns the swept ids, sorted.
    """
    if state_root is None:
        state_root = default_state_root()
    swept: list[str] = []
    try:
        entries = sorted(os.scandir(state_root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return swept
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        state_dir = Path(entry.path)
        if owner_alive(state_dir) is not False:
            continue
        try:
            with _locked(state_dir) as locked:
                # re-read after the lock: another sweep may have just finished it
                if not locked or owner_alive(state_dir) is not False:
                    continue
                _sweep_one(state_dir, entry.name, cgroup_root)
        except OSError as exc:
            warnings.warn(
                f"cannot sweep container {entry.name}: {exc}", RuntimeWarning, stacklevel=2
            )
            continue
        swept.append(entry.name)
    return swept


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[bool]:
    """``flock`` the state dir (non-blocking): yields whether this process holds it.
    A dir removed meanwhile yields ``False``."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _sweep_detached_state(state_dir: Path, cgroup_root: Path | None) -> bool:
    """Sweep a ``ptc-runtime`` dir (it has ``state.json``) with
    :func:`~.native.statedir.destroy`, as ``delete --force`` would (its init, its
    cgroup when ours, mounts, the dir; no hook); ``False`` when it is not one."""
    from .native.state import STATE_FILE, ContainerState

    try:
        with open(state_dir / STATE_FILE, "rb") as f:
            saved = ContainerState.from_json(json.loads(f.read()))
    except FileNotFoundError:
        return False
    except (OSError, ValueError, TypeError):
        shutil.rmtree(state_dir, ignore_errors=True)  # half-written: create died at once
        return True
    from .native.statedir import destroy

    destroy(state_dir, saved, cgroup_root=cgroup_root)
    return True


def _sweep_one(state_dir: Path, container_id: str, cgroup_root: Path | None) -> None:
    if _sweep_detached_state(state_dir, cgroup_root):
        return
    runtime_roots = [p for p in state_dir.glob(f"*{_RUNTIME_ROOT_SUFFIX}") if p.is_dir()]
    for runtime_root in runtime_roots:
        binary = shutil.which(runtime_root.name[: -len(_RUNTIME_ROOT_SUFFIX)])
        if binary is not None:
            _runtime_delete(binary, runtime_root, container_id)
    path = _config_cgroups_path(state_dir) or cgroups_path(container_id)
    cgroup = cgroups.open_cgroup(path, root=cgroup_root or cgroups.DEFAULT_ROOT)
    cgroup.kill_all()
    for target in mounts_under(state_dir):
        mounts.unmount(Path(target))
    cgroup.remove()
    if runtime_roots and cgroup_root in (None, cgroups.DEFAULT_ROOT):
        parent = path.rsplit("/", 1)[0]
        cgroups.remove_everywhere(path, keep="" if parent == DEFAULT_CGROUP_PARENT else parent)
    left = mounts_under(state_dir)
    if left:
        raise OSError(errno.EBUSY, f"still mounted: {', '.join(left)}")
    shutil.rmtree(state_dir, ignore_errors=True)


def _config_cgroups_path(state_dir: Path) -> str | None:
    """``linux.cgroupsPath`` of the container's config.json (the native engine's in
    the state dir, a command line backend's in its bundle), if readable."""
    for config in (state_dir / "config.json", state_dir / "bundle" / "config.json"):
        try:
            path = json.loads(config.read_bytes())["linux"]["cgroupsPath"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(path, str) and path.startswith("/"):
            return path
    return None


def sweep_session_cgroups(*, cgroup_root: Path | None = None) -> list[str]:
    """Remove the session parent cgroups (``/ptc/ptc-session-<pid>``, see
    :func:`session_cgroup_path`) of dead sessions, in every hierarchy: the
    processes left in them are SIGKILLed, their children removed first. Returns
    the removed paths; one that cannot be removed gets a ``RuntimeWarning``."""
    removed: list[str] = []
    roots = [cgroup_root] if cgroup_root else [m for _, m in cgroups.hierarchies()]
    names = {
        entry.name
        for root in roots
        for entry in _scandir(root / DEFAULT_CGROUP_PARENT.strip("/"))
        if entry.name.startswith(SESSION_PREFIX) and entry.is_dir(follow_symlinks=False)
    }
    for name in sorted(names):
        pid = name[len(SESSION_PREFIX) :]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        path = f"{DEFAULT_CGROUP_PARENT}/{name}"
        try:
            cgroup = cgroups.open_cgroup(path, root=cgroup_root or cgroups.DEFAULT_ROOT)
            cgroup.kill_all()
            cgroup.remove()
            if cgroup_root in (None, cgroups.DEFAULT_ROOT):
                cgroups.remove_everywhere(path)
        except OSError as exc:
            warnings.warn(f"cannot sweep session cgroup {path}: {exc}", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
            continue
        removed.append(path)
    return removed


def session_cgroup_path(pid: int | None = None) -> str:
    """The parent cgroup of a test session's containers: ``/ptc/ptc-session-<pid>``
    (default: this process)."""
    return f"{DEFAULT_CGROUP_PARENT}/{SESSION_PREFIX}{os.getpid() if pid is None else pid}"


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited: a zombie (``Z``) or dead (``X``)
    process waiting for its parent to reap it counts as gone (``proc(5)``,
    ``/proc/<pid>/stat`` field 3), so a killed owner's leftovers are swept at once."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # hidepid, or a race with its exit: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X")


def _runtime_delete(binary: str, runtime_root: Path, container_id: str) -> None:
    """``BINARY --root RUNTIME_ROOT delete --force ID``: kills what is left of the
    container and drops the runtime's state and cgroups. Any failure (the
    container does not exist, the binary hangs) is left to the generic steps."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [binary, "--root", str(runtime_root), "delete", "--force", container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=DELETE_TIMEOUT,
            check=False,
        )


def mounts_under(state_dir: Path) -> list[str]:
    """Mount points at or under ``state_dir`` in this mount namespace, deepest (and,
    for stacked mounts, last mounted) first."""
    top = os.path.realpath(state_dir)
    found = [
        m.mount_point
        for m in mounts.mountinfo()
        if m.mount_point == top or m.mount_point.startswith(top + "/")
    ]
    found.reverse()
    return sorted(found, key=lambda p: p.count("/"), reverse=True)
