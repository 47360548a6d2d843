"""The container's root filesystem as config.json describes it: :func:`plan_rootfs`
turns ``mounts``, ``linux.devices``, ``linux.maskedPaths``, ``linux.readonlyPaths``,
``linux.rootfsPropagation``, ``linux.mountLabel``, ``root.readonly`` into a
:class:`RootfsPlan` of ready values (``MS_*`` flags, data strings, device numbers),
in the parent, so that the container init (:func:`.mounts.setup_rootfs`) has only
syscalls left to make.

Implements runtime-spec ``config.md#mounts`` (``#configLinuxMountOptions``) and
``config-linux.md`` ``#configLinuxDefaultFilesystems``, ``#configLinuxDevices``,
``#configLinuxDefaultDevices``, ``#configLinuxRootfsMountPropagation``,
``#configLinuxMaskedPaths``, ``#configLinuxReadonlyPaths``, ``#configLinuxMountLabel``,
following runc 1.1 (``libcontainer/specconv/spec_linux.go``) where the spec leaves
room. Bad input raises ``InvalidOptionError`` (a ``ValueError``) naming the field,
and for a mount its destination and the option.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_containers.exceptions import InvalidOptionError

from . import syscalls as sc

__all__ = [
    "DEFAULT_DEVICES",
    "DEFAULT_DEVICE_NODES",
    "DeviceNode",
    "Enter",
    "MS_I_VERSION",
    "MS_NOSYMFOLLOW",
    "MS_POSIXACL",
    "MS_SILENT",
    "MountOp",
    "RootfsPlan",
    "parse_options",
    "plan_rootfs",
]

#: the default devices, by name under ``/dev`` (``config-linux.md#configLinuxDefaultDevices``)
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: (major, minor) of the default devices (kernel ``Documentation/admin-guide/devices.txt``)
_DEVICE_NUMBERS = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                   "urandom": (1, 9), "tty": (5, 0)}

# <linux/mount.h> flags syscalls.py does not name
MS_SILENT = 1 << 15
MS_POSIXACL = 1 << 16
MS_I_VERSION = 1 << 23
MS_NOSYMFOLLOW = 256

#: option -> (clear, flag): runtime-spec's Linux mount options table (runc ``mountFlags``)
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID), "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV), "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC), "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS), "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK), "nomand": (True, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "atime": (True, sc.MS_NOATIME),
    "nodiratime": (False, sc.MS_NODIRATIME), "diratime": (True, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME), "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME), "nolazytime": (True, sc.MS_LAZYTIME),
    "silent": (False, MS_SILENT), "loud": (True, MS_SILENT),
    "acl": (False, MS_POSIXACL), "noacl": (True, MS_POSIXACL),
    "iversion": (False, MS_I_VERSION), "noiversion": (True, MS_I_VERSION),
    "nosymfollow": (False, MS_NOSYMFOLLOW), "symfollow": (True, MS_NOSYMFOLLOW),
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# <linux/mount.h> ``MOUNT_ATTR_*`` for ``mount_setattr(2)`` (Linux 5.12+)
_ATTR_RDONLY, _ATTR_NOSUID, _ATTR_NODEV, _ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
_ATTR_ATIME_MASK, _ATTR_RELATIME, _ATTR_NOATIME, _ATTR_STRICTATIME = 0x70, 0x0, 0x10, 0x20
_ATTR_NODIRATIME, _ATTR_NOSYMFOLLOW = 0x80, 0x200000
#: recursive option -> (clear, MOUNT_ATTR_*): runc ``recAttrFlags``
_REC_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, _ATTR_RDONLY), "rrw": (True, _ATTR_RDONLY),
    "rnosuid": (False, _ATTR_NOSUID), "rsuid": (True, _ATTR_NOSUID),
    "rnodev": (False, _ATTR_NODEV), "rdev": (True, _ATTR_NODEV),
    "rnoexec": (False, _ATTR_NOEXEC), "rexec": (True, _ATTR_NOEXEC),
    "rnodiratime": (False, _ATTR_NODIRATIME), "rdiratime": (True, _ATTR_NODIRATIME),
    "rrelatime": (False, _ATTR_RELATIME), "rnorelatime": (True, _ATTR_RELATIME),
    "rnoatime": (False, _ATTR_NOATIME), "ratime": (True, _ATTR_NOATIME),
    "rstrictatime": (False, _ATTR_STRICTATIME), "rnostrictatime": (True, _ATTR_STRICTATIME),
    "rnosymfollow": (False, _ATTR_NOSYMFOLLOW), "rsymfollow": (True, _ATTR_NOSYMFOLLOW),
}
_NUMBER = re.compile(r"[0-9]+\Z")
_SIZE = re.compile(r"[0-9]+[kmgtpe%]?\Z", re.IGNORECASE)
_OCTAL = re.compile(r"[0-7]{1,4}\Z")
_ANY = re.compile(r".+\Z")
#: the filesystem-specific (data) options of the types we mount ourselves; ``None``:
#: a bare word, else the pattern of ``key=value``'s value (kernel
#: ``Documentation/filesystems/tmpfs.rst``, ``devpts.rst``, ``proc.rst``, ``cgroup-v2.rst``)
_FS_OPTIONS: dict[str, dict[str, re.Pattern[str] | None]] = {
    "tmpfs": {"size": _SIZE, "nr_blocks": _SIZE, "nr_inodes": _SIZE, "mode": _OCTAL,
              "uid": _NUMBER, "gid": _NUMBER, "mpol": _ANY, "inode32": None, "inode64": None,
              "noswap": None, "quota": None, "usrquota": None, "grpquota": None,
              "huge": re.compile(r"(never|always|within_size|advise|deny|force)\Z")},
    "devpts": {"uid": _NUMBER, "gid": _NUMBER, "mode": _OCTAL, "ptmxmode": _OCTAL,
               "max": _NUMBER, "newinstance": None},
    "proc": {"hidepid": re.compile(r"([0-2]|noaccess|invisible|ptraceable)\Z"),
             "gid": _NUMBER, "subset": re.compile(r"pid\Z")},
    "sysfs": {}, "mqueue": {}, "cgroup": {}, "bind": {},
    "cgroup2": {"nsdelegate": None, "favordynmods": None, "memory_localevents": None,
                "memory_recursiveprot": None, "memory_hugetlb_accounting": None},
}
_CGROUP2_SUPER_MAGIC = 0x63677270


@dataclass(frozen=True)
class MountOp:
    """One entry of config.json ``mounts``, parsed. ``destination`` is a container
    path; ``type`` is ``bind`` for every bind mount (``bind``/``rbind`` option);
    ``flags`` the ``MS_*`` to set, ``clear_flags`` those the options clear (``rw``,
    ``suid``...); ``propagation``: ``MS_*`` propagation changes applied in order;
    ``data`` the filesystem options; ``rec_set``/``rec_clear``: ``MOUNT_ATTR_*`` of
    the recursive options (``rro``...); ``copy_up``: ``tmpcopyup``. A bind's
    ``source`` is an absolute host path (a missing one is reported by the init)."""

    destination: str
    type: str
    source: str
    flags: int
    propagation: tuple[int, ...] = ()
    data: str = ""
    clear_flags: int = 0
    rec_set: int = 0
    rec_clear: int = 0
    copy_up: bool = False

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


@dataclass(frozen=True)
class DeviceNode:
    """A device node to create (``config-linux.md#configLinuxDevices``): ``path`` in
    the container, ``type`` ``c``/``b``/``u``/``p``, ``file_mode`` permission bits
    (``S_IFMT`` stripped, like runc), owner ``uid``/``gid`` in the container."""

    path: str
    type: str
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0

    @property
    def kind(self) -> int:
        """The ``S_IF*`` file type bits of :func:`os.mknod`."""
        return stat.S_IFIFO if self.type == "p" else (
            stat.S_IFBLK if self.type == "b" else stat.S_IFCHR)


DEFAULT_DEVICE_NODES = tuple(DeviceNode(f"/dev/{n}", "c", *_DEVICE_NUMBERS[n])
                             for n in DEFAULT_DEVICES)

#: how the init enters its rootfs (runc's ``prepareRootfs``): ``pivot_root`` in its own
#: mount namespace; ``move``, ``--no-pivot``: ``MS_MOVE`` of the rootfs onto ``/`` of its
#: own mount namespace, then ``chroot``; ``chroot`` alone without a mount namespace
#: (the set-up then happens in the caller's: :mod:`.hostmounts`)
Enter = Literal["pivot_root", "move", "chroot"]


@dataclass(frozen=True)
class RootfsPlan:
    """Everything :func:`.mounts.setup_rootfs` and :func:`.mounts.finish_rootfs` need,
    computed in the parent. ``rootfs``: the host path where the rootfs is mounted;
    ``devices``: default devices then ``linux.devices`` (one per path);
    ``setup_dev``: create devices and ``/dev`` symlinks (not when ``/dev`` is a bind
    mount, as runc); ``dev_core``: the host has ``/proc/kcore`` (``/dev/core`` link);
    ``root_propagation``: ``MS_*`` of ``linux.rootfsPropagation`` (0: unset);
    ``cgroup_v1``: ``(directory name, mount data)`` of each v1 hierarchy a
    ``type: cgroup`` mount shows (empty: cgroup v2 host); ``cgroupns``: the config
    has a cgroup namespace; ``cwd``: ``process.cwd``, made if missing (as runc);
    ``enter``: :data:`Enter` (``chroot`` when the config has no mount namespace)."""

    rootfs: str
    mounts: tuple[MountOp, ...]
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    readonly_rootfs: bool = False
    devices: tuple[DeviceNode, ...] = DEFAULT_DEVICE_NODES
    setup_dev: bool = True
    dev_core: bool = False
    root_propagation: int = 0
    cgroup_v1: tuple[tuple[str, str], ...] = ()
    cgroupns: bool = True
    cwd: str = "/"
    enter: Enter = "pivot_root"

    @property
    def own_mount_namespace(self) -> bool:
        """Whether the init sets up its rootfs in a mount namespace of its own (new or
        joined): else in the caller's, and :mod:`.hostmounts` undoes it."""
        return self.enter != "chroot"


def _bad(message: str, option: str, value: Any) -> InvalidOptionError:
    return InvalidOptionError(message, option=option, value=value)


def parse_options(options: Sequence[str]) -> tuple[int, int, str]:
    """Split runtime-spec mount ``options`` into ``(flags, propagation, data)``:
    ``MS_*`` flags set, propagation flags or-ed, and the other options joined with
    commas (no validation; :func:`plan_rootfs` validates per filesystem type)."""
    flags = propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, bit = _FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _clean(path: str) -> str:
    """``path`` as an absolute container path without ``.``/``..``/``//`` (lexically)."""
    return os.path.normpath("/" + path).replace("//", "/")


#: on a bind the kernel ignores data (``mount(2)``): runc and crun pass it, and
#: runtime-tools puts tmpfs options on binds; an option of one of our filesystems is
#: accepted there and dropped, anything else is an error
_ANY_FS_OPTION = {k: None for opts in _FS_OPTIONS.values() for k in opts}


def _check_data(mtype: str, opt: str, where: str, field: str) -> None:
    key, eq, value = opt.partition("=")
    if mtype == "bind":
        if key not in _ANY_FS_OPTION:
            raise _bad(f"mount {where}: unknown option {opt!r} for a bind mount", field, opt)
        return
    known = _FS_OPTIONS[mtype]
    if key not in known:
        raise _bad(f"mount {where}: unknown option {opt!r} for a {mtype} mount", field, opt)
    pattern = known[key]
    if (pattern is None) != (not eq) or (pattern is not None and not pattern.match(value)):
        raise _bad(f"mount {where}: invalid value in option {opt!r}", field, opt)


#: :func:`_parse_mount` results by what they depend on: the entry's fields, the bundle,
#: the label and the host's cgroup version (a pure function of those: nothing on disk)
_PARSED: dict[tuple[Any, ...], MountOp] = {}
_PARSED_MAX = 512


def _parse_mount_cached(index: int, m: Mapping[str, Any], bundle: str | None,
                        selinux_label: str, cgroup2_host: bool) -> MountOp:
    """:func:`_parse_mount`, remembered for an entry of plain values seen before (a
    config's mounts are mostly the same defaults from one container to the next)."""
    key: tuple[Any, ...] | None = None
    if type(m) is dict and m.keys() <= {"destination", "type", "source", "options"}:
        options = m.get("options")
        try:
            key = (m.get("destination"), m.get("type"), m.get("source"), type(options),
                   tuple(options) if isinstance(options, list) else options, bundle,
                   selinux_label, cgroup2_host)
            found = _PARSED.get(key)
        except TypeError:  # an unhashable value: parsed (and refused) below
            key = found = None
        if found is not None:
            return found
    op = _parse_mount(index, m, bundle, selinux_label, cgroup2_host)
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = op
    return op


def _parse_mount(index: int, m: Mapping[str, Any], bundle: str | None, selinux_label: str,
                 cgroup2_host: bool) -> MountOp:
    where_field = f"mounts[{index}]"
    if not isinstance(m, Mapping):
        raise _bad(f"{where_field} must be an object, got {m!r}", where_field, m)
    dest = m.get("destination")
    if not isinstance(dest, str) or not dest:
        raise _bad(f"{where_field}: destination is required", f"{where_field}.destination", dest)
    where = dest
    clean_dest = _clean(dest)
    if clean_dest == "/":
        raise _bad(f"mount {where}: cannot mount over the root (use root.path)",
                   f"{where_field}.destination", dest)
    options = m.get("options") or ()
    if isinstance(options, str) or not all(isinstance(o, str) for o in options):
        raise _bad(f"mount {where}: options must be a list of strings",
                   f"{where_field}.options", options)
    flags = clear = rec_set = rec_clear = 0
    propagation: list[int] = []
    data: list[str] = []
    copy_up = False
    for opt in options:
        if opt in _FLAGS:
            is_clear, bit = _FLAGS[opt]
            if is_clear:
                flags, clear = flags & ~bit, clear | bit
            else:
                flags, clear = flags | bit, clear & ~bit
        elif opt in _PROPAGATION:
            propagation.append(_PROPAGATION[opt])
        elif opt in _REC_ATTRS:
            is_clear, attr = _REC_ATTRS[opt]
            if is_clear:
                rec_clear |= attr
            else:
                rec_set |= attr
            if attr & _ATTR_ATIME_MASK or attr == _ATTR_RELATIME:  # an atime mode
                rec_clear |= _ATTR_ATIME_MASK
        elif opt == "tmpcopyup":
            copy_up = True
        elif opt in ("idmap", "ridmap"):
            raise _bad(f"mount {where}: option {opt!r} needs a user namespace, which this "
                       "runtime does not create", f"{where_field}.options", opt)
        elif opt.startswith("x-"):
            continue  # mount(8): userspace-only options, never given to the kernel
        else:
            data.append(opt)
    mtype = m.get("type") or ""
    if not isinstance(mtype, str):
        raise _bad(f"mount {where}: type must be a string", f"{where_field}.type", mtype)
    if mtype == "bind":
        flags |= sc.MS_BIND
    if flags & sc.MS_BIND:
        mtype = "bind"
    elif not mtype:
        raise _bad(f"mount {where}: no type and no bind/rbind option",
                   f"{where_field}.type", mtype)
    if mtype == "cgroup" and cgroup2_host:
        mtype = "cgroup2"
    if mtype in _FS_OPTIONS:
        for opt in data:
            _check_data(mtype, opt, where, f"{where_field}.options")
    if copy_up and mtype != "tmpfs":
        raise _bad(f"mount {where}: option 'tmpcopyup' is only for tmpfs mounts",
                   f"{where_field}.options", "tmpcopyup")
    source = m.get("source") or ""
    if not isinstance(source, str):
        raise _bad(f"mount {where}: source must be a string", f"{where_field}.source", source)
    if mtype == "bind":
        if not os.path.isabs(source):
            if bundle is None or not source:
                raise _bad(f"mount {where}: bind mount source must be an absolute path, got "
                           f"{source!r}", f"{where_field}.source", source)
            source = os.path.join(bundle, source)
        data = []  # checked above; the kernel ignores data for a bind
    elif selinux_label and mtype not in ("proc", "sysfs", "cgroup", "cgroup2", "mqueue"):
        data.append(f'context="{selinux_label}"')
    return MountOp(clean_dest, mtype, source, flags, tuple(propagation), ",".join(data),
                   clear, rec_set, rec_clear, copy_up)


def _int_field(d: Mapping[str, Any], key: str, field: str, default: int | None = None) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{field}.{key} must be a non-negative integer, got {value!r}",
                   f"{field}.{key}", value)
    return value


def _parse_devices(entries: Sequence[Mapping[str, Any]]) -> tuple[DeviceNode, ...]:
    nodes: list[DeviceNode] = []
    for i, d in enumerate(entries):
        field = f"linux.devices[{i}]"
        if not isinstance(d, Mapping):
            raise _bad(f"{field} must be an object, got {d!r}", field, d)
        path = d.get("path")
        if not isinstance(path, str) or not path.startswith("/") or _clean(path) == "/":
            raise _bad(f"{field}.path must be an absolute file path, got {path!r}",
                       f"{field}.path", path)
        kind = d.get("type")
        if kind not in ("c", "b", "u", "p"):
            raise _bad(f"{field}.type of {path} must be c, b, u or p, got {kind!r}",
                       f"{field}.type", kind)
        major = _int_field(d, "major", field, 0 if kind == "p" else None)
        minor = _int_field(d, "minor", field, 0 if kind == "p" else None)
        mode = _int_field(d, "fileMode", field, 0o666) & 0o7777
        nodes.append(DeviceNode(_clean(path), kind, major, minor, mode,
                                _int_field(d, "uid", field, 0), _int_field(d, "gid", field, 0)))
    return tuple(nodes)


_kcore: list[bool] = []


def _host_has_kcore() -> bool:
    """Whether the host has ``/proc/kcore`` (a kernel build option: looked up once)."""
    if not _kcore:
        _kcore.append(os.path.exists("/proc/kcore"))
    return _kcore[0]


def _cgroup_v1_hierarchies() -> tuple[tuple[str, str], ...]:
    """``(directory name, controllers)`` of each v1 hierarchy under ``/sys/fs/cgroup``
    that a container joins (``cgroups.V1_CONTROLLERS``): what a ``type: cgroup``
    mount shows, mounted with the same controllers (the kernel refuses others)."""
    from .cgroups import V1_CONTROLLERS
    from .mounts import mountinfo

    out: dict[str, str] = {}
    for m in mountinfo():
        parent, name = os.path.split(m.mount_point)
        if m.fstype != "cgroup" or parent != "/sys/fs/cgroup" or name in out:
            continue
        controllers = [o for o in m.super_options.split(",") if o in V1_CONTROLLERS]
        if controllers:
            out[name] = ",".join(controllers)
    return tuple(sorted(out.items()))


def plan_rootfs(config: Mapping[str, Any], rootfs: Path | str, *,
                bundle: Path | str | None = None, no_pivot: bool = False) -> RootfsPlan:
    """The :class:`RootfsPlan` of config.json for a rootfs mounted at ``rootfs``:
    ``mounts`` (in order), ``linux.devices``, ``linux.maskedPaths``,
    ``linux.readonlyPaths``, ``linux.rootfsPropagation``, ``linux.mountLabel``
    (SELinux ``context=``, only on a host with SELinux), ``root.readonly``,
    ``process.cwd``. Relative bind sources are relative to ``bundle``. ``enter``
    (:data:`Enter`): ``chroot`` when ``linux.namespaces`` has no ``mount`` (runc's
    ``chroot``), else ``move`` with ``no_pivot`` (runc's ``--no-pivot``), else
    ``pivot_root``.

    Raises ``InvalidOptionError`` (a ``ValueError``) naming the field, and for a
    mount its destination and the option: an unknown option for a filesystem type
    we mount (bind, tmpfs, proc, sysfs, devpts, mqueue, cgroup, cgroup2; options of
    other types go to the kernel as data, as the spec says), a malformed value
    (``size=``, ``mode=``...), a relative bind source without a bundle, a bad device
    or propagation; without a mount namespace, a user namespace (its root cannot
    mount in the caller's namespace: ``linux.namespaces``) or a rootfs that is the
    host's ``/`` (``root.path``: it cannot be bound onto itself and taken off again).
    """
    linux = config.get("linux") or {}
    label = linux.get("mountLabel") or ""
    selinux = bool(label) and os.path.exists("/sys/fs/selinux/enforce")
    raw_mounts = config.get("mounts") or ()
    cgroup2_host = False
    if any(isinstance(m, Mapping) and m.get("type") == "cgroup" for m in raw_mounts):
        try:
            cgroup2_host = sc.statfs_type("/sys/fs/cgroup") == _CGROUP2_SUPER_MAGIC
        except OSError:
            pass
    base = os.fspath(Path(bundle)) if bundle is not None else None
    mounts = tuple(_parse_mount_cached(i, m, base, label if selinux else "", cgroup2_host)
                   for i, m in enumerate(raw_mounts))
    propagation_name = linux.get("rootfsPropagation") or ""
    if propagation_name and propagation_name not in _PROPAGATION:
        raise _bad(f"linux.rootfsPropagation must be one of {sorted(_PROPAGATION)}, got "
                   f"{propagation_name!r}", "linux.rootfsPropagation", propagation_name)
    for key in ("maskedPaths", "readonlyPaths"):
        for path in linux.get(key) or ():
            if not isinstance(path, str) or not path.startswith("/"):
                raise _bad(f"linux.{key}: {path!r} is not an absolute path",
                           f"linux.{key}", path)
    configured = _parse_devices(linux.get("devices") or ())
    paths = {d.path for d in configured}
    devices = tuple(d for d in DEFAULT_DEVICE_NODES if d.path not in paths) + tuple(
        d for d in configured if d.path != "/dev/ptmx")  # /dev/ptmx: the pts/ptmx symlink
    namespaces = {n.get("type") for n in linux.get("namespaces") or ()
                  if isinstance(n, Mapping)}
    enter: Enter = "chroot" if "mount" not in namespaces else ("move" if no_pivot
                                                                else "pivot_root")
    if enter == "chroot" and "user" in namespaces:
        raise _bad("linux.namespaces: a user namespace without a mount namespace cannot set "
                   "up the rootfs (its root may not mount in the runtime's mount namespace): "
                   "add {\"type\": \"mount\"}", "linux.namespaces", sorted(namespaces))
    if enter == "chroot" and os.path.realpath(rootfs) == "/":
        raise _bad("root.path: without a mount namespace the rootfs cannot be the host's "
                   "'/' (add {\"type\": \"mount\"} to linux.namespaces)", "root.path",
                   str(rootfs))
    process = config.get("process") or {}
    return RootfsPlan(
        rootfs=str(rootfs).rstrip("/") or "/",
        mounts=mounts,
        masked_paths=tuple(linux.get("maskedPaths") or ()),
        readonly_paths=tuple(linux.get("readonlyPaths") or ()),
        readonly_rootfs=bool((config.get("root") or {}).get("readonly", False)),
        devices=devices,
        setup_dev=not any(m.type == "bind" and m.destination == "/dev" for m in mounts),
        dev_core=_host_has_kcore(),
        root_propagation=_PROPAGATION.get(propagation_name, 0),
        cgroup_v1=() if cgroup2_host or not any(m.type == "cgroup" for m in mounts)
        else _cgroup_v1_hierarchies(),
        cgroupns="cgroup" in namespaces,
        cwd=process.get("cwd") or "/",
        enter=enter,
    )
