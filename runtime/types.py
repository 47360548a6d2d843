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
    """cgroup limits (runtime-spec ``config-linux.md#control-groups``); the
    ``linux.resources`` object they become is :func:`~.spec.linux_resources`.

    ``None`` (or empty) means "not set": unlimited, or the kernel's default.

    - memory: ``memory_max_bytes`` (v1 ``memory.limit_in_bytes``, v2 ``memory.max``);
      ``memory_swap_bytes`` is memory+swap as in the runtime-spec, ``None`` meaning
      equal to ``memory_max_bytes`` (swap off), ``-1`` unlimited;
      ``memory_reservation_bytes`` (v1 soft limit, v2 ``memory.low``);
      ``memory_high_bytes`` (v2 ``memory.high``, through ``unified``: an error on v1);
      ``memory_swappiness`` 0-100 (v1 only); ``oom_kill_disable`` (v1 only).
    - cpu: ``cpu_quota_us`` per ``cpu_period_us`` is the CFS bandwidth (v1
      ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, v2 ``cpu.max``); ``cpus``, a CPU
      count, sets the quota to ``cpus * cpu_period_us`` when ``cpu_quota_us`` is
      ``None`` (0.5: 50000 per 100000); ``cpu_shares`` 2-262144 (v2: ``cpu.weight``);
      ``cpuset_cpus``/``cpuset_mems`` lists like ``"0-1,3"``.
    - ``pids_max``: a positive count.
    - blkio: ``blkio_weight`` 10-1000; per device ``(major, minor, value)`` tuples:
      ``blkio_weight_device`` (a weight), ``blkio_read_bps_device`` /
      ``blkio_write_bps_device`` (bytes per second), ``blkio_read_iops_device`` /
      ``blkio_write_iops_device`` (IO operations per second).
    - ``hugepage_limits``: ``(page size like "2MB", limit in bytes)`` pairs.
    - ``devices_allow``: device cgroup rules in v1 syntax (``"c 10:200 rwm"``,
      ``"b 8:* r"``) allowed on top of the default devices (every other device is
      denied; v1 only).
    - ``unified``: ``(v2 interface file, value)`` pairs written as they are (v2 only).
    """

    memory_max_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000
    pids_max: int | None = None
    memory_swap_bytes: int | None = None
    memory_reservation_bytes: int | None = None
    memory_high_bytes: int | None = None
    memory_swappiness: int | None = None
    oom_kill_disable: bool = False
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    blkio_weight: int | None = None
    blkio_weight_device: tuple[tuple[int, int, int], ...] = ()
    blkio_read_bps_device: tuple[tuple[int, int, int], ...] = ()
    blkio_write_bps_device: tuple[tuple[int, int, int], ...] = ()
    blkio_read_iops_device: tuple[tuple[int, int, int], ...] = ()
    blkio_write_iops_device: tuple[tuple[int, int, int], ...] = ()
    hugepage_limits: tuple[tuple[str, int], ...] = ()
    devices_allow: tuple[str, ...] = ()
    unified: tuple[tuple[str, str], ...] = ()

    @property
    def effective_cpu_quota_us(self) -> int | None:
        """``cpu_quota_us``, else ``cpus * cpu_period_us`` (rounded), else ``None``."""
        if self.cpu_quota_us is not None:
            return self.cpu_quota_us
        if self.cpus is not None:
            return int(round(self.cpus * self.cpu_period_us))
        return None

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
            if mem > MAX_MEMORY_BYTES:
                raise InvalidOptionError(
                    f"memory {memory!r} is above the most a cgroup can hold, "
                    f"{MAX_MEMORY_BYTES} bytes (the int64 maximum)",
                    option="memory", value=memory)
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
            available = os.cpu_count() or 1
            if not MIN_CPUS <= count <= available:
                raise InvalidOptionError(
                    f"cpus {cpus!r} is out of range: from {MIN_CPUS} to {available} (the "
                    f"CPUs this host has)", option="cpus", value=cpus)
            quota = round(count * 100_000)
        if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int) or pids < 1):
            raise InvalidOptionError(f"pids must be a positive integer, got {pids!r}",
                                     option="pids", value=pids)
        return cls(memory_max_bytes=mem, cpu_quota_us=quota, pids_max=pids)


#: docker's smallest ``--cpus`` (1 ms of CPU time per 100 ms period, the kernel's
#: smallest ``cpu.cfs_quota_us``)
MIN_CPUS = 0.01
#: docker's minimum memory limit
MIN_MEMORY_BYTES = 6 * 1024 * 1024
#: the largest memory limit we pass on, in bytes: runtime-spec's int64 maximum. The
#: kernel takes any value up to it, rounding one of ``PAGE_COUNTER_MAX`` pages or
#: more down to "unlimited" (``mm/page_counter.c``; ``9223372036854775807`` is a
#: common way to say unlimited); a larger one it wraps modulo 2**64 when parsing.
MAX_MEMORY_BYTES = 2**63 - 1
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
    ``env`` entries are ``"KEY=value"``; the user is numeric: ``uid``, ``gid``
    and ``additional_gids`` (supplementary groups). ``annotations`` go to the
    config's; ``org.opencontainers.image.stopSignal`` among them is the signal
    a stop sends first (image-spec conversion.md). ``cgroup_parent``: the cgroup
    (relative to each hierarchy's root) the container's own cgroup is made in;
    its limits apply to every container under it.

    ``init``: run a minimal init as the container's PID 1 (docker's ``--init``):
    it forks ``args``, forwards signals to it, reaps every orphaned zombie and
    exits with its status (:func:`~.native.process.run_as_init`). It becomes the
    annotation :data:`~.spec.INIT_ANNOTATION` of the config; the native engine
    and ``ptc-runtime`` honour it, runc and crun have no such init (the
    command-line backend refuses ``init`` for them).
    """

    args: tuple[str, ...]
    layers: tuple[Path, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = "ptc"
    resources: Resources = field(default_factory=Resources)
    mounts: tuple[Mount, ...] = ()
    network: NetworkMode = "none"
    read_only_rootfs: bool = False
    annotations: tuple[tuple[str, str], ...] = ()
    cgroup_parent: str = "/ptc"
    init: bool = False


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
    """The kernel's own counters of a container's cgroup; ``None`` when the host does
    not expose the file.

    Memory in bytes: ``memory_current_bytes`` (v1 ``memory.usage_in_bytes``, v2
    ``memory.current``), ``memory_peak_bytes`` (v1 ``memory.max_usage_in_bytes``, v2
    ``memory.peak``), ``memory_limit_bytes`` (the limit in force, ``None`` unlimited).
    ``memory_failcnt``: times a charge hit a limit (v1 ``memory.failcnt`` plus
    ``memory.memsw.failcnt``, v2 ``memory.events`` ``max``). ``oom_kills``: processes
    of the cgroup killed by the OOM killer, whichever limit ran out (v1
    ``memory.oom_control`` ``oom_kill``, v2 ``memory.events`` ``oom_kill``).

    CPU in microseconds: ``cpu_usage_us`` (v1 ``cpuacct.usage``, v2 ``cpu.stat``
    ``usage_usec``), ``cpu_throttled_us`` (v1 ``cpu.stat`` ``throttled_time`` ns / 1000,
    v2 ``throttled_usec``); ``cpu_periods``/``cpu_throttled_periods`` are CFS periods
    elapsed / throttled (``nr_periods``, ``nr_throttled``).

    ``pids_current``, ``pids_peak`` (``pids.peak``: v2, and v1 on Linux 6.x),
    ``pids_max`` (``None`` unlimited). ``io_read_bytes``/``io_write_bytes``: bytes of
    block IO issued by the cgroup's processes (v1
    ``blkio.throttle.io_service_bytes_recursive``, v2 ``io.stat`` ``rbytes``/``wbytes``);
    page-cache writeback is not charged to the cgroup on v1.
    """

    memory_current_bytes: int | None = None
    memory_peak_bytes: int | None = None
    oom_kills: int = 0
    cpu_usage_us: int | None = None
    cpu_throttled_us: int | None = None
    pids_current: int | None = None
    pids_peak: int | None = None
    cgroup_version: int | None = None
    memory_limit_bytes: int | None = None
    memory_failcnt: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    pids_max: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run to completion: exit status and captured bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a container, as ``top`` shows it (read from ``/proc``, ``proc(5)``).

    ``pid``: host pid; ``ns_pid``: its pid in the container's pid namespace (the last
    ``NSpid`` of ``/proc/<pid>/status``), ``None`` when it is not in a nested one (an
    ``exec`` helper joining the cgroup from the host); ``ppid``: host pid of its
    parent; ``uid``: real uid; ``user``: that uid's name in the container's
    ``/etc/passwd``, else the uid as a string; ``state``: the ``State`` letter (``R``,
    ``S``, ``Z``...); ``args``: its command line (``[comm]`` when empty: a zombie).
    """

    pid: int
    ns_pid: int | None
    ppid: int
    uid: int
    user: str
    state: str
    args: tuple[str, ...]

    @property
    def command(self) -> str:
        """``args`` joined by spaces."""
        return " ".join(self.args)
