"""Mounts: the overlay rootfs, and the container's filesystem set up inside its
own mount namespace up to ``pivot_root``.

Implements runtime-spec ``config.md#mounts``, ``config-linux.md#default-devices``,
``#masked-paths``, ``#readonly-paths`` and ``#root``. :func:`plan_rootfs` runs in
the parent and turns config.json into a :class:`RootfsPlan` of ready values;
:func:`setup_rootfs` runs in the forked container init, between ``fork`` and
``exec``, and uses only syscalls (no imports, threads or logging).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import syscalls as sc


@dataclass(frozen=True)
class MountInfo:
    """One line of ``/proc/self/mountinfo`` (kernel ``Documentation/filesystems/proc.rst``
    3.5): ``mount_point`` (octal escapes such as ``\\040`` decoded), ``fstype``, ``source``."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def mountinfo() -> list[MountInfo]:
    """The mounts of this process's mount namespace, in mount order."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-")
                out.append(MountInfo(_unescape(fields[4]), fields[sep + 1], fields[sep + 2]))
            except (ValueError, IndexError):
                continue
    return out


def is_mounted(path: Path | str) -> bool:
    """Whether ``path`` is a mount point in this mount namespace."""
    target = str(path)
    return any(m.mount_point == target for m in mountinfo())

__all__ = [
    "DEFAULT_DEVICES",
    "MountOp",
    "OVERLAY_SOURCE",
    "RootfsPlan",
    "mount_overlay",
    "overlay_options",
    "parse_options",
    "plan_rootfs",
    "resolve_in_root",
    "setup_rootfs",
    "unmount",
]

#: the overlay's source name: a leaked mount shows up as ``ptc`` in mountinfo
OVERLAY_SOURCE = "ptc"
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: (major, minor) of the default devices (runtime-spec ``config-linux.md#default-devices``,
#: the kernel's ``Documentation/admin-guide/devices.txt``): made with ``mknod``
_DEVICE_NUMBERS = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                   "urandom": (1, 9), "tty": (5, 0)}
_DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
)

# option -> (clear, flag): runc's ``mountPropagationMapping``/``mountFlags`` table
_FLAGS: dict[str, tuple[bool, int]] = {
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
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
#: per-mount flags a bind remount can change
_BIND_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME \
    | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME


# -- host side ---------------------------------------------------------------------


def overlay_options(lowers: Sequence[Path], upper: Path, work: Path) -> str:
    """The overlay mount data; ``lowers`` base first (``lowerdir`` lists the top first)."""
    if not lowers:
        raise ValueError("an overlay needs at least one lower layer")
    paths = [str(p) for p in (*lowers, upper, work)]
    for p in paths:
        if any(c in p for c in ",:\\"):
            raise ValueError(f"overlay layer path must not contain ',', ':' or '\\': {p!r}")
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    return f"lowerdir={lowerdir},upperdir={upper},workdir={work}"


def mount_overlay(target: Path, lowers: Sequence[Path], upper: Path, work: Path) -> None:
    """Mount an overlay at ``target``: ``lowers`` base first, writes to ``upper``.

    The source name is ``ptc``, so a leaked mount is visible in ``/proc/self/mountinfo``.
    """
    sc.mount(OVERLAY_SOURCE, target, "overlay", 0, overlay_options(lowers, upper, work))


def unmount(target: Path) -> None:
    """Lazily unmount ``target`` (``MNT_DETACH``); not mounted or gone is fine."""
    try:
        sc.umount2(target, sc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def parse_options(options: Sequence[str]) -> tuple[int, int, str]:
    """Split runtime-spec mount ``options`` into ``(flags, propagation, data)``."""
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


@dataclass(frozen=True)
class MountOp:
    """One entry of config.json ``mounts``, parsed: ``destination`` is inside the rootfs."""

    destination: str
    type: str
    source: str
    flags: int
    propagation: int
    data: str

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


@dataclass(frozen=True)
class RootfsPlan:
    """Everything :func:`setup_rootfs` needs, computed in the parent."""

    rootfs: str
    mounts: tuple[MountOp, ...]
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    readonly_rootfs: bool = False
    devices: tuple[str, ...] = DEFAULT_DEVICES
    #: bind mount sources that are files (the target is created as a file)
    file_sources: frozenset[str] = field(default_factory=frozenset)


def plan_rootfs(config: dict[str, Any], rootfs: Path) -> RootfsPlan:
    """Parse config.json's ``mounts``, ``linux.maskedPaths``, ``linux.readonlyPaths`` and
    ``root.readonly`` for a rootfs mounted at ``rootfs``."""
    ops = []
    files = set()
    for m in config.get("mounts", ()):
        flags, prop, data = parse_options(m.get("options", ()))
        mtype = m.get("type", "bind" if flags & sc.MS_BIND else "")
        if mtype == "bind":
            flags |= sc.MS_BIND
        source = m.get("source", "")
        if flags & sc.MS_BIND:
            if not os.path.isabs(source):
                raise ValueError(f"bind mount source must be absolute: {source!r}")
            if not os.path.isdir(source):
                files.add(source)
        ops.append(MountOp(m["destination"], mtype, source, flags, prop, data))
    linux = config.get("linux", {})
    return RootfsPlan(
        rootfs=str(rootfs),
        mounts=tuple(ops),
        masked_paths=tuple(linux.get("maskedPaths", ())),
        readonly_paths=tuple(linux.get("readonlyPaths", ())),
        readonly_rootfs=bool(config.get("root", {}).get("readonly", False)),
        file_sources=frozenset(files),
    )


# -- container side (between fork and exec) ----------------------------------------


def resolve_in_root(root: str, path: str) -> str:
    """``root`` joined with ``path`` as if ``root`` were ``/``: symlinks are followed
    relative to ``root`` and ``..`` stops at it, so the result never leaves ``root``
    (a symlink in the image cannot point a mount at the host)."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many symlinks", root + path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return root + ("/" + "/".join(resolved) if resolved else "")


def _make_target(path: str, is_file: bool) -> None:
    if is_file:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        return
    try:
        os.mkdir(path)  # the common case: the parent exists, one syscall
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def _mount_one(op: MountOp, target: str, is_file: bool) -> None:
    _make_target(target, is_file)
    if op.is_bind:
        sc.mount(op.source, target, None, op.flags & (sc.MS_BIND | sc.MS_REC))
        extra = op.flags & _BIND_FLAGS
        if extra:
            sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | extra | _kept_flags(target))
    else:
        sc.mount(op.source or op.type, target, op.type, op.flags, op.data or None)
    if op.propagation:
        sc.mount(None, target, None, op.propagation)


def _kept_flags(target: str) -> int:
    """The nosuid/nodev/noexec flags ``target``'s mount has (a bind remount must
    repeat them or it drops them)."""
    f = os.statvfs(target).f_flag
    return f & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)


def _mask(target: str) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
    else:
        sc.mount("/dev/null", target, None, sc.MS_BIND)


def _make_readonly(target: str) -> None:
    try:
        os.lstat(target)
    except FileNotFoundError:
        return
    sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
    sc.mount(None, target, None,
             sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _kept_flags(target))


#: filesystems whose fresh mount holds only what the kernel puts there (no symlink of
#: the image): a path below one is the mount's target plus the rest, as is
_KERNEL_FS = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"})


class _Targets:
    """Where each path of the config lands under ``root``: :func:`resolve_in_root`,
    except below a fresh kernel filesystem mounted here (``/proc/kcore`` after
    ``/proc``), which needs no walk: its target plus the rest of the path."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.mounted: dict[str, tuple[str, bool]] = {}  # destination -> (target, kernel fs)

    def resolve(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        key = "/" + "/".join(parts)
        if key in self.mounted:
            return self.mounted[key][0]
        if "." not in parts and ".." not in parts:
            for i in range(len(parts) - 1, 0, -1):  # the longest mounted prefix
                found = self.mounted.get("/" + "/".join(parts[:i]))
                if found is not None:
                    if found[1]:
                        return found[0] + "/" + "/".join(parts[i:])
                    break  # below a bind mount: walk it
        return resolve_in_root(self.root, path)

    def add(self, destination: str, target: str, kernel_fs: bool) -> None:
        self.mounted["/" + "/".join(p for p in destination.split("/") if p)] = (target, kernel_fs)


def setup_rootfs(plan: RootfsPlan, step: list[str]) -> None:
    """Inside the container's fresh (private) mount namespace, with the rootfs already
    mounted at ``plan.rootfs``: the config's mounts, default devices, ``/dev``
    symlinks, masked and read-only paths, read-only rootfs, then ``pivot_root`` into
    it and detach the old root. ``step[0]`` names the current step for error reports.
    """
    root = plan.rootfs
    targets = _Targets(root)
    for op in plan.mounts:
        step[0] = f"mount {op.destination}"
        target = targets.resolve(op.destination)
        _mount_one(op, target, op.source in plan.file_sources)
        targets.add(op.destination, target, not op.is_bind and op.type in _KERNEL_FS)
    step[0] = "devices"
    dev = targets.resolve("/dev")
    _make_target(dev, False)
    _make_devices(dev, plan.devices)
    for src, name in _DEV_SYMLINKS:
        try:
            os.symlink(src, dev + "/" + name)
        except FileExistsError:
            pass
    step[0] = "masked paths"
    for path in plan.masked_paths:
        _mask(targets.resolve(path))
    step[0] = "readonly paths"
    for path in plan.readonly_paths:
        _make_readonly(targets.resolve(path))
    if plan.readonly_rootfs:
        step[0] = "readonly rootfs"
        sc.mount(None, root, None,
                 sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _kept_flags(root))
    step[0] = "pivot_root"
    pivot_into(root)


def _make_devices(dev: str, names: Sequence[str]) -> None:
    """Create ``dev/<name>`` for each device: ``mknod`` (mode 0666, like runc as root),
    or a bind mount of the host's ``/dev/<name>`` when the number is unknown or
    ``mknod`` is not permitted."""
    old_umask = os.umask(0)
    try:
        can_mknod = True
        for name in names:
            target = dev + "/" + name
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
            numbers = _DEVICE_NUMBERS.get(name)
            if numbers is not None and can_mknod:
                try:
                    os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(*numbers))
                    continue
                except PermissionError:
                    can_mknod = False
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            sc.mount("/dev/" + name, target, None, sc.MS_BIND)
    finally:
        os.umask(old_umask)


def pivot_into(root: str) -> None:
    """Make ``root`` (a mount point) the root: ``pivot_root(".", ".")`` then detach the
    old root stacked on it (runc's ``pivotRoot``)."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sc.pivot_root(".", ".")
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)
