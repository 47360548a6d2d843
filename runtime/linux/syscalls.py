"""ctypes wrappers of the Linux syscalls the engine needs and the stdlib lacks.

Each wrapper calls libc (loaded with ``use_errno=True``) and raises
``OSError(errno, strerror, path)`` on failure, like ``os`` functions do. They
allocate nothing but the ctypes call itself, so they are safe between
``fork`` and ``exec``. Constants are the kernel's (``<linux/sched.h>``,
``<linux/mount.h>``, ``<linux/prctl.h>``, ``<linux/capability.h>``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "CLOSE_RANGE_CLOEXEC",
    "MNT_DETACH",
    "MNT_EXPIRE",
    "MNT_FORCE",
    "MS_BIND",
    "MS_DIRSYNC",
    "MS_LAZYTIME",
    "MS_MANDLOCK",
    "MS_MOVE",
    "MS_NOATIME",
    "MS_NODEV",
    "MS_NODIRATIME",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_RELATIME",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "MS_SYNCHRONOUS",
    "MS_UNBINDABLE",
    "PR_CAPBSET_DROP",
    "PR_CAPBSET_READ",
    "PR_CAP_AMBIENT",
    "PR_CAP_AMBIENT_CLEAR_ALL",
    "PR_CAP_AMBIENT_RAISE",
    "PR_GET_NO_NEW_PRIVS",
    "PR_GET_PDEATHSIG",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_KEEPCAPS",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
    "UMOUNT_NOFOLLOW",
    "ambient_clear_all",
    "ambient_raise",
    "capbset_drop",
    "capget",
    "capset",
    "clone",
    "clone_parent",
    "close_range",
    "get_no_new_privs",
    "get_pdeathsig",
    "mount",
    "openat2",
    "pivot_root",
    "prctl",
    "seccomp_set_mode_filter",
    "set_child_subreaper",
    "set_keepcaps",
    "set_no_new_privs",
    "set_pdeathsig",
    "sethostname",
    "setns",
    "statfs_type",
    "thread_count",
    "umount2",
    "unshare",
]

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>: ``struct __user_cap_header_struct {u32 version; int pid}`` and,
# for version 3 (64-bit sets), two ``struct __user_cap_data_struct {u32 effective,
# permitted, inheritable}``: low words first
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_DATA = struct.Struct("=6I")

#: ``SYS_pivot_root`` per machine (glibc has no wrapper)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
#: ``SYS_seccomp`` per machine (glibc has no wrapper)
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348}
_NR_SECCOMP = _SYS_SECCOMP.get(platform.machine())  # at import: the child reads no file
#: ``SYS_clone`` per machine; s390x takes the stack first, then the flags
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}
_NR_CLONE = _SYS_CLONE.get(platform.machine())  # at import: the child reads no file
_CLONE_STACK_FIRST = platform.machine() == "s390x"
_CLONE_PARENT = 0x00008000
_SIGCHLD = 17
#: syscalls added since Linux 5.1 have one number on every architecture
_SYS_CLOSE_RANGE = 436
_SYS_OPENAT2 = 437

# <linux/close_range.h>
CLOSE_RANGE_CLOEXEC = 1 << 2

# <linux/openat2.h>: ``struct open_how {u64 flags, mode, resolve}``
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_OPEN_HOW = struct.Struct("=3Q")

# <linux/seccomp.h>
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_MODE_FILTER = 2
_PR_SET_SECCOMP = 22
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
#: ``struct sock_filter {u16 code; u8 jt, jf; u32 k}``
_SOCK_FILTER_SIZE = 8


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog {unsigned short len; struct sock_filter *filter}``."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_libc.capget.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
#: the header of every ``capset`` of the calling thread, made at import (before any
#: fork); the kernel writes ``version`` back only when it does not know it
_CAP_HEADER = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]

PathLike = str | bytes | os.PathLike[str] | None


def _b(value: PathLike) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


def _check(result: int, what: str, path: PathLike = None) -> None:
    if result < 0:
        err = ctypes.get_errno()
        message = f"{what}: {os.strerror(err)}"
        if path is None:
            raise OSError(err, message)
        raise OSError(err, message, os.fsdecode(path))


def unshare(flags: int) -> None:
    """``unshare(2)``: move the caller into new namespaces (``CLONE_NEW*`` flags)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """``setns(2)``: join the namespace open as ``fd`` (``nstype`` 0 accepts any kind)."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: PathLike, target: PathLike, fstype: str | None = None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    """``mount(2)``. ``data`` is the comma-separated option string of the filesystem."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target: PathLike, flags: int = 0) -> None:
    """``umount2(2)``; ``MNT_DETACH`` for a lazy unmount."""
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: PathLike, put_old: PathLike) -> None:
    """``pivot_root(2)``: make ``new_root`` the root mount, the old one goes to ``put_old``."""
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_char_p(_b(new_root)),
                         ctypes.c_char_p(_b(put_old))), "pivot_root", new_root)


def sethostname(name: str) -> None:
    """``sethostname(2)`` in the current UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)``; returns its non-negative result."""
    result = _libc.prctl(option, arg2, arg3, arg4, arg5)
    _check(result, "prctl")
    return result


def set_pdeathsig(signum: int) -> None:
    """Have the kernel send ``signum`` to the caller when its parent thread dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def set_child_subreaper(on: bool = True) -> None:
    """Make the caller reap its orphaned descendants (``PR_SET_CHILD_SUBREAPER``)."""
    prctl(PR_SET_CHILD_SUBREAPER, int(on))


def set_no_new_privs() -> None:
    """``PR_SET_NO_NEW_PRIVS``: execve can no longer grant privileges (setuid, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_keepcaps(on: bool = True) -> None:
    """``PR_SET_KEEPCAPS``: keep the permitted set across a change of every uid from 0
    to non-zero (the effective set is still cleared); reset by ``execve``."""
    prctl(PR_SET_KEEPCAPS, int(on))


def capbset_drop(*caps: int) -> None:
    """``PR_CAPBSET_DROP`` of each capability number in ``caps``: remove it from the
    bounding set (needs ``CAP_SETPCAP``; irreversible). One syscall per number, so
    the loop calls libc directly (half the cost of :func:`prctl` each)."""
    call = _libc.prctl
    for cap in caps:
        if call(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")


def ambient_raise(cap: int) -> None:
    """``PR_CAP_AMBIENT_RAISE``: add ``cap`` to the ambient set (it must be permitted
    and inheritable)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def ambient_clear_all() -> None:
    """``PR_CAP_AMBIENT_CLEAR_ALL``: empty the ambient set."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """``capset(2)`` of the calling thread, ``_LINUX_CAPABILITY_VERSION_3``: each set is a
    64-bit mask (bit N: capability number N)."""
    low = 0xFFFFFFFF
    data = _CAP_DATA.pack(effective & low, permitted & low, inheritable & low,
                          effective >> 32 & low, permitted >> 32 & low, inheritable >> 32 & low)
    _check(_libc.capset(_CAP_HEADER, data), "capset")


def capget(pid: int = 0) -> tuple[int, int, int]:
    """``capget(2)``: ``(effective, permitted, inheritable)`` 64-bit masks of ``pid``
    (0: the calling thread)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, pid)
    data = ctypes.create_string_buffer(_CAP_DATA.size)
    _check(_libc.capget(header, data), "capget")
    e0, p0, i0, e1, p1, i1 = _CAP_DATA.unpack(data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def statfs_type(path: PathLike) -> int:
    """``statfs(2)`` ``f_type``: the filesystem's magic number (e.g. ``CGROUP2_SUPER_MAGIC``)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    _check(_libc.statfs(_b(path), buf), "statfs", path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def get_pdeathsig() -> int:
    """``PR_GET_PDEATHSIG``: the signal the caller gets when its parent dies (0: none)."""
    value = ctypes.c_int(0)
    _check(_libc.prctl(PR_GET_PDEATHSIG, ctypes.addressof(value), 0, 0, 0), "prctl")
    return value.value


def get_no_new_privs() -> bool:
    """``PR_GET_NO_NEW_PRIVS``: whether the caller's ``no_new_privs`` bit is set."""
    return bool(prctl(PR_GET_NO_NEW_PRIVS))


def clone(flags: int = 0) -> int:
    """``clone(flags | SIGCHLD)`` with no new stack (the raw syscall): a ``fork`` that
    the kernel alone makes. ``flags`` may add ``CLONE_NEW*`` namespaces (the child is
    created in them; with ``CLONE_NEWPID`` it is PID 1 of a new pid namespace and the
    caller's own namespace for children is untouched) or ``CLONE_PARENT``. Returns the
    child's pid (as the caller sees it), 0 in the child.

    Neither libc's fork handlers nor Python's (``os.register_at_fork``: threading,
    random, logging... about 1 ms of copy-on-write faults in the child) run, and
    Python's after-fork bookkeeping is skipped, so call it only where ``fork`` would
    be safe without them: in a process with a single thread (:func:`thread_count`,
    no other thread can hold a lock), from its main thread, for a child that makes
    syscalls and then execs or ``_exit``\\ s. Raises ``OSError`` (EINVAL for
    ``CLONE_PARENT`` from a pid namespace's init, EPERM, ENOMEM...)."""
    if _NR_CLONE is None:
        raise OSError(38, "clone: unknown syscall number on this machine")
    raw, stack = ctypes.c_ulong(flags | _SIGCHLD), ctypes.c_ulong(0)
    first, second = (stack, raw) if _CLONE_STACK_FIRST else (raw, stack)
    pid = _libc.syscall(ctypes.c_long(_NR_CLONE), first, second, ctypes.c_ulong(0),
                        ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(pid, "clone")
    return int(pid)


def clone_parent() -> int:
    """``clone(CLONE_PARENT | SIGCHLD)`` (:func:`clone`): a ``fork`` whose child is a
    child of the caller's parent, not of the caller (runc's ``clone_parent`` in
    ``nsexec.c``); it starts in the pid namespace the caller unshared or joined for
    its children. Returns the child's pid (as seen from the caller), 0 in the child.
    No ``atfork`` handler runs: call it only in a single-threaded process between
    ``fork`` and ``exec``. Raises ``OSError`` (EINVAL from a pid namespace's init)."""
    return clone(_CLONE_PARENT)


def thread_count() -> int:
    """The number of threads of the calling process: the link count of
    ``/proc/self/task`` is 2 plus one per thread (``proc_task_getattr``); one ``stat``."""
    return os.stat("/proc/self/task").st_nlink - 2


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """``close_range(2)`` (Linux 5.9; ``CLOSE_RANGE_CLOEXEC`` 5.11): close, or with
    ``CLOSE_RANGE_CLOEXEC`` mark close-on-exec, every fd from ``first`` to ``last``."""
    _check(_libc.syscall(ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first),
                         ctypes.c_uint(last), ctypes.c_uint(flags)), "close_range")


def openat2(path: PathLike, flags: int, resolve: int, *, dir_fd: int, mode: int = 0) -> int:
    """``openat2(2)`` (Linux 5.6) of ``path`` relative to ``dir_fd`` with the
    ``RESOLVE_*`` bits ``resolve``; returns the new fd. ``RESOLVE_IN_ROOT`` resolves
    ``path`` as if ``dir_fd`` were ``/``: an absolute symlink or ``..`` cannot leave
    it (kernel ``Documentation/userspace-api`` and openat2(2)). Raises ``OSError``
    (ENOSYS on an older kernel, EXDEV/ELOOP for a refused resolution)."""
    how = _OPEN_HOW.pack(flags, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd),
                       ctypes.c_char_p(_b(path)), ctypes.c_char_p(how), ctypes.c_size_t(len(how)))
    _check(fd, "openat2", path)
    return int(fd)


def seccomp_set_mode_filter(program: bytes, flags: int = 0) -> None:
    """Install the classic BPF ``program`` (``struct sock_filter`` array, 8 bytes an
    instruction, native byte order) as a seccomp filter of the calling thread:
    ``seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`` (kernel
    ``Documentation/userspace-api/seccomp_filter.rst``); ``prctl(PR_SET_SECCOMP)``
    where the syscall number is unknown and ``flags`` is 0. Needs ``no_new_privs``
    or ``CAP_SYS_ADMIN``; EINVAL for a malformed program."""
    count, rest = divmod(len(program), _SOCK_FILTER_SIZE)
    if rest or not 0 < count <= 4096:
        raise OSError(22, f"seccomp: a filter is 1 to 4096 instructions, got {len(program)} bytes")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(count, ctypes.addressof(buffer))
    nr = _NR_SECCOMP
    if nr is None:
        if flags:
            raise OSError(38, "seccomp: unknown syscall number on this machine")
        _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
               "prctl(PR_SET_SECCOMP)")
        return
    _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                         ctypes.c_uint(flags), ctypes.c_void_p(ctypes.addressof(prog))),
           "seccomp")
