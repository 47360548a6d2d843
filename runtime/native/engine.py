"""The native engine: runs a runtime-spec ``config.json`` with Python and syscalls.

Process tree of one container (host pids)::

    caller (pytest)   keeps: pid and pidfd of init; reaps it with waitpid
    └── init          PID 1 of a new pid namespace, pdeathsig KILL. One fork: the
                      calling thread unshares CLONE_NEWPID, forks, and setns's back
                      into its own pid namespace. unshare(mnt, uts, ipc, net),
                      overlay rootfs in its own mount namespace, pivot_root; then
                      joins cgroup ``ptc/<id>`` (made by the caller meanwhile),
                      unshare(cgroup); drops capabilities to ``process.capabilities``
                      around the user change (as runc does), execve(args)

A ``kill -9`` of the caller SIGKILLs the init (pdeathsig), whose death kills
every process of the pid namespace; the mount namespace, and with it the
overlay, goes with the last of them. What can remain (the cgroup directories
and the state dir) carries the caller's pid in ``owner`` for
:func:`~.sweep.sweep`.

State dir ``<state_root>/<id>``: ``config.json``, ``owner``, ``rootfs/`` (the
overlay's mount point, only inside the container), ``upper/``, ``work/``,
``stdout``, ``stderr``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import select
import signal as _signal
import threading
import time
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import (
    CgroupError,
    CommandNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
)

from ..linux import syscalls as sc
from ..linux.capabilities import CapabilitySets, UnknownCapabilityError
from ..linux.cgroups import CgroupV1, CgroupV2, open_cgroup
from ..linux.mounts import overlay_options, plan_rootfs
from ..spec import to_config
from ..state import default_state_root
from ..types import ContainerSpec, ExecResult, ExitStatus, Stats
from . import child
from .pipes import LinePipe as _LinePipe
from .pipes import collect as _collect
from .pipes import read_all as _read_all
from .statedir import remove_state_dir as _remove_state_dir
from .statedir import write_file as _write_file

__all__ = ["NativeContainer", "NativeRuntime"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: seconds a container may take from fork to exec before ``start`` gives up
START_TIMEOUT = 60.0
#: seconds ``delete`` waits for the killed init to be reported
DELETE_TIMEOUT = 10.0

_NS_FLAGS = {
    "mount": sc.CLONE_NEWNS, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
    "network": sc.CLONE_NEWNET, "cgroup": sc.CLONE_NEWCGROUP,
}
_RLIMITS = {f"RLIMIT_{n}": getattr(resource, f"RLIMIT_{n}") for n in (
    "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE", "NOFILE",
    "NPROC", "RSS", "RTPRIO", "RTTIME", "SIGPENDING", "STACK") if hasattr(resource, f"RLIMIT_{n}")}


def _parse_error(data: bytes) -> tuple[str, int, str]:
    step, _, rest = data.decode(errors="replace").partition("\0")
    code, _, message = rest.partition("\0")
    try:
        return step, int(code), message
    except ValueError:
        return step, 0, rest


def _env_dict(env: list[str] | tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    return out


def _path_of(env: dict[str, str]) -> tuple[str, ...]:
    return tuple(env.get("PATH", DEFAULT_PATH).split(":"))


def _reap(pid: int) -> int | None:
    """``waitpid`` our child ``pid``; ``None`` when it was already reaped."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


class NativeContainer:
    """A container run by :class:`NativeRuntime` (the ``Container`` protocol).

    ``pid`` is the host pid of the container's PID 1, a child of the process that
    started it; signals go through a pidfd. ``capabilities``: the sets of
    ``process.capabilities`` as masks, applied to PID 1 and to every exec.
    """

    def __init__(self, container_id: str, state_dir: Path, config: dict[str, Any],
                 cgroup: CgroupV1 | CgroupV2, capabilities: CapabilitySets) -> None:
        self.id = container_id
        self.state_dir = state_dir
        self.config = config
        self.cgroup = cgroup
        self.capabilities = capabilities
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
        """SIGKILL every process of the cgroup, reap, remove the cgroup and the state
        dir. Idempotent; tolerates anything already gone."""
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
        _remove_state_dir(self.state_dir)
        self._deleted = True

    # -- exec -----------------------------------------------------------------------

    def exec(self, args: list[str], *, env: list[str] | None = None, cwd: str | None = None,
             timeout: float | None = None) -> ExecResult:
        """Run ``args`` in the container's namespaces and cgroup to completion.

        ``env`` (``KEY=value`` entries) and ``cwd`` default to the container's.
        Raises ``CommandNotFoundError`` when ``args[0]`` is not in the container,
        ``TimeoutError`` after ``timeout`` seconds (the command is killed),
        ``ContainerRuntimeError`` when the container is not running.
        """
        if not args:
            raise ValueError("exec needs a command")
        if self._deleted or self.poll() is not None:
            raise ContainerRuntimeError(f"container {self.id} is not running",
                                        container_id=self.id, argv=list(args))
        self._execs += 1  # an exec helper joins the cgroup outside the pid namespace
        process = self.config["process"]
        env_map = _env_dict(env if env is not None else process.get("env", ()))
        ns_flags = sc.CLONE_NEWPID
        for ns in self.config["linux"]["namespaces"]:
            ns_flags |= _NS_FLAGS.get(ns["type"], 0)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        epipe_r, epipe_w = os.pipe()
        status_r, status_w = os.pipe()
        plan = child.ExecPlan(
            target_pidfd=self._pidfd, target_pid=self.pid, ns_flags=ns_flags,
            cgroup_procs=tuple(f"{d}/{rel}" for d, rel in self.cgroup.self_join_paths()),
            args=tuple(args), env=env_map, path=_path_of(env_map),
            cwd=cwd or process.get("cwd", "/"),
            uid=process["user"].get("uid", 0), gid=process["user"].get("gid", 0),
            caps=self.capabilities, no_new_privs=bool(process.get("noNewPrivileges")),
            stdout_fd=out_w, stderr_fd=err_w,
        )
        parent = os.getpid()
        helper = os.fork()
        if helper == 0:
            try:
                for fd in (out_r, err_r, epipe_r, status_r):
                    os.close(fd)
                child.run_exec_helper(plan, epipe_w, status_w, parent)
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
                        f"command not found in container {self.id}: {args[0]!r}",
                        argv=list(args), container_id=self.id)
                raise ContainerRuntimeError(
                    f"exec in container {self.id} failed at {step}: {message}",
                    argv=list(args), container_id=self.id, step=step, errno=code)
            line = status_pipe.read_line(START_TIMEOUT)
            target = int(line[1:]) if line and line.startswith(b"P") else 0
            stdout, stderr, status = _collect(out_r, err_r, status_pipe, timeout)
        except TimeoutError:
            if target:
                _kill_quietly(target)
            raise TimeoutError(
                f"exec {args!r} in {self.id} still running after {timeout} s") from None
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


def _fork_into_new_pidns() -> int:
    """``fork`` a child that is PID 1 of a new pid namespace; returns its pid (0 in it).

    The calling thread ``unshare(CLONE_NEWPID)``\\ s (which only changes its own
    namespace for children), forks, then ``setns`` back into its own pid namespace.
    If that fails the child is killed and reaped and ``ContainerStartError`` is
    raised: the thread is then left in the dead namespace, where a fork fails
    (ENOMEM) instead of putting a process into a container's namespace."""
    with _PIDNS_LOCK:
        own = _own_pidns_fd()
        pid = -1
        try:
            sc.unshare(sc.CLONE_NEWPID)
            pid = os.fork()
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


class NativeRuntime:
    """The ``native`` backend: containers from Python, namespaces and cgroups.

    ``state_root`` defaults to :func:`default_state_root`.
    """

    name = "native"

    def __init__(self, state_root: Path | None = None) -> None:
        self.state_root = Path(state_root) if state_root is not None else default_state_root()

    def __repr__(self) -> str:
        return f"NativeRuntime(state_root={str(self.state_root)!r})"

    def close(self) -> None:
        """Nothing to release: the engine keeps no helper process between containers."""

    def start(self, spec: ContainerSpec, *, container_id: str) -> NativeContainer:
        """Create and start a container (see ``Runtime.start``). On failure nothing is
        left: process, cgroup, state dir."""
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
            self.state_root.mkdir(parents=True, exist_ok=True)
            os.mkdir(state_dir, 0o700)
        except FileExistsError as exc:
            raise ContainerStartError(f"container {container_id} already exists",
                                      container_id=container_id, argv=list(spec.args)) from exc
        try:
            # before the fork: the sweep needs the owner of anything that may remain
            _write_file(f"{state_dir}/owner", b"%d\n" % os.getpid())
            config = to_config(spec, container_id=container_id, rootfs=str(state_dir / "rootfs"))
            try:
                caps = CapabilitySets.from_config(config["process"].get("capabilities"))
            except UnknownCapabilityError as exc:
                raise ContainerStartError(
                    f"container {container_id}: {exc}", container_id=container_id,
                    argv=list(spec.args), step="capabilities") from exc
            container = NativeContainer(container_id, state_dir, config,
                                        open_cgroup(config["linux"]["cgroupsPath"]), caps)
        except BaseException:
            _remove_state_dir(state_dir)
            raise
        try:
            self._launch(spec, container)
        except BaseException:
            container.delete()
            raise
        return container

    def _prepare(self, spec: ContainerSpec, container: NativeContainer) -> None:
        """``config.json`` and the cgroup with its limits: done by the caller while its
        freshly forked init sets up namespaces and mounts."""
        # the C encoder; config.json is the seam with ptc-runtime and runc
        _write_file(f"{container.state_dir}/config.json",
                    json.dumps(container.config, separators=(",", ":")).encode())
        try:
            container.cgroup.create(spec.resources)
        except OSError as exc:
            raise ContainerStartError(
                f"cannot create cgroup of container {container.id}: {exc}",
                container_id=container.id, argv=list(spec.args), step="cgroup",
                errno=exc.errno) from exc
        container._owns_cgroup = True

    def _plan(self, spec: ContainerSpec, container: NativeContainer, out: int, err: int
              ) -> child.InitPlan:
        config = container.config
        process = config["process"]
        env = _env_dict(process.get("env", ()))
        flags = 0
        types = set()
        for ns in config["linux"]["namespaces"]:
            types.add(ns["type"])
            flags |= _NS_FLAGS.get(ns["type"], 0)
        rlimits = tuple((_RLIMITS[r["type"]], r["soft"], r["hard"])
                        for r in process.get("rlimits", ()) if r["type"] in _RLIMITS)
        state_dir = container.state_dir
        cgroup = container.cgroup
        return child.InitPlan(
            rootfs=plan_rootfs(config, state_dir / "rootfs"),
            overlay_data=overlay_options(spec.layers, state_dir / "upper", state_dir / "work"),
            # v2 has no lock-free self move: the caller moves the init (see _launch)
            cgroup_join=tuple((str(d), rel) for d, rel in cgroup.self_join_paths())
            if cgroup.version == 1 else (),
            moved_by_caller=cgroup.version != 1,
            unshare_flags=flags,
            hostname=config.get("hostname") if "uts" in types else None,
            loopback="network" in types,
            args=tuple(process["args"]), env=env, path=_path_of(env),
            cwd=process.get("cwd", "/"),
            uid=process["user"].get("uid", 0), gid=process["user"].get("gid", 0),
            rlimits=rlimits, caps=container.capabilities,
            no_new_privs=bool(process.get("noNewPrivileges")),
            stdout_fd=out, stderr_fd=err,
        )

    def _launch(self, spec: ContainerSpec, c: NativeContainer) -> None:
        """Fork the init, then, while it sets up its namespaces and rootfs, write
        ``config.json`` and create the cgroup (:meth:`_prepare`; on cgroup v2 also
        move the init into it) and send ``1`` on the go pipe; then wait for its
        ``exec`` (EOF on the error pipe) or its error report."""
        out = err = epipe_r = epipe_w = life_r = life_w = go_r = go_w = -1
        try:
            base = str(c.state_dir)
            for name in ("rootfs", "upper", "work"):
                os.mkdir(f"{base}/{name}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            out = os.open(c.stdout_path, flags, 0o644)
            err = os.open(c.stderr_path, flags, 0o644)
            plan = self._plan(spec, c, out, err)
            epipe_r, epipe_w = os.pipe()
            life_r, life_w = os.pipe()
            go_r, go_w = os.pipe()
            pid = _fork_into_new_pidns()
            if pid == 0:
                try:
                    os.close(epipe_r)
                    os.close(life_w)
                    os.close(go_w)
                    child.run_init(plan, epipe_w, life_r, go_r)
                finally:
                    os._exit(127)
            c.pid = pid
        except BaseException:
            for fd in (epipe_r, life_w, go_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (out, err, epipe_w, life_r, go_r):
                if fd >= 0:
                    os.close(fd)
        try:
            try:
                c._pidfd = os.pidfd_open(pid)
            except OSError:
                c._pidfd = -1  # waits poll waitid instead
            self._prepare(spec, c)
            moved: OSError | None = None
            if plan.moved_by_caller:
                try:
                    child.join_cgroup(tuple(str(p) for p in c.cgroup.procs_paths()), pid)
                except OSError as exc:
                    moved = exc
            if moved is None:
                try:
                    os.write(go_w, b"1")
                except BrokenPipeError:
                    pass  # the init has failed already: its report is on the error pipe
            os.close(go_w)  # without "1" the init exits (nothing to report)
            go_w = -1
            error = _read_all(epipe_r, START_TIMEOUT)
            if not error and moved is not None:
                raise ContainerStartError(
                    f"container {c.id} failed to start at cgroup: {moved}",
                    container_id=c.id, argv=list(spec.args), step="cgroup",
                    errno=moved.errno) from moved
        except TimeoutError as exc:
            raise ContainerStartError(f"container {c.id} did not start within "
                                      f"{START_TIMEOUT} s", container_id=c.id,
                                      argv=list(spec.args), step="timeout") from exc
        finally:
            for fd in (epipe_r, life_w, go_w):
                if fd >= 0:
                    os.close(fd)
        if error:
            step, code, message = _parse_error(error)
            if step == "exec" and code == errno.ENOENT:
                raise CommandNotFoundError(
                    f"command not found in the image: {spec.args[0]!r}",
                    argv=list(spec.args), container_id=c.id)
            raise ContainerStartError(
                f"container {c.id} failed to start at {step}: {message}",
                container_id=c.id, argv=list(spec.args), step=step, errno=code, stderr="")
