"""What runs between ``fork`` and ``exec``: the container init and the ``exec`` helper.

Everything here runs in a forked copy of the caller (often pytest) and uses
only syscalls and already-imported modules: no threads, no imports, no
logging. A failure before ``exec`` is written to a close-on-exec error pipe as
``step\\0errno\\0message`` (like ``subprocess``), then the process ``_exit``\\ s
with 127; a successful ``exec`` closes the pipe, which the parent reads as
EOF. The ``exec`` helper reports on a status pipe as lines: ``P<host pid>``
once the command is forked, ``S<raw wait status>`` once it has exited (written
while it is still a zombie, before it is reaped). The container init is the
caller's own child: the caller waits for it with ``waitpid``/its pidfd.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
from dataclasses import dataclass
from typing import NoReturn

from ..linux import network
from ..linux import syscalls as sc
from ..linux.capabilities import CapabilitySets
from ..linux.mounts import OVERLAY_SOURCE, RootfsPlan, setup_rootfs

__all__ = ["ExecPlan", "InitPlan", "encode_error", "exec_in_path", "join_cgroup",
           "join_cgroup_at", "open_dirs", "run_exec_helper", "run_init", "wait_status_of"]

#: signals Python sets to SIG_IGN that an exec'd program must get back at default
_RESTORE_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)


@dataclass(frozen=True)
class InitPlan:
    """The container init's work, computed in the parent from config.json."""

    rootfs: RootfsPlan
    overlay_data: str  # ``mounts.overlay_options``: lowerdir (top first), upperdir, workdir
    #: ``(hierarchy root, file relative to it)``: the files the init writes ``0``
    #: into to join its cgroup itself (cgroup v1 ``tasks``: the kernel moves the
    #: calling thread without the global threadgroup lock, so without waiting for an
    #: RCU grace period). The roots are opened before ``pivot_root``.
    cgroup_join: tuple[tuple[str, str], ...]
    #: cgroup v2: the caller moves the init into the cgroup (before sending ``1``)
    moved_by_caller: bool
    unshare_flags: int
    hostname: str | None
    loopback: bool
    args: tuple[str, ...]
    env: dict[str, str]
    path: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    rlimits: tuple[tuple[int, int, int], ...]
    caps: CapabilitySets
    no_new_privs: bool
    stdout_fd: int
    stderr_fd: int


@dataclass(frozen=True)
class ExecPlan:
    """The ``exec`` helper's work: join the cgroup and namespaces of ``target_pidfd``."""

    target_pidfd: int
    target_pid: int
    ns_flags: int
    cgroup_procs: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    path: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    caps: CapabilitySets  # the init's: an exec gets the same sets
    no_new_privs: bool
    stdout_fd: int
    stderr_fd: int


def encode_error(step: str, exc: BaseException) -> bytes:
    """``step\\0errno\\0message`` for the error pipe."""
    code = getattr(exc, "errno", None) or 0
    return f"{step}\0{code}\0{type(exc).__name__}: {exc}".encode(errors="replace")


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


def exec_in_path(args: tuple[str, ...], env: dict[str, str], path: tuple[str, ...]) -> NoReturn:
    """``execve`` ``args[0]`` searched on ``path`` (the container's ``PATH``), like
    ``execvpe``: ENOENT/ENOTDIR go on to the next directory, EACCES is remembered."""
    file = args[0]
    if "/" in file:
        os.execve(file, args, env)
    saved: OSError | None = None
    for directory in path:
        try:
            os.execve((directory or ".") + "/" + file, args, env)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV):
                continue
            if exc.errno == errno.EACCES:
                saved = saved or exc
                continue
            raise
    if saved is not None:
        raise saved
    raise FileNotFoundError(errno.ENOENT, "command not found", file)


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


def _finish_process(uid: int, gid: int, cwd: str, caps: CapabilitySets, no_new_privs: bool,
                    step: list[str]) -> None:
    """User, cwd, capabilities and ``no_new_privs`` in runc's order (``init_linux.go``
    ``finalizeNamespace``): bounding set dropped while ``CAP_SETPCAP`` is effective,
    ``PR_SET_KEEPCAPS`` for a non-root user, ``setgroups``/``setgid``/``setuid``
    (needing ``CAP_SETGID``/``CAP_SETUID``), ``chdir``, ``capset`` and ambient set.
    Then the parent-death signal again (a change of uid or gid clears it)."""
    step[0] = "capabilities"
    caps.drop_bounding()
    caps.keep_for(uid)
    step[0] = "user"
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    step[0] = "cwd"
    os.chdir(cwd)
    step[0] = "capabilities"
    caps.apply()
    sc.set_pdeathsig(signal.SIGKILL)
    if no_new_privs:
        step[0] = "no_new_privs"
        sc.set_no_new_privs()


def _stdio(stdout_fd: int, stderr_fd: int) -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    if null > 2:
        os.close(null)


def _restore_signals() -> None:
    for sig in _RESTORE_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def run_init(plan: InitPlan, err_w: int, life_r: int, go_r: int) -> NoReturn:
    """The container init, PID 1 of its new pid namespace, forked by the caller.

    Dies with the caller's thread (pdeathsig); ``life_r`` is the read end of a pipe
    whose write end only the caller holds, so a caller that died before the
    pdeathsig was set shows as EOF. Unshares its namespaces, mounts the rootfs and
    pivots into it, sets up stdio and limits while the caller creates the cgroup;
    waits for ``1`` on ``go_r`` (the cgroup exists; on v2 the caller moved us into
    it), joins the cgroup itself (``plan.cgroup_join``, v1), then
    ``unshare(CLONE_NEWCGROUP)``; then, as nothing needs ``CAP_SYS_ADMIN`` any more,
    user and capabilities (:func:`_finish_process`), exec. EOF on ``go_r`` instead:
    the caller gave up (it reports), exit at once.
    """
    step = ["pdeathsig"]
    try:
        sc.set_pdeathsig(signal.SIGKILL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if select.select([life_r], [], [], 0)[0]:
            os._exit(1)  # EOF: the caller died before the pdeathsig was armed
        step[0] = "cgroup"
        cgroup_files = open_dirs(plan.cgroup_join)
        step[0] = "unshare"
        sc.unshare(plan.unshare_flags & ~sc.CLONE_NEWCGROUP)
        os.setsid()
        step[0] = "rprivate"
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        step[0] = "overlay"
        sc.mount(OVERLAY_SOURCE, plan.rootfs.rootfs, "overlay", 0, plan.overlay_data)
        setup_rootfs(plan.rootfs, step)
        if plan.hostname is not None:
            step[0] = "hostname"
            sc.sethostname(plan.hostname)
        if plan.loopback:
            step[0] = "loopback"
            network.loopback_up()
        step[0] = "stdio"
        _stdio(plan.stdout_fd, plan.stderr_fd)
        step[0] = "rlimits"
        for kind, soft, hard in plan.rlimits:
            resource.setrlimit(kind, (soft, hard))
        step[0] = "cgroup"
        if os.read(go_r, 1) != b"1":
            os._exit(127)
        join_cgroup_at(cgroup_files)
        if plan.unshare_flags & sc.CLONE_NEWCGROUP:
            sc.unshare(sc.CLONE_NEWCGROUP)  # rooted at ptc/<id>: only once we are in it
        _finish_process(plan.uid, plan.gid, plan.cwd, plan.caps, plan.no_new_privs, step)
        if select.select([life_r], [], [], 0)[0]:
            os._exit(1)  # EOF: the caller died while the parent-death signal was cleared
        _restore_signals()
        step[0] = "exec"
        exec_in_path(plan.args, plan.env, plan.path)
    except BaseException as exc:  # noqa: B036 - everything must reach the parent
        try:
            os.write(err_w, encode_error(step[0], exc))
        except BaseException:  # noqa: B036
            pass
    os._exit(127)


def _exec_target(plan: ExecPlan, err_w: int) -> NoReturn:
    step = ["stdio"]
    try:
        _stdio(plan.stdout_fd, plan.stderr_fd)
        _finish_process(plan.uid, plan.gid, plan.cwd, plan.caps, plan.no_new_privs, step)
        _restore_signals()
        step[0] = "exec"
        exec_in_path(plan.args, plan.env, plan.path)
    except BaseException as exc:  # noqa: B036
        try:
            os.write(err_w, encode_error(step[0], exc))
        except BaseException:  # noqa: B036
            pass
    os._exit(127)


def _setns_all(plan: ExecPlan) -> None:
    """Join the target's namespaces: one ``setns(pidfd, flags)`` (Linux 5.8+), else
    each ``/proc/<pid>/ns/*`` file, mount namespace last."""
    try:
        sc.setns(plan.target_pidfd, plan.ns_flags)
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    names = [("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS), ("net", sc.CLONE_NEWNET),
             ("pid", sc.CLONE_NEWPID), ("cgroup", sc.CLONE_NEWCGROUP), ("mnt", sc.CLONE_NEWNS)]
    fds = [(os.open(f"/proc/{plan.target_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag)
           for name, flag in names if plan.ns_flags & flag]
    for fd, flag in fds:
        sc.setns(fd, flag)
        os.close(fd)


def run_exec_helper(plan: ExecPlan, err_w: int, status_w: int, parent_pid: int) -> NoReturn:
    """The ``exec`` helper: joins the container's cgroup and namespaces, forks the
    command (so the pid namespace applies), reports ``P``/``S`` like the intermediate."""
    step = "exec helper"
    try:
        sc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        step = "cgroup"
        join_cgroup(plan.cgroup_procs)
        step = "setns"
        _setns_all(plan)
        step = "fork"
        pid = os.fork()
        if pid == 0:
            os.close(status_w)
            sc.set_pdeathsig(signal.SIGKILL)
            _exec_target(plan, err_w)
        os.close(err_w)
        err_w = -1
        os.close(plan.stdout_fd)
        os.close(plan.stderr_fd)
        os.write(status_w, b"P%d\n" % pid)
        _report_and_reap(pid, status_w)
    except BaseException as exc:  # noqa: B036
        if err_w >= 0:
            try:
                os.write(err_w, encode_error(step, exc))
            except BaseException:  # noqa: B036
                pass
    os._exit(0)
