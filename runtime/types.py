"""Value types of the runtime side: what to run and what came of it.

These are the runtime-spec's nouns (runtime-spec ``config.md``): a
:class:`ContainerSpec` is everything a backend needs to build an OCI bundle
(rootfs layers + process + resources), independent of images and pytest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytest_containers.exceptions import InvalidOptionError

NetworkMode = Literal["none", "host"]


@dataclass(frozen=True)
class Resources:
    """cgroup limits (runtime-spec ``config-linux.md#control-groups``).

    ``None`` means unlimited. ``cpu_quota_us`` per ``cpu_period_us`` is the CFS
    bandwidth (v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, v2 ``cpu.max``).
    Swap is off: ``memory+swap`` equals ``memory_max_bytes``.
    """

    memory_max_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000
    pids_max: int | None = None

    @classmethod
    def from_options(
        cls, *, memory: int | str | None = None, cpus: float | str | None = None,
        pids: int | None = None,
    ) -> Resources:
        """Build from docker-style options: ``memory`` bytes or ``"64m"`` (at least
        6 MiB, docker's minimum: below that not even a shell starts), ``cpus`` a
        positive number of CPUs (``0.5`` is 50 ms per 100 ms period), ``pids`` a
        positive count.

        Raises ``InvalidOptionError`` (a ``ValueError``) naming the option and value.
        """
        mem = None
        if memory is not None:
            mem = parse_size(memory)
            if mem < MIN_MEMORY_BYTES:
                raise InvalidOptionError(
                    f"memory {memory!r} is below the minimum of 6 MiB", option="memory",
                    value=memory)
        quota = None
        if cpus is not None:
            try:
                count = float(cpus)
            except (TypeError, ValueError):
                count = math.nan
            if not (math.isfinite(count) and count > 0):
                raise InvalidOptionError(
                    f"cpus must be a positive number of CPUs, got {cpus!r}", option="cpus",
                    value=cpus)
            quota = max(1000, int(round(count * 100_000)))
        if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int) or pids < 1):
            raise InvalidOptionError(f"pids must be a positive integer, got {pids!r}",
                                     option="pids", value=pids)
        return cls(memory_max_bytes=mem, cpu_quota_us=quota, pids_max=pids)


#: docker's minimum memory limit
MIN_MEMORY_BYTES = 6 * 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str) -> int:
    """Parse a docker-style size (``1048576``, ``"512k"``, ``"64m"``, ``"1g"``,
    also ``"64MiB"``/``"64mb"``) into bytes. Raises ``InvalidOptionError`` (a
    ``ValueError``) naming the value."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidOptionError(
            f"invalid memory size {value!r}: use bytes or a string like '64m'",
            option="memory", value=value)
    if isinstance(value, int):
        if value <= 0:
            raise InvalidOptionError(f"invalid memory size {value!r}: must be positive",
                                     option="memory", value=value)
        return value
    text = str(value).strip().lower()
    for suffix in ("ib", "b"):
        if text.endswith(suffix) and len(text) > len(suffix) and text[-len(suffix) - 1].isalpha():
            text = text[: -len(suffix)]
            break
    number, unit = text, ""
    if text and text[-1].isalpha():
        number, unit = text[:-1], text[-1]
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in _UNITS or not (math.isfinite(amount) and amount > 0):
        raise InvalidOptionError(
            f"invalid memory size {value!r}: use bytes or a number with k, m, g",
            option="memory", value=value)
    return int(amount * _UNITS[unit])


@dataclass(frozen=True)
class Mount:
    """A bind or tmpfs mount (runtime-spec ``config.md#mounts``)."""

    destination: str
    source: str = ""
    type: Literal["bind", "tmpfs"] = "bind"
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What to run, independent of images and of the backend.

    ``layers``: snapshot directories, base first (the overlay lowerdirs, in
    reverse). ``args`` is ``process.args`` after ENTRYPOINT/CMD merging;
    ``env`` entries are ``"KEY=value"``; ``user`` is numeric ``uid`` and ``gid``.
    """

    args: tuple[str, ...]
    layers: tuple[Path, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    hostname: str = "ptc"
    resources: Resources = field(default_factory=Resources)
    mounts: tuple[Mount, ...] = ()
    network: NetworkMode = "none"
    read_only_rootfs: bool = False
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ExitStatus:
    """How the container's process ended.

    ``exit_code`` is the shell convention: the status, or 128+N when killed by
    signal N. ``oom_killed`` comes from the cgroup's own ``oom_kill`` counter.
    """

    exit_code: int
    signal: int | None = None
    oom_killed: bool = False

    @classmethod
    def from_wait_status(cls, status: int, *, oom_killed: bool = False) -> ExitStatus:
        """Decode a ``waitpid`` status (``os.WIFSIGNALED`` etc.)."""
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return cls(exit_code=128 + sig, signal=sig, oom_killed=oom_killed)
        return cls(exit_code=os.waitstatus_to_exitcode(status), oom_killed=oom_killed)


@dataclass(frozen=True)
class Stats:
    """The kernel's own counters of a container's cgroup.

    ``memory_peak_bytes``: v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``.
    ``oom_kills``: v1 ``memory.oom_control`` ``oom_kill``, v2 ``memory.events``.
    ``cpu_usage_us`` and ``cpu_throttled_us`` in microseconds; ``None`` when the
    host does not expose the file.
    """

    memory_current_bytes: int | None = None
    memory_peak_bytes: int | None = None
    oom_kills: int = 0
    cpu_usage_us: int | None = None
    cpu_throttled_us: int | None = None
    pids_current: int | None = None
    pids_peak: int | None = None
    cgroup_version: int | None = None


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run to completion: exit status and captured bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None
