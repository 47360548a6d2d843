"""Run images as containers: the ``containers`` factory and its handles.

``Containers.run`` runs a command to completion and returns a
:class:`RunResult`; ``Containers.start`` returns a :class:`ContainerHandle`.
Everything a factory started is killed and removed by :meth:`Containers.close`
(the ``containers`` fixture's teardown), undo-stack style, newest first.

A container holds a lease on its image's layer snapshots (its overlay
lowerdirs) from before they are unpacked until it is removed, so that an
``image prune`` meanwhile, in this process or another, keeps them
(:meth:`Store.lease <pytest_containers.image.store.Store.lease>`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import signal as _signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .convert import STOP_SIGNAL_ANNOTATION, container_spec
from .exceptions import ContainerStartError, ContainerTimeoutError, InvalidOptionError
from .image.locks import Lease
from .image.manifest import ImageConfig, Platform, host_can_run
from .runtime import Container, ExecResult, ExitStatus, Mount, Resources, Runtime, Stats
from .runtime.protocol import container_cgroup, container_processes
from .runtime.types import NetworkMode, ProcessInfo
from .wait import DEFAULT_INTERVAL, DEFAULT_TIMEOUT, WaitStrategy, check_wait, wait_until_ready

if TYPE_CHECKING:  # the registry client is not needed to stop or list containers
    from .images import Images


def new_container_id() -> str:
    """A fresh host-unique container id: ``ptc-`` and 12 hex digits."""
    return "ptc-" + secrets.token_hex(6)


_CONTAINER_ID = re.compile(r"ptc-[0-9a-f]{12}")


@dataclass(frozen=True)
class RunResult:
    """A container run to completion.

    ``exit_code`` is 128+N when killed by signal N; ``oom_killed`` comes from the
    cgroup's ``oom_kill`` counter; ``memory_peak_bytes`` from the kernel's peak
    (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``).
    """

    container_id: str
    exit_code: int
    stdout: str
    stderr: str
    oom_killed: bool
    memory_peak_bytes: int | None
    signal: int | None
    stats: Stats

    @property
    def ok(self) -> bool:
        """True when the exit code is 0."""
        return self.exit_code == 0


def signal_number(signal: int | str) -> int:
    """``9``, ``"KILL"``, ``"SIGKILL"`` and ``"9"`` -> 9 (``signal(7)`` names; numbers
    from 1 to ``SIGRTMAX``). Raises ``InvalidOptionError`` (``option="signal"``)
    for anything else."""
    if isinstance(signal, int) or str(signal).strip().isdigit():
        number = int(signal)
        if not 1 <= number <= _signal.SIGRTMAX:
            raise InvalidOptionError(
                f"unknown signal {signal!r}: numbers go from 1 to {int(_signal.SIGRTMAX)}",
                option="signal", value=signal)
        return number
    text = str(signal).strip().upper()
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise InvalidOptionError(f"unknown signal {signal!r}", option="signal",
                                 value=signal) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


class ContainerHandle:
    """A running (or exited) container started by :meth:`Containers.start`."""

    def __init__(
        self,
        container: Container,
        *,
        image: str,
        args: Sequence[str],
        lease: Lease | None = None,
        stop_signal: int | str = _signal.SIGTERM,
        image_config: ImageConfig | None = None,
    ) -> None:
        self._container = container
        self.image = image
        self.args = tuple(args)
        #: the image's config (``None`` when not known); ``wait.for_healthcheck`` reads it
        self.image_config = image_config
        #: what :meth:`stop` sends first: the image's ``STOPSIGNAL``, else SIGTERM
        self.stop_signal = signal_number(stop_signal)
        self._lease = lease
        self._status: ExitStatus | None = None
        self._stats: Stats | None = None
        self._logs: tuple[bytes, bytes] | None = None
        self._removed = False

    @property
    def id(self) -> str:
        """The container id, ``ptc-<12 hex>``."""
        return self._container.id

    @property
    def pid(self) -> int:
        """Host pid of the container's PID 1."""
        return self._container.pid

    @property
    def stdout_path(self) -> Path:
        """File receiving the container's stdout (gone after :meth:`remove`)."""
        return self._container.stdout_path

    @property
    def stderr_path(self) -> Path:
        """File receiving the container's stderr (gone after :meth:`remove`)."""
        return self._container.stderr_path

    def __repr__(self) -> str:
        return f"<ContainerHandle {self.id} {self.image} {list(self.args)!r}>"

    def exec(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = 60.0,
    ) -> ExecResult:
        """Run ``command`` in the container's namespaces and cgroup, to completion
        (``timeout`` seconds). Returns exit code, stdout and stderr bytes."""
        from .convert import command_args

        args = command_args(command) or []
        env_list = [f"{k}={v}" for k, v in env.items()] if env else None
        return self._container.exec(args, env=env_list, cwd=workdir, timeout=timeout)

    def logs(self, stream: Literal["stdout", "stderr", "both"] = "both") -> str:
        """The container's output so far, decoded as UTF-8 (invalid bytes replaced)."""
        out, err = (
            self._logs
            if self._logs
            else (_read(self._container.stdout_path), _read(self._container.stderr_path))
        )
        data = {"stdout": out, "stderr": err, "both": out + err}[stream]
        return data.decode("utf-8", "replace")

    def poll(self) -> ExitStatus | None:
        """The exit status when the process has exited, else ``None``."""
        if self._status is None:
            self._status = self._container.poll()
        return self._status

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait for the process to exit (``timeout`` seconds; raises ``TimeoutError``)."""
        if self._status is None:
            self._status = self._container.wait(timeout)
        return self._status

    def wait_for(
        self,
        strategy: WaitStrategy,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = DEFAULT_INTERVAL,
    ) -> ContainerHandle:
        """Wait until ``strategy`` (``pytest_containers.wait.for_log``, ``for_port``,
        ...) finds the container ready, checking every ``interval`` seconds for at
        most ``timeout`` seconds; returns this handle. Raises ``InvalidOptionError``
        before waiting for a bad argument, ``ContainerWaitError`` at once when the
        container exits (or the strategy can never succeed), else after ``timeout``
        (see :func:`pytest_containers.wait.wait_until_ready`)."""
        wait_until_ready(self, strategy, timeout=timeout, interval=interval)
        return self

    def kill(self, signal: int | str = _signal.SIGKILL) -> None:
        """Send ``signal`` to the container's PID 1: a number, or a name with or
        without ``SIG`` (``"TERM"``, ``"SIGTERM"``). Raises ``InvalidOptionError``
        for an unknown name."""
        if self.poll() is None:
            self._container.kill(signal_number(signal))

    def stop(self, timeout: float = 10.0, *, signal: int | str | None = None) -> ExitStatus:
        """Send ``signal`` (default :attr:`stop_signal`: the image's ``STOPSIGNAL``,
        else SIGTERM), then SIGKILL after ``timeout`` seconds, like ``docker stop``;
        returns the exit status (128+N for signal N: 143 for SIGTERM, 137 after the
        SIGKILL). ``timeout=0`` kills at once.

        A PID 1 with no handler for the signal ignores it (the kernel's rule for a
        namespace's init), so such a container is killed after ``timeout``."""
        if self.poll() is None:
            if timeout > 0:
                self._container.kill(self.stop_signal if signal is None else signal_number(signal))
                try:
                    return self.wait(timeout)
                except TimeoutError:
                    pass
            self._container.kill(_signal.SIGKILL)
        return self.wait(None)

    def top(self) -> list[ProcessInfo]:
        """The processes of the container's cgroup, by host pid (``docker top``): each
        with ``pid`` (host), ``ns_pid`` (in the container's pid namespace, ``1`` for its
        PID 1; ``None`` for a process not in it), ``ppid``, ``uid``, ``user`` (its name
        in the container's ``/etc/passwd``), ``state`` and ``args``
        (:class:`~pytest_containers.runtime.types.ProcessInfo`). Empty once the
        container has exited and been removed. With ``init=True`` the init (the
        engine's Python, ``ns_pid`` 1) is listed too."""
        if self._removed:
            return []
        return container_processes(self._container)

    def stats(self) -> Stats:
        """The kernel's counters of the container's cgroup (kept after removal)."""
        if self._removed and self._stats is not None:
            return self._stats
        return self._container.stats()

    @property
    def cgroup_path(self) -> str | None:
        """The container's cgroup relative to each hierarchy's root (``/ptc/<id>``, or
        under a session's parent); ``None`` when the backend does not say."""
        cgroup = container_cgroup(self._container)
        return None if cgroup is None else cgroup.path

    def remove(self, *, keep_logs: bool = True) -> None:
        """Kill and delete the container, keeping its logs (in memory, for
        :meth:`logs`; not with ``keep_logs=False``) and last stats, then release its
        lease on the image's snapshots. Idempotent."""
        if self._removed:
            return
        try:
            self._stats = self._container.stats()
        except OSError:
            self._stats = self._stats or Stats()
        if keep_logs:
            self._logs = (_read(self._container.stdout_path),
                          _read(self._container.stderr_path))
        else:
            self._logs = (b"", b"")
        self._container.delete()
        self._removed = True
        if self._status is None:
            with contextlib.suppress(Exception):  # how it ended, when delete reaped it
                self._status = self._container.poll()
        if self._lease is not None:
            self._lease.release()

    def usage(self) -> dict[str, object]:
        """What the container used, for a test's bill: ``id``, ``image``, ``args``,
        ``exit_code`` (``None`` while running or unknown), ``oom_killed``,
        ``memory_peak_bytes``, ``cpu_usage_us``, ``cpu_throttled_us``, ``pids_peak``
        (the kernel's counters; final once :meth:`remove` ran, ``None`` where the
        host has no such file)."""
        try:
            stats = self.stats()
        except OSError:
            stats = self._stats or Stats()
        status = self._status
        return {
            "id": self.id,
            "image": self.image,
            "args": list(self.args),
            "exit_code": None if status is None else status.exit_code,
            "oom_killed": bool(status and status.oom_killed) or bool(stats.oom_kills),
            "memory_peak_bytes": stats.memory_peak_bytes,
            "cpu_usage_us": stats.cpu_usage_us,
            "cpu_throttled_us": stats.cpu_throttled_us,
            "pids_peak": stats.pids_peak,
        }


class Containers:
    """Start containers from images, and remove all of them at :meth:`close`.

    ``images`` resolves references to images in the store (pulling per the
    pull policy); ``runtime`` is the backend; ``cgroup_parent`` the cgroup the
    containers' cgroups are made in (the ``containers`` fixture passes the
    session's, :func:`~pytest_containers.fixtures.container_cgroup_parent`).
    """

    def __init__(self, images: Images, runtime: Runtime, *, cgroup_parent: str = "/ptc") -> None:
        self.images = images
        self.runtime = runtime
        #: the cgroup the containers' own cgroups are made in (its limits apply to all)
        self.cgroup_parent = cgroup_parent
        self._history: list[ContainerHandle] = []
        self._started: list[ContainerHandle] = []

    def start(
        self,
        image: str,
        command: str | Sequence[str] | None = None,
        *,
        entrypoint: str | Sequence[str] | None = None,
        memory: int | str | None = None,
        cpus: float | None = None,
        pids: int | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | int | None = None,
        hostname: str | None = None,
        network: NetworkMode = "none",
        volumes: Sequence[Mount] = (),
        read_only: bool = False,
        platform: Platform | str | None = None,
        allow_foreign_platform: bool = False,
        wait: WaitStrategy | None = None,
        wait_timeout: float = DEFAULT_TIMEOUT,
        init: bool = False,
        container_id: str | None = None,
    ) -> ContainerHandle:
        """Start ``image`` (a reference) and return its handle.

        ``memory`` in bytes or ``"64m"``; ``cpus`` a float count of CPUs;
        ``pids`` the pids limit; ``command`` replaces the image's CMD (a list,
        or a string split like a shell). ``platform`` (``"linux/arm64"``, a
        :class:`Platform`; default the ``images`` factory's, else the host's)
        picks the entry of a multi-platform image. An image whose config
        platform this machine cannot run (see
        :func:`~pytest_containers.image.manifest.host_can_run`: natively, or
        through a binfmt_misc handler such as qemu-user-static) is refused with
        ``ContainerStartError`` before anything is unpacked, unless
        ``allow_foreign_platform``. Raises ``InvalidReferenceError``,
        ``InvalidOptionError`` (platform), registry errors when the image must
        be pulled, ``PlatformNotFoundError``, ``CommandNotFoundError`` when the
        command is not in the image, ``ContainerStartError``,
        ``StoreLockTimeoutError`` when a store lock stays held (another process
        unpacking a layer, or pruning a snapshot, for longer than
        ``LOCK_TIMEOUT``).

        ``wait``: a strategy of :mod:`pytest_containers.wait` the container must
        satisfy within ``wait_timeout`` seconds before it is returned (see
        :meth:`ContainerHandle.wait_for`); when it does not, the container is
        removed and ``ContainerWaitError`` raised (``InvalidOptionError`` for a bad
        ``wait`` or ``wait_timeout``, before anything starts).

        ``init``: run a minimal init as the container's PID 1 (docker's
        ``--init``): it forks the command, forwards every signal to it (a stop's
        SIGTERM reaches a command that has no handler for it, which as PID 1 it
        would ignore), reaps orphaned zombies and exits with the command's status.
        For the native engine and ``ptc-runtime``; the runc and crun backends
        raise ``InvalidOptionError``. ``container_id``: the id to use (``ptc-``
        and 12 hex digits, unique on the host), default a fresh one
        (:func:`new_container_id`).
        """
        if container_id is not None and not _CONTAINER_ID.fullmatch(container_id):
            raise InvalidOptionError(
                f"container_id {container_id!r} is not 'ptc-' and 12 hex digits",
                option="container_id", value=container_id)
        if wait is not None:
            check_wait(wait, timeout=wait_timeout, timeout_option="wait_timeout")
        resources = Resources.from_options(memory=memory, cpus=cpus, pids=pids)
        img = self.images.get(image, platform=platform)
        image_platform = img.config.platform
        if not allow_foreign_platform and not host_can_run(image_platform):
            raise ContainerStartError(
                f"image {img.reference} is for {image_platform}, which this machine"
                f" ({Platform.host()}) cannot run: no native support and no binfmt_misc"
                " handler with the F flag (qemu-user-static) for it; pass"
                " allow_foreign_platform=True to start it anyway",
                container_id=None,
                argv=None,
                stderr="",
                image=str(img.reference),
                platform=str(image_platform),
                host=str(Platform.host()),
            )
        lease = self.images.lease(img)  # before unpacking: a prune keeps them from now on
        try:
            layers = self.images.snapshots(img)
            container_id = container_id or new_container_id()
            spec = container_spec(
                layers=layers,
                image_config=img.config,
                command=command,
                entrypoint=entrypoint,
                env=env,
                workdir=workdir,
                user=user,
                hostname=hostname or container_id[4:],
                resources=resources,
                mounts=volumes,
                network=network,
                read_only=read_only,
                init=init,
            )
            spec = dataclasses.replace(spec, cgroup_parent=self.cgroup_parent)
            stop_signal = dict(spec.annotations).get(STOP_SIGNAL_ANNOTATION) or _signal.SIGTERM
            try:
                stop_signal = signal_number(stop_signal)
            except InvalidOptionError as exc:
                raise InvalidOptionError(
                    f"image {img.reference}: STOPSIGNAL {stop_signal!r} is not a signal",
                    option="StopSignal",
                    value=stop_signal,
                ) from exc
            container = self.runtime.start(spec, container_id=container_id)
        except BaseException:
            lease.release()
            raise
        handle = ContainerHandle(
            container,
            image=image,
            args=spec.args,
            lease=lease,
            stop_signal=stop_signal,
            image_config=img.config,
        )
        self._started.append(handle)
        self._history.append(handle)
        if wait is not None:
            try:
                handle.wait_for(wait, timeout=wait_timeout)
            except BaseException:
                handle.remove()
                raise
        return handle

    def run(
        self,
        image: str,
        command: str | Sequence[str] | None = None,
        *,
        timeout: float | None = 300.0,
        **options: object,
    ) -> RunResult:
        """Run ``image`` to completion and remove it. Options as for :meth:`start`.

        After ``timeout`` seconds the container is killed and removed and
        ``ContainerTimeoutError`` (a ``TimeoutError``) raised, carrying the
        output until then in its ``stdout`` and ``stderr`` fields."""
        handle = self.start(image, command, **options)  # type: ignore[arg-type]
        try:
            status = handle.wait(timeout)
        except TimeoutError:
            handle.remove()
            raise ContainerTimeoutError(
                f"container {handle.id} ({image} {list(handle.args)!r}) still running after "
                f"{timeout} s; killed", container_id=handle.id, timeout=timeout,
                stdout=handle.logs("stdout"), stderr=handle.logs("stderr"),
            ) from None
        handle.remove()
        stats = handle.stats()
        return RunResult(
            container_id=handle.id,
            exit_code=status.exit_code,
            stdout=handle.logs("stdout"),
            stderr=handle.logs("stderr"),
            oom_killed=status.oom_killed,
            memory_peak_bytes=stats.memory_peak_bytes,
            signal=status.signal,
            stats=stats,
        )

    @property
    def started(self) -> list[ContainerHandle]:
        """Every handle this factory started, oldest first."""
        return list(self._started)

    def usage(self) -> list[dict[str, object]]:
        """:meth:`ContainerHandle.usage` of every container started here, oldest first
        (removed ones included): the bill of a test."""
        return [handle.usage() for handle in self._history]

    def close(self) -> None:
        """Remove every container started here, newest first; the first error is
        raised after all were tried."""
        first: BaseException | None = None
        while self._started:
            handle = self._started.pop()
            try:
                handle.remove()
            except Exception as exc:  # keep tearing down the rest
                first = first or exc
        if first is not None:
            raise first
