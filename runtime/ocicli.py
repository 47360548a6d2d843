"""Any runc-compatible OCI runtime command line (runc, crun, ``ptc-runtime``) as a backend.

Implements the :class:`~.protocol.Runtime` protocol over the command line the
OCI runtime-tools suite and podman/conmon drive (``create``, ``start``,
``state``, ``kill``, ``exec``, ``delete``, with the global flags ``--root``
and ``--log``/``--log-format json``).

State of one container, under ``<state_root>/<id>`` (``/run/ptc`` for root)::

    bundle/config.json   runtime-spec config (spec.to_config, root.path "rootfs")
    bundle/rootfs/       overlay of spec.layers (base first) + upper/ + work/,
                         mounted on the host before create, unmounted at delete
    upper/ work/         the overlay's writable layer and its work dir
    stdout stderr        the container's output (also create's own stdio)
    pid                  --pid-file of create: host pid of the container's PID 1
    <binary>.log         the runtime's own log (JSON lines; errors, warnings)
    owner                pid of the process that started the container, written
                         first: the sweep's key (:mod:`~.sweep`)

and the runtime's own state in ``<state_root>/<id>/<binary>-root`` (``--root``),
one per container, so it goes with the state dir and no shared directory
is ever left behind or raced for.

Exit status. With ``create``/``start`` the container's init is a child of
``BINARY create``, which exits once the container is created, so the init is
not our child and its wait status would go to whoever reaps orphans. Each
container therefore gets a small waiting process (:data:`_WAITER`, Python run
with ``-I -S``): it makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``),
reads one request (argv of ``create``, the stdout/stderr files, the pid file)
from its stdin, runs ``BINARY create`` as its child with stdin ``/dev/null``
and the two files as stdout/stderr, reports create's wait status (``C N``) on
its stdout, and, once the init has been reparented to it, waits for it
and reports its raw wait status (``X N``). :meth:`OciCliContainer.wait`
decodes it with :meth:`ExitStatus.from_wait_status`, so the exit code is
exact: the status, or 128+N when killed by signal N. The runtime keeps one
spare waiter started ahead (interpreter start-up, about 25 ms, overlaps the
previous container's life).

Owner death. The waiter watches the process that spawned it (its owner,
``argv[1]``) through a pidfd: when the owner dies (``kill -9`` of pytest) a
spare exits, and a waiter with a container SIGKILLs the init (the pid
namespace's init: the whole container dies with it), reaps it and exits, within
milliseconds. A pidfd rather than ``PR_SET_PDEATHSIG``, which follows the death
of the spawning *thread*: a container started from a worker thread would be
killed when that thread ends (kernels without ``pidfd_open``, before 5.3, fall
back to it). What remains (cgroups, the rootfs mount, the runtime's state, the
state dir) is removed by :func:`~.sweep.sweep` at the next session start.

``run`` in the foreground would also give the exact code (runc's own exit
code) but runc removes the cgroup when the process exits unless ``--keep``
(which crun lacks), losing the OOM counter and the stats; the waiter keeps the
plain ``create``/``start`` contract every runc-compatible runtime has.

Init (``ContainerSpec.init``, docker's ``--init``): the config carries the
annotation ``org.ptc.init``, which only ``ptc-runtime`` honours (its init is
the native engine's, :func:`~.native.process.run_as_init`); runc and crun have
no init of ours, so :meth:`OciCliRuntime.start` refuses ``init`` for them with
``InvalidOptionError`` (``option="init"``) rather than run without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal as _signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from pytest_containers.exceptions import (
    CommandNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
    InvalidOptionError,
)

from .linux import cgroups, mounts
from .spec import DEFAULT_CGROUP_PARENT, cgroups_path, to_config
from .state import default_state_root
from .types import ContainerSpec, ExecResult, ExitStatus, ProcessInfo, Stats

__all__ = ["OciCliContainer", "OciCliRuntime"]

#: The waiting process: argv = [-c, owner pid], one JSON request line on stdin.
#: Writes ``C <wait status of create>\n`` then ``X <wait status of the init>\n``
#: (or ``L\n`` when the init never became its child) to its stdout. When the
#: owner dies: exits if idle, else SIGKILLs the init, reaps it and exits.
_WAITER = r"""
import ctypes, json, os, select, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
owner, init = int(sys.argv[1]), -1

def owner_died(*_):
    if init > 0:
        os.kill(init, signal.SIGKILL)
    os._exit(0)

def report(message):
    try:
        os.write(1, message)
    except OSError:
        pass

try:
    ofd = os.pidfd_open(owner)
except OSError:  # before Linux 5.3: the death of the spawning thread, not process
    ofd = None
    signal.signal(signal.SIGUSR2, owner_died)
    libc.prctl(1, signal.SIGUSR2, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != owner:
    sys.exit(0)
if 0 not in select.select([0] if ofd is None else [0, ofd], [], [])[0]:
    sys.exit(0)
line = sys.stdin.readline()
if not line:
    sys.exit(0)
req = json.loads(line)
argv, flags = req["argv"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
actions = [
    (os.POSIX_SPAWN_DUP2, os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), 0),
    (os.POSIX_SPAWN_DUP2, os.open(req["stdout"], flags, 0o644), 1),
    (os.POSIX_SPAWN_DUP2, os.open(req["stderr"], flags, 0o644), 2),
]
try:
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
except OSError as e:
    with open(req["stderr"], "a") as f:
        f.write("cannot run %s: %s\n" % (argv[0], e.strerror))
    report(b"C 32512\n")
    sys.exit(0)
st = os.waitpid(pid, 0)[1]
report(b"C %d\n" % st)
if st:
    sys.exit(0)
try:
    with open(req["pid_file"]) as f:
        init = int(f.read().strip())
except (OSError, ValueError):
    init = -1
owner_dead = False
if ofd is not None and init > 0:
    try:
        ifd = os.pidfd_open(init)
    except OSError:
        ifd = None
    if ifd is not None:
        while ifd not in select.select([ifd] if owner_dead else [ofd, ifd], [], [])[0]:
            try:
                signal.pidfd_send_signal(ifd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            owner_dead = True
while True:
    try:
        p, st = os.waitpid(-1, 0)
    except ChildProcessError:
        report(b"L\n")
        break
    if p == init:
        init = -1
        if not owner_dead:
            report(b"X %d\n" % st)
        break
"""

#: the runtime's error when ``process.args[0]`` cannot be executed because it is
#: missing (runc: ``exec: "x": executable file not found in $PATH`` or
#: ``exec: "/x": stat /x: no such file or directory``; crun: ``executable file
#: `x` not found in $PATH``)
_NOT_FOUND = re.compile(
    r"executable file .{0,200}not found|exec: .{0,300}no such file or directory"
    r"|exec(ve)? .{0,300}No such file or directory",
    re.IGNORECASE,
)
#: ``kill``/``delete`` of a container that has exited or is gone
_GONE = re.compile(
    r"not running|does not exist|container not found|no such container"
    r"|process already finished|not exist",
    re.IGNORECASE,
)


def _spawn_waiter() -> subprocess.Popen:
    """Start a waiting process (:data:`_WAITER`) owned by this process: it reads one
    request line from its stdin and reports on its stdout."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WAITER, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        start_new_session=True,  # a terminal's ^C must not kill it
    )


def _close_waiter(holder: list[subprocess.Popen | None]) -> None:
    """End an unused waiter: end of file on its stdin makes it exit."""
    waiter = holder[0]
    if waiter is None:
        return
    assert waiter.stdin is not None and waiter.stdout is not None  # both are PIPE
    with contextlib.suppress(OSError):
        waiter.stdin.close()
    try:
        waiter.wait(timeout=5)
    except subprocess.TimeoutExpired:
        waiter.kill()
        waiter.wait()
    with contextlib.suppress(OSError):
        waiter.stdout.close()


class OciCliRuntime:
    """A backend driving ``binary`` (``runc``, ``crun``, ``ptc-runtime``...) through
    its runc-compatible command line.

    ``state_root``: where container state dirs live (default
    :func:`default_state_root`); the runtime's own state is in each container's
    ``<state_root>/<id>/<binary name>-root`` (passed as ``--root``).
    """

    def __init__(self, binary: str = "runc", state_root: Path | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise ContainerRuntimeError(f"{binary!r} is not on PATH", argv=[binary])
        self.binary = path
        self.name = Path(binary).name
        self.state_root = Path(state_root) if state_root is not None else default_state_root()

        self._spare: subprocess.Popen | None = None
        self._spare_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_waiter, [None])

    def __repr__(self) -> str:
        return f"OciCliRuntime({self.name!r}, state_root={str(self.state_root)!r})"

    def _take_waiter(self) -> subprocess.Popen:
        """A started waiting process for the next container, and start the next spare
        (its interpreter start-up overlaps this container's create)."""
        with self._spare_lock:
            waiter = self._spare
            if waiter is None or waiter.poll() is not None:
                _close_waiter([waiter])
                waiter = _spawn_waiter()
            self._spare = _spawn_waiter()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_waiter, [self._spare])
            return waiter

    def argv(self, root: Path, *args: str) -> list[str]:
        """``BINARY --root ROOT args...``"""
        return [self.binary, "--root", str(root), *args]

    def run_cli(
        self, root: Path, *args: str, timeout: float | None = 60.0
    ) -> subprocess.CompletedProcess:
        """Run one subcommand to completion, stdout and stderr captured (bytes)."""
        return subprocess.run(
            self.argv(root, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def start(self, spec: ContainerSpec, *, container_id: str) -> OciCliContainer:
        """Build the bundle, ``create`` under a waiting process, then ``start``.

        Raises ``CommandNotFoundError`` when the runtime reports ``spec.args[0]``
        missing, ``ContainerStartError`` (``container_id``, ``argv``,
        ``returncode``, ``stderr``) for any other failure; nothing is left then.
        ``InvalidOptionError`` (``option="init"``), before anything is made, for
        ``spec.init`` with a runtime other than ``ptc-runtime``.
        """
        if spec.init and self.name != "ptc-runtime":
            raise InvalidOptionError(
                f"init: {self.name} has no init of ours (init=True, docker's --init, is"
                " for the native engine and ptc-runtime); run an init such as tini from"
                " the image instead", option="init", value=True)
        if not spec.layers:
            raise ContainerStartError(
                "a container needs at least one layer",
                container_id=container_id,
                argv=list(spec.args),
                returncode=None,
                stderr="",
            )
        container = OciCliContainer(self, container_id)
        container._cgroup_path = cgroups_path(container_id, spec.cgroup_parent)
        container._cgroup_parent = spec.cgroup_parent
        container._make_state_dir(spec)
        try:
            container._create(spec)
            container._start()
        except BaseException:
            container.delete()
            raise
        return container

    def close(self) -> None:
        """End the spare waiting process (also done when the runtime is collected, and
        by the spare itself when this process exits). Containers are not touched."""
        with self._spare_lock:
            _close_waiter([self._spare])
            self._spare = None



class OciCliContainer:
    """One container of an :class:`OciCliRuntime`; see the module docstring for
    its state dir. Every method tolerates a container that has already exited or
    been deleted."""

    def __init__(self, runtime: OciCliRuntime, container_id: str) -> None:
        self.runtime = runtime
        self.id = container_id
        self.pid = 0
        self.state_root = runtime.state_root
        self.state_dir = runtime.state_root / container_id
        self.bundle = self.state_dir / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.stdout_path = self.state_dir / "stdout"
        self.stderr_path = self.state_dir / "stderr"
        self.pid_file = self.state_dir / "pid"
        self.log_path = self.state_dir / f"{runtime.name}.log"
        self.runtime_root = self.state_dir / f"{runtime.name}-root"
        self._cgroup_path = cgroups_path(container_id)
        self._cgroup_parent = DEFAULT_CGROUP_PARENT
        self._process: dict = {}
        self._waiter: subprocess.Popen | None = None
        self._status_fd: int | None = None
        self._buffer = b""
        self._status: ExitStatus | None = None
        self._lost = False
        self._deleted = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"OciCliContainer({self.id!r}, runtime={self.runtime.name!r}, pid={self.pid})"

    # -- start --------------------------------------------------------------------

    def _make_state_dir(self, spec: ContainerSpec) -> None:
        """The state dir with its ``owner`` (this process's pid), before anything that
        could leak; an existing one is another container's and is left alone."""
        self.state_root.mkdir(parents=True, exist_ok=True)
        try:
            self.state_dir.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise ContainerStartError(
                f"container {self.id} already exists",
                container_id=self.id,
                argv=list(spec.args),
                returncode=None,
                stderr="",
            ) from exc
        try:
            (self.state_dir / "owner").write_text(f"{os.getpid()}\n")
        except BaseException:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def _create(self, spec: ContainerSpec) -> None:
        self.rootfs.mkdir(parents=True)
        upper, work = self.state_dir / "upper", self.state_dir / "work"
        upper.mkdir()
        work.mkdir()
        config = to_config(spec, container_id=self.id, rootfs="rootfs")
        self._process = config["process"]
        (self.bundle / "config.json").write_text(json.dumps(config, indent=1))
        mounts.mount_overlay(self.rootfs, [Path(p) for p in spec.layers], upper, work)

        argv = self.runtime.argv(
            self.runtime_root,
            "--log",
            str(self.log_path),
            "--log-format",
            "json",
            "create",
            "--bundle",
            str(self.bundle),
            "--pid-file",
            str(self.pid_file),
            self.id,
        )
        self._waiter = self.runtime._take_waiter()
        assert self._waiter.stdin is not None and self._waiter.stdout is not None
        self._status_fd = self._waiter.stdout.fileno()
        request = {"argv": argv, "stdout": str(self.stdout_path),
                   "stderr": str(self.stderr_path), "pid_file": str(self.pid_file)}  # fmt: skip
        try:
            self._waiter.stdin.write(json.dumps(request).encode() + b"\n")
            self._waiter.stdin.close()
        except BrokenPipeError:
            pass  # it died: read_message sees end of file
        message = self._read_message(timeout=None)
        if message is None or not message.startswith("C "):
            raise self._start_error(argv, None)
        status = int(message.split()[1])
        if status != 0:
            self._reap_waiter()
            returncode = os.waitstatus_to_exitcode(status)
            raise self._start_error(argv, returncode, spec.args)
        self.pid = self._read_pid()

    def _start(self) -> None:
        done = self.runtime.run_cli(self.runtime_root, "start", self.id)
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            raise ContainerStartError(
                f"{self.runtime.name} start {self.id} failed ({done.returncode}): {stderr.strip()}",
                container_id=self.id,
                argv=list(done.args),
                returncode=done.returncode,
                stderr=stderr,
            )

    def _read_pid(self) -> int:
        """Host pid of the init: the pid file (equal to ``state``'s ``pid``), else ``state``."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            done = self.runtime.run_cli(self.runtime_root, "state", self.id)
            if done.returncode == 0:
                return int(json.loads(done.stdout).get("pid") or 0)
            return 0

    def _start_error(
        self, argv: list[str], returncode: int | None, args: tuple[str, ...] = ()
    ) -> ContainerRuntimeError:
        stderr = self._runtime_errors()
        if _NOT_FOUND.search(stderr):
            return CommandNotFoundError(
                f"command not found in the container: {args[0] if args else '?'!r} "
                f"({stderr.strip()})",
                argv=list(args),
                container_id=self.id,
                returncode=returncode,
                stderr=stderr,
            )
        return ContainerStartError(
            f"{self.runtime.name} create {self.id} failed ({returncode}): {stderr.strip()}",
            container_id=self.id,
            argv=argv,
            returncode=returncode,
            stderr=stderr,
        )

    def _runtime_errors(self) -> str:
        """The runtime's error messages: error lines of its JSON log, else its stderr
        (which is the container's stderr file during create)."""
        messages = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    messages.append(str(entry.get("msg", "")))
        if messages:
            return "\n".join(messages) + "\n"
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- waiting ------------------------------------------------------------------

    def _read_message(self, timeout: float | None) -> str | None:
        """The next line from the waiter, or ``None`` at end of file; raises
        ``TimeoutError`` after ``timeout`` seconds (``None``: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self._status_fd is None:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._status_fd], [], [], remaining)
            if not ready:
                raise TimeoutError(f"container {self.id} still running after {timeout} s")
            chunk = os.read(self._status_fd, 4096)
            if not chunk:
                self._status_fd = None
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _reap_waiter(self) -> None:
        self._status_fd = None
        if self._waiter is not None and self._waiter.stdout is not None:
            self._waiter.stdout.close()
            try:
                self._waiter.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._waiter.kill()
                self._waiter.wait()
            self._waiter = None

    def _oom_killed(self) -> bool:
        try:
            return cgroups.open_cgroup(self._cgroup_path).stats().oom_kills > 0
        except OSError:
            return False

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until the init exits (``timeout`` seconds, ``None`` forever); the
        exit code is exact (128+N for signal N), ``oom_killed`` from the cgroup's
        ``oom_kill`` counter, read before the cgroup goes away at :meth:`delete`.

        Raises ``TimeoutError`` when still running after ``timeout``, and
        ``ContainerRuntimeError`` when the exit status was lost (the init was not
        reparented to the waiter, e.g. after an external ``delete``).
        """
        with self._lock:
            while self._status is None:
                if self._lost:
                    raise ContainerRuntimeError(
                        f"the exit status of container {self.id} was lost", container_id=self.id
                    )
                message = self._read_message(timeout)
                if message is None or message == "L":
                    self._lost = True
                    self._reap_waiter()
                elif message.startswith("X "):
                    status = int(message.split()[1])
                    self._status = ExitStatus.from_wait_status(
                        status, oom_killed=self._oom_killed()
                    )
                    self._reap_waiter()
            return self._status

    def poll(self) -> ExitStatus | None:
        """The exit status if the init has exited, else ``None``."""
        try:
            return self.wait(timeout=0)
        except TimeoutError:
            return None

    # -- operations on a running container -----------------------------------------

    def kill(self, signal: int = 9) -> None:
        """``BINARY kill ID SIGNAL``; a container that has exited or is gone is fine."""
        if self._deleted or self._status is not None:
            return
        done = self.runtime.run_cli(self.runtime_root, "kill", self.id, str(int(signal)))
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            if _GONE.search(stderr) or self.poll() is not None:
                return
            raise ContainerRuntimeError(
                f"{self.runtime.name} kill {self.id} {signal} failed: {stderr.strip()}",
                container_id=self.id,
                argv=list(done.args),
                returncode=done.returncode,
                stderr=stderr,
            )

    def exec(
        self,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """``BINARY exec --process P ID`` to completion, output captured; ``P`` is
        the container's ``process`` with ``args`` and, when given, ``env``
        (``KEY=value`` entries, replacing the container's) and ``cwd``.

        The exit code is the runtime's (128+N when killed by signal N, so
        ``signal`` is inferred from codes above 128). Raises
        ``CommandNotFoundError`` when ``args[0]`` is missing, ``TimeoutError``
        after ``timeout`` seconds (the exec'd process is killed first), and
        ``ContainerRuntimeError`` when the container is not running.
        """
        if not args:
            raise ValueError("exec needs a command")
        if self._deleted or self._status is not None:
            raise ContainerRuntimeError(
                f"container {self.id} is not running", container_id=self.id, argv=list(args)
            )
        process = dict(self._process)
        process["args"] = list(args)
        if env is not None:
            process["env"] = list(env)
        if cwd is not None:
            process["cwd"] = cwd
        tag = f"exec-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        process_file = self.state_dir / f"{tag}.json"
        process_file.write_text(json.dumps(process))
        pid_file = self.state_dir / f"{tag}.pid"
        argv = self.runtime.argv(
            self.runtime_root,
            "exec", "--pid-file", str(pid_file), "--process", str(process_file), self.id
        )
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        started = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), _signal.SIGKILL)
            out, err = proc.communicate()
            raise TimeoutError(
                f"exec {args!r} in {self.id} still running after {timeout} s"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                process_file.unlink()
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
                started = True
        code = proc.returncode
        if code != 0 and not started and self._exec_failed(err):
            text = err.decode(errors="replace")
            if _NOT_FOUND.search(text):
                raise CommandNotFoundError(
                    f"command not found in the container: {args[0]!r} ({text.strip()})",
                    argv=list(args),
                    container_id=self.id,
                    stderr=text,
                )
            raise ContainerRuntimeError(
                f"{self.runtime.name} exec in {self.id} failed ({code}): {text.strip()}",
                container_id=self.id,
                argv=argv,
                returncode=code,
                stderr=text,
            )
        return ExecResult(
            exit_code=code,
            stdout=out,
            stderr=err,
            signal=code - 128 if 128 < code < 128 + 65 else None,
        )

    def _exec_failed(self, stderr: bytes) -> bool:
        """Whether a non-zero ``exec`` is the runtime's failure rather than the command's
        exit code: its error lines name the exec (runc ``exec failed:``, crun ``exec``)."""
        text = stderr.decode(errors="replace")
        return bool(
            re.search(
                r"exec failed|container .{0,80}(not running|does not exist)"
                r"|cannot exec|" + _NOT_FOUND.pattern,
                text,
                re.IGNORECASE,
            )
        )

    def stats(self) -> Stats:
        """The cgroup's counters (:func:`cgroups.open_cgroup` of ``/ptc/<id>``)."""
        return cgroups.open_cgroup(self._cgroup_path).stats()

    @property
    def cgroup_path(self) -> str:
        """The container's cgroup relative to each hierarchy's root (``/ptc/<id>``)."""
        return self._cgroup_path

    def processes(self) -> list[ProcessInfo]:
        """Every process of the container's cgroup (:func:`~.native.top.processes`);
        empty once deleted."""
        from .native.top import processes

        return processes(cgroups.open_cgroup(self._cgroup_path))

    # -- teardown -------------------------------------------------------------------

    def delete(self) -> None:
        """``BINARY delete --force ID`` (kills and reaps the init), unmount the rootfs,
        remove leftover cgroup dirs and the state dir. Idempotent.

        The exit status stays readable through :meth:`wait` when it was seen.
        """
        with self._lock:
            if self._deleted:
                return
            errors: list[str] = []
            if self._waiter is not None and self._status is None:
                # keep the OOM counter: read it before delete removes the cgroup
                with contextlib.suppress(TimeoutError, ContainerRuntimeError):
                    self.wait(timeout=0)
            done = self.runtime.run_cli(self.runtime_root, "delete", "--force", self.id)
            if done.returncode != 0:
                stderr = done.stderr.decode(errors="replace")
                if not _GONE.search(stderr):
                    errors.append(f"{self.runtime.name} delete: {stderr.strip()}")
            if self._waiter is not None:
                with contextlib.suppress(TimeoutError, ContainerRuntimeError):
                    self.wait(timeout=10)
                self._reap_waiter()
            if mounts.is_mounted(self.rootfs):
                mounts.unmount(self.rootfs)
            try:
                cg = cgroups.open_cgroup(self._cgroup_path)
                if cg.pids():
                    cg.kill_all()
                keep = "" if self._cgroup_parent == DEFAULT_CGROUP_PARENT else self._cgroup_parent
                cgroups.remove_everywhere(self._cgroup_path, keep=keep)
            except OSError as exc:
                errors.append(str(exc))
            if self.state_dir.exists() and not mounts.is_mounted(self.rootfs):
                shutil.rmtree(self.state_dir, ignore_errors=True)
            self._deleted = True
            if errors:
                raise ContainerRuntimeError(
                    f"deleting container {self.id} left something behind: {'; '.join(errors)}",
                    container_id=self.id,
                )
