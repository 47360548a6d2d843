"""The native engine: runs a runtime-spec ``config.json`` with Python and syscalls.

Process tree of one container (host pids)::

    caller (pytest)                       keeps: pidfd of init, status pipe
    └── intermediate   pdeathsig KILL, unshare(CLONE_NEWPID), not in the cgroup
        └── init       PID 1 of the new pid namespace, in cgroup ``ptc/<id>``:
                       unshare(mnt, uts, ipc, net, cgroup), overlay rootfs mounted
                       in its own mount namespace, pivot_root, execve(args)

A ``kill -9`` of the caller kills the intermediate (pdeathsig), whose death
SIGKILLs the init (pdeathsig), whose death kills every process of the pid
namespace; the mount namespace, and with it the overlay, goes with the last
of them. What can remain (the cgroup directories and the state dir) carries
the caller's pid in ``owner`` for :func:`~.sweep.sweep`.

State dir ``<state_root>/<id>``: ``config.json``, ``owner``, ``rootfs/`` (the
overlay's mount point, only inside the container), ``upper/``, ``work/``,
``stdout``, ``stderr``.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal as _signal
import time
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import (
    CommandNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
)

from ..linux import syscalls as sc
from ..linux.cgroups import CgroupV1, CgroupV2, open_cgroup
from ..linux.mounts import overlay_options, plan_rootfs
from ..spec import to_config
from ..types import ContainerSpec, ExecResult, ExitStatus, Stats
from . import child
from .pipes import LinePipe as _LinePipe
from .pipes import collect as _collect
from .pipes import read_all as _read_all

__all__ = ["NativeContainer", "NativeRuntime", "default_state_root"]

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


def default_state_root() -> Path:
    """``/run/ptc`` for root, else ``$XDG_RUNTIME_DIR/ptc`` (``/tmp/ptc-<uid>`` without it)."""
    if os.geteuid() == 0:
        return Path("/run/ptc")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "ptc" if xdg else Path(f"/tmp/ptc-{os.getuid()}")


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

    ``pid`` is the host pid of the container's PID 1; signals go through a pidfd.
    """

    def __init__(self, container_id: str, state_dir: Path, config: dict[str, Any],
                 cgroup: CgroupV1 | CgroupV2) -> None:
        self.id = container_id
        self.state_dir = state_dir
        self.config = config
        self.cgroup = cgroup
        self.stdout_path = state_dir / "stdout"
        self.stderr_path = state_dir / "stderr"
        self.pid = 0
        self._helper_pid = 0
        self._pidfd = -1
        self._status_pipe: _LinePipe | None = None
        self._raw_status: int | None = None
        self._exit: ExitStatus | None = None
        self._deleted = False

    def __repr__(self) -> str:
        return f"<NativeContainer {self.id} pid={self.pid}>"

    # -- lifecycle ------------------------------------------------------------------

    def _receive_status(self, timeout: float | None) -> int | None:
        """Read the intermediate's ``S<status>`` report; ``None`` on timeout."""
        if self._raw_status is not None:
            return self._raw_status
        if self._status_pipe is None:
            return None
        while True:
            try:
                line = self._status_pipe.read_line(timeout)
            except TimeoutError:
                return None
            if line is None:
                # the intermediate died without reporting (killed): the init got SIGKILL
                self._raw_status = _signal.SIGKILL
                break
            if line.startswith(b"S"):
                self._raw_status = int(line[1:])
                break
            if line.startswith(b"P") and not self.pid:
                self.pid = int(line[1:])
        if self._helper_pid:
            _reap(self._helper_pid)
            self._helper_pid = 0
        self._status_pipe.close()
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
            oom = self.cgroup.stats().oom_kills > 0
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
        # once PID 1 is reported dead its pid namespace is gone; the cgroup can only
        # hold strays (an exec helper): kill_all returns at once when it is empty
        self.cgroup.kill_all()
        self.kill(_signal.SIGKILL)
        if self._status_pipe is not None and self._status_pipe.fd >= 0:
            if self._receive_status(DELETE_TIMEOUT) is None and self._helper_pid:
                os.kill(self._helper_pid, _signal.SIGKILL)
                self._receive_status(DELETE_TIMEOUT)
        if self._raw_status is not None and self._exit is None:
            self.wait(0)
        if self._helper_pid:
            _reap(self._helper_pid)
            self._helper_pid = 0
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        self.cgroup.remove()
        _remove_tree(self.state_dir)
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
            cgroup_procs=tuple(str(p) for p in self.cgroup.procs_paths()),
            args=tuple(args), env=env_map, path=_path_of(env_map),
            cwd=cwd or process.get("cwd", "/"),
            uid=process["user"].get("uid", 0), gid=process["user"].get("gid", 0),
            no_new_privs=bool(process.get("noNewPrivileges")),
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


def _remove_tree(path: Path) -> None:
    """``rm -r`` tolerating what is already gone."""
    def onexc(func, p, exc):  # noqa: ANN001
        if isinstance(exc, FileNotFoundError):
            return
        raise exc

    shutil.rmtree(path, onerror=lambda f, p, info: onexc(f, p, info[1]))


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
        state_dir = self.state_root / container_id
        self.state_root.mkdir(parents=True, exist_ok=True)
        try:
            state_dir.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise ContainerStartError(f"container {container_id} already exists",
                                      container_id=container_id, argv=list(spec.args)) from exc
        (state_dir / "owner").write_text(f"{os.getpid()}\n")
        rootfs = state_dir / "rootfs"
        config = to_config(spec, container_id=container_id, rootfs=str(rootfs))
        container = NativeContainer(container_id, state_dir, config,
                                    open_cgroup(config["linux"]["cgroupsPath"]))
        try:
            self._prepare(spec, container, rootfs)
        except BaseException:
            _remove_tree(state_dir)
            raise
        try:
            self._launch(spec, container)
        except BaseException:
            container.delete()
            raise
        return container

    def _prepare(self, spec: ContainerSpec, container: NativeContainer, rootfs: Path) -> None:
        state_dir = container.state_dir
        with open(state_dir / "config.json", "w") as f:
            json.dump(container.config, f, separators=(",", ":"))  # the C encoder
        for name in ("rootfs", "upper", "work"):
            (state_dir / name).mkdir()
        try:
            container.cgroup.create(spec.resources)
        except OSError as exc:
            raise ContainerStartError(
                f"cannot create cgroup of container {container.id}: {exc}",
                container_id=container.id, argv=list(spec.args), step="cgroup",
                errno=exc.errno) from exc

    def _plan(self, spec: ContainerSpec, container: NativeContainer, out: int, err: int
              ) -> child.InitPlan:
        if not spec.layers:
            raise ContainerStartError(f"container {container.id} has no layers",
                                      container_id=container.id, argv=list(spec.args))
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
        return child.InitPlan(
            rootfs=plan_rootfs(config, state_dir / "rootfs"),
            overlay_data=overlay_options(spec.layers, state_dir / "upper", state_dir / "work"),
            cgroup_procs=tuple(str(p) for p in container.cgroup.procs_paths()),
            unshare_flags=flags,
            hostname=config.get("hostname") if "uts" in types else None,
            loopback="network" in types,
            args=tuple(process["args"]), env=env, path=_path_of(env),
            cwd=process.get("cwd", "/"),
            uid=process["user"].get("uid", 0), gid=process["user"].get("gid", 0),
            rlimits=rlimits, no_new_privs=bool(process.get("noNewPrivileges")),
            stdout_fd=out, stderr_fd=err,
        )

    def _launch(self, spec: ContainerSpec, c: NativeContainer) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out = os.open(c.stdout_path, flags, 0o644)
        err = os.open(c.stderr_path, flags, 0o644)
        try:
            plan = self._plan(spec, c, out, err)
            epipe_r, epipe_w = os.pipe()
            status_r, status_w = os.pipe()
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(epipe_r)
                    os.close(status_r)
                    child.run_intermediate(plan, epipe_w, status_w, parent)
                finally:
                    os._exit(127)
        finally:
            os.close(out)
            os.close(err)
        os.close(epipe_w)
        os.close(status_w)
        c._helper_pid = pid
        c._status_pipe = _LinePipe(status_r)
        try:
            line = c._status_pipe.read_line(START_TIMEOUT)
            if line is not None and line.startswith(b"P"):
                c.pid = int(line[1:])
                try:
                    c._pidfd = os.pidfd_open(c.pid)
                except ProcessLookupError:
                    c._pidfd = -1  # exited and reaped already: its S report follows
            error = _read_all(epipe_r, START_TIMEOUT)
        except TimeoutError as exc:
            raise ContainerStartError(f"container {c.id} did not start within "
                                      f"{START_TIMEOUT} s", container_id=c.id,
                                      argv=list(spec.args), step="timeout") from exc
        finally:
            os.close(epipe_r)
        if error:
            step, code, message = _parse_error(error)
            if step == "exec" and code == errno.ENOENT:
                raise CommandNotFoundError(
                    f"command not found in the image: {spec.args[0]!r}",
                    argv=list(spec.args), container_id=c.id)
            raise ContainerStartError(
                f"container {c.id} failed to start at {step}: {message}",
                container_id=c.id, argv=list(spec.args), step=step, errno=code, stderr="")
        if not c.pid:
            raise ContainerStartError(f"container {c.id}: the init was not forked",
                                      container_id=c.id, argv=list(spec.args), step="fork")
        # an ``S`` already here means the init exited (the pidfd may be stale: unused)
        c._receive_status(0)
