"""Detached containers (``pytest-containers run -d``), without a daemon: one monitor
process per container, and a record of it on disk.

:meth:`DetachedContainers.run` reserves the record, then forks twice: the
grandchild is the container's *monitor* (``comm`` ``ptc-monitor``; a session of
its own; stdin and stdout ``/dev/null``, stderr its ``monitor.log``). It starts
the container (:meth:`Containers.start <pytest_containers.containers.Containers.start>`:
store lease, snapshots, the backend), so it is the init's parent and the
engine's parent-death signal ties the container to it as it ties a test's
containers to pytest; it reports to ``run`` over a pipe, then waits for the
container, deletes it (processes, cgroup, mounts, state dir with its upper dir;
the lease is released), writes the exit status, OOM flag and last counters into
the record and exits; with ``--rm`` it removes the record too. Like podman's
conmon, but no subreaper is needed: the native engine's init is the monitor's
own child, and runc's is the command line backend's waiter's (itself a
subreaper)::

    pytest-containers run -d     prints the id once the monitor reported, exits
    └╌╌ intermediate             setsid, fork, exit at once (reaped by run)
        ptc-monitor              owns the record, the logs, the store lease
        └── container init       PID 1 of the container (pdeathsig: the monitor)

Record dir ``<state_root>/detached/<id>`` (``/run/ptc/detached/<id>`` for root;
the container's own state dir is ``<state_root>/<id>``, its ``owner`` the
monitor):

- ``state.json``: a :class:`DetachedState` (replaced atomically);
- ``stdout``, ``stderr``: hard links to the backend's output files, so that the
  logs outlive the container's state dir (copied at exit when they cannot be
  linked);
- ``monitor.log``: the monitor's own stderr (its errors, store lock waits).

Locks (``flock(2)``): the ``detached`` dir while a record is made (a name is
checked) and while the dir is removed once empty; a record dir shared by
:meth:`~DetachedContainers.wait` while it waits, exclusive by whoever removes
the record (``rm``, the ``--rm`` monitor), so that a waiter sees the exit status
before the record goes.

Death of the monitor (``kill -9``): the container dies with it (parent-death
signal, and the whole pid namespace with its init); the container's state dir
and cgroup, whose owner is the dead monitor, are removed by
:func:`~pytest_containers.runtime.sweep.sweep` (which ``run``, ``rm -f`` and
``prune`` call); the record stays, with the status ``dead``, until ``rm`` or
``prune``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pickle
import re
import select
import shutil
import signal as _signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from .exceptions import (
    ContainerNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
    InvalidOptionError,
)
from .runtime.state import default_state_root

if TYPE_CHECKING:
    from .containers import ContainerHandle, Containers
    from .runtime.types import ExitStatus, ProcessInfo

__all__ = ["DetachedContainers", "DetachedState", "Status"]

#: what a record says (``creating``, ``running``, ``exited``) and, when its monitor
#: died before writing an exit status, ``dead``
Status = Literal["creating", "running", "exited", "dead"]

#: seconds a stop waits after the stop signal before SIGKILL (docker's default)
STOP_TIMEOUT = 10.0
#: seconds ``rm -f`` waits for a monitor to clean up after the SIGKILL
REMOVE_TIMEOUT = 30.0
#: seconds between two looks at a record while waiting for its container to exit
POLL_INTERVAL = 0.02

_ID = re.compile(r"ptc-[0-9a-f]{12}")
#: docker's container names
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_STATE = "state.json"
_STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


def _start_time(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid`` (``/proc/<pid>/stat``
    fields 3 and 22, ``proc(5)``); ``None`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """Whether ``pid`` is the process that started at ``start`` and has not exited."""
    found = _start_time(pid) if pid > 0 else None
    return found is not None and found[1] == start and found[0] not in ("Z", "X")


def _pidfd(pid: int, start: int) -> int:
    """A pidfd of ``pid`` if it is still the process that started at ``start``, else -1.
    Checked after the open: the pidfd then names that process whatever happens."""
    if pid <= 0:
        return -1
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return -1
    if not _alive(pid, start):
        os.close(fd)
        return -1
    return fd


def _send_signal(pid: int, start: int, signal: int) -> bool:
    """Send ``signal`` to ``pid`` if it is still the process started at ``start``
    (through a pidfd: never to a reused pid); whether it was."""
    fd = _pidfd(pid, start)
    if fd < 0:
        return False
    try:
        _signal.pidfd_send_signal(fd, signal)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True)
class DetachedState:
    """The record of a detached container (``state.json``).

    ``id``: the container id (``ptc-`` and 12 hex digits); ``name``: ``--name``
    (``""``: none); ``image``: the reference given; ``runtime``: the backend's
    name; ``args``: the process's args once started; ``status``: ``creating``
    (the monitor starts it), ``running``, ``exited`` (see :meth:`live_status`
    for ``dead``); times in seconds since the epoch (``created_at``,
    ``started_at``, ``finished_at``); ``pid``/``pid_start``: host pid of the
    container's PID 1 and its start time (clock ticks since boot, ``proc(5)``
    ``stat`` field 22: a reused pid is never signalled); ``monitor_pid``/
    ``monitor_start``: the same for the monitor (before it exists, the ``run``
    command that makes it); ``cgroup``: the container's cgroup relative to each
    hierarchy's root; ``stop_signal``: what ``stop`` sends first (the image's
    ``STOPSIGNAL``, else SIGTERM); ``exit_code`` (128+N for signal N),
    ``signal``, ``oom_killed`` (the cgroup's ``oom_kill`` counter) and ``stats``
    (the counters at exit: ``memory_peak_bytes``, ``oom_kills``,
    ``cpu_usage_us``, ``pids_peak``...) once exited; ``stdout``/``stderr``: the
    log files; ``auto_remove``: ``--rm``; ``init``: ``--init``; ``error``: what went
    wrong while deleting the exited container, if anything.
    """

    id: str
    name: str
    image: str
    runtime: str
    created_at: float
    stdout: str
    stderr: str
    status: Literal["creating", "running", "exited"] = "creating"
    args: tuple[str, ...] = ()
    auto_remove: bool = False
    init: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    pid: int = 0
    pid_start: int = 0
    monitor_pid: int = 0
    monitor_start: int = 0
    cgroup: str = ""
    stop_signal: int = int(_signal.SIGTERM)
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        out = dataclasses.asdict(self)
        out["args"] = list(self.args)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetachedState:
        """Read a record back; unknown keys are ignored. Raises ``TypeError``,
        ``KeyError`` for one that is not a record."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["args"] = tuple(values.get("args") or ())
        return cls(**values)

    def monitor_alive(self) -> bool:
        """Whether the monitor (or, while ``creating``, the ``run`` making it) lives."""
        return _alive(self.monitor_pid, self.monitor_start)

    def live_status(self) -> Status:
        """``status``, or ``dead`` when the monitor died before the container's exit
        status was written (``kill -9`` of the monitor; the container died with it)."""
        if self.status == "exited" or self.monitor_alive():
            return self.status
        return "dead"


class _StopRequested(BaseException):
    """Raised in the monitor by SIGTERM, SIGINT or SIGHUP while it waits."""


def _write_state(record: Path, state: DetachedState) -> None:
    tmp = record / f"{_STATE}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(state.to_json(), f)
    os.rename(tmp, record / _STATE)


def _load(record: Path) -> DetachedState | None:
    """The record in ``record``; ``None`` when it is gone or unreadable."""
    try:
        with open(record / _STATE, "rb") as f:
            return DetachedState.from_json(json.loads(f.read()))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _send(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the report pipe (``BrokenPipeError``: ``run`` is gone)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _error_report(exc: BaseException) -> bytes:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - a foreign exception that does not pickle
        data = pickle.dumps(ContainerStartError(f"{type(exc).__name__}: {exc}"))
    return b"E%d\n" % len(data) + data


def _detach_stdio(record: Path) -> None:
    """stdin and stdout on ``/dev/null``, stderr on ``record/monitor.log``; every
    inheritable fd from 3 closed (ours are close-on-exec: those came from whoever
    ran ``run``, a CI runner's pipe must not stay open for the container's life)."""
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(record / "monitor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    for fd in (null, log):
        if fd > 2:
            os.close(fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.close(fd)
    with contextlib.suppress(OSError):
        with open("/proc/self/comm", "w") as f:
            f.write("ptc-monitor")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _link_or_copy_later(source: Path, target: Path) -> str:
    """Hard-link ``source`` as ``target`` (same inode: the container keeps writing
    it, it outlives the container's state dir); the path to read the log from."""
    try:
        os.link(source, target)
        return str(target)
    except OSError:
        return str(source)  # another file system: copied at exit (_keep_logs)


class DetachedContainers:
    """The detached containers of this host, under ``state_root`` (default
    :func:`~pytest_containers.runtime.state.default_state_root`, ``/run/ptc`` for
    root): records in ``<state_root>/detached``.

    Commands take a container as its id, its name, or an unambiguous prefix of its
    id (with or without ``ptc-``); an unknown or ambiguous one raises
    ``ContainerNotFoundError`` naming it.
    """

    def __init__(self, state_root: Path | None = None) -> None:
        self.state_root = Path(state_root) if state_root is not None else default_state_root()
        self.root = self.state_root / "detached"

    def __repr__(self) -> str:
        return f"DetachedContainers({str(self.state_root)!r})"

    # -- records ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _root_lock(self, *, create: bool = True) -> Iterator[bool]:
        """``flock`` the records dir (made first when ``create``); yields whether it
        exists. A dir removed while we waited for it is made and locked again."""
        while True:
            if create:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
            try:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if create:
                    continue
                yield False
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.root).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield True
                    return
            finally:
                os.close(fd)

    def _record(self, container_id: str) -> Path:
        return self.root / container_id

    def _scan(self) -> list[DetachedState]:
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            if _ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                state = _load(Path(entry.path))
                if state is not None:
                    found.append(state)
        return found

    def get(self, container: str) -> DetachedState:
        """The record of ``container`` (id, name or id prefix). Raises
        ``ContainerNotFoundError``."""
        states = self._scan()
        prefix = container if container.startswith("ptc-") else "ptc-" + container
        found = ([s for s in states if container and container in (s.id, s.name)]
                 or [s for s in states if s.id.startswith(prefix) and container])
        if len(found) == 1:
            return found[0]
        if found:
            raise ContainerNotFoundError(
                f"container {container!r} is ambiguous: it names "
                f"{', '.join(sorted(s.id for s in found))}", container_id=container)
        raise ContainerNotFoundError(f"no such container: {container!r} (no detached container"
                                     " has that id or name; see pytest-containers ps -a)",
                                     container_id=container)

    def ps(self, *, all: bool = False) -> list[DetachedState]:
        """The records, newest first: running (and creating) ones, every one with
        ``all``."""
        states = sorted(self._scan(), key=lambda s: s.created_at, reverse=True)
        if all:
            return states
        return [s for s in states if s.live_status() in ("running", "creating")]

    def inspect(self, container: str) -> dict[str, Any]:
        """The record of ``container`` as JSON-ready values, with ``status`` as
        :meth:`DetachedState.live_status` says and ``running``."""
        state = self.get(container)
        out = state.to_json()
        out["status"] = state.live_status()
        out["running"] = out["status"] == "running"
        return out

    def _reserve(self, name: str | None, image: str, runtime: str, auto_remove: bool,
                 init: bool) -> DetachedState:
        from .containers import new_container_id

        if name is not None and (not _NAME.fullmatch(name) or _ID.fullmatch(name)):
            raise InvalidOptionError(
                f"--name {name!r}: a name is a letter or digit, then letters, digits, '_',"
                " '.' or '-' (at most 128), and not an id (ptc- and 12 hex digits)",
                option="name", value=name)
        with self._root_lock():
            if name:
                for other in self._scan():
                    if other.name == name:
                        raise InvalidOptionError(
                            f"--name {name!r} is already in use by container {other.id} "
                            f"({other.live_status()}); remove it (pytest-containers rm) or "
                            "choose another name", option="name", value=name)
            container_id = new_container_id()
            record = self._record(container_id)
            os.mkdir(record, 0o700)
            me = _start_time(os.getpid())
            state = DetachedState(
                id=container_id, name=name or "", image=image, runtime=runtime,
                created_at=time.time(), stdout=str(record / "stdout"),
                stderr=str(record / "stderr"), auto_remove=auto_remove, init=init,
                monitor_pid=os.getpid(), monitor_start=me[1] if me else 0)
            try:
                _write_state(record, state)
            except BaseException:
                shutil.rmtree(record, ignore_errors=True)
                raise
        return state

    def _discard(self, container_id: str) -> None:
        """Remove the record (waiting for waiters' shared locks), then the records
        dir if it is empty. Tolerates a record already gone."""
        record = self._record(container_id)
        try:
            fd = os.open(record, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
                shutil.rmtree(record, ignore_errors=True)
        finally:
            if fd >= 0:
                os.close(fd)
        with self._root_lock(create=False) as exists:
            if exists:
                with contextlib.suppress(OSError):  # ENOTEMPTY: other records
                    os.rmdir(self.root)

    # -- run and the monitor ----------------------------------------------------------

    def run(self, factory: Containers, image: str,
            command: str | Sequence[str] | None = None, *, name: str | None = None,
            auto_remove: bool = False, **options: Any) -> DetachedState:
        """Start ``image`` (``command``, ``options`` as for :meth:`Containers.start
        <pytest_containers.containers.Containers.start>`: memory, cpus, env, init...)
        in a monitor process of its own, and return its record once it runs.
        ``factory``: the monitor's ``Containers`` (pull the image first: the monitor
        runs in the background). ``name``: unique among the records;
        ``auto_remove``: the record goes when the container exits (``--rm``).

        Raises what ``Containers.start`` raises (the monitor's exception, sent
        back), ``InvalidOptionError`` for a bad or taken name, and
        ``ContainerStartError`` when the monitor died before it reported; nothing
        is left then (the record is removed).
        """
        runtime = str(getattr(factory.runtime, "name", "?"))
        state = self._reserve(name, image, runtime, auto_remove, bool(options.get("init")))
        report_r, report_w = os.pipe()
        _flush()
        try:
            pid = os.fork()
        except BaseException:
            os.close(report_r)
            os.close(report_w)
            self._discard(state.id)
            raise
        if pid == 0:  # the intermediate: a new session, the monitor, and away
            try:
                os.close(report_r)
                os.setsid()
                if os.fork() == 0:
                    self._monitor(state, report_w, factory, image, command, options)
            finally:
                os._exit(0)
        os.close(report_w)
        try:
            os.waitpid(pid, 0)
            message = self._read_report(report_r)
        finally:
            os.close(report_r)
        if message is None:
            current = _load(self._record(state.id))
            if current is None or current.status == "creating":
                self._discard(state.id)
            raise ContainerStartError(
                f"the monitor of container {state.id} died before it reported"
                f" (see {self._record(state.id) / 'monitor.log'})",
                container_id=state.id, argv=None)
        if message[:1] == b"E":
            raise pickle.loads(message[1:])
        started = _load(self._record(state.id))
        if started is None:  # exited at once and removed (--rm)
            return dataclasses.replace(state, status="exited")
        return started

    @staticmethod
    def _read_report(fd: int) -> bytes | None:
        """The monitor's report: ``K`` (started) or ``E`` + a pickled exception;
        ``None`` at end of file before it (the monitor died). End of file is not
        awaited: a Python init (``init=True``), forked from the monitor, keeps a copy
        of the pipe."""
        buf = b""
        while True:
            if buf.startswith(b"K"):
                return b"K"
            if buf.startswith(b"E") and b"\n" in buf:
                head, _, body = buf.partition(b"\n")
                if len(body) >= int(head[1:]):
                    return b"E" + body[: int(head[1:])]
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk

    def _monitor(self, state: DetachedState, report_w: int, factory: Containers, image: str,
                 command: str | Sequence[str] | None, options: dict[str, Any]) -> NoReturn:
        """The monitor's life; see the module docstring. Never returns."""
        record = self._record(state.id)
        stopping: list[int] = []
        waiting = [False]

        def on_signal(signum: int, frame: object) -> None:
            stopping.append(signum)
            if waiting[0]:
                waiting[0] = False
                raise _StopRequested()

        try:
            _detach_stdio(record)
            for sig in _STOP_SIGNALS:
                _signal.signal(sig, on_signal)
            me = _start_time(os.getpid())
            state = dataclasses.replace(state, monitor_pid=os.getpid(),
                                        monitor_start=me[1] if me else 0)
            _write_state(record, state)
            try:
                handle = factory.start(image, command, container_id=state.id, **options)
            except BaseException as exc:  # noqa: B036 - it goes back to run
                with contextlib.suppress(OSError):
                    _send(report_w, _error_report(exc))
                self._discard(state.id)
                self._exit(factory, 1)
            try:
                state = self._started(record, state, handle)
                _send(report_w, b"K\n")
            except BaseException:  # noqa: B036 - run is gone (EPIPE): undo everything
                traceback.print_exc()
                handle.remove(keep_logs=False)
                self._discard(state.id)
                self._exit(factory, 1)
            os.close(report_w)
            status = self._supervise(handle, stopping, waiting)
            self._finish(record, state, handle, status)
        except BaseException:  # noqa: B036 - to monitor.log, then away
            traceback.print_exc()
        self._exit(factory, 0)

    @staticmethod
    def _exit(factory: Containers, code: int) -> NoReturn:
        with contextlib.suppress(Exception):
            factory.runtime.close()
        _flush()
        os._exit(code)

    @staticmethod
    def _started(record: Path, state: DetachedState, handle: ContainerHandle) -> DetachedState:
        started = _start_time(handle.pid)
        state = dataclasses.replace(
            state, status="running", args=tuple(handle.args), pid=handle.pid,
            pid_start=started[1] if started else 0, cgroup=handle.cgroup_path or "",
            stop_signal=int(handle.stop_signal), started_at=time.time(),
            stdout=_link_or_copy_later(handle.stdout_path, record / "stdout"),
            stderr=_link_or_copy_later(handle.stderr_path, record / "stderr"))
        _write_state(record, state)
        return state

    @staticmethod
    def _supervise(handle: ContainerHandle, stopping: list[int],
                   waiting: list[bool]) -> ExitStatus:
        """Wait for the container; a stop signal to the monitor (also one that came
        while it started) stops it: its stop signal, SIGKILL after
        :data:`STOP_TIMEOUT`."""
        try:
            waiting[0] = True
            if stopping:
                raise _StopRequested()
            status = handle.wait()
            waiting[0] = False
            return status
        except _StopRequested:
            waiting[0] = False
            return handle.stop(STOP_TIMEOUT)

    def _finish(self, record: Path, state: DetachedState, handle: ContainerHandle,
                status: ExitStatus) -> None:
        """Keep the logs and counters, delete the container, write the exit status;
        with ``--rm`` remove the record."""
        try:
            stats = dataclasses.asdict(handle.stats())
        except OSError:
            stats = {}
        logs: dict[str, Any] = {}
        for key, source in (("stdout", handle.stdout_path), ("stderr", handle.stderr_path)):
            kept = record / key
            if getattr(state, key) != str(kept):  # not linked: copy before it goes
                with contextlib.suppress(OSError):
                    shutil.copyfile(source, kept)
                logs[key] = str(kept)
        error = ""
        try:
            handle.remove(keep_logs=False)
        except Exception as exc:  # noqa: BLE001 - recorded; the sweep retries
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        state = dataclasses.replace(
            state, status="exited", exit_code=status.exit_code, signal=status.signal,
            oom_killed=status.oom_killed or bool(stats.get("oom_kills")),
            finished_at=time.time(), stats=stats, error=error, **logs)
        _write_state(record, state)
        if state.auto_remove:
            self._discard(state.id)

    # -- commands on a detached container ----------------------------------------------

    @staticmethod
    def _signal_init(state: DetachedState, signal: int) -> bool:
        """:func:`_send_signal` to the container's PID 1."""
        return _send_signal(state.pid, state.pid_start, signal)

    def _not_running(self, container: str, state: DetachedState) -> ContainerRuntimeError:
        message = f"container {container!r} ({state.id}) is not running ({state.live_status()})"
        return ContainerRuntimeError(message, container_id=state.id)

    def kill(self, container: str, signal: int = _signal.SIGKILL) -> DetachedState:
        """Send ``signal`` to the container's PID 1 (as PID 1 of its namespace it only
        gets SIGKILL, SIGSTOP and signals it has a handler for; with ``--init``
        every signal reaches the command). Raises ``ContainerRuntimeError`` when it is
        not running, ``ContainerNotFoundError``."""
        state = self.get(container)
        if state.live_status() != "running" or not self._signal_init(state, signal):
            raise self._not_running(container, state)
        return state

    def stop(self, container: str, timeout: float = STOP_TIMEOUT) -> DetachedState:
        """Send the stop signal (the image's ``STOPSIGNAL``, else SIGTERM), SIGKILL
        after ``timeout`` seconds (``0``: at once), and return the record once the
        monitor has written the exit status (128+N for signal N: 143, 137...). A
        container that is not running is returned as it is."""
        state = self.get(container)
        if state.live_status() != "running":
            return state
        if timeout <= 0 or not self._signal_init(state, state.stop_signal):
            self._signal_init(state, _signal.SIGKILL)
        return self._wait_exit(state, timeout, kill=True)

    def wait(self, container: str, timeout: float | None = None) -> DetachedState:
        """Block until the container has exited and its exit status is written
        (``timeout`` seconds, ``None`` forever; ``TimeoutError`` after it); returns the
        record (``exit_code``), or one whose :meth:`~DetachedState.live_status` is
        ``dead`` when the monitor died first."""
        return self._wait_exit(self.get(container), timeout)

    def _wait_exit(self, state: DetachedState, timeout: float | None, *,
                   kill: bool = False) -> DetachedState:
        """Poll the record (and the monitor's pidfd) until the exit status is written;
        after ``timeout`` seconds SIGKILL the container and wait on (``kill``), or
        raise ``TimeoutError``. A shared lock keeps the record meanwhile."""
        record = self._record(state.id)
        try:
            lock = os.open(record, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFoundError(f"no such container: {state.id}",
                                         container_id=state.id) from None
        monitor = -1
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)  # the record stays until we saw the exit
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                current = _load(record)
                if current is None:
                    raise ContainerNotFoundError(f"container {state.id} was removed",
                                                 container_id=state.id)
                if current.status == "exited" or not current.monitor_alive():
                    return current
                if monitor < 0:
                    monitor = _pidfd(current.monitor_pid, current.monitor_start)
                left = POLL_INTERVAL
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0 and kill:
                        self._signal_init(current, _signal.SIGKILL)
                        deadline, left = None, POLL_INTERVAL
                    elif left <= 0:
                        raise TimeoutError(
                            f"container {state.id} still running after {timeout} s")
                select.select([monitor] if monitor >= 0 else [], [], [], left)
        finally:
            os.close(lock)
            if monitor >= 0:
                os.close(monitor)

    def _wait_monitor(self, state: DetachedState, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the monitor to exit; whether it did."""
        fd = _pidfd(state.monitor_pid, state.monitor_start)
        if fd < 0:
            return True
        try:
            return bool(select.select([fd], [], [], timeout)[0])
        finally:
            os.close(fd)

    def remove(self, container: str, *, force: bool = False) -> DetachedState:
        """Remove the container: its record, and whatever is left of it (process,
        cgroup, mounts, state dir with the upper dir; the store lease goes with its
        monitor). A running one is refused (``ContainerRuntimeError``) unless
        ``force``: then it is SIGKILLed and its monitor cleans up. A ``dead`` one
        (its monitor was killed): what the sweep finds of it is removed
        (:func:`~pytest_containers.runtime.sweep.sweep`)."""
        state = self.get(container)
        status = state.live_status()
        if status in ("running", "creating"):
            if not force:
                raise ContainerRuntimeError(
                    f"container {container!r} ({state.id}) is {status}: stop it first, or"
                    " use rm -f", container_id=state.id)
            if status == "running":
                self._signal_init(state, _signal.SIGKILL)
            else:  # still starting: its monitor stops it once started
                _send_signal(state.monitor_pid, state.monitor_start, _signal.SIGTERM)
        if not self._wait_monitor(state, REMOVE_TIMEOUT):
            _send_signal(state.monitor_pid, state.monitor_start, _signal.SIGKILL)
            self._wait_monitor(state, REMOVE_TIMEOUT)
        current = _load(self._record(state.id))
        if current is not None and (current.status != "exited" or current.error):
            self._remove_leftovers(current)
        self._discard(state.id)
        return current or state

    def _remove_leftovers(self, state: DetachedState) -> None:
        """What a dead monitor left: processes of the cgroup SIGKILLed, then the sweep
        of every container whose owner is dead (this one's state dir and cgroup)."""
        from .runtime.linux.cgroups import open_cgroup
        from .runtime.sweep import sweep

        if state.cgroup:
            with contextlib.suppress(OSError, ValueError):
                open_cgroup(state.cgroup).kill_all()
        # the sweep takes a zombie owner for alive: wait until its reaper (the host's
        # init, which may poll) has reaped the dead monitor
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while time.monotonic() < deadline:
            found = _start_time(state.monitor_pid)
            if found is None or found[1] != state.monitor_start:
                break
            time.sleep(POLL_INTERVAL)
        sweep(self.state_root)

    def prune(self) -> list[str]:
        """Remove every exited or dead container's record and leftovers (and what the
        sweep finds of any container whose owner died); returns the removed ids."""
        removed = []
        for state in self._scan():
            if state.live_status() in ("exited", "dead"):
                with contextlib.suppress(ContainerNotFoundError):
                    self.remove(state.id)
                    removed.append(state.id)
        from .runtime.sweep import sweep

        sweep(self.state_root)
        with self._root_lock(create=False) as exists:
            if exists:
                with contextlib.suppress(OSError):
                    os.rmdir(self.root)
        return sorted(removed)

    def top(self, container: str) -> list[ProcessInfo]:
        """The processes of the running container's cgroup
        (:func:`~pytest_containers.runtime.native.top.processes`). Raises
        ``ContainerRuntimeError`` when it is not running."""
        from .runtime.linux.cgroups import open_cgroup
        from .runtime.native.top import processes

        state = self.get(container)
        if state.live_status() != "running" or not state.cgroup:
            raise self._not_running(container, state)
        return processes(open_cgroup(state.cgroup))
