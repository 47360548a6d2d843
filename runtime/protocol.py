"""The ``Runtime`` protocol: what a backend must provide.

A backend is chosen by the first-result hook ``containers_make_runtime``
(see ``pytest_containers.hookspecs``) and returns an object of this small
protocol, like xdist's ``scheduler/protocol.py`` or httpx's one-method
transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .types import ContainerSpec, ExecResult, ExitStatus, ProcessInfo, Stats

if TYPE_CHECKING:
    from .linux.cgroups import CgroupV1, CgroupV2


@runtime_checkable
class Container(Protocol):
    """A started container. Every method tolerates a container already gone."""

    id: str
    #: host pid of the container's process (its PID 1)
    pid: int
    #: file receiving the container's stdout, and its stderr
    stdout_path: Path
    stderr_path: Path

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until the process exits (``timeout`` seconds, ``None`` forever).

        Raises ``TimeoutError`` when it is still running after ``timeout``.
        """
        ...

    def poll(self) -> ExitStatus | None:
        """The exit status if the process has exited, else ``None``."""
        ...

    def kill(self, signal: int = 9) -> None:
        """Send ``signal`` to the container's process; no error once it has exited."""
        ...

    def exec(
        self, args: list[str], *, env: list[str] | None = None, cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``args`` inside the running container's namespaces and cgroup, to completion."""
        ...

    def stats(self) -> Stats:
        """Read the container's cgroup counters (valid until :meth:`delete`)."""
        ...

    def delete(self) -> None:
        """Kill every process of the container, reap it, unmount, remove its cgroup
        and state dir. Idempotent."""
        ...


@runtime_checkable
class ListsProcesses(Protocol):
    """A :class:`Container` that lists its own processes (``top``). Kept apart from
    :class:`Container` so that a handle without it still is one: callers use
    :func:`container_processes`, which falls back to the handle's cgroup."""

    def processes(self) -> list[ProcessInfo]:
        """Every process of the container's cgroup, by host pid (``pid``), with its
        pid in the container's pid namespace (``ns_pid``), user and command line
        (:func:`~.native.top.processes`). Empty once the container is deleted."""
        ...


def container_cgroup(container: Container) -> CgroupV1 | CgroupV2 | None:
    """The container's cgroup: the handle's ``cgroup`` attribute (a
    :class:`~.linux.cgroups.CgroupV1` or ``CgroupV2``: the native engine's handle),
    else its ``cgroup_path`` (``"/ptc/<id>"``: the command line backend's) opened
    with :func:`~.linux.cgroups.open_cgroup`; ``None`` when it has neither."""
    cgroup = getattr(container, "cgroup", None)
    if cgroup is not None and hasattr(cgroup, "pids") and isinstance(
            getattr(cgroup, "path", None), str):
        return cgroup  # type: ignore[no-any-return]
    path = getattr(container, "cgroup_path", None)
    if not isinstance(path, str):
        return None
    from .linux.cgroups import open_cgroup

    return open_cgroup(path)


def container_processes(container: Container) -> list[ProcessInfo]:
    """``container.processes()`` when the handle has it (:class:`ListsProcesses`),
    else the processes of its cgroup (:func:`container_cgroup`,
    :func:`~.native.top.processes`): the default for every handle. Raises
    ``NotImplementedError`` for a handle with no cgroup to read."""
    if isinstance(container, ListsProcesses):
        return container.processes()
    cgroup = container_cgroup(container)
    if cgroup is None:
        raise NotImplementedError(
            f"container {container.id}: its handle ({type(container).__name__}) has no "
            "processes(), cgroup or cgroup_path to list its processes from")
    from .native.top import processes

    return processes(cgroup)


@runtime_checkable
class Runtime(Protocol):
    """A backend that runs a :class:`ContainerSpec` as a container."""

    #: the ``--container-runtime`` name
    name: str

    def start(self, spec: ContainerSpec, *, container_id: str) -> Container:
        """Create and start a container; its stdout and stderr go to the files
        ``container.stdout_path`` and ``container.stderr_path`` in its state dir.

        ``container_id`` is ``ptc-<hex>``, unique on the host; the state dir is
        ``<state_root>/<container_id>`` (``/run/ptc`` for root). Raises
        ``CommandNotFoundError`` when ``spec.args[0]`` is not in the rootfs and
        ``ContainerStartError`` for any other failure; on failure nothing of the
        container (process, cgroup, mount, state dir) is left.
        """
        ...

    def close(self) -> None:
        """Release what the backend itself holds (helper processes, sockets);
        containers are not touched. Called once at the end of a session."""
        ...
