"""A detached container's persisted state: ``<root>/<id>/state.json``.

Implements runtime-spec ``runtime.md#state`` (the State JSON: ``ociVersion``,
``id``, ``status``, ``pid``, ``bundle``, ``annotations``) for containers that
outlive the command that made them (``ptc-runtime create``, ``run --detach``).
The file keeps what a later command needs: the init's host ``pid`` and its start
time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) to tell it from
a process that reused the pid, the cgroup path and whether we made it, the
config as it was at create (later edits of the bundle's config.json do not
matter, runtime.md), the ``created`` time (RFC 3339, UTC).

The status is derived, never trusted from the file:

- no ``state.json`` yet, but a live ``owner`` (the creating command): ``creating``;
  status ``creating`` and a dead ``owner``: ``stopped`` (a ``create`` that was
  killed: ``delete`` removes what it left);
- the init is alive (not a zombie, same start time) and ``exec.fifo`` is still in
  the state dir: ``created``; alive without it: ``running`` (either is ``paused``
  when the cgroup's freezer says so, as runc);
- otherwise (exited, a zombie nobody reaped yet, the pid reused): ``stopped``.

The file is replaced atomically (write ``state.json.tmp``, ``rename``), so a
concurrent ``state`` never reads half of it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..state import write_json_atomically

__all__ = ["ContainerState", "EXEC_FIFO", "STATE_FILE", "STATE_OCI_VERSION", "Status",
           "load_state", "proc_start_time", "process_alive"]

Status = Literal["creating", "created", "running", "paused", "stopped"]

#: the state file's name in ``<root>/<id>``
STATE_FILE = "state.json"
#: the fifo a created init waits on; ``start`` removes it (runc's name)
EXEC_FIFO = "exec.fifo"
#: the runtime-spec version our State JSON follows
STATE_OCI_VERSION = "1.0.2"


def proc_start_time(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid`` from ``/proc/<pid>/stat``
    (fields 3 and 22, ``proc(5)``); ``None`` when there is no such process."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        data = os.read(fd, 4096)
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is the process that started at ``start_time`` and has not exited
    (a zombie, ``Z``, or dead, ``X``, process has)."""
    if pid <= 0:
        return False
    found = proc_start_time(pid)
    return found is not None and found[1] == start_time and found[0] not in ("Z", "X")


def _now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


@dataclass(frozen=True)
class ContainerState:
    """What ``state.json`` holds (see the module docstring).

    ``pid``: the init's host pid (0 before the fork); ``start_time``: its
    ``/proc/<pid>/stat`` start time in clock ticks; ``cgroup_path``: like
    ``/ptc/<id>``; ``cgroup_created``: it is ours (``delete`` removes it): written
    before ``create`` makes it, so that whatever a killed ``create`` left names it
    (an older state wrote it after; its ``creating`` status says the same);
    ``config``: the config.json as read at create; ``detached``: no process owns
    the container (``create``, ``run --detach``), so nothing but ``delete`` removes
    it; ``status`` is the last status written, for the record only (but
    ``creating`` means the creating command has not finished);
    ``cgroup_parents``: ancestors of the cgroup that ``create`` made (relative
    paths), removed by ``delete`` when empty; ``fate_fd``: the fd, in the created
    init, of the pipe ``start`` reads its ``exec`` report from.
    """

    id: str
    bundle: str
    pid: int = 0
    start_time: int = 0
    status: Status = "creating"
    created: str = field(default_factory=_now_rfc3339)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_path: str = ""
    cgroup_created: bool = False
    rootfs: str = ""
    detached: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    cgroup_parents: list[str] = field(default_factory=list)
    fate_fd: int = -1

    def to_json(self) -> dict[str, Any]:
        return {"ociVersion": STATE_OCI_VERSION, "id": self.id, "status": self.status,
                "pid": self.pid, "bundle": self.bundle, "annotations": self.annotations,
                "created": self.created, "start_time": self.start_time,
                "cgroup_path": self.cgroup_path, "cgroup_created": self.cgroup_created,
                "rootfs": self.rootfs, "detached": self.detached, "config": self.config,
                "cgroup_parents": self.cgroup_parents, "fate_fd": self.fate_fd}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        """Read back :meth:`to_json`; raises ``ValueError`` naming a missing key."""
        try:
            return cls(id=str(data["id"]), bundle=str(data["bundle"]), pid=int(data["pid"]),
                       start_time=int(data.get("start_time", 0)),
                       status=data.get("status", "stopped"),
                       created=str(data.get("created", "")),
                       annotations=dict(data.get("annotations") or {}),
                       cgroup_path=str(data.get("cgroup_path", "")),
                       cgroup_created=bool(data.get("cgroup_created", False)),
                       rootfs=str(data.get("rootfs", "")),
                       detached=bool(data.get("detached", True)),
                       config=dict(data.get("config") or {}),
                       cgroup_parents=[str(p) for p in data.get("cgroup_parents") or ()],
                       fate_fd=int(data.get("fate_fd", -1)))
        except KeyError as exc:
            raise ValueError(f"state.json has no {exc.args[0]!r}") from None

    def with_(self, **changes: Any) -> ContainerState:
        """A copy with ``changes`` (dataclass ``replace``)."""
        return replace(self, **changes)

    def save(self, state_dir: Path | str) -> None:
        """Write ``state_dir/state.json`` atomically (a temporary file, ``rename``)."""
        write_json_atomically(f"{state_dir}/{STATE_FILE}", self.to_json())

    def current_status(self, state_dir: Path | str, *, frozen: bool = False) -> Status:
        """The status now (module docstring): ``created``/``running``/``paused`` while
        the init lives (``frozen``: its cgroup's freezer reports it frozen), else
        ``stopped``."""
        if not process_alive(self.pid, self.start_time):
            return "stopped"
        if os.path.lexists(f"{state_dir}/{EXEC_FIFO}"):
            return "created"
        return "paused" if frozen else "running"

    def oci_state(self, status: Status) -> dict[str, Any]:
        """The runtime-spec State JSON with ``status`` (``runtime.md#state``); ``pid``
        is 0 once stopped, as runc reports it."""
        return {"ociVersion": STATE_OCI_VERSION, "id": self.id, "status": status,
                "pid": self.pid if status != "stopped" else 0, "bundle": self.bundle,
                "rootfs": self.rootfs, "created": self.created,
                "annotations": self.annotations}


def load_state(state_dir: Path | str) -> ContainerState | None:
    """The ``state.json`` of ``state_dir``; ``None`` when there is none (yet). Raises
    ``ValueError`` for a file that is not a state."""
    try:
        with open(f"{state_dir}/{STATE_FILE}", "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return ContainerState.from_json(json.loads(data))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{state_dir}/{STATE_FILE}: {exc}") from None
