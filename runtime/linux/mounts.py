"""Mounts: on the host, ``/proc/self/mountinfo``, the overlay rootfs and lazy
unmounts; in the container init, its filesystem set up in its own mount namespace
around ``pivot_root`` from a :class:`~.rootfs.RootfsPlan` (made by
:func:`~.rootfs.plan_rootfs` in the parent, re-exported here), or, for a config
without a mount namespace, in the caller's and entered with ``chroot`` (runc's
``chroot``; :mod:`.hostmounts` records and undoes those mounts).

:func:`mount_root` (the overlay, or ``root.path`` bound onto itself),
:func:`setup_rootfs` (mounts, devices, read-only and masked paths, ``pivot_root``,
``MS_MOVE`` or ``chroot``, rootfs propagation, ``root.readonly``) and
:func:`finish_rootfs` (cgroup filesystems, once the init is in its cgroup) run in
the forked init, between ``fork`` and ``exec``: syscalls and already-imported
modules only (no imports, threads or logging). Every path of the config lands inside the rootfs
(:func:`resolve_in_root`, securejoin semantics). Implements runtime-spec
``config.md#mounts`` and ``config-linux.md`` (default filesystems and devices,
masked and read-only paths, rootfs propagation) as runc 1.1's
``libcontainer/rootfs_linux.go`` does; the kernel's ``Documentation/filesystems/proc.rst``
3.5 (mountinfo) and ``overlayfs.rst``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import syscalls as sc
from .rootfs import (
    DEFAULT_DEVICE_NODES,
    DEFAULT_DEVICES,
    MS_NOSYMFOLLOW,
    DeviceNode,
    Enter,
    MountOp,
    RootfsPlan,
    parse_options,
    plan_rootfs,
)

__all__ = [
    "DEFAULT_DEVICES",
    "DEFAULT_DEVICE_NODES",
    "DeviceNode",
    "Enter",
    "MountInfo",
    "MountOp",
    "OVERLAY_SOURCE",
    "RootfsPlan",
    "finish_rootfs",
    "is_mounted",
    "chroot_into",
    "mount_overlay",
    "mount_root",
    "mountinfo",
    "move_into",
    "overlay_options",
    "parse_options",
    "pivot_into",
    "plan_rootfs",
    "resolve_in_root",
    "setup_rootfs",
    "unmount",
]

#: the overlay's source name: a leaked mount shows up as ``ptc`` in mountinfo
OVERLAY_SOURCE = "ptc"
#: runc's ``setupDevSymlinks`` (``/dev/core`` only when the host has ``/proc/kcore``)
_DEV_SYMLINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                 ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"))
#: per-mount flags a bind remount sets (the rest of ``flags`` is ignored by it)
_BIND_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME \
    | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME | MS_NOSYMFOLLOW
#: ``statvfs`` ``f_flag`` bits a bind remount keeps unless the config clears them
#: (``ST_RDONLY``, ``ST_NOSUID``, ``ST_NODEV``, ``ST_NOEXEC`` equal their ``MS_*``)
_KEPT = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC

#: what runc's ``checkProcMount`` lets a mount cover below ``/proc`` (lxcfs)
_PROC_ALLOWED = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid"})
#: filesystems whose fresh mount holds only what the kernel puts there (no symlink of
#: the image): a path below one is the mount's target plus the rest, as is
_KERNEL_FS = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue"})
_DEFAULT_MOUNT_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (Linux 5.12)
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000


@dataclass(frozen=True)
class MountInfo:
    """One line of ``/proc/self/mountinfo`` (kernel ``Documentation/filesystems/proc.rst``
    3.5), octal escapes such as ``\\040`` decoded: ``mount_point``, ``fstype``,
    ``source``; ``root`` (the mounted directory of the filesystem), ``options`` (per
    mount, ``rw,nosuid,...``), ``super_options`` (per superblock: for cgroup v1 the
    controllers, ``rw,memory``), ``optional`` (``shared:N master:N``...);
    ``mount_id``/``parent_id``: the mount's id and its parent's (fields 1 and 2,
    reused once a mount is gone)."""

    mount_point: str
    fstype: str
    source: str
    root: str = "/"
    options: str = ""
    super_options: str = ""
    optional: str = ""
    mount_id: int = 0
    parent_id: int = 0


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
                out.append(MountInfo(
                    _unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2]),
                    root=_unescape(fields[3]), options=fields[5],
                    super_options=fields[sep + 3] if len(fields) > sep + 3 else "",
                    optional=" ".join(fields[6:sep]), mount_id=int(fields[0]),
                    parent_id=int(fields[1])))
            except (ValueError, IndexError):
                continue
    return out


def is_mounted(path: Path | str) -> bool:
    """Whether ``path`` is a mount point in this mount namespace."""
    target = str(path)
    return any(m.mount_point == target for m in mountinfo())


# -- the overlay rootfs ----------------------------------------------------------------


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


# -- the container side (in the init, between fork and exec) ---------------------------


def resolve_in_root(root: str, path: str) -> str:
    """``root`` joined with ``path`` as if ``root`` were ``/`` (securejoin semantics):
    symlinks are followed relative to ``root`` (an absolute target restarts at
    ``root``), ``..`` stops at it, missing components are taken as they are, so the
    result never leaves ``root`` (a symlink in the image cannot point a mount at the
    host). Raises ``OSError(ELOOP)`` after 40 symlinks."""
    root = root.rstrip("/")
    parts = [p for p in path.split("/") if p]
    parts.reverse()  # a stack: the next component is last
    resolved: list[str] = []
    links = 0
    missing = False
    while parts:
        part = parts.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            missing = False
            continue
        if missing:
            resolved.append(part)
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            missing = True
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", root + path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts.extend(reversed([p for p in target.split("/") if p]))
            continue
        resolved.append(part)
    return root + ("/" + "/".join(resolved) if resolved else "")


def _make_target(path: str, is_dir: bool) -> None:
    """Create the mount target ``path`` (resolved, inside the rootfs) if missing: a
    directory, or an empty file (and its parent directories)."""
    if not is_dir:
        try:
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        except FileExistsError:
            pass
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        return
    try:
        os.mkdir(path, 0o755)  # the common case: the parent exists, one syscall
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "mount target is not a directory",
                                     path) from None
    except FileNotFoundError:
        os.makedirs(path, 0o755, exist_ok=True)


def _kept_flags(target: str) -> int:
    """The ro/nosuid/nodev/noexec flags of ``target``'s mount (``statvfs``)."""
    return os.statvfs(target).f_flag & _KEPT


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _mount_setattr_recursive(target: str, attr_set: int, attr_clear: int) -> None:
    """``mount_setattr(AT_FDCWD, target, AT_RECURSIVE, {attr_set, attr_clr})``: change
    the flags of the mount at ``target`` and of every mount below it (Linux 5.12)."""
    attr = _MountAttr(attr_set, attr_clear, 0, 0)
    if _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD),
                     ctypes.c_char_p(os.fsencode(target)), ctypes.c_uint(_AT_RECURSIVE),
                     ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount_setattr: {os.strerror(err)}", target)


def _copy_up(src_fd: int, dst: str) -> None:
    """Copy the tree open as ``src_fd`` into the directory ``dst`` (``tmpcopyup``):
    directories, regular files, symlinks, device nodes and fifos, with owner, mode
    and times."""
    for entry in os.scandir(src_fd):
        name = entry.name
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        out = dst + "/" + name
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(out, 0o700)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=src_fd)
            try:
                _copy_up(sub, out)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                fout = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    while os.sendfile(fout, fin, None, 1 << 20):
                        pass
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), out)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            os.mknod(out, st.st_mode, st.st_rdev)
        else:
            continue  # sockets: meaningless in a copy
        os.chown(out, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(out, stat.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _check_proc(root: str, target: str, op: MountOp) -> None:
    """runc's ``checkProcMount``: only proc on ``/proc``, and below it only the files
    lxcfs emulates."""
    proc = root + "/proc"
    if target == proc:
        if op.type != "proc":
            raise PermissionError(errno.EPERM, f"only proc may be mounted on /proc, not "
                                  f"{op.type}", op.destination)
    elif target.startswith(proc + "/") and target[len(root):] not in _PROC_ALLOWED:
        raise PermissionError(errno.EPERM, "mount inside /proc is not allowed", op.destination)


def _kernel_fs_target(root: str, targets: _Targets, op: MountOp) -> str:
    """runc's rule for proc and sysfs: the destination itself must be a real directory
    (an image's ``/proc -> /etc`` symlink is refused, not followed)."""
    parent, name = op.destination.rsplit("/", 1)
    target = (targets.resolve(parent) if parent else root) + "/" + name
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{op.type} must be mounted on a directory, "
                                 f"and {op.destination} in the rootfs is not one", target)
    return target


def _mount_one(root: str, op: MountOp, target: str, ro_later: list[tuple[str, int]]) -> None:
    if op.is_bind:
        try:
            source_is_dir = stat.S_ISDIR(os.stat(op.source).st_mode)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "bind mount source does not exist",
                                    op.source) from None
        _check_proc(root, target, op)
        _make_target(target, source_is_dir)
        sc.mount(op.source, target, None, op.flags & (sc.MS_BIND | sc.MS_REC))
        # a bind takes the source mount's flags: ``ro`` & co need a remount (keeping the
        # source's ro/nosuid/nodev/noexec unless the options clear them: ``rw``, ``suid``)
        if op.flags & _BIND_FLAGS or op.clear_flags & _KEPT:
            kept = _kept_flags(target)
            if op.flags & _BIND_FLAGS or kept & op.clear_flags:
                flags = (kept & ~op.clear_flags) | (op.flags & _BIND_FLAGS)
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
    else:
        if op.type not in ("proc", "sysfs"):
            _check_proc(root, target, op)
        mode = None
        if op.type == "tmpfs" and "mode=" not in op.data:
            try:
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except FileNotFoundError:
                pass
        _make_target(target, True)
        flags = op.flags
        if op.flags & sc.MS_RDONLY and (op.type == "tmpfs" or op.destination == "/dev"):
            flags &= ~sc.MS_RDONLY  # runc: filled first (devices, copy-up), ro at the end
            ro_later.append((target[len(root):], op.flags & _BIND_FLAGS))
        below = -1
        if op.copy_up:
            below = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                sc.mount(op.source or op.type, target, op.type, flags, op.data or None)
            except PermissionError:
                if op.type != "sysfs":
                    raise
                # runc: no sysfs in a user namespace without its own netns; bind the host's
                sc.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & _BIND_FLAGS))
            if below >= 0:
                _copy_up(below, target)
            if mode is not None:
                os.chmod(target, mode)  # like runc: keep the image's mode (/tmp 1777)
        finally:
            if below >= 0:
                os.close(below)
    for propagation in op.propagation:
        sc.mount(None, target, None, propagation)
    if op.rec_set or op.rec_clear:
        _mount_setattr_recursive(target, op.rec_set, op.rec_clear)


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
                    break  # below a bind mount or a copy: walk it
        return resolve_in_root(self.root, path)

    def add(self, destination: str, target: str, kernel_fs: bool) -> None:
        self.mounted["/" + "/".join(p for p in destination.split("/") if p)] = (target, kernel_fs)


#: what :func:`setup_rootfs` leaves for :func:`finish_rootfs` (in the init's own memory):
#: ``(container path, mount)`` of the cgroup mounts, and an fd of the cgroup namespace
#: the init started in (to come back to when the config has none of its own)
_cgroup_pending: list[tuple[str, MountOp]] = []
_cgroupns_fd = [-1]


def _prepare_cgroup(plan: RootfsPlan, op: MountOp, target: str) -> None:
    """v1: a tmpfs at ``target`` with one directory per hierarchy (and runc's
    symlinks ``cpu -> cpu,cpuacct``); v2: the directory. :func:`finish_rootfs` mounts."""
    _make_target(target, True)
    if op.type == "cgroup":
        sc.mount("tmpfs", target, "tmpfs", _DEFAULT_MOUNT_FLAGS, "mode=755")
        for name, _data in plan.cgroup_v1:
            os.mkdir(target + "/" + name, 0o755)
        for name, _data in plan.cgroup_v1:
            if "," in name:
                for part in name.split(","):
                    try:
                        os.symlink(name, target + "/" + part)
                    except FileExistsError:
                        pass
    for propagation in op.propagation:
        sc.mount(None, target, None, propagation)
    if not plan.cgroupns and _cgroupns_fd[0] < 0:
        _cgroupns_fd[0] = os.open("/proc/self/ns/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    _cgroup_pending.append((target[len(plan.rootfs):], op))


def _make_devices(targets: _Targets, devices: Sequence[DeviceNode]) -> None:
    """Create each device node: ``mknod`` + ``chown``, or (``mknod`` not permitted, as in
    a user namespace) an empty file with the host's node of the same path bound on it.
    A default device replaces what is there; a configured one may only find the same
    node (``config-linux.md#configLinuxDevices``)."""
    old_umask = os.umask(0)
    try:
        can_mknod = True
        for node in devices:
            target = targets.resolve(node.path)
            default = node in DEFAULT_DEVICE_NODES
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                pass
            else:
                same = (stat.S_IFMT(st.st_mode) == node.kind
                        and (node.type == "p" or st.st_rdev == os.makedev(node.major, node.minor)))
                if not default:
                    if not same:
                        raise FileExistsError(errno.EEXIST, "a different file exists at the "
                                              "device's path", node.path)
                    os.chmod(target, node.file_mode)
                    os.chown(target, node.uid, node.gid)
                    continue
                os.unlink(target)
            if can_mknod:
                try:
                    _mknod(target, node)
                    continue
                except PermissionError:
                    can_mknod = False
            else:
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            sc.mount(node.path, target, None, sc.MS_BIND)
    finally:
        os.umask(old_umask)


def _mknod(target: str, node: DeviceNode) -> None:
    """``mknod`` + ``chown``; the parent directories are made only when missing."""
    try:
        os.mknod(target, node.kind | node.file_mode, os.makedev(node.major, node.minor))
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.mknod(target, node.kind | node.file_mode, os.makedev(node.major, node.minor))
    if node.uid or node.gid:
        os.chown(target, node.uid, node.gid)


def _dev_links(dev: str, core: bool) -> None:
    """``/dev/fd``, ``/dev/std{in,out,err}``, ``/dev/core`` and ``/dev/ptmx -> pts/ptmx``
    (runc's ``setupDevSymlinks`` and ``setupPtmx``)."""
    for src, name in _DEV_SYMLINKS + ((("/proc/kcore", "core"),) if core else ()):
        try:
            os.symlink(src, dev + "/" + name)
        except FileExistsError:
            pass
    ptmx = dev + "/ptmx"
    try:
        os.unlink(ptmx)
    except FileNotFoundError:
        pass
    os.symlink("pts/ptmx", ptmx)


def _mask(path: str) -> None:
    """runc's ``maskPath``: ``/dev/null`` over a file, an empty read-only tmpfs over a
    directory; a missing path is fine."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, None)
    else:
        sc.mount("/dev/null", path, None, sc.MS_BIND)


def _make_readonly(path: str) -> None:
    """runc's ``readonlyPath``: bind ``path`` on itself, remount read-only keeping
    nosuid/nodev/noexec; a missing path is fine."""
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except (FileNotFoundError, NotADirectoryError):
        return
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _kept_flags(path))


def mount_root(plan: RootfsPlan, overlay_data: str | None, step: list[str]) -> None:
    """Mount the rootfs at ``plan.rootfs``: the overlay of ``overlay_data``
    (:func:`overlay_options`, source ``ptc``), else ``root.path`` bound onto itself
    (``MS_BIND | MS_REC``, runc's ``prepareRoot``). Without a mount namespace of the
    init's own (``plan.enter == "chroot"``) that mount is made in the caller's
    namespace and at once ``rprivate`` (only it and the copies below it: the
    propagation of ``/`` and of every other mount of the caller stays as it is), so
    that nothing mounted below it propagates anywhere; every mount of the set-up lies
    below it, and :mod:`.hostmounts` takes it off with them. Raises ``OSError``."""
    root = plan.rootfs
    if overlay_data is not None:
        step[0] = "overlay"
        sc.mount(OVERLAY_SOURCE, root, "overlay", 0, overlay_data)
        if plan.enter == "chroot":
            sc.mount(None, root, None, sc.MS_PRIVATE)
        return
    step[0] = "root"
    if plan.enter != "chroot":
        sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
        return
    # in the caller's namespace: a recursive bind under a shared parent would leave a
    # copy of the caller's mounts below the rootfs in each peer, which no unmount of
    # ours takes away; so the rootfs alone, made private at once, then each mount the
    # caller shows below it bound recursively into that (copies, made private too)
    below = [(path, os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC))
             for path in _visible_mounts_below(root)]
    try:
        sc.mount(root, root, None, sc.MS_BIND)
        sc.mount(None, root, None, sc.MS_PRIVATE)
        for path, fd in below:
            sc.mount(f"/proc/self/fd/{fd}", path, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)
    finally:
        for _, fd in below:
            os.close(fd)


def _visible_mounts_below(root: str) -> list[str]:
    """The mount points strictly below ``root`` that are not below another of them,
    sorted: the mounts seen through ``root``, each with its own below it."""
    inside = os.path.realpath(root).rstrip("/") + "/"
    points = sorted({m.mount_point for m in mountinfo() if m.mount_point.startswith(inside)})
    out: list[str] = []
    for point in points:
        if not out or not point.startswith(out[-1].rstrip("/") + "/"):
            out.append(point)
    return out


def setup_rootfs(plan: RootfsPlan, step: list[str]) -> None:
    """Set up the container's filesystem and enter it (``plan.enter``).

    Called by the container init once :func:`mount_root` has mounted the rootfs at
    ``plan.rootfs``, in its fresh mount namespace (private), or without one in the
    caller's (below that rprivate mount). In order (runc's ``prepareRootfs``,
    ``finalizeRootfs``, then its read-only and masked paths): each of ``plan.mounts``
    at its destination resolved inside the rootfs (targets created as directory or
    file); device nodes, ``/dev`` symlinks and ``/dev/ptmx``; read-only tmpfs mounts
    remounted read-only; read-only paths; masked paths (with the host's ``/dev/null``:
    a rootfs without one can still be masked); ``pivot_root`` with the old root
    detached (:func:`pivot_into`), ``MS_MOVE`` onto ``/`` and ``chroot``
    (:func:`move_into`, ``--no-pivot``) or ``chroot`` alone (:func:`chroot_into`);
    ``linux.rootfsPropagation`` on ``/`` (without a mount namespace: the rootfs
    mount);
    ``process.cwd`` made if missing; ``root.readonly``. Every path of the config is
    resolved inside the rootfs (:func:`resolve_in_root`). ``type: cgroup`` mounts get
    their directories here and their filesystems from :func:`finish_rootfs`.

    ``step[0]`` names the current step for the error report (``mount <destination>``,
    ``devices``, ``pivot_root``, ``chroot``...). Raises ``OSError`` with the path.
    """
    root = plan.rootfs
    targets = _Targets(root)
    _cgroup_pending.clear()
    ro_later: list[tuple[str, int]] = []
    for op in plan.mounts:
        step[0] = f"mount {op.destination}"
        if op.type in ("proc", "sysfs"):
            target = _kernel_fs_target(root, targets, op)
        else:
            target = targets.resolve(op.destination)
        if op.type in ("cgroup", "cgroup2"):
            _prepare_cgroup(plan, op, target)
            targets.add(op.destination, target, False)
            continue
        _mount_one(root, op, target, ro_later)
        targets.add(op.destination, target,
                    not op.is_bind and op.type in _KERNEL_FS and not op.copy_up)
    if plan.setup_dev:
        step[0] = "devices"
        dev = targets.resolve("/dev")
        _make_target(dev, True)
        _make_devices(targets, plan.devices)
        _dev_links(dev, plan.dev_core)
    for path, flags in ro_later:
        step[0] = f"mount {path}"
        sc.mount(None, root + path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | flags)
    step[0] = "readonly paths"
    for path in plan.readonly_paths:
        _make_readonly(targets.resolve(path))
    step[0] = "masked paths"
    for path in plan.masked_paths:
        _mask(targets.resolve(path))
    step[0] = plan.enter
    if plan.enter == "pivot_root":
        pivot_into(root)
    elif plan.enter == "move":
        move_into(root)
    else:
        chroot_into(root)
    if plan.root_propagation:
        step[0] = "rootfs propagation"
        sc.mount(None, "/", None, plan.root_propagation)
    if plan.cwd not in ("", "/"):
        step[0] = "cwd"
        try:
            os.makedirs(plan.cwd, 0o755, exist_ok=True)
        except FileExistsError:
            pass  # a symlink or a file: chdir reports it
    if plan.readonly_rootfs:
        step[0] = "readonly rootfs"
        sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _kept_flags("/"))


def finish_rootfs(plan: RootfsPlan, step: list[str]) -> None:
    """Mount the cgroup filesystems of the ``type: cgroup``/``cgroup2`` mounts that
    :func:`setup_rootfs` prepared, so that each shows the container's own cgroup.

    Call it in the init after :func:`setup_rootfs`, once the init is in its cgroup,
    and, when the config has a cgroup namespace, after ``unshare(CLONE_NEWCGROUP)``;
    while it still has ``CAP_SYS_ADMIN``. v1: each hierarchy of ``plan.cgroup_v1``
    mounted with its controllers (runc's ``mountCgroupV1`` with a cgroup namespace);
    v2: ``cgroup2``. Without a cgroup namespace in the config the init unshares one
    for the mounts and goes back to its own after (the result is runc's bind of the
    container's cgroup). The v1 tmpfs turns read-only when the mount is ``ro``.
    Nothing to do without cgroup mounts. Raises ``OSError``.
    """
    if not _cgroup_pending:
        return
    own_ns = _cgroupns_fd[0]
    if own_ns >= 0:
        step[0] = "cgroup namespace"
        sc.unshare(sc.CLONE_NEWCGROUP)
    try:
        for path, op in _cgroup_pending:
            step[0] = f"mount {op.destination}"
            flags = (op.flags | _DEFAULT_MOUNT_FLAGS) & ~(sc.MS_BIND | sc.MS_REC)
            if op.type == "cgroup2":
                sc.mount(op.source or "cgroup2", path, "cgroup2", flags, op.data or None)
                continue
            for name, data in plan.cgroup_v1:
                sc.mount("cgroup", path + "/" + name, "cgroup", flags, data)
            if op.flags & sc.MS_RDONLY:
                sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
                         | _DEFAULT_MOUNT_FLAGS)
    finally:
        if own_ns >= 0:
            sc.setns(own_ns, sc.CLONE_NEWCGROUP)
            os.close(own_ns)
            _cgroupns_fd[0] = -1
        _cgroup_pending.clear()


def chroot_into(root: str) -> None:
    """Make ``root`` the root of this process alone: ``chdir``, ``chroot(".")``,
    ``chdir("/")`` (runc's ``chroot``, for a container without a mount namespace:
    ``pivot_root`` would move the root of the caller's namespace)."""
    os.chdir(root)
    os.chroot(".")
    os.chdir("/")


#: filesystems a ``--no-pivot`` init takes away from its mount namespace before the move
#: (runc's ``msMoveRoot``): with a full mount of them visible the kernel lets the
#: container mount another
_FULL_MOUNTS_HIDDEN = ("proc", "sysfs")


def move_into(root: str) -> None:
    """runc's ``msMoveRoot`` (``--no-pivot``), in the init's own, private, mount
    namespace: every full mount (root ``/``) of proc or sysfs outside ``root``
    unmounted (``MNT_DETACH``; where that is refused, covered with an empty tmpfs),
    then the mount at ``root`` moved onto ``/`` (``MS_MOVE``) and :func:`chroot_into`
    it. The old root stays below, out of the chroot's reach."""
    real = os.path.realpath(root)
    inside = real.rstrip("/") + "/"
    for m in mountinfo():
        if (m.root != "/" or m.fstype not in _FULL_MOUNTS_HIDDEN
                or m.mount_point == real or m.mount_point.startswith(inside)):
            continue
        try:
            sc.umount2(m.mount_point, sc.MNT_DETACH)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue  # below a mount already taken away
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            sc.mount("tmpfs", m.mount_point, "tmpfs", 0, None)
    os.chdir(root)
    sc.mount(root, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def pivot_into(root: str) -> None:
    """Make ``root`` (a mount point) the root: ``pivot_root(".", ".")``, then the old
    root stacked on it made ``rslave`` and detached (runc's ``pivotRoot``); the cwd
    is ``/`` after."""
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
