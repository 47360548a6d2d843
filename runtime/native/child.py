"""What runs between ``fork`` and ``exec``: the container init and the ``exec`` helper.

Everything here runs in a forked copy of the caller (pytest, or ``ptc-runtime``)
and uses only syscalls and already-imported modules: no threads, no imports,
no logging. A failure before ``exec`` is written to a close-on-exec error pipe
as ``step\\0errno\\0message`` (like ``subprocess``), then the process
``_exit``\\ s with 127; a successful ``exec`` closes the pipe, which the parent
reads as EOF.

The init talks to its parent over three pipes: ``go`` (parent to init: ``1``
once the cgroup exists, and before it, with hooks, ``S<State JSON>\\n``; first of
all ``D`` when the parent makes the rootfs dirs after the fork),
``sync`` (init to parent: ``N`` once its namespaces exist, when the parent
runs ``prestart``/``createRuntime`` hooks; ``C<fd>\\n`` once it is created and
waits for ``start``) and the error pipe. With a user namespace the forked
process first unshares it and sends ``U`` on ``sync``; the parent writes its
``uid_map``/``gid_map`` and answers ``U`` on ``go``; the process becomes root
of it, joins and unshares the other namespaces (pid included, owned by the user
namespace), clones the init as a child of the parent (``CLONE_PARENT``),
reports ``P<host pid>\\n`` on ``sync`` and exits (runc's ``nsexec.c`` stages).
A created init (``ptc-runtime create``) blocks on the ``exec.fifo`` of its
state dir, held open read-write (so no writer ever has to exist for it to
block, and ``start`` finds a reader while it lives): ``start`` writes one byte
into it. What happens after that
(``startContainer`` hooks, ``exec``) is reported on a pipe the init keeps,
whose read end ``start`` opens through ``/proc/<pid>/fd/<fd>`` (the ``C``
line names it): EOF once ``exec`` succeeded, else the error.

The ``exec`` helper reports on a status pipe as lines: ``P<host pid>`` once
the command is forked, ``S<raw wait status>`` once it has exited (written
while it is still a zombie, before it is reaped).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
from dataclasses import dataclass
from typing import NoReturn

from ..linux import syscalls as sc
from ..linux.mounts import RootfsPlan, finish_rootfs, mount_root, setup_rootfs
from .hooks import Hook, run_hook
from .process import ProcessPlan, apply_process, describe, exec_process, run_as_init

__all__ = ["ExecPlan", "InitPlan", "encode_error", "join_cgroup", "join_cgroup_at",
           "loopback_up", "open_dirs", "run_exec_helper", "run_init", "wait_status_of"]

#: signals a created init (waiting for ``start``) exits on, as a process without
#: handlers would; PID 1 of a pid namespace gets none of them without a handler
_CREATED_EXIT_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                         signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
# <linux/sockios.h>, <net/if.h>, <sys/socket.h>: a ``struct ifreq`` is 40 bytes, the
# flags a short after the 16-byte name
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")
_AF_INET, _SOCK_DGRAM, _SOCK_CLOEXEC = 2, 2, 0o2000000
#: libc for ``socket``/``ioctl`` (the socket module costs ms at every ``ptc-runtime`` start)
_libc = ctypes.CDLL(None, use_errno=True)
#: <linux/prctl.h>: whether the process is dumpable (its /proc files its own)
_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4


@dataclass(frozen=True)
class InitPlan:
    """The container init's work, computed in the parent from config.json.

    ``overlay_data``: the overlay's mount data (``lowerdir=...``) for a rootfs made
    of layers; ``None``: bind-mount ``rootfs.rootfs`` (``root.path``) onto itself.
    ``cgroup_join``: ``(hierarchy root, file relative to it)`` of the v1 ``tasks``
    files the init writes ``0`` into to join its cgroup itself (the kernel moves the
    calling thread without the global threadgroup lock); opened before
    ``pivot_root``. ``moved_by_caller``: cgroup v2, the parent moves the init.
    ``join``: ``(fd, CLONE_NEW*)`` of namespaces given by ``path``, opened by the
    parent, joined in order (pid is joined at the fork); ``unshare_flags``: the new
    namespaces but pid (made at the fork) and cgroup; ``userns``: ``"new"``,
    ``"join"`` (``userns_fd``) or ``""``: with one, pid is in ``join`` or
    ``unshare_flags`` and the init is cloned once they are done; ``cgroupns``: ``"new"``,
    ``"join"`` (``cgroupns_fd``) or ``""``. ``sysctl``: ``(file under
    /proc/sys, value)``. ``stdout_fd``/``stderr_fd``: ``-1`` keeps the inherited
    stdio (stdin too). ``pdeathsig``: die with the parent (in-process containers).
    ``sync_hooks``: tell the parent when the namespaces exist and wait for the State
    JSON (prestart, createRuntime, createContainer or startContainer hooks).
    ``exec_fifo``: wait on this fifo for ``start`` before ``exec`` (``None``:
    ``exec`` at once). ``preserve_fds``: fds from 3 passed on to the process.
    ``init``: instead of ``exec``, PID 1 runs :func:`~.process.run_as_init` (the
    config's ``org.ptc.init`` annotation, :func:`~..spec.init_requested`): its child
    applies the process and execs it, PID 1 forwards signals and reaps zombies.
    ``wait_dirs``: the parent makes the overlay's mount point, ``upper`` and ``work``
    after the fork (or, without a mount namespace, records the init before it mounts
    in the caller's), while the init makes its namespaces: wait for its ``D`` on
    ``go_r`` (before any other message) before mounting. ``stdio_dir``: a host dir
    where the parent makes the files ``stdout`` and ``stderr`` before it says ``1``:
    opened write-only then, instead of ``stdout_fd``/``stderr_fd``.
    """

    rootfs: RootfsPlan
    overlay_data: str | None
    cgroup_join: tuple[tuple[str, str], ...]
    moved_by_caller: bool
    join: tuple[tuple[int, int], ...]
    unshare_flags: int
    cgroupns: str
    hostname: str | None
    loopback: bool
    process: ProcessPlan
    stdout_fd: int = -1
    stderr_fd: int = -1
    cgroupns_fd: int = -1
    sysctl: tuple[tuple[str, str], ...] = ()
    pdeathsig: bool = True
    sync_hooks: bool = False
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    exec_fifo: str | None = None
    preserve_fds: int = 0
    userns: str = ""
    userns_fd: int = -1
    init: bool = False
    wait_dirs: bool = False
    stdio_dir: str = ""


@dataclass(frozen=True)
class ExecPlan:
    """The ``exec`` helper's work: join the cgroup and namespaces of ``target_pidfd``,
    fork the process (``process``: :func:`~.process.prepare_process` of it).
    ``stdout_fd``/``stderr_fd`` ``-1``: inherit stdio (stdin too; else stdin is
    ``/dev/null``). ``detach``: report ``P<pid>`` and exit at once, the process
    outlives the helper (no parent-death signal)."""

    target_pidfd: int
    target_pid: int
    ns_flags: int
    cgroup_procs: tuple[str, ...]
    process: ProcessPlan
    stdout_fd: int = -1
    stderr_fd: int = -1
    detach: bool = False


def encode_error(step: str, exc: BaseException) -> bytes:
    """``step\\0errno\\0message`` for the error pipe; an exception's own ``step``
    (``ContainerStartError`` of :mod:`.process`) wins over ``step``."""
    code = getattr(exc, "errno", None) or 0
    step = getattr(exc, "step", None) or step
    return f"{step}\0{code}\0{describe(exc)}".encode(errors="replace")


def _report(fd: int, step: str, exc: BaseException) -> None:
    try:
        os.write(fd, encode_error(step, exc))
    except BaseException:  # noqa: B036 - nobody left to tell
        pass


def wait_status_of(result: os.waitid_result) -> int:
    """The raw ``waitpid`` status equivalent of a ``waitid`` result."""
    if result.si_code == os.CLD_EXITED:
        return (result.si_status & 0xFF) << 8
    if result.si_code == os.CLD_DUMPED:
        return result.si_status | 0x80
    return result.si_status


def _report_and_reap(pid: int, status_w: int) -> None:
    """Wait for ``pid`` to exit, report ``S<status>`` while it is a zombie, then reap."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert result is not None  # None only with WNOHANG
    os.write(status_w, b"S%d\n" % wait_status_of(result))
    os.waitpid(pid, 0)


def open_dirs(pairs: tuple[tuple[str, str], ...]) -> list[tuple[int, str]]:
    """``(O_PATH fd of dir, relative path)`` for each ``(dir, relative path)``: usable
    with ``dir_fd`` after ``pivot_root`` has detached ``dir``'s mount."""
    return [(os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), rel) for d, rel in pairs]


def join_cgroup_at(files: list[tuple[int, str]]) -> None:
    """Write ``0`` (the caller) into each ``(dir fd, relative path)``; close the fds."""
    for dir_fd, rel in files:
        fd = os.open(rel, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        os.close(dir_fd)


def join_cgroup(procs: tuple[str, ...], pid: int = 0) -> None:
    """Write ``pid`` (0: the caller) into each file of ``procs`` (``cgroup.procs``, or
    v1 ``tasks`` for the single-threaded caller itself)."""
    data = b"%d" % pid
    for path in procs:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def _ioctl(fd: int, request: int, buf: ctypes.Array[ctypes.c_char]) -> None:
    if _libc.ioctl(fd, ctypes.c_ulong(request), buf) < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"ioctl {request:#x} on lo: {os.strerror(code)}")


def loopback_up() -> None:
    """Bring ``lo`` up in the caller's network namespace: ``SIOCGIFFLAGS`` then
    ``SIOCSIFFLAGS`` with ``IFF_UP`` on an ``AF_INET`` socket (``netdevice(7)``), as
    ``ifconfig lo up`` does; no netlink library needed. Raises ``OSError``."""
    fd = _libc.socket(_AF_INET, _SOCK_DGRAM | _SOCK_CLOEXEC, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"socket: {os.strerror(code)}")
    try:
        request = ctypes.create_string_buffer(_IFREQ.pack(b"lo", 0), _IFREQ.size)
        _ioctl(fd, _SIOCGIFFLAGS, request)
        flags = _IFREQ.unpack(request.raw)[1]
        if not flags & _IFF_UP:
            _ioctl(fd, _SIOCSIFFLAGS,
                   ctypes.create_string_buffer(_IFREQ.pack(b"lo", flags | _IFF_UP), _IFREQ.size))
    finally:
        os.close(fd)


def _stdio(stdout_fd: int, stderr_fd: int) -> None:
    if stdout_fd < 0:
        return  # the caller's stdio, inherited as it is
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    if null > 2:
        os.close(null)


def _write_sysctl(sysctl: tuple[tuple[str, str], ...]) -> None:
    """Write each ``(path under /proc/sys, value)``: through the host's ``/proc`` before
    ``pivot_root``, the kernel resolves namespaced sysctls by the writer's namespaces."""
    for path, value in sysctl:
        fd = os.open("/proc/sys/" + path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


class _GoPipe:
    """The init's end of the go pipe: ``S<json>\\n`` lines and the ``1`` byte."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def _fill(self) -> bool:
        chunk = os.read(self.fd, 65536)
        self.buf += chunk
        return bool(chunk)

    def read_state(self) -> bytes | None:
        """The State JSON of an ``S...\\n`` message; ``None`` at EOF (the parent gave up)."""
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line[1:] if line[:1] == b"S" else None

    def wait_go(self, expected: bytes = b"1") -> bool:
        """Whether the next byte is ``expected`` (EOF or anything else: the parent gave
        up)."""
        if not self.buf and not self._fill():
            return False
        byte, self.buf = self.buf[:1], self.buf[1:]
        return byte == expected


def _exit_on_signal(signum: int, frame: object) -> NoReturn:
    os._exit(128 + signum)


def _resolve_command(plan: ProcessPlan) -> None:
    """Fail now, not after ``start``, when ``args[0]`` cannot be executed (runc looks it
    up before waiting for ``start`` too): ENOENT when it is not on the ``PATH``,
    EACCES when it is there but not executable."""
    file = plan.args[0]
    candidates = [file] if "/" in file else [(d or ".") + "/" + file for d in plan.path]
    denied = None
    for path in candidates:
        try:
            if not os.path.exists(path):
                continue
        except OSError:
            continue
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return
        denied = path  # not executable, or a directory (as Go's exec.LookPath for runc)
    if denied is not None:
        raise PermissionError(errno.EACCES, f"exec: {file!r}: permission denied", denied)
    where = "no such file or directory" if "/" in file else "executable file not found in $PATH"
    raise FileNotFoundError(errno.ENOENT, f"exec: {file!r}: {where}", file)


def _wait_for_start(fifo: int, sync_w: int) -> int:
    """Report ``C<fd>`` (the read end of the pipe ``start`` will read this init's fate
    from) and block on the exec fifo (open as ``fifo``) until ``start`` writes to it.
    Returns the write end of that pipe, the new error pipe."""
    fate_r, fate_w = os.pipe2(os.O_CLOEXEC)
    for sig in _CREATED_EXIT_SIGNALS:
        signal.signal(sig, _exit_on_signal)
    os.write(sync_w, b"C%d\n" % fate_r)
    os.close(sync_w)
    while True:
        try:
            if os.read(fifo, 1):
                break
        except InterruptedError:
            continue
    for sig in _CREATED_EXIT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.close(fifo)
    return fate_w


def _enter_user_namespace(plan: InitPlan, go: _GoPipe, sync_w: int) -> None:
    """Join (``setns``) or unshare the user namespace; for a new one, ``U`` on
    ``sync_w`` and wait for the parent's ``U`` (its maps are written). Then become
    its root (``setresgid``/``setresuid`` 0, as runc's ``nsexec``): every capability
    in it, files made in it owned by the mapped IDs."""
    if plan.userns == "join":
        sc.setns(plan.userns_fd, sc.CLONE_NEWUSER)
        os.close(plan.userns_fd)
    else:
        sc.unshare(sc.CLONE_NEWUSER)
        # the caller (or newuidmap) opens our /proc/<pid>/uid_map, which is root's while
        # we are not dumpable (a caller that changed its ids without exec): dumpable
        # until the maps are written, as runc's nsexec
        dumpable = sc.prctl(_PR_GET_DUMPABLE)
        if not dumpable:
            sc.prctl(_PR_SET_DUMPABLE, 1)
        os.write(sync_w, b"U")
        if not go.wait_go(b"U"):
            os._exit(127)
        if not dumpable:
            sc.prctl(_PR_SET_DUMPABLE, 0)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _clone_init(plan: InitPlan, life_r: int, sync_w: int) -> None:
    """Clone the init as a child of our parent, in the pid namespace just unshared or
    joined; report its pid (``P<pid>\\n``) and exit. The init waits for EOF on a
    pipe whose other end only we hold: the ``P`` line is then written, before
    anything the init sends on ``sync_w``."""
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = sc.clone_parent()
    if pid:
        os.write(sync_w, b"P%d\n" % pid)
        os._exit(0)
    os.close(hold_w)
    while os.read(hold_r, 1):
        pass
    os.close(hold_r)
    if plan.pdeathsig:  # cleared by clone; now for our parent's thread
        sc.set_pdeathsig(signal.SIGKILL)
        if select.select([life_r], [], [], 0)[0]:
            os._exit(1)


def run_init(plan: InitPlan, err_w: int, life_r: int, go_r: int, sync_w: int) -> NoReturn:
    """The container init, forked by the caller (PID 1 of its new pid namespace, or a
    member of a joined one).

    With ``plan.pdeathsig`` it dies with the caller's thread; ``life_r`` is the read
    end of a pipe whose write end only the caller holds, so a caller that died
    before the parent-death signal was set shows as EOF. Steps: [user namespace:
    :func:`_enter_user_namespace`]; join the namespaces given by path, unshare the
    new ones [user namespace: :func:`_clone_init`, the rest runs in the clone],
    ``setsid``, ``/`` rprivate (not without a mount namespace of its own), sysctls;
    [hooks: ``N`` on ``sync_w``, the State JSON from ``go_r``, ``createContainer``
    hooks]; the rootfs (overlay of the layers, or ``root.path`` bound onto itself:
    :func:`~..linux.mounts.mount_root`) with its mounts and ``pivot_root`` (``chroot``
    without a mount namespace, in the caller's: :func:`~..linux.mounts.setup_rootfs`);
    hostname, ``lo`` up; wait for ``1`` on ``go_r`` (the cgroup exists; on v2 the
    caller moved us), stdio, join the cgroup (v1), the cgroup namespace, cgroup
    mounts (:func:`~..linux.rootfs.finish_rootfs`); the process's user,
    capabilities, rlimits... (:func:`~.process.apply_process`); [create: wait for
    ``start`` (:func:`_wait_for_start`), ``startContainer`` hooks]; ``exec``. EOF on
    ``go_r`` instead of a message: the caller gave up (it reports), exit at once.
    """
    step = ["pdeathsig"]
    try:
        if plan.pdeathsig:
            sc.set_pdeathsig(signal.SIGKILL)
            if select.select([life_r], [], [], 0)[0]:
                os._exit(1)  # EOF: the caller died before the pdeathsig was armed
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        step[0] = "cgroup"
        cgroup_files = open_dirs(plan.cgroup_join)
        stdio_dir = -1
        if plan.stdio_dir:  # opened while the host's paths are visible
            step[0] = "stdio"
            stdio_dir = os.open(plan.stdio_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        go = _GoPipe(go_r)
        fifo = -1
        if plan.exec_fifo is not None:  # opened while the host's paths are visible
            step[0] = "exec fifo"
            fifo = os.open(plan.exec_fifo, os.O_RDWR | os.O_CLOEXEC)
        if plan.userns:
            step[0] = "user namespace"
            _enter_user_namespace(plan, go, sync_w)
        step[0] = "setns"
        for fd, flag in plan.join:
            sc.setns(fd, flag)
            os.close(fd)
        step[0] = "unshare"
        if plan.unshare_flags:
            sc.unshare(plan.unshare_flags)
        if plan.userns:
            step[0] = "clone"
            _clone_init(plan, life_r, sync_w)
        if plan.wait_dirs:  # the parent makes the overlay's dirs meanwhile
            step[0] = "rootfs"
            if not go.wait_go(b"D"):
                os._exit(127)
        os.setsid()
        if plan.rootfs.own_mount_namespace:  # else the caller's: its "/" is left alone
            step[0] = "rprivate"
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        if plan.sysctl:
            step[0] = "sysctl"
            _write_sysctl(plan.sysctl)
        state = b""
        if plan.sync_hooks:
            step[0] = "hooks"
            os.write(sync_w, b"N")
            received = go.read_state()
            if received is None:
                os._exit(127)
            state = received
            for hook in plan.create_container:
                step[0] = hook.field
                run_hook(hook, state)
        mount_root(plan.rootfs, plan.overlay_data, step)
        setup_rootfs(plan.rootfs, step)
        if plan.hostname is not None:
            step[0] = "hostname"
            sc.sethostname(plan.hostname)
        if plan.loopback:
            step[0] = "loopback"
            loopback_up()
        step[0] = "cgroup"
        if not go.wait_go():
            os._exit(127)
        step[0] = "stdio"
        out_fd, err_fd = plan.stdout_fd, plan.stderr_fd
        if stdio_dir >= 0:  # the parent made the files before it said 1
            out_fd = os.open("stdout", os.O_WRONLY | os.O_CLOEXEC, dir_fd=stdio_dir)
            err_fd = os.open("stderr", os.O_WRONLY | os.O_CLOEXEC, dir_fd=stdio_dir)
            os.close(stdio_dir)
        _stdio(out_fd, err_fd)
        step[0] = "cgroup"
        join_cgroup_at(cgroup_files)
        if plan.cgroupns == "new":
            sc.unshare(sc.CLONE_NEWCGROUP)  # rooted at our cgroup: only once we are in it
        elif plan.cgroupns == "join":
            sc.setns(plan.cgroupns_fd, sc.CLONE_NEWCGROUP)
            os.close(plan.cgroupns_fd)
        finish_rootfs(plan.rootfs, step)
        step[0] = "process"
        if not plan.init:  # with the init, its child does (run_as_init)
            apply_process(plan.process)  # user, capabilities, rlimits, seccomp... (process.py)
        for fd in range(3, 3 + plan.preserve_fds):
            os.set_inheritable(fd, True)
        if plan.exec_fifo is not None:
            step[0] = "exec"
            _resolve_command(plan.process)
            step[0] = "start"
            new_err = _wait_for_start(fifo, sync_w)
            os.close(err_w)  # its reader (create) is gone: report to start from now on
            err_w = new_err
        elif plan.pdeathsig and select.select([life_r], [], [], 0)[0]:
            os._exit(1)  # EOF: the caller died while the parent-death signal was cleared
        if plan.start_container:
            # apply_process reset SIGPIPE to its default: a hook that exits without
            # reading the state on its stdin must be an EPIPE, not the init's death
            pipe_handler = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            for hook in plan.start_container:
                step[0] = hook.field
                run_hook(hook, state)
            signal.signal(signal.SIGPIPE, pipe_handler)
        step[0] = "exec"
        if plan.init:
            run_as_init(plan.process, error_fd=err_w)
        exec_process(plan.process)
    except BaseException as exc:  # noqa: B036 - everything must reach the parent
        _report(err_w, step[0], exc)
    os._exit(127)


def _exec_target(plan: ExecPlan, err_w: int) -> NoReturn:
    step = "stdio"
    try:
        if plan.stdout_fd >= 0:
            _stdio(plan.stdout_fd, plan.stderr_fd)
        step = "process"
        apply_process(plan.process)
        step = "exec"
        exec_process(plan.process)
    except BaseException as exc:  # noqa: B036
        _report(err_w, step, exc)
    os._exit(127)


def _setns_all(plan: ExecPlan) -> None:
    """Join the target's namespaces: one ``setns(pidfd, flags)`` (Linux 5.8+), else
    each ``/proc/<pid>/ns/*`` file, mount namespace last. A target without a mount
    namespace of its own lives chrooted in the caller's: then ``chroot`` into its
    root (``/proc/<pid>/root``, as ``nsenter --root``)."""
    root = -1
    if not plan.ns_flags & sc.CLONE_NEWNS:
        root = os.open(f"/proc/{plan.target_pid}/root", os.O_PATH | os.O_DIRECTORY
                       | os.O_CLOEXEC)
    try:
        _join(plan)
        if root >= 0:
            os.fchdir(root)
            os.chroot(".")
            os.chdir("/")
    finally:
        if root >= 0:
            os.close(root)


def _join(plan: ExecPlan) -> None:
    if not plan.ns_flags:
        return  # the container has none of its own: ours are its
    try:
        sc.setns(plan.target_pidfd, plan.ns_flags)
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    names = [("user", sc.CLONE_NEWUSER), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
             ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID), ("cgroup", sc.CLONE_NEWCGROUP),
             ("mnt", sc.CLONE_NEWNS)]
    fds = [(os.open(f"/proc/{plan.target_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag)
           for name, flag in names if plan.ns_flags & flag]
    for fd, flag in fds:
        sc.setns(fd, flag)
        os.close(fd)


def run_exec_helper(plan: ExecPlan, err_w: int, status_w: int, parent_pid: int) -> NoReturn:
    """The ``exec`` helper: joins the container's cgroup and namespaces, forks the
    process (so the pid namespace applies) and reports ``P``/``S``; detached, it
    exits after ``P`` and the process is reparented (to a subreaper, or init)."""
    step = "exec helper"
    try:
        if not plan.detach:
            sc.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != parent_pid:
                os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        step = "cgroup"
        join_cgroup(plan.cgroup_procs)
        step = "setns"
        _setns_all(plan)
        step = "fork"
        pid = sc.clone()  # a forked copy has one thread: no fork handler needed
        if pid == 0:
            os.close(status_w)
            if not plan.detach:
                sc.set_pdeathsig(signal.SIGKILL)
            _exec_target(plan, err_w)
        os.close(err_w)
        err_w = -1
        if plan.stdout_fd >= 0:
            os.close(plan.stdout_fd)
            os.close(plan.stderr_fd)
        os.write(status_w, b"P%d\n" % pid)
        if not plan.detach:
            _report_and_reap(pid, status_w)
    except BaseException as exc:  # noqa: B036
        if err_w >= 0:
            _report(err_w, step, exc)
    os._exit(0)
