"""The runtime-side checks of a config.json: what the engine needs besides the
process (:mod:`.process`), the mounts (:mod:`..linux.rootfs`) and the cgroup
resources (:mod:`..linux.cgroups`), which check their own parts.

Implements runtime-spec ``config.md`` ``#specification-version`` (any 1.x
``ociVersion``), ``#root``, ``#hostname``, ``#annotations`` and
``config-linux.md`` ``#namespaces`` (new ones, and joined by ``path``, checked
to be a namespace of that type with the ``NS_GET_NSTYPE`` ioctl of
``ioctl_ns(2)``), ``#user-namespace-mappings`` (``uidMappings``/``gidMappings``
as written to ``/proc/<pid>/uid_map`` and ``gid_map``, kernel
``user_namespaces(7)``), ``#control-groups`` (``cgroupsPath``; ``resources``
checked whole before anything is made, :func:`check_resources`), ``#sysctl``
(only namespaced keys, as runc). Unknown properties are ignored (``config.md``
extensibility); a known one of the wrong type, or a value the engine cannot
honour, raises ``InvalidOptionError`` (a ``ValueError``) whose ``option`` names
the field, e.g. ``linux.namespaces[2].type``.

Time namespaces are not supported: an error says so. What a caller that is not
root may run (a user namespace needed, maps through ``newuidmap``, no cgroup
limits on v1) is checked by :mod:`.rootless`.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_containers.exceptions import InvalidOptionError

from ..linux import syscalls as sc

__all__ = ["MIN_MEMORY_LIMIT_BYTES", "NAMESPACE_FLAGS", "Namespaces", "cgroup_path_of",
           "check_config", "check_resources", "field_of", "id_maps_of", "namespaces_of",
           "open_namespace", "root_of", "sysctl_of"]

#: ``ociVersion`` values we run: 1.x (SemVer 2.0.0, pre-release and build allowed)
_VERSION = re.compile(r"1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?\Z")
#: runtime-spec namespace types -> ``CLONE_NEW*``
NAMESPACE_FLAGS = {
    "pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "cgroup": sc.CLONE_NEWCGROUP,
    "user": sc.CLONE_NEWUSER,
}
_UNSUPPORTED_NAMESPACES = {"time": "time namespaces are not supported by ptc-runtime"}
#: ``uid_map`` lines the kernel takes (``user_namespaces(7)``, since Linux 4.15)
_MAX_ID_MAPPINGS = 340
_ID_LIMIT = 1 << 32
#: order of ``setns`` for namespaces given by path (mount last: paths resolve before it)
_JOIN_ORDER = ("ipc", "uts", "network", "cgroup", "mount")
#: ``ioctl_ns(2)`` ``NS_GET_NSTYPE``: the ``CLONE_NEW*`` type of a namespace fd
_NS_GET_NSTYPE = 0xB703
#: ipc-namespaced sysctls (runc ``validate/validator.go``)
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})
_UTS_SYSCTLS = frozenset({"kernel.hostname", "kernel.domainname"})
#: the smallest ``linux.resources.memory.limit`` we run: docker's minimum, and the
#: ``memory=`` option's (``Resources.from_options``). Below it a container runs only
#: as long as it stays in a few hundred KiB (measured here: a 4 KiB limit OOM-kills
#: the init, exit 137 with no message; ``sh -c 'echo hi'`` needs 256 KiB); runc
#: 1.1.5 refuses what is below its own init's usage when it writes the limit
#: (about 2.2 MiB here: "unable to set memory limit to 1048576 (current usage...)")
MIN_MEMORY_LIMIT_BYTES = 6 * 1024 * 1024


def _bad(field: str, value: Any, why: str) -> InvalidOptionError:
    return InvalidOptionError(f"{field}: {why} (got {value!r})", option=field, value=value)


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(field, value, "must be an object")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise _bad(field, value, "must be a string")
    return value


def check_config(config: Any) -> None:
    """The top-level shape: ``ociVersion`` 1.x, ``root`` (``path`` a non-empty string,
    ``readonly`` a boolean), ``hostname``/``domainname`` strings, ``annotations``
    an object of strings, ``process``/``linux``/``hooks`` objects, ``mounts`` an
    array. Raises ``InvalidOptionError`` naming the field."""
    if not isinstance(config, Mapping):
        raise _bad("config.json", type(config).__name__, "must be a JSON object")
    version = config.get("ociVersion")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise _bad("ociVersion", version, "must be a runtime-spec 1.x version like '1.0.2'")
    root = config.get("root")
    if not isinstance(root, Mapping):
        raise _bad("root", root, "must be an object with 'path'")
    path = root.get("path")
    if not isinstance(path, str) or not path or "\0" in path:
        raise _bad("root.path", path, "must be a non-empty path")
    if not isinstance(root.get("readonly", False), bool):
        raise _bad("root.readonly", root.get("readonly"), "must be true or false")
    for key in ("hostname", "domainname"):
        if config.get(key) is not None:
            _string(config[key], key)
    for key, value in _object(config.get("annotations"), "annotations").items():
        if not isinstance(value, str):
            raise _bad(f"annotations[{key!r}]", value, "must be a string")
    for key in ("process", "linux", "hooks"):
        _object(config.get(key), key)
    mounts = config.get("mounts")
    if mounts is not None and (isinstance(mounts, (str, bytes))
                               or not isinstance(mounts, Sequence)):
        raise _bad("mounts", mounts, "must be an array")


def check_resources(config: Mapping[str, Any]) -> None:
    """``linux.resources`` checked whole, before anything is made: every field as the
    cgroup will take it (:func:`~..linux.cgroups.resources.parse`: ``CgroupError``
    naming the field for a wrong type or range, ``InvalidOptionError`` for a limit
    beyond what the kernel holds), and ``memory.limit`` at least
    :data:`MIN_MEMORY_LIMIT_BYTES` (``InvalidOptionError`` naming
    ``linux.resources.memory.limit``; ``-1``, unlimited, and ``0``, not set, are
    fine)."""
    from ..linux.cgroups.resources import parse

    linux = _object(config.get("linux"), "linux")
    limits = parse(linux.get("resources"))
    limit = limits.memory_limit
    if limit is not None and limit != -1 and limit < MIN_MEMORY_LIMIT_BYTES:
        field = "linux.resources.memory.limit"
        raise InvalidOptionError(
            f"{field}: {limit} bytes is below the minimum memory limit allowed, "
            f"{MIN_MEMORY_LIMIT_BYTES} bytes (6 MiB, as docker's): the kernel would "
            "OOM-kill the container's processes without a word", option=field,
            value=limit, field=field)


def root_of(config: Mapping[str, Any], bundle: str) -> str:
    """The rootfs on the host: ``root.path``, relative to ``bundle`` unless absolute,
    normalized. Raises ``InvalidOptionError`` (``root.path``) when it is not a
    directory."""
    path = config["root"]["path"]
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(bundle, path))
    if not os.path.isdir(full):
        raise _bad("root.path", path, f"{full} is not a directory")
    return full


@dataclass(frozen=True)
class Namespaces:
    """``linux.namespaces`` parsed. ``types``: every type listed; ``new_flags``: the
    ``CLONE_NEW*`` of those without ``path`` (pid and cgroup included, user not);
    ``joined``: ``(type, path)`` of those with one, in ``setns`` order (pid and user
    excluded); ``pid``: ``"new"``, ``"join"`` (``pid_path``) or ``"host"``;
    ``cgroup``: ``"new"``, ``"join"`` (``cgroup_path``) or ``""``; ``user``:
    ``"new"``, ``"join"`` (``user_path``) or ``""`` (the caller's)."""

    types: frozenset[str]
    new_flags: int
    joined: tuple[tuple[str, str], ...]
    pid: str
    pid_path: str = ""
    cgroup: str = ""
    cgroup_path: str = ""
    user: str = ""
    user_path: str = ""

    @property
    def unshare_flags(self) -> int:
        """What the init unshares itself: the new ones but pid (made at the fork) and
        cgroup (made once the init is in its cgroup)."""
        return self.new_flags & ~(sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP)

    @property
    def all_flags(self) -> int:
        """``CLONE_NEW*`` of every listed type: what an ``exec`` joins."""
        flags = 0
        for kind in self.types:
            flags |= NAMESPACE_FLAGS[kind]
        return flags


def namespaces_of(config: Mapping[str, Any]) -> Namespaces:
    """Parse ``linux.namespaces``: each entry an object with a known ``type`` (at most
    once) and an optional absolute ``path``. A type not listed is the runtime's own
    (``config-linux.md#namespaces``); without ``mount`` the rootfs is set up in the
    runtime's mount namespace and entered with ``chroot``, as runc does
    (:mod:`~..linux.hostmounts` undoes those mounts). Raises ``InvalidOptionError``
    naming ``linux.namespaces[i].type`` or ``.path``."""
    linux = _object(config.get("linux"), "linux")
    entries = linux.get("namespaces") or []
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise _bad("linux.namespaces", entries, "must be an array")
    types: set[str] = set()
    new = 0
    joined: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"linux.namespaces[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(where, entry, "must be an object")
        kind = entry.get("type")
        if kind in _UNSUPPORTED_NAMESPACES:
            raise _bad(f"{where}.type", kind, _UNSUPPORTED_NAMESPACES[kind])
        if kind not in NAMESPACE_FLAGS:
            raise _bad(f"{where}.type", kind,
                       "unknown namespace type; one of " + ", ".join(sorted(NAMESPACE_FLAGS)))
        if kind in types:
            raise _bad(f"{where}.type", kind, "listed twice")
        types.add(kind)
        path = entry.get("path") or ""
        if path:
            if not isinstance(path, str) or not path.startswith("/"):
                raise _bad(f"{where}.path", path, "must be an absolute path")
            joined[kind] = path
        elif kind != "user":
            new |= NAMESPACE_FLAGS[kind]
    return Namespaces(
        types=frozenset(types), new_flags=new,
        joined=tuple((k, joined[k]) for k in _JOIN_ORDER if k in joined and k != "cgroup"),
        pid="join" if "pid" in joined else ("new" if "pid" in types else "host"),
        pid_path=joined.get("pid", ""),
        cgroup="join" if "cgroup" in joined else ("new" if "cgroup" in types else ""),
        cgroup_path=joined.get("cgroup", ""),
        user="join" if "user" in joined else ("new" if "user" in types else ""),
        user_path=joined.get("user", ""))


def _id_map(linux: Mapping[str, Any], key: str) -> bytes:
    """One of ``linux.uidMappings``/``gidMappings`` as the text of ``uid_map``."""
    field = f"linux.{key}"
    entries = linux.get(key)
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise _bad(field, entries, "must be an array of {containerID, hostID, size}")
    if not entries:
        raise _bad(field, entries, "a new user namespace needs at least one mapping")
    if len(entries) > _MAX_ID_MAPPINGS:
        raise _bad(field, len(entries), f"at most {_MAX_ID_MAPPINGS} mappings")
    ranges: list[tuple[int, int, int]] = []
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(where, entry, "must be an object {containerID, hostID, size}")
        values = []
        for name in ("containerID", "hostID", "size"):
            value = entry.get(name)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value < _ID_LIMIT:
                raise _bad(f"{where}.{name}", value, "must be an integer from 0 to 4294967295")
            values.append(value)
        inside, outside, size = values
        if size == 0:
            raise _bad(f"{where}.size", size, "must be at least 1")
        if inside + size > _ID_LIMIT or outside + size > _ID_LIMIT:
            raise _bad(f"{where}.size", size, "the range goes past ID 4294967295")
        for j, (other_in, other_out, other_size) in enumerate(ranges):
            if inside < other_in + other_size and other_in < inside + size:
                raise _bad(f"{where}.containerID", inside,
                           f"the range overlaps the container IDs of {field}[{j}]")
            if outside < other_out + other_size and other_out < outside + size:
                raise _bad(f"{where}.hostID", outside,
                           f"the range overlaps the host IDs of {field}[{j}]")
        ranges.append((inside, outside, size))
    if not any(inside == 0 for inside, _, _ in ranges):
        raise _bad(field, entries, "must map container ID 0: the init becomes root of the "
                   "user namespace (as runc)")
    return "".join(f"{a} {b} {c}\n" for a, b, c in ranges).encode()


def id_maps_of(config: Mapping[str, Any], namespaces: Namespaces) -> tuple[bytes, bytes]:
    """``linux.uidMappings`` and ``linux.gidMappings`` as the contents of
    ``/proc/<pid>/uid_map`` and ``gid_map`` (``"<container> <host> <size>\\n"`` lines;
    ``b""`` when there is no new user namespace), runtime-spec ``config-linux.md``
    ``#user-namespace-mappings`` and ``user_namespaces(7)``: a new user namespace needs
    both, each with 1 to 340 entries of integers (``size`` at least 1), no two
    overlapping in container or in host IDs, container ID 0 mapped; without a user
    namespace there must be none. Joining one by ``path``, they are not written (it
    has its own). Who may write them (root, or a rootless caller directly or through
    ``newuidmap``) is :mod:`.rootless`'s business. Raises ``InvalidOptionError``
    naming the field."""
    linux = _object(config.get("linux"), "linux")
    if namespaces.user != "new":
        if not namespaces.user:
            for key in ("uidMappings", "gidMappings"):
                if linux.get(key):
                    raise _bad(f"linux.{key}", linux[key], "mappings need a user namespace "
                               "in linux.namespaces")
        return b"", b""
    return _id_map(linux, "uidMappings"), _id_map(linux, "gidMappings")


def open_namespace(kind: str, path: str, field: str) -> int:
    """Open the namespace file ``path`` (close-on-exec) and check that it is a namespace
    of ``kind`` (``NS_GET_NSTYPE``). Raises ``InvalidOptionError`` naming ``field``
    when it cannot be opened or is of another type; closes it then."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _bad(field, path, f"cannot open the {kind} namespace: {exc.strerror}") from None
    try:
        found = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError as exc:
        os.close(fd)
        raise _bad(field, path, f"not a namespace file: {exc.strerror}") from None
    if found != NAMESPACE_FLAGS[kind]:
        os.close(fd)
        other = next((k for k, v in NAMESPACE_FLAGS.items() if v == found), hex(found))
        raise _bad(field, path, f"is a {other} namespace, not {kind}")
    return fd


def field_of(config: Mapping[str, Any], kind: str) -> str:
    """``linux.namespaces[i].path`` of the entry of ``kind``, for messages."""
    for i, entry in enumerate((config.get("linux") or {}).get("namespaces") or ()):
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            return f"linux.namespaces[{i}].path"
    return "linux.namespaces"


def cgroup_path_of(config: Mapping[str, Any], container_id: str) -> str:
    """``linux.cgroupsPath`` as an absolute cgroup path: absent or empty, ``/ptc/<id>``;
    relative, under ``/ptc`` (the spec leaves relative paths to the runtime). Raises
    ``InvalidOptionError`` for a non-string, ``..``, or systemd's ``slice:prefix:name``
    form (``--systemd-cgroup`` is not supported)."""
    linux = _object(config.get("linux"), "linux")
    path = linux.get("cgroupsPath")
    if path is None or path == "":
        return f"/ptc/{container_id}"
    path = _string(path, "linux.cgroupsPath")
    if ":" in path and not path.startswith("/"):
        raise _bad("linux.cgroupsPath", path,
                   "systemd's 'slice:prefix:name' form needs --systemd-cgroup, which "
                   "ptc-runtime does not support; give a cgroupfs path like /ptc/<id>")
    parts = [p for p in path.split("/") if p]
    if not parts or ".." in parts:
        raise _bad("linux.cgroupsPath", path, "must name a cgroup, without '..'")
    return "/" + "/".join(parts) if path.startswith("/") else "/ptc/" + "/".join(parts)


def sysctl_of(config: Mapping[str, Any], namespaces: Namespaces
              ) -> tuple[tuple[str, str], ...]:
    """``linux.sysctl`` as ``(path under /proc/sys, value)``: only sysctls of a namespace
    the container has (ipc: ``kernel.msg*``, ``kernel.sem``, ``kernel.shm*``,
    ``fs.mqueue.*``; network: ``net.*``; uts: ``kernel.hostname``,
    ``kernel.domainname``), as runc. Raises ``InvalidOptionError`` naming
    ``linux.sysctl[<key>]``."""
    linux = _object(config.get("linux"), "linux")
    sysctl = _object(linux.get("sysctl"), "linux.sysctl")
    out = []
    for key, value in sysctl.items():
        field = f"linux.sysctl[{key!r}]"
        if not isinstance(value, str):
            raise _bad(field, value, "must be a string")
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            needed = "ipc"
        elif key.startswith("net."):
            needed = "network"
        elif key in _UTS_SYSCTLS:
            needed = "uts"
        else:
            raise _bad(field, key, "is not in a namespace of the container (only ipc, "
                       "network and uts sysctls can be set)")
        if needed not in namespaces.types:
            raise _bad(field, key, f"needs a {needed} namespace in linux.namespaces")
        path = key.replace(".", "/")
        if ".." in path.split("/"):
            raise _bad(field, key, "must not contain '..'")
        out.append((path, value))
    return tuple(out)
