"""runtime-spec ``linux.resources`` checked once, for both cgroup versions.

Implements the input side of runtime-spec ``config-linux.md`` "Control groups":
:func:`parse` turns the ``linux.resources`` object (a dict, as in
``config.json``) or our :class:`~pytest_containers.runtime.types.Resources`
(through :func:`pytest_containers.runtime.spec.linux_resources`) into
:class:`Limits`, raising :class:`CgroupError` (``errno`` EINVAL, ``field`` the
JSON path) for a value no kernel would take, before any directory is made.

As runc and crun read it: ``0`` means "not set" for memory, cpu and blockIO
numbers; ``-1`` means unlimited for memory, swap, cpu quota and pids;
``memory.kernel``/``kernelTCP``, ``cpu.realtimeRuntime``/``realtimePeriod``,
``network`` and ``rdma`` are ignored. ``pids.limit`` as runc 1.1 reads it
(``libcontainer/cgroups/fs/pids.go``): ``0`` is "not set" (a new cgroup's
``pids.max`` is ``max``, kernel ``cgroup-v1/pids.rst``), any negative value is
``max`` (podman sends ``0`` or ``-1`` for "unlimited"). A :class:`Resources`
must still give a positive ``pids_max`` (it is the user's ``pids=`` option).

Limits beyond what the kernel can hold raise ``InvalidOptionError`` (a
``ValueError``; ``option``, ``field``: the field, or for a :class:`Resources`
its option, e.g. ``memory``; ``value``), before anything is made: a byte limit
above :data:`MAX_LIMIT_BYTES` (runtime-spec's int64 maximum; the kernel rounds
any value from ``PAGE_COUNTER_MAX`` pages of ``include/linux/page_counter.h``
up to it down to unlimited, and silently wraps a larger number modulo 2**64 when
it parses it), a pids limit above :data:`PID_MAX_LIMIT`
(``pids_max_write`` refuses it with EINVAL). :func:`option_error` turns a
kernel EINVAL on a limit write (a ``CgroupError`` with ``field``) into the same
kind of error. Which file each field goes to is the version's business
(:mod:`.v1`, :mod:`.v2`).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_containers.exceptions import CgroupError, InvalidOptionError

from ...types import MAX_MEMORY_BYTES, Resources
from .fs import invalid

#: cgroup v1 ``cpu.shares`` range (kernel ``MIN_SHARES``/``MAX_SHARES``)
SHARES_MIN, SHARES_MAX = 2, 262_144
_PAGE_SIZE = re.compile(r"^[1-9][0-9]*[KMG]B$")
_PREFIX = "linux.resources"

#: the page size the kernel counts memory in (bytes)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_WHY_MAX = "int64; the kernel would wrap it"
#: the largest byte limit passed on to the kernel (:data:`~...types.MAX_MEMORY_BYTES`)
MAX_LIMIT_BYTES = MAX_MEMORY_BYTES
#: the largest ``pids.max`` the kernel takes (``PID_MAX_LIMIT`` on 64-bit, 4M)
PID_MAX_LIMIT = 4 * 1024 * 1024
#: :class:`Resources` byte fields, their user-facing option name and their field
_RESOURCES_BYTES = (("memory_max_bytes", "memory", "memory.limit"),
                    ("memory_swap_bytes", "memory_swap_bytes", "memory.swap"),
                    ("memory_reservation_bytes", "memory_reservation_bytes",
                     "memory.reservation"),
                    ("memory_high_bytes", "memory_high_bytes", "unified[memory.high]"))


@dataclass(frozen=True)
class DeviceRule:
    """One device cgroup rule (runtime-spec ``linux.resources.devices[]``).

    ``type`` ``a`` (all), ``c`` or ``b``; ``major``/``minor`` ``None`` for any
    (``*``); ``access`` a subset of ``rwm``."""

    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    def line(self) -> str:
        """The v1 ``devices.allow``/``devices.deny`` line: ``"c 1:3 rwm"``, ``"a *:* rwm"``."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


@dataclass(frozen=True)
class DeviceValue:
    """A per-device blockIO value: ``major``:``minor`` and ``value`` (a weight, bytes
    per second or IO operations per second); ``leaf`` only for ``weightDevice``."""

    major: int
    minor: int
    value: int | None
    leaf: int | None = None

    @property
    def device(self) -> str:
        return f"{self.major}:{self.minor}"


#: runc's ``specconv.AllowedDevices``, appended after the config's own rules: mknod
#: of anything, the default devices (config-linux.md "Default Devices"), ptys, tun
DEFAULT_ALLOWED_DEVICES = (
    DeviceRule(True, "c", None, None, "m"),
    DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 1, 8), DeviceRule(True, "c", 1, 7),
    DeviceRule(True, "c", 5, 0), DeviceRule(True, "c", 1, 5), DeviceRule(True, "c", 1, 9),
    DeviceRule(True, "c", 136, None), DeviceRule(True, "c", 5, 2),
    DeviceRule(True, "c", 10, 200),
)


@dataclass(frozen=True)
class Limits:
    """Checked ``linux.resources``; ``None``/empty means "leave the kernel's default".

    Memory in bytes (``memory_swap`` is memory+swap, as in the runtime-spec), cpu
    quota and period in microseconds, ``-1`` unlimited where the spec allows it.
    ``devices`` is ``None`` when the config has no ``devices`` list (the device
    cgroup is then left as inherited).
    """

    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    disable_oom_killer: bool = False
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    blkio_leaf_weight: int | None = None
    blkio_weight_device: tuple[DeviceValue, ...] = ()
    throttle_read_bps: tuple[DeviceValue, ...] = ()
    throttle_write_bps: tuple[DeviceValue, ...] = ()
    throttle_read_iops: tuple[DeviceValue, ...] = ()
    throttle_write_iops: tuple[DeviceValue, ...] = ()
    hugepage_limits: tuple[tuple[str, int], ...] = ()
    devices: tuple[DeviceRule, ...] | None = None
    unified: tuple[tuple[str, str], ...] = ()

    @property
    def sets_memory(self) -> bool:
        """Whether anything of the memory controller is set."""
        return (self.memory_limit is not None or self.memory_swap is not None
                or self.memory_reservation is not None or self.disable_oom_killer
                or self.memory_swappiness is not None)

    @property
    def sets_blkio(self) -> bool:
        """Whether anything of the blkio (v2: io) controller is set."""
        return bool(self.blkio_weight is not None or self.blkio_leaf_weight is not None
                    or self.blkio_weight_device or self.throttle_read_bps
                    or self.throttle_write_bps or self.throttle_read_iops
                    or self.throttle_write_iops)

    def device_rules(self) -> tuple[DeviceRule, ...]:
        """The v1 rules to write, in order: the config's, then
        :data:`DEFAULT_ALLOWED_DEVICES` (as runc does; empty when ``devices`` is None)."""
        if self.devices is None:
            return ()
        return self.devices + DEFAULT_ALLOWED_DEVICES


def parse(resources: Resources | Mapping[str, Any] | None) -> Limits:
    """Check ``linux.resources`` (or a :class:`Resources`) and return :class:`Limits`.

    Raises :class:`CgroupError` (EINVAL, ``field`` like
    ``"linux.resources.pids.limit"``, ``value``) for a wrong type or range, and
    ``InvalidOptionError`` (``option``, ``field``, ``value``) for a limit beyond what
    the kernel holds (:data:`MAX_LIMIT_BYTES`, :data:`PID_MAX_LIMIT`).
    """
    if resources is None:
        return Limits()
    if isinstance(resources, Resources):
        from ...spec import linux_resources

        _check_resources(resources)
        resources = linux_resources(resources)
    if not isinstance(resources, Mapping):
        raise invalid(_PREFIX, resources, "must be an object (runtime-spec linux.resources)")
    memory = _section(resources, "memory")
    cpu = _section(resources, "cpu")
    pids = _section(resources, "pids")
    blkio = _section(resources, "blockIO")
    limit = _bytes(memory, "limit", "memory", unlimited=True)
    swap = _bytes(memory, "swap", "memory", unlimited=True)
    if swap is not None and swap != -1:
        if limit is None or limit == -1:
            raise invalid(f"{_PREFIX}.memory.swap", swap, "cannot be set without memory.limit")
        if swap < limit:
            raise invalid(f"{_PREFIX}.memory.swap", swap,
                          f"is memory+swap: it must be at least memory.limit ({limit})")
    swappiness = memory.get("swappiness")
    if swappiness is not None and swappiness != -1:  # runc: -1 (and nil) is "unset"
        _check_int(swappiness, f"{_PREFIX}.memory.swappiness", 0, 100)
    else:
        swappiness = None
    disable_oom = memory.get("disableOOMKiller", False)
    if not isinstance(disable_oom, bool):
        raise invalid(f"{_PREFIX}.memory.disableOOMKiller", disable_oom, "must be a boolean")
    shares = _number(cpu, "shares", "cpu")
    if shares is not None:
        _check_int(shares, f"{_PREFIX}.cpu.shares", SHARES_MIN, SHARES_MAX)
    quota = cpu.get("quota")
    if quota is not None:
        _check_int(quota, f"{_PREFIX}.cpu.quota", None, None)
        quota = None if quota == 0 else (-1 if quota < 0 else quota)
    period = _number(cpu, "period", "cpu")
    return Limits(
        memory_limit=limit,
        memory_reservation=_bytes(memory, "reservation", "memory", unlimited=True),
        memory_swap=swap,
        memory_swappiness=swappiness,
        disable_oom_killer=disable_oom,
        cpu_shares=shares,
        cpu_quota=quota,
        cpu_period=period,
        cpuset_cpus=_cpuset(cpu, "cpus"),
        cpuset_mems=_cpuset(cpu, "mems"),
        pids_limit=_pids(pids),
        blkio_weight=_weight(blkio, "weight", f"{_PREFIX}.blockIO.weight"),
        blkio_leaf_weight=_weight(blkio, "leafWeight", f"{_PREFIX}.blockIO.leafWeight"),
        blkio_weight_device=_weight_devices(blkio),
        throttle_read_bps=_throttles(blkio, "throttleReadBpsDevice"),
        throttle_write_bps=_throttles(blkio, "throttleWriteBpsDevice"),
        throttle_read_iops=_throttles(blkio, "throttleReadIOPSDevice"),
        throttle_write_iops=_throttles(blkio, "throttleWriteIOPSDevice"),
        hugepage_limits=_hugepages(resources.get("hugepageLimits")),
        devices=_devices(resources.get("devices")),
        unified=_unified(resources.get("unified")),
    )


# -- checks ---------------------------------------------------------------------------


def _section(resources: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"{_PREFIX}.{key}", value, "must be an object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: Any, field: str, low: int | None, high: int | None) -> int:
    if not _is_int(value):
        raise invalid(field, value, "must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise invalid(field, value, f"is out of range ({bounds})")
    return int(value)


def _number(section: Mapping[str, Any], key: str, name: str, *,
            unlimited: bool = False) -> int | None:
    """A non-negative count where 0 is "not set"; ``-1`` allowed when ``unlimited``."""
    value = section.get(key)
    if value is None:
        return None
    field = f"{_PREFIX}.{name}.{key}"
    if not _is_int(value):
        raise invalid(field, value, "must be an integer")
    if value == -1 and unlimited:
        return -1
    if value < 0:
        raise invalid(field, value, "must be positive" + (" or -1 (unlimited)" if unlimited
                                                          else ""))
    return None if value == 0 else int(value)


def too_big(field: str, value: int, limit: int, why: str, *, option: str | None = None,
            unit: str = "") -> InvalidOptionError:
    """The error for ``value`` of ``field`` above ``limit``, the most the kernel holds
    (``why`` names the kernel's constant, ``unit`` like ``" bytes"``); ``option``:
    the user's option name when it is not the field (``memory`` for
    ``Resources.memory_max_bytes``)."""
    name = option or field
    hint = "leave it unset" if option else "use -1"
    return InvalidOptionError(
        f"{name}: {value}{unit} is above the most the kernel can hold, {limit}{unit} "
        f"({why}); {hint} for no limit", option=name, value=value, field=field)


def _bytes(section: Mapping[str, Any], key: str, name: str, *,
           unlimited: bool = False) -> int | None:
    """:func:`_number` for a byte limit: at most :data:`MAX_LIMIT_BYTES`."""
    value = _number(section, key, name, unlimited=unlimited)
    if value is not None and value > MAX_LIMIT_BYTES:
        raise too_big(f"{_PREFIX}.{name}.{key}", value, MAX_LIMIT_BYTES,
                      _WHY_MAX, unit=" bytes")
    return value


def _check_resources(resources: Resources) -> None:
    """What :func:`parse` refuses of a :class:`Resources` before it becomes
    ``linux.resources``: byte limits above :data:`MAX_LIMIT_BYTES`
    (``InvalidOptionError`` naming the option: ``memory`` for ``memory_max_bytes``),
    a ``pids_max`` that is not positive (``CgroupError``, as before: ``0`` is "not
    set" only in a config)."""
    for attribute, option, key in _RESOURCES_BYTES:
        value = getattr(resources, attribute)
        if _is_int(value) and value > MAX_LIMIT_BYTES:
            raise too_big(f"{_PREFIX}.{key}", value, MAX_LIMIT_BYTES,
                          _WHY_MAX, option=option, unit=" bytes")
    for size, limit in resources.hugepage_limits:
        if _is_int(limit) and limit > MAX_LIMIT_BYTES:
            raise too_big(f"{_PREFIX}.hugepageLimits[{size}]", limit, MAX_LIMIT_BYTES,
                          _WHY_MAX, option="hugepage_limits",
                          unit=" bytes")
    pids = resources.pids_max
    if pids is None:
        return
    if not _is_int(pids) or pids < 1:
        raise invalid(f"{_PREFIX}.pids.limit", pids,
                      "must be a positive count (Resources.pids_max, the pids option)")
    if pids > PID_MAX_LIMIT:
        raise too_big(f"{_PREFIX}.pids.limit", pids, PID_MAX_LIMIT, "PID_MAX_LIMIT",
                      option="pids")


def option_error(exc: BaseException) -> InvalidOptionError | None:
    """The ``InvalidOptionError`` for a limit the kernel refused: ``exc`` (or the
    exception it was raised from) a ``CgroupError`` with ``errno`` EINVAL or ERANGE
    and a ``field`` (what :mod:`.v1`/:mod:`.v2` raise when a write of a
    ``linux.resources`` value fails); its ``option`` and ``field`` are that field,
    ``value`` what was written, ``path`` the file. ``None`` for anything else (a
    busy cgroup, a missing controller...)."""
    seen = 0
    while exc is not None and not isinstance(exc, CgroupError) and seen < 4:
        exc = exc.__cause__  # type: ignore[assignment]
        seen += 1
    if not isinstance(exc, CgroupError):
        return None
    field = getattr(exc, "field", None)
    code = getattr(exc, "errno", None)
    if not field or code not in (errno.EINVAL, errno.ERANGE):
        return None
    value = getattr(exc, "value", None)
    path = getattr(exc, "path", None)
    where = f" ({path})" if path else ""
    return InvalidOptionError(
        f"{field}: the kernel refused {value}{where}: {os.strerror(code)}",
        option=field, value=value, field=field, path=path, errno=code)


def _cpuset(cpu: Mapping[str, Any], key: str) -> str | None:
    value = cpu.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9,\- ]+", value):
        raise invalid(f"{_PREFIX}.cpu.{key}", value, "must be a list like '0-3,5'")
    return value


def _pids(pids: Mapping[str, Any]) -> int | None:
    """``pids.limit`` as runc 1.1: ``0`` not set (``None``), negative or ``"max"``
    unlimited (-1), else a count up to :data:`PID_MAX_LIMIT`."""
    value = pids.get("limit")
    if value is None:
        return None
    field = f"{_PREFIX}.pids.limit"
    if value == "max":
        return -1
    if not _is_int(value):
        raise invalid(field, value, "must be an integer (0 or negative: no limit)")
    if value == 0:
        return None
    if value < 0:
        return -1
    if value > PID_MAX_LIMIT:
        raise too_big(field, value, PID_MAX_LIMIT, "PID_MAX_LIMIT")
    return int(value)


def _weight(section: Mapping[str, Any], key: str, field: str) -> int | None:
    value = section.get(key)
    if value is None or value == 0:
        return None
    return _check_int(value, field, 10, 1000)


def _device_numbers(entry: Any, field: str) -> tuple[int, int]:
    if not isinstance(entry, Mapping):
        raise invalid(field, entry, "must be an object with major and minor")
    major = _check_int(entry.get("major"), f"{field}.major", 0, None)
    minor = _check_int(entry.get("minor"), f"{field}.minor", 0, None)
    return major, minor


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise invalid(field, value, "must be a list")
    return list(value)


def _weight_devices(blkio: Mapping[str, Any]) -> tuple[DeviceValue, ...]:
    out = []
    field = f"{_PREFIX}.blockIO.weightDevice"
    for i, entry in enumerate(_list(blkio.get("weightDevice"), field)):
        major, minor = _device_numbers(entry, f"{field}[{i}]")
        weight = _weight(entry, "weight", f"{field}[{i}].weight")
        leaf = _weight(entry, "leafWeight", f"{field}[{i}].leafWeight")
        out.append(DeviceValue(major, minor, weight, leaf))
    return tuple(out)


def _throttles(blkio: Mapping[str, Any], key: str) -> tuple[DeviceValue, ...]:
    out = []
    field = f"{_PREFIX}.blockIO.{key}"
    for i, entry in enumerate(_list(blkio.get(key), field)):
        major, minor = _device_numbers(entry, f"{field}[{i}]")
        rate = _check_int(entry.get("rate"), f"{field}[{i}].rate", 0, None)
        out.append(DeviceValue(major, minor, rate))
    return tuple(out)


def _hugepages(value: Any) -> tuple[tuple[str, int], ...]:
    out = []
    field = f"{_PREFIX}.hugepageLimits"
    for i, entry in enumerate(_list(value, field)):
        if not isinstance(entry, Mapping):
            raise invalid(f"{field}[{i}]", entry, "must be an object with pageSize and limit")
        size = entry.get("pageSize")
        if not isinstance(size, str) or not _PAGE_SIZE.match(size):
            raise invalid(f"{field}[{i}].pageSize", size, "must look like '2MB' or '1GB'")
        limit = _check_int(entry.get("limit"), f"{field}[{i}].limit", 0, None)
        if limit > MAX_LIMIT_BYTES:
            raise too_big(f"{field}[{i}].limit", limit, MAX_LIMIT_BYTES,
                          _WHY_MAX, unit=" bytes")
        out.append((size, limit))
    return tuple(out)


def _devices(value: Any) -> tuple[DeviceRule, ...] | None:
    if value is None:
        return None
    out = []
    field = f"{_PREFIX}.devices"
    for i, entry in enumerate(_list(value, field)):
        where = f"{field}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("allow"), bool):
            raise invalid(where, entry, "must be an object with a boolean 'allow'")
        kind = entry.get("type") or "a"
        if kind not in ("a", "b", "c"):
            raise invalid(f"{where}.type", kind, "must be 'a', 'b' or 'c'")
        numbers: list[int | None] = []
        for key in ("major", "minor"):
            number = entry.get(key)
            if number is None or number == -1:
                numbers.append(None)
            else:
                numbers.append(_check_int(number, f"{where}.{key}", 0, None))
        access = entry.get("access") or "rwm"
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise invalid(f"{where}.access", access, "must be made of r, w and m")
        out.append(DeviceRule(entry["allow"], kind, numbers[0], numbers[1], access))
    return tuple(out)


def _unified(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    field = f"{_PREFIX}.unified"
    if not isinstance(value, Mapping):
        raise invalid(field, value, "must be an object of file name -> value")
    out = []
    for key, item in value.items():
        if (not isinstance(key, str) or "/" in key or "." not in key.strip(".")
                or key in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")):
            raise invalid(f"{field}", key, "is not a cgroup v2 interface file name")
        if not isinstance(item, str):
            raise invalid(f"{field}.{key}", item, "must be a string")
        out.append((key, item))
    return tuple(out)


# -- conversions (runc and crun) ------------------------------------------------------


def shares_to_weight(shares: int) -> int:
    """v1 ``cpu.shares`` [2, 262144] -> v2 ``cpu.weight`` [1, 10000]: crun's
    ``1 + ((shares - 2) * 9999) / 262142`` (integer division)."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight [10, 1000] -> v2 ``io.weight`` [1, 10000]: runc's
    ``1 + (weight - 10) * 9999 / 990``."""
    return 1 + ((weight - 10) * 9999) // 990


def swap_v2(swap: int | None, limit: int | None) -> str | None:
    """runtime-spec ``memory.swap`` (memory+swap) -> v2 ``memory.swap.max`` (swap
    alone): ``swap - limit``, ``"max"`` for -1, ``None`` (leave it) when unset.

    Raises ``CgroupError`` naming ``memory.swap`` when swap is set without a memory
    limit (runc: "unable to set swap limit without memory limit")."""
    if swap is None:
        return None
    if swap == -1:
        return "max"
    if limit is None or limit == -1:
        raise invalid(f"{_PREFIX}.memory.swap", swap, "cannot be set without memory.limit")
    return str(swap - limit)
