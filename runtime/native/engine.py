"""The native engine: runs a runtime-spec ``config.json`` with Python and syscalls.

One engine, two callers:

- in-process (:class:`NativeRuntime`, the ``native`` backend): a
  :class:`ContainerSpec` becomes a config (:func:`~..spec.to_config`) whose rootfs
  is an overlay of ``spec.layers`` in the state dir; the caller (pytest) is the
  init's parent, keeps its pidfd, reaps it; the init dies with it (pdeathsig);
- ``ptc-runtime`` (:mod:`.lifecycle`): the bundle's config.json as it is, with
  ``root.path`` bind-mounted onto itself; ``create`` leaves the init waiting on
  ``exec.fifo`` and exits, the init outliving it.

Both go through :func:`~.plan.prepare` (every check, before anything is forked: a
bad config raises with nothing to undo) and :func:`spawn`. Process tree of one
container (host pids)::

    caller            keeps: pid and pidfd of init (in-process: reaps it)
    └── init          PID 1 of a new pid namespace (or a member of a joined one, or
                      of the host's). One fork: in a single-threaded caller the raw
                      clone(CLONE_NEWPID) (no fork handlers: :func:`_fork`), else the
                      calling thread unshares CLONE_NEWPID (or setns's into the pid
                      namespace to join), forks, and setns's back into its own. The
                      init joins/unshares its other namespaces, mounts the rootfs and
                      pivots into it (:mod:`.child`), while the caller makes the rest
                      of the state dir and the cgroup; then it joins the cgroup,
                      unshare(cgroup), applies the process (:mod:`.process`: user,
                      capabilities...) and execs

With a user namespace (``config-linux.md#user-namespace-mappings``), as runc's
``nsexec``: a plain fork, whose child unshares CLONE_NEWUSER (or joins one) and
asks for its maps (the caller writes ``/proc/<pid>/uid_map`` and ``gid_map``:
root directly, holding CAP_SETUID/CAP_SETGID here, so ``setgroups`` stays
``allow``; a caller that is not root directly for its own ids, else through
``newuidmap``/``newgidmap``: :func:`~.rootless.write_id_maps`), then
makes the other namespaces, pid included, so the user namespace owns them, and
clones the init with CLONE_PARENT (a child of the caller, as above) before it
exits; the caller reaps it and moves the init into its cgroup (v1 too).

A ``kill -9`` of an in-process caller SIGKILLs the init (pdeathsig), whose death
kills every process of the pid namespace; the mount namespace, and with it the
overlay, goes with the last of them. What can remain (the cgroup directories
and the state dir) carries the caller's pid in ``owner`` for
:func:`~..sweep.sweep`. A config without a mount namespace has its overlay and
mounts made in the caller's namespace, in the state dir, entered with ``chroot``
(:func:`~..linux.mounts.setup_rootfs`): :meth:`NativeContainer.delete` and the
sweep unmount them (:mod:`~..linux.hostmounts`).

State dir ``<state_root>/<id>``: in-process: ``owner`` (before the fork),
``rootfs/`` (the overlay's mount point, only inside the container), ``upper/``,
``work/`` (after the fork, while the init makes its namespaces), ``config.json``,
``stdout``, ``stderr`` (while it mounts); ``ptc-runtime``: ``state.json``
(:mod:`.state`), ``exec.fifo`` while created, ``owner`` while being created
(and for a foreground ``run``).
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import select
import signal as _signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import (
    CgroupError,
    CommandNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
    InvalidOptionError,
)

from ..linux import hostmounts
from ..linux import syscalls as sc
from ..linux.cgroups import CgroupV1, CgroupV2
from ..spec import to_config
from ..state import default_state_root
from ..types import ContainerSpec, ExecResult, ExitStatus, Stats
from . import child, rootless
from .config import namespaces_of
from .hooks import run_hooks
from .pipes import LinePipe as _LinePipe
from .pipes import collect as _collect
from .pipes import read_all as _read_all
from .plan import Prepared, prepare
from .process import ProcessPlan, prepare_process
from .statedir import remove_state_dir as _remove_state_dir
from .statedir import write_file as _write_file

__all__ = ["NativeContainer", "NativeRuntime", "Spawned", "run_exec", "spawn", "start_error"]

#: seconds a container may take from fork to exec before ``start`` gives up
START_TIMEOUT = 60.0
#: seconds ``delete`` waits for the killed init to be reported
DELETE_TIMEOUT = 10.0


def _parse_error(data: bytes) -> tuple[str, int, str]:
    step, _, rest = data.decode(errors="replace").partition("\0")
    code, _, message = rest.partition("\0")
    try:
        return step, int(code), message
    except ValueError:
        return step, 0, rest


def start_error(container_id: str, args: Sequence[str], data: bytes) -> ContainerRuntimeError:
    """The exception for an error report ``step\\0errno\\0message`` of the init:
    ``CommandNotFoundError`` when ``exec`` failed with ENOENT, else
    ``ContainerStartError`` with ``step`` and ``errno``."""
    step, code, message = _parse_error(data)
    if step == "exec" and code == errno.ENOENT:
        return CommandNotFoundError(
            f"command not found in container {container_id}: {args[0]!r} ({message})",
            argv=list(args), container_id=container_id, step=step, errno=code)
    return ContainerStartError(
        f"container {container_id} failed to start at {step}: {message}",
        container_id=container_id, argv=list(args), step=step, errno=code, stderr="")


def _reap(pid: int) -> int | None:
    """``waitpid`` our child ``pid``; ``None`` when it was already reaped."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap_within(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.0005)


def _exited(pidfd: int, pid: int, timeout: float | None) -> bool:
    """Whether our child ``pid`` has exited (is waitable), waiting up to ``timeout``
    seconds (``None``: forever) for its pidfd to turn readable."""
    if pidfd >= 0:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else math.ceil(max(0.0, timeout) * 1000)))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:  # no pidfd (pidfd_open failed): poll waitid
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True  # already reaped: waitpid says so
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


# -- the one fork ---------------------------------------------------------------------

#: held from ``unshare(CLONE_NEWPID)`` to the ``setns`` back (one fork at a time)
_PIDNS_LOCK = threading.Lock()
_own_pidns: tuple[int, int] = (0, -1)  # (pid of the opener, fd of /proc/self/ns/pid)


def _own_pidns_fd() -> int:
    """An fd of the caller's own pid namespace, opened once per process."""
    global _own_pidns
    pid, fd = _own_pidns
    if pid != os.getpid() or fd < 0:  # first use, or a forked copy of the process
        fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        _own_pidns = (os.getpid(), fd)
    return fd


def _can_clone() -> bool:
    """Whether :func:`_fork` may use the raw ``clone`` (:func:`~..linux.syscalls.clone`):
    this process has a single thread, the main one (``signal.signal`` in the child
    needs it), so no lock can be held by another thread and skipping the fork
    handlers is safe."""
    try:
        return sc.thread_count() == 1 and threading.current_thread() is threading.main_thread()
    except OSError:
        return False


def _in_child(pid: int) -> int:
    """``pid`` as a fork returned it; in the child (0), the garbage collector is off
    first: a collection there would touch, and so copy, every tracked object."""
    if pid == 0:
        gc.disable()
    return pid


def _fork() -> int:
    """``fork`` for a child that only makes syscalls, then execs or ``_exit``\\ s; returns
    its pid (0 in it). The raw ``clone`` when :func:`_can_clone` (no
    ``os.register_at_fork`` handler runs: about 1 ms less before the child can work),
    else ``os.fork()``."""
    return _in_child(sc.clone() if _can_clone() else os.fork())


def _fork_into_pidns(target: int | None) -> int:
    """``fork`` a child in another pid namespace; returns its pid (0 in it).

    ``target`` ``None``: a new one, the child is its PID 1; in a single-threaded
    process one ``clone(CLONE_NEWPID)`` (:func:`_fork`). Otherwise (``target``: the fd
    of a pid namespace to join with ``setns``, or ``os.fork`` needed) the calling
    thread ``unshare(CLONE_NEWPID)``\\ s or ``setns``\\ 's, which only changes its own
    namespace for children, forks, then ``setns``\\ 's back into its own pid
    namespace. If that fails the child is killed and reaped and
    ``ContainerStartError`` is raised: the thread is then left in the dead namespace,
    where a fork fails (ENOMEM) instead of putting a process into a container's
    namespace."""
    if target is None and _can_clone():
        return _in_child(sc.clone(sc.CLONE_NEWPID))
    with _PIDNS_LOCK:
        own = _own_pidns_fd()
        pid = -1
        try:
            if target is None:
                sc.unshare(sc.CLONE_NEWPID)
            else:
                sc.setns(target, sc.CLONE_NEWPID)
            pid = _fork()
        finally:
            if pid != 0:
                try:
                    sc.setns(own, sc.CLONE_NEWPID)
                except OSError as exc:
                    if pid > 0:
                        _kill_quietly(pid)
                        _reap(pid)
                    raise ContainerStartError(
                        f"cannot return to the caller's pid namespace: {exc}",
                        step="pid namespace", errno=exc.errno) from exc
        return pid


def _fork_into_new_pidns() -> int:
    """``fork`` a child that is PID 1 of a new pid namespace (:func:`_fork_into_pidns`)."""
    return _fork_into_pidns(None)


# -- spawn: fork, set up, report -------------------------------------------------------


@dataclass
class Spawned:
    """A forked init: ``pid`` (host), ``pidfd`` (-1 without pidfd support),
    ``fate_fd``: for a created init, the fd number (in the init) of the pipe that
    reports what happens after ``start``; ``cgroup_created``: the cgroup is ours."""

    pid: int
    pidfd: int = -1
    fate_fd: int = -1
    cgroup_created: bool = False


def _read_sync(pipe: _LinePipe, timeout: float) -> bytes | None:
    """The next message of the init on the sync pipe (``N``, ``U``, or a ``C<fd>`` or
    ``P<pid>`` line);
    ``None`` at EOF (it died: its error is on the error pipe)."""
    deadline = time.monotonic() + timeout
    while True:
        if pipe.buf[:1] in (b"N", b"U"):
            byte, pipe.buf = pipe.buf[:1], pipe.buf[1:]
            return byte
        if b"\n" in pipe.buf or pipe.eof:
            return pipe.read_line(0)
        remaining = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([pipe.fd], [], [], remaining)
        if not ready:
            raise TimeoutError("no report from the init")
        chunk = os.read(pipe.fd, 4096)
        if not chunk:
            pipe.eof = True
        pipe.buf += chunk


def spawn(prepared: Prepared, spawned: Spawned, *,
          after_fork: Callable[[], None] | None = None,
          before_go: Callable[[], None] | None = None,
          hooks_state: Callable[[], bytes] | None = None,
          close_in_child: Sequence[int] = ()) -> None:
    """Fork the init of ``prepared`` and bring it to ``exec`` (or, with an exec fifo,
    to "created"), filling in ``spawned`` as it goes (so that the caller can tear
    down whatever exists when this raises).

    While the init sets up its namespaces and rootfs: when ``prepared.plan.wait_dirs``,
    ``after_fork()`` (makes the rootfs dirs) then ``D`` on the go pipe;
    ``before_go()`` (writes the caller's files: ``stdout`` and ``stderr`` too when
    ``prepared.plan.stdio_dir``); the cgroup is created (on cgroup v2 the init is
    moved into it). With hooks, once the init reports its namespaces: ``prestart`` and
    ``createRuntime`` hooks (the cgroup made first), then the State JSON
    ``hooks_state()`` is sent to the init (``createContainer``, ``startContainer``).
    Then ``1`` on the go pipe; then the init's ``exec`` (EOF on the error pipe) or
    its ``C`` report, or its error.

    ``close_in_child``: fds of the caller the init must not keep (a locked one: the
    ``flock`` would live as long as the init). With a user namespace the fork's
    child sets it up and clones the init (:func:`_user_namespace_handshake`).

    Raises ``ContainerStartError`` (``CommandNotFoundError`` when ``process.args[0]``
    is missing), ``HookError`` for a failing hook.
    """
    plan = prepared.plan
    err_r = err_w = life_r = life_w = go_r = go_w = sync_r = sync_w = -1
    try:
        err_r, err_w = os.pipe()
        life_r, life_w = os.pipe()
        go_r, go_w = os.pipe()
        sync_r, sync_w = os.pipe()
        mode = prepared.namespaces.pid if not plan.userns else "host"
        if mode == "new":
            pid = _fork_into_new_pidns()
        elif mode == "join":
            pid = _fork_into_pidns(prepared.pid_ns_fd)
        else:
            pid = _fork()
        if pid == 0:
            try:
                for fd in (err_r, life_w, go_w, sync_r, *close_in_child):
                    os.close(fd)
                child.run_init(plan, err_w, life_r, go_r, sync_w)
            finally:
                os._exit(127)
        spawned.pid = pid
    except BaseException:
        for fd in (err_r, life_w, go_w, sync_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (err_w, life_r, go_r, sync_w):
            if fd >= 0:
                os.close(fd)
        prepared.close()
    sync = _LinePipe(sync_r)
    try:
        if plan.userns:
            pid = _user_namespace_handshake(prepared, spawned, sync, go_w, err_r)
        if plan.wait_dirs:
            if after_fork is not None:
                after_fork()
            try:
                os.write(go_w, b"D")
            except BrokenPipeError:
                pass  # the init has failed already: its report is on the error pipe
        try:
            spawned.pidfd = os.pidfd_open(pid)
        except OSError:
            spawned.pidfd = -1  # waits poll waitid instead
        if before_go is not None:
            before_go()
        if plan.sync_hooks:
            if _read_sync(sync, START_TIMEOUT) != b"N":
                raise _failure(prepared, err_r)
        _create_cgroup(prepared, spawned)
        moved: OSError | None = None
        if plan.moved_by_caller:
            try:
                child.join_cgroup(tuple(str(p) for p in prepared.cgroup.procs_paths()), pid)
            except OSError as exc:
                moved = exc
        if moved is None:
            try:
                if plan.sync_hooks:
                    _run_runtime_hooks(prepared, hooks_state)
                    os.write(go_w, b"S" + (hooks_state() if hooks_state else b"{}") + b"\n")
                os.write(go_w, b"1")
            except BrokenPipeError:
                pass  # the init has failed already: its report is on the error pipe
        os.close(go_w)  # without "1" the init exits (nothing to report)
        go_w = -1
        if plan.exec_fifo is not None:
            line = _read_sync(sync, START_TIMEOUT)
            if line is None or not line.startswith(b"C"):
                raise _failure(prepared, err_r)
            spawned.fate_fd = int(line[1:])
            return
        error = _read_all(err_r, START_TIMEOUT)
        if error:
            raise start_error(prepared.container_id, prepared.args, error)
        if moved is not None:
            raise ContainerStartError(
                f"container {prepared.container_id} failed to start at cgroup: {moved}",
                container_id=prepared.container_id, argv=list(prepared.args), step="cgroup",
                errno=moved.errno) from moved
    except TimeoutError as exc:
        raise ContainerStartError(f"container {prepared.container_id} did not start within "
                                  f"{START_TIMEOUT} s", container_id=prepared.container_id,
                                  argv=list(prepared.args), step="timeout") from exc
    finally:
        for fd in (err_r, life_w, go_w):
            if fd >= 0:
                os.close(fd)
        sync.close()


def _user_namespace_handshake(prepared: Prepared, spawned: Spawned, sync: _LinePipe,
                              go_w: int, err_r: int) -> int:
    """The caller's side of a user namespace: for a new one, on ``U`` write the forked
    child's ``uid_map`` and ``gid_map`` and answer ``U``; then read ``P<pid>`` (the
    init it cloned, our child), reap the forked one. Returns the init's pid, now in
    ``spawned.pid``; on failure the forked child is killed and reaped
    (``spawned.pid`` 0 again) and ``ContainerStartError`` raised."""
    first = spawned.pid
    try:
        if prepared.plan.userns == "new":
            if _read_sync(sync, START_TIMEOUT) != b"U":
                raise _failure(prepared, err_r)
            rootless.write_id_maps(first, prepared.uid_map, prepared.gid_map,
                                   container_id=prepared.container_id, args=prepared.args)
            os.write(go_w, b"U")
        line = _read_sync(sync, START_TIMEOUT)
        if line is None or not line.startswith(b"P"):
            raise _failure(prepared, err_r)
        pid = int(line[1:])
    except BaseException:
        _kill_quietly(first)
        _reap(first)
        spawned.pid = 0
        raise
    _reap(first)  # it exits once the init is cloned
    spawned.pid = pid
    return pid


def _failure(prepared: Prepared, err_r: int) -> ContainerRuntimeError:
    """The init died before its report: its error, from the error pipe."""
    error = _read_all(err_r, START_TIMEOUT)
    return start_error(prepared.container_id, prepared.args,
                       error or b"init\0\0the container init exited without a report")


def _create_cgroup(prepared: Prepared, spawned: Spawned) -> None:
    try:
        prepared.cgroup.create(prepared.resources)  # type: ignore[arg-type]
    except InvalidOptionError:
        raise  # a limit the kernel cannot take: the caller's option, named as such
    except (OSError, ValueError) as exc:
        raise ContainerStartError(
            f"cannot create cgroup of container {prepared.container_id}: {exc}",
            container_id=prepared.container_id, argv=list(prepared.args), step="cgroup",
            errno=getattr(exc, "errno", None), field=getattr(exc, "field", None)) from exc
    spawned.cgroup_created = not isinstance(prepared.cgroup, rootless.NoCgroup)


def _run_runtime_hooks(prepared: Prepared, hooks_state: Callable[[], bytes] | None) -> None:
    """``prestart`` then ``createRuntime`` hooks, in the caller's namespaces."""
    state = hooks_state() if hooks_state else b"{}"
    for kind in ("prestart", "createRuntime"):
        run_hooks(prepared.hooks.get(kind, ()), state)


# -- in-process containers ------------------------------------------------------------


def _make_rootfs_dirs(base: str) -> None:
    """The overlay's mount point, ``upper`` and ``work`` in the state dir ``base``."""
    for name in ("rootfs", "upper", "work"):
        os.mkdir(f"{base}/{name}")


def _write_state_files(base: str, config: Mapping[str, Any], *, outputs: bool) -> None:
    """In the state dir ``base``: ``config.json`` (the seam with ``ptc-runtime`` and runc,
    and where the sweep finds the cgroup; the C encoder, compact) and, with
    ``outputs``, the empty ``stdout`` and ``stderr``."""
    _write_file(f"{base}/config.json", json.dumps(config, separators=(",", ":")).encode())
    for name in ("stdout", "stderr") if outputs else ():
        os.close(os.open(f"{base}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o644))


def _passwd_root(layers: Sequence[Path]) -> str:
    """The topmost layer with ``etc/passwd`` (where ``HOME`` is looked up)."""
    for layer in reversed(layers):
        if os.path.lexists(f"{layer}/etc/passwd"):
            return str(layer)
    return str(layers[-1])


class NativeContainer:
    """A container run by :class:`NativeRuntime` (the ``Container`` protocol).

    ``pid`` is the host pid of the container's PID 1, a child of the process that
    started it; signals go through a pidfd. ``process``: the prepared
    ``process`` of the config (:func:`~.process.prepare_process`), the base of
    every :meth:`exec`.
    """

    def __init__(self, container_id: str, state_dir: Path, config: dict[str, Any],
                 cgroup: CgroupV1 | CgroupV2 | rootless.NoCgroup,
                 process: ProcessPlan | None = None,
                 passwd_root: str = "/") -> None:
        self.id = container_id
        self.state_dir = state_dir
        self.config = config
        self.cgroup = cgroup
        self.process = process
        self.passwd_root = passwd_root
        self.stdout_path = state_dir / "stdout"
        self.stderr_path = state_dir / "stderr"
        self.pid = 0
        self._pidfd = -1
        self._raw_status: int | None = None
        self._exit: ExitStatus | None = None
        self._deleted = False
        self._owns_cgroup = False  # True once start() has created it
        self._execs = 0

    def __repr__(self) -> str:
        return f"<NativeContainer {self.id} pid={self.pid}>"

    # -- lifecycle ------------------------------------------------------------------

    def _receive_status(self, timeout: float | None) -> int | None:
        """Reap PID 1 once it has exited (its pidfd turns readable) and keep its raw
        wait status; ``None`` while it runs after ``timeout`` seconds."""
        if self._raw_status is not None:
            return self._raw_status
        if not self.pid:
            return None
        if not _exited(self._pidfd, self.pid, timeout):
            return None
        try:
            self._raw_status = os.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            # reaped behind our back (``waitpid(-1)`` elsewhere): the status is lost
            self._raw_status = _signal.SIGKILL
        return self._raw_status

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until PID 1 exits; ``TimeoutError`` after ``timeout`` seconds.

        ``oom_killed`` comes from the cgroup's ``oom_kill`` counter, never from 137.
        """
        if self._exit is not None:
            return self._exit
        status = self._receive_status(timeout)
        if status is None:
            raise TimeoutError(f"container {self.id} still running after {timeout} s")
        try:
            oom = self.cgroup.oom_kills() > 0
        except OSError:
            oom = False
        self._exit = ExitStatus.from_wait_status(status, oom_killed=oom)
        return self._exit

    def poll(self) -> ExitStatus | None:
        """The exit status if PID 1 has exited, else ``None`` (does not block)."""
        try:
            return self.wait(0)
        except TimeoutError:
            return None

    def kill(self, signal: int = 9) -> None:
        """Send ``signal`` to PID 1 through its pidfd; no error once it has exited.

        As PID 1 of its namespace it only receives SIGKILL, SIGSTOP and signals it
        has a handler for."""
        if self._exit is not None or self._raw_status is not None or self._pidfd < 0:
            return
        try:
            _signal.pidfd_send_signal(self._pidfd, signal)
        except ProcessLookupError:
            pass

    def stats(self) -> Stats:
        """The cgroup's counters (valid until :meth:`delete`)."""
        return self.cgroup.stats()

    def delete(self) -> None:
        """SIGKILL every process of the cgroup, reap, remove the cgroup, the mounts
        the container made in the caller's namespace when it has no mount namespace
        of its own (:func:`~..linux.hostmounts.undo`), and the state dir.
        Idempotent; tolerates anything already gone."""
        if self._deleted:
            return
        self._receive_status(0)
        # once PID 1 is reaped its pid namespace is gone, and every process of it
        # with it: the cgroup can only hold strays of exec() (helpers outside the
        # namespace), so without any exec there is nothing to look for
        if self._owns_cgroup and (self._raw_status is None or self._execs):
            self.cgroup.kill_all()
        self.kill(_signal.SIGKILL)
        self._receive_status(DELETE_TIMEOUT)
        if self._raw_status is not None and self._exit is None:
            self.wait(0)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._owns_cgroup:
            try:
                self.cgroup.remove()
            except CgroupError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                self.cgroup.kill_all()  # a process got in after all: kill, then again
                self.cgroup.remove()
        hostmounts.undo(self.state_dir)
        _remove_state_dir(self.state_dir)
        self._deleted = True

    # -- exec -----------------------------------------------------------------------

    def exec(self, args: list[str], *, env: list[str] | None = None, cwd: str | None = None,
             timeout: float | None = None) -> ExecResult:
        """Run ``args`` in the container's namespaces and cgroup to completion.

        ``env`` (``KEY=value`` entries) and ``cwd`` default to the container's; the
        user, capabilities and rlimits are the container's ``process``'s. Raises
        ``CommandNotFoundError`` when ``args[0]`` is not in the container,
        ``TimeoutError`` after ``timeout`` seconds (the command is killed),
        ``ContainerRuntimeError`` when the container is not running.
        """
        if not args:
            raise ValueError("exec needs a command")
        if self._deleted or self.poll() is not None:
            raise ContainerRuntimeError(f"container {self.id} is not running",
                                        container_id=self.id, argv=list(args))
        process = dict(self.config["process"])
        process["args"] = list(args)
        if env is not None:
            process["env"] = list(env)
        if cwd is not None:
            process["cwd"] = cwd
        plan = prepare_process(process, self.passwd_root,
                               seccomp=(self.config.get("linux") or {}).get("seccomp"))
        self._execs += 1  # an exec helper joins the cgroup outside the pid namespace
        return run_exec(self.id, self._pidfd, self.pid, self.config, self.cgroup, plan,
                        timeout=timeout)


def run_exec(container_id: str, pidfd: int, pid: int, config: Mapping[str, Any],
             cgroup: CgroupV1 | CgroupV2 | rootless.NoCgroup, plan: ProcessPlan, *,
             timeout: float | None = None) -> ExecResult:
    """Run ``plan`` in the namespaces of ``pid`` (its ``pidfd``) and in ``cgroup``, to
    completion, output captured. Raises ``CommandNotFoundError``, ``TimeoutError``
    (the command is killed), ``ContainerRuntimeError`` (step, errno)."""
    args = list(plan.args)
    ns_flags = namespaces_of(config).all_flags
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    epipe_r, epipe_w = os.pipe()
    status_r, status_w = os.pipe()
    exec_plan = child.ExecPlan(
        target_pidfd=pidfd, target_pid=pid, ns_flags=ns_flags,
        cgroup_procs=tuple(f"{d}/{rel}" for d, rel in cgroup.self_join_paths()),
        process=plan, stdout_fd=out_w, stderr_fd=err_w)
    parent = os.getpid()
    helper = _fork()
    if helper == 0:
        try:
            for fd in (out_r, err_r, epipe_r, status_r):
                os.close(fd)
            child.run_exec_helper(exec_plan, epipe_w, status_w, parent)
        finally:
            os._exit(127)
    for fd in (out_w, err_w, epipe_w, status_w):
        os.close(fd)
    status_pipe = _LinePipe(status_r)
    target = 0
    try:
        error = _read_all(epipe_r, START_TIMEOUT)
        if error:
            step, code, message = _parse_error(error)
            if step == "exec" and code == errno.ENOENT:
                raise CommandNotFoundError(
                    f"command not found in container {container_id}: {args[0]!r}",
                    argv=args, container_id=container_id)
            raise ContainerRuntimeError(
                f"exec in container {container_id} failed at {step}: {message}",
                argv=args, container_id=container_id, step=step, errno=code)
        line = status_pipe.read_line(START_TIMEOUT)
        target = int(line[1:]) if line and line.startswith(b"P") else 0
        stdout, stderr, status = _collect(out_r, err_r, status_pipe, timeout)
    except TimeoutError:
        if target:
            _kill_quietly(target)
        raise TimeoutError(
            f"exec {args!r} in {container_id} still running after {timeout} s") from None
    finally:
        for fd in (out_r, err_r, epipe_r):
            os.close(fd)
        status_pipe.close()
        if _reap_within(helper, 1.0) is None:
            _kill_quietly(helper)
            _reap(helper)
    result = ExitStatus.from_wait_status(status)
    return ExecResult(exit_code=result.exit_code, stdout=stdout, stderr=stderr,
                      signal=result.signal)


class NativeRuntime:
    """The ``native`` backend: containers from Python, namespaces and cgroups.

    ``state_root`` defaults to :func:`default_state_root`, for a caller that is not
    root to :func:`~.rootless.state_root` (``$XDG_RUNTIME_DIR/ptc``, else
    ``/run/user/<uid>/ptc``; ``ContainerRuntimeError`` without either). Such a
    caller's containers get a user namespace mapping its uid/gid to 0
    (:func:`~.rootless.add_user_namespace`) and, on cgroup v1, no cgroup: limits
    are refused naming the ``linux.resources`` field (:mod:`.rootless`).
    """

    name = "native"

    def __init__(self, state_root: Path | None = None) -> None:
        if state_root is not None:
            self.state_root = Path(state_root)
        elif rootless.is_rootless():
            self.state_root = rootless.state_root()
        else:
            self.state_root = default_state_root()

    def __repr__(self) -> str:
        return f"NativeRuntime(state_root={str(self.state_root)!r})"

    def close(self) -> None:
        """Nothing to release: the engine keeps no helper process between containers."""

    def start(self, spec: ContainerSpec, *, container_id: str) -> NativeContainer:
        """Create and start a container (see ``Runtime.start``): :func:`~..spec.to_config`
        with the overlay of ``spec.layers`` as its rootfs, then :func:`prepare` and
        :func:`spawn`. On failure nothing is left: process, cgroup, state dir."""
        if not spec.args:
            raise ContainerStartError("a container needs a command (args is empty)",
                                      container_id=container_id, argv=[])
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ValueError(f"invalid container id {container_id!r}")
        if not spec.layers:
            raise ContainerStartError(f"container {container_id} has no layers",
                                      container_id=container_id, argv=list(spec.args))
        state_dir = self.state_root / container_id
        try:
            os.mkdir(state_dir, 0o700)
        except FileNotFoundError:
            if rootless.is_rootless():
                rootless.prepare_state_root(self.state_root)
            else:
                self.state_root.mkdir(parents=True, exist_ok=True)
            os.mkdir(state_dir, 0o700)
        except PermissionError:
            if rootless.is_rootless():
                rootless.prepare_state_root(self.state_root)  # raises, naming the root
            raise
        except FileExistsError as exc:
            raise ContainerStartError(f"container {container_id} already exists",
                                      container_id=container_id, argv=list(spec.args)) from exc
        spawned = Spawned(pid=0)
        container: NativeContainer | None = None
        try:
            # before the fork: the sweep needs the owner of anything that may remain
            _write_file(f"{state_dir}/owner", b"%d\n" % os.getpid())
            rootfs = f"{state_dir}/rootfs"
            config = to_config(spec, container_id=container_id, rootfs=rootfs)
            if rootless.is_rootless():
                config = rootless.add_user_namespace(config)
            base = str(state_dir)
            passwd_root = _passwd_root(spec.layers)
            prepared = prepare(config, container_id=container_id, state_dir=state_dir,
                               bundle=base, rootfs=rootfs, layers=spec.layers,
                               resources=spec.resources, passwd_root=passwd_root,
                               checked=True, dirs_after_fork=True, stdio_dir=base)
            container = NativeContainer(container_id, state_dir, config, prepared.cgroup,
                                        prepared.plan.process, passwd_root)
            if not prepared.plan.rootfs.own_mount_namespace:
                try:  # before anything is mounted in our namespace
                    hostmounts.record(state_dir, rootfs)
                except BaseException:
                    prepared.close()
                    raise
            # the rest of the state dir is made after the fork, while the init unshares
            # its namespaces (a new network namespace alone is about 1 ms of the kernel's)
            # and mounts its rootfs
            outputs = bool(prepared.plan.stdio_dir)  # else made by prepare (user namespace)
            spawn(prepared, spawned, after_fork=lambda: _make_rootfs_dirs(base),
                  before_go=lambda: _write_state_files(base, config, outputs=outputs))
        except BaseException as exc:
            if container is None:
                _remove_state_dir(state_dir)
                if isinstance(exc, ValueError) and not isinstance(exc, ContainerStartError):
                    raise ContainerStartError(
                        f"container {container_id}: {exc}", container_id=container_id,
                        argv=list(spec.args), step="config",
                        field=getattr(exc, "option", None)) from exc
                raise
            container.pid, container._pidfd = spawned.pid, spawned.pidfd
            container._owns_cgroup = spawned.cgroup_created
            container.delete()
            raise
        container.pid, container._pidfd = spawned.pid, spawned.pidfd
        container._owns_cgroup = spawned.cgroup_created
        return container
