"""Rootless containers: what a caller that is not root may do, and doing it.

Follows runc's rootless mode (``docs/rootless.md``, ``libcontainer/specconv``
``ToRootless``, ``nsexec.c`` ``update_uidmap``/``update_gidmap``) and the kernel's
``user_namespaces(7)``:

- a rootless container needs a user namespace (:func:`check_config`): the init
  becomes root of it, with every capability there and none on the host;
- its ``uid_map``/``gid_map`` (:func:`write_id_maps`): a map of only the caller's
  own effective id with size 1 is written directly, as the kernel lets the owner of
  a user namespace do (for ``gid_map``, ``setgroups`` is set to ``deny`` first, as
  it requires); any other map goes through shadow's setuid helpers
  ``newuidmap``/``newgidmap``, which allow the ranges ``/etc/subuid`` and
  ``/etc/subgid`` give the caller (:func:`subordinate_ids`);
- state under ``$XDG_RUNTIME_DIR/ptc``, else ``/run/user/<uid>/ptc``
  (:func:`state_root`, :func:`prepare_state_root`);
- cgroups (:func:`rootless_cgroup`): on cgroup v1, and on v2 without a subtree
  delegated to the caller, none at all (:class:`NoCgroup`): a config that asks for
  limits is refused naming the ``linux.resources`` field (runc fails the same way,
  "cannot set ... limit: container could not join or create cgroup"); the device
  rules (``linux.resources.devices``, in every default config) are ignored, as
  runc ignores the devices controller rootless. On cgroup v2 with a delegated
  subtree (kernel ``Documentation/admin-guide/cgroup-v2.rst`` "Delegation": the
  caller owns the directory and its ``cgroup.procs`` and ``cgroup.subtree_control``,
  as systemd's ``user@.service`` gives them) the container's cgroup is made below
  the topmost directory delegated to it, ``<delegated>/ptc/<id>``;
- :func:`to_rootless` is runc's ``spec --rootless``; :func:`add_user_namespace`
  the smaller change the in-process engine makes to a generated config.

Everything here runs in the caller, before the init is forked or while it waits
for its maps; nothing is imported between ``fork`` and ``exec``.
"""

from __future__ import annotations

import copy
import errno
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_containers.exceptions import (
    CgroupError,
    ContainerRuntimeError,
    ContainerStartError,
    InvalidOptionError,
)

from ..linux.cgroups import DEFAULT_ROOT, CgroupV1, CgroupV2, detect
from ..linux.cgroups.resources import Limits, parse
from ..state import user_runtime_dir
from ..types import Resources, Stats

__all__ = [
    "IdMapping",
    "NoCgroup",
    "SUBGID_FILE",
    "SUBUID_FILE",
    "SubIdRange",
    "add_user_namespace",
    "check_config",
    "check_helpers",
    "check_no_limits",
    "check_process_ids",
    "delegated_cgroup",
    "host_cgroup_path",
    "is_rootless",
    "maps_need_helper",
    "open_rootless_cgroup",
    "parse_id_map",
    "parse_subids",
    "pids_in_pid_namespace",
    "prepare_state_root",
    "rootless_cgroup",
    "state_root",
    "subordinate_ids",
    "to_rootless",
    "write_id_maps",
]

SUBUID_FILE = Path("/etc/subuid")
SUBGID_FILE = Path("/etc/subgid")
#: seconds ``newuidmap``/``newgidmap`` may take
HELPER_TIMEOUT = 10.0
#: where the helpers are looked for after ``PATH`` (Debian's ``uidmap`` package)
_HELPER_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")

Kind = Literal["uid", "gid"]


def is_rootless() -> bool:
    """Whether the caller is not root (effective uid other than 0): runc's rootless
    test for the parts that need privileges on the host (maps, cgroups, state)."""
    return os.geteuid() != 0


# -- id maps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdMapping:
    """One line of ``uid_map``/``gid_map``: ``size`` ids from ``container_id`` inside
    the user namespace to ``host_id`` outside (``user_namespaces(7)``)."""

    container_id: int
    host_id: int
    size: int


def parse_id_map(data: bytes | str) -> tuple[IdMapping, ...]:
    """The ``"<container> <host> <size>\\n"`` lines of a map (as
    :func:`~.config.id_maps_of` makes them) as :class:`IdMapping` values, in order.
    Raises ``ValueError`` for a line that is not three integers."""
    text = data.decode() if isinstance(data, bytes) else data
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"not an id map line: {line!r}")
        out.append(IdMapping(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(out)


def maps_need_helper(mappings: Sequence[IdMapping], own_id: int) -> bool:
    """Whether a rootless caller needs ``newuidmap``/``newgidmap`` for ``mappings``:
    anything but one line mapping its own id ``own_id`` with size 1 (what the
    kernel lets an unprivileged namespace owner write itself)."""
    return not (len(mappings) == 1 and mappings[0].host_id == own_id
                and mappings[0].size == 1)


@dataclass(frozen=True)
class SubIdRange:
    """A range of subordinate ids (``subuid(5)``, ``subgid(5)``): ``count`` ids from
    ``start``."""

    start: int
    count: int

    def covers(self, first: int, size: int) -> bool:
        """Whether ``first`` .. ``first + size - 1`` lies in this range."""
        return self.start <= first and first + size <= self.start + self.count


def parse_subids(text: str, user: str, uid: int) -> tuple[SubIdRange, ...]:
    """The ranges of ``/etc/subuid`` or ``/etc/subgid`` text (``name:start:count``
    lines) that belong to ``user``, by name or by numeric ``uid`` as shadow's
    helpers match them; comments (``#``) and malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        owner, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if owner not in (user, str(uid)) or not start.isdigit() or not count.isdigit():
            continue
        if int(count) > 0:
            out.append(SubIdRange(int(start), int(count)))
    return tuple(out)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def subordinate_ids(kind: Kind, *, uid: int | None = None,
                    path: Path | None = None) -> tuple[SubIdRange, ...]:
    """The subordinate ``kind`` ids (``"uid"``: ``/etc/subuid``, ``"gid"``:
    ``/etc/subgid``, or ``path``) of the user ``uid`` (default: the caller's real
    uid, the one ``newuidmap`` looks up); none when the file is missing."""
    uid = os.getuid() if uid is None else uid
    path = path or (SUBUID_FILE if kind == "uid" else SUBGID_FILE)
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, PermissionError):
        return ()
    return parse_subids(text, _user_name(uid), uid)


def _helper(kind: Kind) -> str | None:
    name = f"new{kind}map"
    found = shutil.which(name)
    if found:
        return found
    for directory in _HELPER_DIRS:
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    return None


def _field(kind: Kind) -> str:
    return f"linux.{kind}Mappings"


def _describe(mappings: Sequence[IdMapping]) -> str:
    return ", ".join(f"{m.container_id} {m.host_id} {m.size}" for m in mappings)


def _write_proc(pid: int, name: str, data: bytes, kind: Kind, container_id: str,
                args: Sequence[str]) -> None:
    """Write ``/proc/<pid>/<name>`` in one ``write``; ``ContainerStartError`` naming the
    map on failure."""
    path = f"/proc/{pid}/{name}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        what = "setgroups" if name == "setgroups" else _field(kind)
        raise ContainerStartError(
            f"container {container_id}: {what}: the kernel refused "
            f"{data.decode().strip()!r} in {path}: {exc.strerror}",
            container_id=container_id, argv=list(args), step="user namespace",
            field=what, errno=exc.errno) from exc


def _run_helper(pid: int, mappings: Sequence[IdMapping], kind: Kind, container_id: str,
                args: Sequence[str]) -> None:
    """``newuidmap``/``newgidmap`` ``<pid> <container> <host> <size>...``; its refusal
    as ``ContainerStartError`` with its stderr and the caller's subordinate ids."""
    field = _field(kind)
    helper = _helper(kind)
    if helper is None:
        raise ContainerStartError(
            f"container {container_id}: {field}: mapping {_describe(mappings)!r} as uid "
            f"{os.geteuid()} needs new{kind}map (shadow's uidmap package), which is not "
            "installed; map only your own id (size 1) without it",
            container_id=container_id, argv=list(args), step="user namespace", field=field)
    argv = [helper, str(pid)]
    for m in mappings:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=HELPER_TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ContainerStartError(
            f"container {container_id}: {field}: cannot run {helper}: {exc}",
            container_id=container_id, argv=list(args), step="user namespace", field=field,
            helper=argv) from exc
    if proc.returncode != 0:
        uid = os.getuid()
        ranges = subordinate_ids(kind, uid=uid)
        table = SUBUID_FILE if kind == "uid" else SUBGID_FILE
        owned = (f"the subordinate {kind}s "
                 + ", ".join(f"{r.start}-{r.start + r.count - 1}" for r in ranges)
                 if ranges else f"no subordinate {kind}s")
        stderr = proc.stderr.strip()
        raise ContainerStartError(
            f"container {container_id}: {field}: new{kind}map refused the mapping "
            f"{_describe(mappings)!r} (exit status {proc.returncode}): {stderr}; "
            f"{_user_name(uid)} (uid {uid}) has {owned} in {table}",
            container_id=container_id, argv=list(args), step="user namespace", field=field,
            helper=argv, returncode=proc.returncode, stderr=stderr)


def write_id_maps(pid: int, uid_map: bytes, gid_map: bytes, *, container_id: str = "",
                  args: Sequence[str] = ()) -> None:
    """Give the new user namespace of ``pid`` its maps (the text of ``uid_map`` and
    ``gid_map``, ``"<container> <host> <size>\\n"`` lines), as runc's ``nsexec``.

    As root: both written directly (root holds CAP_SETUID/CAP_SETGID here, so
    ``setgroups`` stays ``allow``). Rootless: a map of only the caller's own effective
    id, size 1, is written directly, ``/proc/<pid>/setgroups`` set to ``deny`` first
    for ``gid_map`` (``user_namespaces(7)``: an unprivileged writer may not map a
    group while ``setgroups`` is allowed); any other map runs ``newuidmap`` /
    ``newgidmap`` (shadow), which check ``/etc/subuid`` / ``/etc/subgid`` and set
    ``setgroups`` to ``deny`` themselves unless the ranges are subordinate ids.

    ``container_id``/``args`` go into errors. Raises ``ContainerStartError``
    (``step`` ``user namespace``, ``field`` ``linux.uidMappings`` /
    ``linux.gidMappings``, the helper's ``stderr``)."""
    if not is_rootless():
        _write_proc(pid, "uid_map", uid_map, "uid", container_id, args)
        _write_proc(pid, "gid_map", gid_map, "gid", container_id, args)
        return
    uids, gids = parse_id_map(uid_map), parse_id_map(gid_map)
    if maps_need_helper(uids, os.geteuid()):
        _run_helper(pid, uids, "uid", container_id, args)
    else:
        _write_proc(pid, "uid_map", uid_map, "uid", container_id, args)
    if maps_need_helper(gids, os.getegid()):
        _run_helper(pid, gids, "gid", container_id, args)
    else:
        _write_proc(pid, "setgroups", b"deny", "gid", container_id, args)
        _write_proc(pid, "gid_map", gid_map, "gid", container_id, args)


def _mapped(mappings: Sequence[IdMapping], value: int) -> bool:
    return any(m.container_id <= value < m.container_id + m.size for m in mappings)


def check_process_ids(uid: int, gid: int, additional_gids: Sequence[int], uid_map: bytes,
                      gid_map: bytes) -> None:
    """Before anything is forked, for a new user namespace: ``process.user``'s ``uid``,
    ``gid`` and ``additionalGids`` are container ids the maps map (``setresuid`` of an
    unmapped id fails with EINVAL); and a rootless caller whose gid map is written
    without ``newgidmap`` (its own gid only) gets ``setgroups`` denied, so it can have
    no ``additionalGids`` (runc would drop them silently). Raises
    ``InvalidOptionError`` naming the field."""
    uids, gids = parse_id_map(uid_map), parse_id_map(gid_map)
    for field, value, mappings, key in (("process.user.uid", uid, uids, "uidMappings"),
                                        ("process.user.gid", gid, gids, "gidMappings")):
        if not _mapped(mappings, value):
            raise InvalidOptionError(
                f"{field}: {value} is not mapped in the user namespace (linux.{key}: "
                f"{_describe(mappings)})", option=field, value=value)
    field = "process.user.additionalGids"
    for value in additional_gids:
        if not _mapped(gids, value):
            raise InvalidOptionError(
                f"{field}: {value} is not mapped in the user namespace "
                f"(linux.gidMappings: {_describe(gids)})", option=field, value=value)
    if additional_gids and is_rootless() and not maps_need_helper(gids, os.getegid()):
        raise InvalidOptionError(
            f"{field}: a user namespace whose gid map holds only the caller's own gid has "
            "setgroups denied (user_namespaces(7)), so no supplementary groups can be set; "
            "map subordinate gids (newgidmap, /etc/subgid) or drop them",
            option=field, value=list(additional_gids))


def check_helpers(uid_map: bytes, gid_map: bytes) -> None:
    """Before anything is forked: a rootless caller whose maps need
    ``newuidmap``/``newgidmap`` has them installed. Raises ``InvalidOptionError``
    naming ``linux.uidMappings``/``gidMappings``; nothing to check as root."""
    if not is_rootless():
        return
    checks: tuple[tuple[Kind, bytes, int], ...] = (("uid", uid_map, os.geteuid()),
                                                  ("gid", gid_map, os.getegid()))
    for kind, data, own in checks:
        mappings = parse_id_map(data)
        if maps_need_helper(mappings, own) and _helper(kind) is None:
            raise InvalidOptionError(
                f"{_field(kind)}: mapping {_describe(mappings)!r} as a user other than "
                f"root needs new{kind}map (shadow's uidmap package), which is not "
                f"installed; map only your own {kind} {own} with size 1",
                option=_field(kind), value=_describe(mappings))


# -- the config ------------------------------------------------------------------------------


def check_config(config: Mapping[str, Any], user_namespace: str) -> None:
    """A rootless caller's config must have a user namespace (``user_namespace``:
    ``"new"``, ``"join"`` or ``""``, as :class:`~.config.Namespaces` has it): without
    one the init would be the caller's own unprivileged self, unable to mount or
    pivot. Raises ``InvalidOptionError`` naming ``linux.namespaces``; nothing to
    check as root."""
    if not is_rootless() or user_namespace:
        return
    types = [n.get("type") for n in (config.get("linux") or {}).get("namespaces") or ()
             if isinstance(n, Mapping)]
    raise InvalidOptionError(
        f"linux.namespaces: running as uid {os.geteuid()} (not root), a container needs "
        "a user namespace: add {\"type\": \"user\"} with linux.uidMappings and "
        "linux.gidMappings (`ptc-runtime spec --rootless` writes such a config)",
        option="linux.namespaces", value=types)


def _own_maps(uid: int, gid: int) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    return ([{"containerID": 0, "hostID": uid, "size": 1}],
            [{"containerID": 0, "hostID": gid, "size": 1}])


def add_user_namespace(config: Mapping[str, Any], *, uid: int | None = None,
                       gid: int | None = None) -> dict[str, Any]:
    """A copy of ``config`` with a new user namespace (unless it has one) mapping
    container 0 to the caller's effective ``uid``/``gid`` (size 1), everything else as
    it is: what the in-process engine runs for a caller that is not root (podman's
    rootless default without subordinate ids). Files of the rootfs owned by other
    host ids (root's, of the layers) show inside as the overflow id (65534)."""
    out = copy.deepcopy(dict(config))
    linux = out.setdefault("linux", {})
    namespaces = linux.setdefault("namespaces", [])
    if any(isinstance(n, Mapping) and n.get("type") == "user" for n in namespaces):
        return out
    namespaces.append({"type": "user"})
    uids, gids = _own_maps(os.geteuid() if uid is None else uid,
                           os.getegid() if gid is None else gid)
    linux["uidMappings"], linux["gidMappings"] = uids, gids
    return out


def to_rootless(config: Mapping[str, Any], *, uid: int | None = None,
                gid: int | None = None) -> dict[str, Any]:
    """runc's ``spec --rootless`` (``specconv.ToRootless``) on a copy of ``config``: no
    network namespace (the host's: a rootless caller cannot wire one), a new user
    namespace mapping container 0 to ``uid``/``gid`` (default: the caller's effective
    ids), size 1; ``/sys`` an ``rbind`` of the host's (sysfs cannot be mounted without
    a network namespace of the user namespace); ``uid=``/``gid=`` options dropped
    from every mount (unmapped ids: ``devpts`` would refuse ``gid=5``); no
    ``linux.resources``."""
    out = copy.deepcopy(dict(config))
    linux = out.setdefault("linux", {})
    namespaces = [n for n in linux.get("namespaces") or ()
                  if not (isinstance(n, Mapping) and n.get("type") in ("network", "user"))]
    namespaces.append({"type": "user"})
    linux["namespaces"] = namespaces
    linux["uidMappings"], linux["gidMappings"] = _own_maps(
        os.geteuid() if uid is None else uid, os.getegid() if gid is None else gid)
    mounts = []
    for mount in out.get("mounts") or ():
        if not isinstance(mount, Mapping):
            mounts.append(mount)
            continue
        if os.path.normpath("/" + str(mount.get("destination", "")).lstrip("/")) == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        mount = dict(mount)
        if mount.get("options"):
            mount["options"] = [o for o in mount["options"]
                                if not str(o).startswith(("uid=", "gid="))]
        mounts.append(mount)
    if "mounts" in out:
        out["mounts"] = mounts
    linux.pop("resources", None)
    return out


# -- the state root ----------------------------------------------------------------------------


def state_root(*, environ: Mapping[str, str] | None = None, uid: int | None = None,
               run_user: Path = Path("/run/user")) -> Path:
    """Where ``ptc-runtime`` and the in-process engine keep container state: ``/run/ptc``
    for root (``uid``, default the effective one); else ``$XDG_RUNTIME_DIR/ptc`` when
    it is set (in ``environ``, default ``os.environ``), else ``/run/user/<uid>/ptc``
    when ``/run/user/<uid>`` (under ``run_user``) exists: systemd-logind's, what
    ``XDG_RUNTIME_DIR`` would be. Raises ``ContainerRuntimeError`` when neither is
    there (runc would try ``/run/runc`` and fail on its permissions)."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return Path("/run/ptc")
    runtime_dir = user_runtime_dir(environ=environ, uid=uid, run_user=run_user)
    if runtime_dir is not None:
        return runtime_dir / "ptc"
    user_dir = run_user / str(uid)
    raise ContainerRuntimeError(
        f"no state root for uid {uid}: XDG_RUNTIME_DIR is not set and {user_dir} does "
        "not exist; set XDG_RUNTIME_DIR to a directory of yours (a tmpfs, as "
        "systemd-logind makes) or give --root DIR", path=str(user_dir))


def prepare_state_root(root: Path) -> Path:
    """Make ``root`` (mode ``0700`` plus the sticky bit, as runc does under
    ``XDG_RUNTIME_DIR``, so that its cleaner leaves it alone) if missing, and check
    that the caller may create container dirs in it. Returns ``root``; raises
    ``ContainerRuntimeError`` naming it (and ``XDG_RUNTIME_DIR``) otherwise."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
        if root.stat().st_uid == os.geteuid() and not root.stat().st_mode & stat.S_ISVTX:
            root.chmod(0o700 | stat.S_ISVTX)
    except OSError as exc:
        raise _root_error(root, exc.strerror or str(exc), exc.errno) from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise _root_error(root, "permission denied", errno.EACCES)
    return root


def _root_error(root: Path, why: str, code: int | None) -> ContainerRuntimeError:
    hint = (" (from XDG_RUNTIME_DIR)" if os.environ.get("XDG_RUNTIME_DIR")
            and str(root).startswith(os.environ["XDG_RUNTIME_DIR"]) else "")
    return ContainerRuntimeError(
        f"state root {root}{hint} is not usable by uid {os.geteuid()}: {why}; set "
        "XDG_RUNTIME_DIR to a directory of yours, or give --root DIR",
        path=str(root), errno=code)


# -- cgroups ---------------------------------------------------------------------------------------

#: :class:`Limits` attribute -> runtime-spec field, for the error naming what was asked
_LIMIT_FIELDS = {
    "memory_limit": "memory.limit", "memory_reservation": "memory.reservation",
    "memory_swap": "memory.swap", "memory_swappiness": "memory.swappiness",
    "disable_oom_killer": "memory.disableOOMKiller", "cpu_shares": "cpu.shares",
    "cpu_quota": "cpu.quota", "cpu_period": "cpu.period", "cpuset_cpus": "cpu.cpus",
    "cpuset_mems": "cpu.mems", "pids_limit": "pids.limit", "blkio_weight": "blockIO.weight",
    "blkio_leaf_weight": "blockIO.leafWeight", "blkio_weight_device": "blockIO.weightDevice",
    "throttle_read_bps": "blockIO.throttleReadBpsDevice",
    "throttle_write_bps": "blockIO.throttleWriteBpsDevice",
    "throttle_read_iops": "blockIO.throttleReadIOPSDevice",
    "throttle_write_iops": "blockIO.throttleWriteIOPSDevice",
    "hugepage_limits": "hugepageLimits", "unified": "unified",
}


def check_no_limits(resources: Resources | Mapping[str, Any] | None, why: str) -> None:
    """Raise ``InvalidOptionError`` naming the first ``linux.resources`` field that
    asks for a limit (``linux.resources.memory.limit``...), saying ``why`` there is
    no cgroup to put it in; ``devices`` rules and unset or "leave as is" values
    (``0`` for memory and cpu numbers, as runc reads them) are fine."""
    try:
        limits = parse(resources)
    except CgroupError as exc:
        raise InvalidOptionError(str(exc), option=getattr(exc, "field", None)
                                 or "linux.resources", value=getattr(exc, "value", None)
                                 ) from exc
    default = Limits()
    for attr, name in _LIMIT_FIELDS.items():
        value = getattr(limits, attr)
        if value != getattr(default, attr):
            field = f"linux.resources.{name}"
            raise InvalidOptionError(
                f"{field}: {why}, so no limit can be set (got {value!r}); remove "
                "linux.resources limits to run it without a cgroup, or run as root",
                option=field, value=value)


class NoCgroup:
    """The cgroup of a rootless container that cannot have one (cgroup v1, or v2
    without a delegated subtree): the ``Cgroup`` methods the engine calls, doing
    nothing. Its processes stay in the caller's cgroup; ``delete`` kills the init
    (with a pid namespace, every process of it dies with its PID 1)."""

    version = 0
    path = ""
    root = DEFAULT_ROOT

    def __repr__(self) -> str:
        return "NoCgroup()"

    def create(self, resources: Resources | Mapping[str, Any] | None = None) -> None:
        """Nothing to make (the limits were checked to be none by :func:`rootless_cgroup`)."""

    def update(self, resources: Resources | Mapping[str, Any]) -> None:
        check_no_limits(resources, "the container has no cgroup (rootless)")

    def procs_paths(self) -> list[Path]:
        return []

    def self_join_paths(self) -> list[tuple[Path, str]]:
        return []

    def hierarchies(self) -> list[str]:
        return []

    def add(self, pid: int) -> None:
        """Nothing to join."""

    def pids(self, *, recursive: bool = False) -> list[int]:
        return []

    def children(self) -> list[Any]:
        return []

    def parent_chain(self) -> list[Any]:
        return []

    def oom_kills(self) -> int:
        return 0

    def stats(self) -> Stats:
        """No counters: every field unknown (``None``), ``oom_kills`` 0."""
        return Stats()

    @property
    def frozen(self) -> bool:
        return False

    def freeze(self, timeout: float = 0.0) -> None:
        raise CgroupError("a rootless container without a cgroup cannot be paused "
                          "(no freezer)", path=None, errno=errno.EOPNOTSUPP)

    def thaw(self, timeout: float = 0.0) -> None:
        raise CgroupError("a rootless container without a cgroup cannot be resumed "
                          "(no freezer)", path=None, errno=errno.EOPNOTSUPP)

    def kill_all(self) -> None:
        """Nothing to walk: the caller kills the init."""

    def remove(self, *, recursive: bool = True) -> None:
        """Nothing to remove."""


def pids_in_pid_namespace(pid: int) -> list[int]:
    """The host pids of the processes in the pid namespace of ``pid`` (same
    ``/proc/<pid>/ns/pid``), sorted: what ``ps`` and ``kill --all`` act on for a
    container without a cgroup. Just ``[pid]`` when ``pid`` shares the caller's pid
    namespace (scanning it would list every process of the host); ``[]`` when
    ``pid`` is gone."""
    try:
        target = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return []
    if target == os.stat("/proc/self/ns/pid").st_ino:
        return [pid]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == target:
                    found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


def _own_cgroup_v2(text: str) -> str | None:
    """The unified-hierarchy path of a ``/proc/<pid>/cgroup`` text (its ``0::`` line)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _owned_by(path: Path, uid: int) -> bool:
    try:
        return all(os.stat(p).st_uid == uid for p in
                   (path, path / "cgroup.procs", path / "cgroup.subtree_control"))
    except OSError:
        return False


def delegated_cgroup(own: str, *, root: Path = DEFAULT_ROOT, uid: int | None = None
                     ) -> str | None:
    """The topmost cgroup on the way from the hierarchy root to ``own`` (a cgroup path
    like ``/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope``) that is
    delegated to ``uid`` (default: the caller's effective uid): it and every cgroup
    below it on that way owned by ``uid``, with their ``cgroup.procs`` and
    ``cgroup.subtree_control`` (cgroup-v2.rst "Delegation Containment"). ``None``
    when ``own`` itself is not delegated. The root cgroup never is."""
    uid = os.geteuid() if uid is None else uid
    parts = [p for p in own.split("/") if p]
    found = None
    for i in range(len(parts), 0, -1):
        rel = "/".join(parts[:i])
        if not _owned_by(root / rel, uid):
            break
        found = "/" + rel
    return found


def host_cgroup_path(cgroup: CgroupV1 | CgroupV2 | NoCgroup,
                     fs_root: Path = DEFAULT_ROOT) -> str:
    """The path of ``cgroup`` from the hierarchy root ``fs_root`` (a rootless v2 cgroup
    is opened with its delegated cgroup as ``root``; any other is ``cgroup.path``):
    what ``/proc/<pid>/cgroup`` shows, and what :func:`open_rootless_cgroup` takes
    back; ``""`` for :class:`NoCgroup`."""
    if isinstance(cgroup, NoCgroup):
        return ""
    if isinstance(cgroup, CgroupV1):
        return cgroup.path
    base = os.path.relpath(cgroup.root, fs_root)
    return cgroup.path if base == "." else "/" + base + cgroup.path


def _in_delegated(host_path: str, delegated: str, *, fs_root: Path) -> CgroupV2:
    rel = host_path[len(delegated):] if delegated != "/" else host_path
    return CgroupV2(rel, root=fs_root / delegated.strip("/"))


def rootless_cgroup(cgroups_path: str | None, container_id: str,
                    resources: Resources | Mapping[str, Any] | None, *,
                    fs_root: Path = DEFAULT_ROOT, uid: int | None = None,
                    own: str | None = None, version: int | None = None
                    ) -> CgroupV2 | NoCgroup:
    """The cgroup of a rootless container (nothing is created).

    cgroup v2 (``version``, default :func:`~..linux.cgroups.detect` of ``fs_root``)
    with a cgroup delegated to ``uid`` above the caller's own (``own``, default from
    ``/proc/self/cgroup``; :func:`delegated_cgroup`): a :class:`CgroupV2` rooted
    there, at ``ptc/<cgroupsPath>`` for a relative ``linux.cgroupsPath`` (``ptc/<id>``
    when unset), or at an absolute one that lies in the delegated cgroup. Otherwise
    (v1, as on a hybrid host, or nothing delegated): :class:`NoCgroup`, after
    checking that ``resources`` asks for no limit (:func:`check_no_limits`).

    Raises ``InvalidOptionError`` naming ``linux.resources.<field>`` or
    ``linux.cgroupsPath`` (absolute, outside the delegated cgroup)."""
    uid = os.geteuid() if uid is None else uid
    version = detect(fs_root) if version is None else version
    delegated = None
    if version == 2:
        if own is None:
            try:
                own = _own_cgroup_v2(Path("/proc/self/cgroup").read_text())
            except OSError:
                own = None
        delegated = delegated_cgroup(own, root=fs_root, uid=uid) if own else None
    if delegated is None:
        why = ("cgroup v1 hierarchies belong to root" if version == 1 else
               f"no cgroup is delegated to uid {uid} (none of the caller's own cgroup "
               f"{own} and its parents is owned by it)")
        check_no_limits(resources, f"a rootless container has no cgroup here: {why}")
        return NoCgroup()
    path = cgroups_path or ""
    if path.startswith("/"):
        clean = "/" + "/".join(p for p in path.split("/") if p)
        if not clean.startswith(delegated + "/"):
            raise InvalidOptionError(
                f"linux.cgroupsPath: {path!r} is not below {delegated}, the cgroup "
                f"delegated to uid {uid}; give a relative path (made under it) or none",
                option="linux.cgroupsPath", value=path)
        return _in_delegated(clean, delegated, fs_root=fs_root)
    rel = "/".join(p for p in path.split("/") if p) or container_id
    return CgroupV2(f"/ptc/{rel}", root=fs_root / delegated.strip("/"))


def open_rootless_cgroup(host_path: str, *, fs_root: Path = DEFAULT_ROOT,
                         uid: int | None = None) -> CgroupV2 | NoCgroup:
    """Open again the cgroup :func:`rootless_cgroup` made, from its
    :func:`host_cgroup_path` (``""``: :class:`NoCgroup`): rooted at the topmost
    ancestor delegated to ``uid``, as it was made."""
    if not host_path:
        return NoCgroup()
    parent = host_path.rsplit("/", 1)[0] or "/"
    delegated = delegated_cgroup(parent, root=fs_root, uid=uid)
    if delegated is None:
        return CgroupV2(host_path, root=fs_root)
    return _in_delegated(host_path, delegated, fs_root=fs_root)
