"""The plan of a container init: a runtime-spec config checked and turned into
:class:`~.child.InitPlan` values, in the parent, before anything is forked.

Implements the parts of runtime-spec ``config.md``/``config-linux.md`` the
engine itself handles (:mod:`.config`: version, root, hostname, namespaces,
cgroupsPath, sysctl; :mod:`.hooks`), and gathers those the other modules check:
``process`` (:func:`~.process.prepare_process`), ``mounts`` and the rest of the
filesystem (:func:`~..linux.rootfs.plan_rootfs`), ``linux.resources`` (kept for
``cgroup.create``, which checks it), the init annotation
(:func:`~..spec.init_requested`). A bad config raises here, with nothing to
undo; :func:`~.engine.spawn` then runs the plan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import ContainerStartError, InvalidOptionError

from ..linux import syscalls as sc
from ..linux.capabilities import UnknownCapabilityError
from ..linux.cgroups import CgroupV1, CgroupV2, open_cgroup
from ..linux.mounts import overlay_options, plan_rootfs
from ..spec import init_requested
from ..types import Resources
from . import child, rootless
from .config import (
    NAMESPACE_FLAGS,
    Namespaces,
    cgroup_path_of,
    check_config,
    field_of,
    id_maps_of,
    namespaces_of,
    open_namespace,
    sysctl_of,
)
from .hooks import Hook, parse_hooks
from .process import prepare_process

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A container ready to :func:`spawn`: the config checked and turned into the
    init's plan. ``rootfs``: the host path of the root (the overlay mount point for
    layers); ``resources``: what goes to ``cgroup.create``; ``hooks``: by kind;
    ``fds``: namespace fds opened for the init (closed by :meth:`close`);
    ``uid_map``/``gid_map``: what :func:`~.engine.spawn` writes to the new user
    namespace's ``/proc/<pid>/uid_map`` and ``gid_map`` (``b""``: none)."""

    container_id: str
    state_dir: Path
    config: dict[str, Any]
    bundle: str
    rootfs: str
    cgroup: CgroupV1 | CgroupV2 | rootless.NoCgroup
    resources: Resources | Mapping[str, Any] | None
    namespaces: Namespaces
    plan: child.InitPlan
    hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    pid_ns_fd: int = -1
    fds: list[int] = field(default_factory=list)
    uid_map: bytes = b""
    gid_map: bytes = b""

    @property
    def args(self) -> tuple[str, ...]:
        return self.plan.process.args

    def close(self) -> None:
        """Close the namespace fds (the init has its copies once forked)."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _process_error(container_id: str, exc: Exception, args: Sequence[str]) -> ContainerStartError:
    step = "capabilities" if isinstance(exc, UnknownCapabilityError) else (
        getattr(exc, "step", None) or "config")
    return ContainerStartError(f"container {container_id}: {exc}", container_id=container_id,
                               argv=list(args), step=step, field=getattr(exc, "option", None))


def _open_output(path: str, fds: list[int]) -> int:
    """Create (or truncate) the output file ``path``; its fd, also added to ``fds``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    fds.append(fd)
    return fd


def _check_cgroup_mounts(config: Mapping[str, Any]) -> None:
    """A ``type: cgroup``/``cgroup2`` mount needs a cgroup namespace with a user
    namespace: without one the init mounts in a transient cgroup namespace and
    returns to the host's, which a user namespace's root may not join. Raises
    ``InvalidOptionError`` naming ``mounts[i].type``."""
    for i, mount in enumerate(config.get("mounts") or ()):
        if isinstance(mount, Mapping) and mount.get("type") in ("cgroup", "cgroup2"):
            raise InvalidOptionError(
                f"mounts[{i}].type: a {mount['type']} mount in a user namespace needs a "
                "cgroup namespace: add {\"type\": \"cgroup\"} to linux.namespaces "
                f"(got {mount['type']!r})", option=f"mounts[{i}].type", value=mount["type"])


def prepare(config: dict[str, Any], *, container_id: str, state_dir: Path, bundle: str,
            rootfs: str, layers: Sequence[Path] = (), stdout_fd: int = -1,
            stderr_fd: int = -1, pdeathsig: bool = True, exec_fifo: str | None = None,
            preserve_fds: int = 0, resources: Resources | Mapping[str, Any] | None = None,
            passwd_root: str | None = None, checked: bool = False,
            dirs_after_fork: bool = False, stdio_dir: str = "",
            no_pivot: bool = False) -> Prepared:
    """Check ``config`` and plan its init; nothing is forked or created.

    ``rootfs``: where the root is on the host (``root.path`` resolved against
    ``bundle``; with ``layers``, base first, the overlay's mount point in the state
    dir, ``upper``/``work`` beside it). ``stdout_fd``/``stderr_fd`` ``-1``: the init
    keeps the caller's stdio. ``exec_fifo``: wait for ``start`` on it before
    ``exec`` (``ptc-runtime create``). ``resources``: for the cgroup (default
    ``linux.resources``). ``passwd_root``: where to look up ``HOME`` (default
    ``rootfs``). ``checked``: the config comes from :func:`~..spec.to_config` (the
    top-level shape is not checked again). ``dirs_after_fork``: the overlay's mount
    point, ``upper`` and ``work`` do not exist yet; the caller of
    :func:`~.engine.spawn` makes them after the fork (its ``after_fork``) while the
    init makes its namespaces (``InitPlan.wait_dirs``). ``stdio_dir``: the dir where
    the caller makes the files ``stdout`` and ``stderr`` after the fork, before the
    cgroup is made (its ``before_go``); the init opens them (instead of
    ``stdout_fd``/``stderr_fd``); with a user namespace, where it may not, they are
    made here and inherited (``InitPlan.stdio_dir`` is then empty). ``no_pivot``:
    ``--no-pivot``, the rootfs moved onto ``/`` and chrooted into instead of
    ``pivot_root`` (:func:`~..linux.rootfs.plan_rootfs`). Without a mount namespace
    the init mounts in the caller's, and waits for ``D`` first (``InitPlan.wait_dirs``:
    the caller records it, ``after_fork``, before it mounts anything). A caller that is
    not root (:mod:`.rootless`): the config needs a user namespace, maps beyond its
    own ids need ``newuidmap``/``newgidmap``, and the cgroup is one below the cgroup
    delegated to it or none (:func:`~.rootless.rootless_cgroup`).

    Raises ``InvalidOptionError`` (a ``ValueError``) naming the field for a config
    the engine cannot run (``process.user`` ids a new user namespace does not map
    included), ``ContainerStartError`` (``step``: ``capabilities``,
    ``rlimits``...) for a process it cannot set up.
    """
    if not checked:
        check_config(config)
    process = config.get("process")
    if not process:
        raise ContainerStartError(f"container {container_id}: config.json has no process "
                                  "(field process): nothing to start",
                                  container_id=container_id, argv=[], step="config",
                                  field="process")
    linux = config.get("linux") or {}
    try:
        process_plan = prepare_process(process, passwd_root or rootfs,
                                       seccomp=linux.get("seccomp"))
    except (ValueError, ContainerStartError) as exc:
        args = process.get("args") if isinstance(process.get("args"), list) else []
        raise _process_error(container_id, exc, args) from exc
    namespaces = namespaces_of(config)
    uid_map, gid_map = id_maps_of(config, namespaces)
    user = namespaces.user
    hooks = parse_hooks(config.get("hooks")) if config.get("hooks") else {}
    hostname = config.get("hostname") or None
    if hostname is not None and "uts" not in namespaces.types:
        raise ContainerStartError(
            f"container {container_id}: hostname {hostname!r} needs a uts namespace in "
            "linux.namespaces (field hostname)", container_id=container_id,
            argv=list(process_plan.args), step="config", field="hostname")
    sysctl = sysctl_of(config, namespaces) if linux.get("sysctl") else ()
    if resources is None:
        resources = linux.get("resources")
    if user == "new":
        rootless.check_process_ids(process_plan.uid, process_plan.gid,
                                   process_plan.additional_gids, uid_map, gid_map)
    cgroup_path = cgroup_path_of(config, container_id)
    cgroup: CgroupV1 | CgroupV2 | rootless.NoCgroup
    if rootless.is_rootless():  # what a caller that is not root may run (rootless.py)
        rootless.check_config(config, user)
        rootless.check_helpers(uid_map, gid_map)
        cgroup = rootless.rootless_cgroup(linux.get("cgroupsPath"), container_id, resources)
    else:
        cgroup = open_cgroup(cgroup_path)
    rootfs_plan = plan_rootfs(config, rootfs, bundle=bundle, no_pivot=no_pivot)
    if user and not namespaces.cgroup:
        _check_cgroup_mounts(config)
    overlay = None
    if layers:
        overlay = overlay_options(layers, state_dir / "upper", state_dir / "work")
    prepared = Prepared(
        container_id=container_id, state_dir=state_dir, config=config, bundle=bundle,
        rootfs=rootfs, cgroup=cgroup, resources=resources,
        namespaces=namespaces, plan=None,  # type: ignore[arg-type] # set below
        hooks=hooks, uid_map=uid_map, gid_map=gid_map)
    try:
        join = []
        for kind, path in namespaces.joined:
            fd = open_namespace(kind, path, field_of(config, kind))
            prepared.fds.append(fd)
            join.append((fd, NAMESPACE_FLAGS[kind]))
        if namespaces.pid == "join":
            prepared.pid_ns_fd = open_namespace("pid", namespaces.pid_path,
                                                field_of(config, "pid"))
            prepared.fds.append(prepared.pid_ns_fd)
        unshare_flags = namespaces.unshare_flags
        userns_fd = -1
        if user:
            # the init makes the pid namespace after the user namespace (owned by it),
            # so it joins or unshares it itself and clones PID 1 (see child.run_init)
            if user == "join":
                userns_fd = open_namespace("user", namespaces.user_path,
                                           field_of(config, "user"))
                prepared.fds.append(userns_fd)
            if namespaces.pid == "join":
                join.append((prepared.pid_ns_fd, sc.CLONE_NEWPID))
            elif namespaces.pid == "new":
                unshare_flags |= sc.CLONE_NEWPID
        cgroupns_fd = -1
        if namespaces.cgroup == "join":
            cgroupns_fd = open_namespace("cgroup", namespaces.cgroup_path,
                                         field_of(config, "cgroup"))
            prepared.fds.append(cgroupns_fd)
        # v1 self-join writes ``tasks`` as the init's own user: in a user namespace
        # the caller moves it (the file's owner, host root, is not mapped there)
        v1 = cgroup.version == 1 and not user
        if stdio_dir and user:
            # nor may the init open the caller's files there: it inherits them, made now
            stdout_fd, stderr_fd = (_open_output(f"{stdio_dir}/{name}", prepared.fds)
                                    for name in ("stdout", "stderr"))
            stdio_dir = ""
        prepared.plan = child.InitPlan(
            rootfs=rootfs_plan, overlay_data=overlay,
            # v2 has no lock-free self move: the caller moves the init (see spawn)
            cgroup_join=tuple((str(d), rel) for d, rel in cgroup.self_join_paths()) if v1
            else (),
            moved_by_caller=not v1, join=tuple(join),
            unshare_flags=unshare_flags, cgroupns=namespaces.cgroup,
            userns=user, userns_fd=userns_fd,
            cgroupns_fd=cgroupns_fd,
            hostname=hostname if "uts" in namespaces.types else None,
            loopback="network" in namespaces.types and not any(
                k == "network" for k, _ in namespaces.joined),
            process=process_plan, stdout_fd=stdout_fd, stderr_fd=stderr_fd,
            sysctl=sysctl, pdeathsig=pdeathsig,
            sync_hooks=any(k in hooks for k in ("prestart", "createRuntime",
                                                "createContainer", "startContainer")),
            create_container=hooks.get("createContainer", ()),
            start_container=hooks.get("startContainer", ()),
            exec_fifo=exec_fifo, preserve_fds=preserve_fds,
            wait_dirs=(dirs_after_fork and overlay is not None)
            or not rootfs_plan.own_mount_namespace, stdio_dir=stdio_dir,
            init=init_requested(config))
    except BaseException:
        prepared.close()
        raise
    return prepared
