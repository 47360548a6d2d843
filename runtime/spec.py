"""Render a :class:`ContainerSpec` as a runtime-spec ``config.json``.

Implements runtime-spec v1.0.2 ``config.md`` and ``config-linux.md``: the
same document is handed to runc and crun as the bundle's ``config.json`` and
read back by the native engine, so every backend runs the same thing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import InvalidOptionError

from .types import ContainerSpec, Resources

OCI_VERSION = "1.0.2"

#: docker's default capability set (moby ``oci/caps/defaults.go``)
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: runc's ``spec`` defaults (runtime-spec ``config-linux.md#masked-paths``)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

#: device nodes every container gets (runtime-spec ``config-linux.md#default-devices``)
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
)


#: the cgroup every container is put under unless its spec names another parent
DEFAULT_CGROUP_PARENT = "/ptc"

#: annotation (runtime-spec ``config.md#annotations``) asking for a minimal init as
#: PID 1 (docker's ``--init``, :attr:`ContainerSpec.init`): value ``"true"``. The
#: native engine and ``ptc-runtime`` run :func:`~.native.process.run_as_init`; any
#: other runtime ignores it (an annotation is opaque to it).
INIT_ANNOTATION = "org.ptc.init"


def init_requested(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` (a runtime-spec config) asks for the init: its
    ``annotations`` hold :data:`INIT_ANNOTATION` with the value ``"true"`` (any
    other value, or none, is no init)."""
    annotations = config.get("annotations")
    return isinstance(annotations, Mapping) and annotations.get(INIT_ANNOTATION) == "true"


def cgroups_path(container_id: str, parent: str = DEFAULT_CGROUP_PARENT) -> str:
    """The container's cgroup, relative to each hierarchy's root: ``<parent>/<id>``
    (default ``/ptc/<id>``; a session's parent is ``/ptc/ptc-session-<pid>``)."""
    return f"{parent.rstrip('/')}/{container_id}"


def linux_resources(resources: Resources) -> dict[str, Any]:
    """``linux.resources`` (runtime-spec ``config-linux.md#control-groups``) for
    ``resources``; only what is set appears, except ``devices``, which always
    denies every device first (the cgroup adds runc's default devices after it)
    and then allows ``devices_allow``.

    ``memory.swap`` is memory+swap: ``memory_swap_bytes``, or ``memory.limit``
    (swap off) when that is ``None``. ``cpu.quota`` is ``cpu_quota_us``, or
    ``cpus * cpu_period_us``. ``memory_high_bytes`` goes to ``unified``
    ``memory.high`` (v2 only). Raises ``InvalidOptionError`` naming
    ``devices_allow`` for a rule that is not ``"TYPE MAJOR:MINOR ACCESS"``.
    """
    r = resources
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    devices += [_device_rule(rule) for rule in r.devices_allow]
    out: dict[str, Any] = {"devices": devices}
    memory: dict[str, Any] = {}
    if r.memory_max_bytes is not None:
        memory["limit"] = r.memory_max_bytes
        memory["swap"] = (r.memory_max_bytes if r.memory_swap_bytes is None
                          else r.memory_swap_bytes)
    elif r.memory_swap_bytes is not None:
        memory["swap"] = r.memory_swap_bytes
    if r.memory_reservation_bytes is not None:
        memory["reservation"] = r.memory_reservation_bytes
    if r.memory_swappiness is not None:
        memory["swappiness"] = r.memory_swappiness
    if r.oom_kill_disable:
        memory["disableOOMKiller"] = True
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    quota = r.effective_cpu_quota_us
    if quota is not None:
        cpu["quota"] = quota
        cpu["period"] = r.cpu_period_us
    if r.cpu_shares is not None:
        cpu["shares"] = r.cpu_shares
    if r.cpuset_cpus is not None:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems is not None:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.pids_max is not None:
        out["pids"] = {"limit": r.pids_max}
    block_io: dict[str, Any] = {}
    if r.blkio_weight is not None:
        block_io["weight"] = r.blkio_weight
    for key, entries, name in (
        ("weightDevice", r.blkio_weight_device, "weight"),
        ("throttleReadBpsDevice", r.blkio_read_bps_device, "rate"),
        ("throttleWriteBpsDevice", r.blkio_write_bps_device, "rate"),
        ("throttleReadIOPSDevice", r.blkio_read_iops_device, "rate"),
        ("throttleWriteIOPSDevice", r.blkio_write_iops_device, "rate"),
    ):
        if entries:
            block_io[key] = [{"major": major, "minor": minor, name: value}
                             for major, minor, value in entries]
    if block_io:
        out["blockIO"] = block_io
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": size, "limit": limit}
                                 for size, limit in r.hugepage_limits]
    unified = dict(r.unified)
    if r.memory_high_bytes is not None:
        unified.setdefault("memory.high", str(r.memory_high_bytes))
    if unified:
        out["unified"] = unified
    return out


def _device_rule(rule: str) -> dict[str, Any]:
    """``"c 10:200 rwm"`` -> ``{"allow": True, "type": "c", "major": 10, "minor": 200,
    "access": "rwm"}`` (``*`` leaves major or minor out: any)."""
    parts = rule.split()
    numbers = parts[1].split(":") if len(parts) == 3 else []
    ok = (len(numbers) == 2 and parts[0] in ("a", "b", "c")
          and all(n == "*" or n.isdigit() for n in numbers)
          and bool(parts[2]) and not set(parts[2]) - set("rwm"))
    if not ok:
        raise InvalidOptionError(
            f"devices_allow: {rule!r} is not a device rule like 'c 10:200 rwm'",
            option="devices_allow", value=rule)
    out: dict[str, Any] = {"allow": True, "type": parts[0], "access": parts[2]}
    for key, number in zip(("major", "minor"), numbers, strict=True):
        if number != "*":
            out[key] = int(number)
    return out


def to_config(spec: ContainerSpec, *, container_id: str, rootfs: str = "rootfs") -> dict[str, Any]:
    """The runtime-spec config for ``spec``; ``rootfs`` is ``root.path`` (relative to
    the bundle, or absolute). Namespaces: pid, ipc, uts, mount, cgroup, and network
    unless ``spec.network == "host"``. ``annotations``: ``spec.annotations``, and
    :data:`INIT_ANNOTATION` ``"true"`` when ``spec.init``."""
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if spec.network != "host":
        namespaces.insert(1, {"type": "network"})
    caps = list(DEFAULT_CAPABILITIES)
    mounts = [dict(m) for m in DEFAULT_MOUNTS]
    for m in spec.mounts:
        if m.type == "tmpfs":
            mounts.append({"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777"]
                           + (["ro"] if m.read_only else [])})
        else:
            mounts.append({"destination": m.destination, "type": "bind", "source": m.source,
                           "options": ["rbind", "rprivate", "ro" if m.read_only else "rw"]})
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": spec.uid, "gid": spec.gid}
            | ({"additionalGids": list(spec.additional_gids)} if spec.additional_gids else {}),
            "args": list(spec.args),
            "env": list(spec.env),
            "cwd": spec.cwd,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": spec.read_only_rootfs},
        "hostname": spec.hostname,
        "mounts": mounts,
        "annotations": dict(spec.annotations) | ({INIT_ANNOTATION: "true"} if spec.init else {}),
        "linux": {
            "resources": linux_resources(spec.resources),
            "cgroupsPath": cgroups_path(container_id, spec.cgroup_parent),
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def from_config(config: dict[str, Any], *, bundle: str) -> ContainerSpec:
    """Read back what :func:`to_config` writes (and the same fields of any
    runtime-spec 1.x config): process args/env/cwd/user, hostname, the
    network namespace, memory/cpu/pids resources, annotations (with
    :data:`INIT_ANNOTATION` as ``init``). The rootfs (``root.path``,
    relative to ``bundle``) becomes the single lower layer of the overlay.

    Raises ``ValueError`` (``InvalidOptionError``) naming the field for a config
    that is not runtime-spec 1.x or not of the right shape (the native engine's own
    checks, :func:`~.native.config.check_config`), or has no ``process.args``.
    (The native engine and ``ptc-runtime`` run a config as it is; this is for
    callers that want a ``ContainerSpec`` back.)
    """
    from .native.config import check_config  # the engine's checks; no import cycle

    check_config(config)
    process = config.get("process") or {}
    args = process.get("args") or []
    if not args:
        raise ValueError("config.json: process.args is empty")
    linux = config.get("linux") or {}
    res = linux.get("resources") or {}
    memory = (res.get("memory") or {}).get("limit")
    cpu = res.get("cpu") or {}
    pids = (res.get("pids") or {}).get("limit")
    root = (config.get("root") or {}).get("path", "rootfs")
    namespaces = {n.get("type") for n in linux.get("namespaces") or []}
    user = process.get("user") or {}
    return ContainerSpec(
        args=tuple(args),
        layers=(Path(os.path.join(bundle, root)),),
        env=tuple(process.get("env") or ()),
        cwd=process.get("cwd") or "/",
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        hostname=config.get("hostname") or "ptc",
        resources=Resources(
            memory_max_bytes=memory if memory and memory > 0 else None,
            cpu_quota_us=cpu.get("quota") if (cpu.get("quota") or 0) > 0 else None,
            cpu_period_us=cpu.get("period") or 100_000,
            pids_max=pids if pids and pids > 0 else None,
        ),
        network="none" if "network" in namespaces else "host",
        read_only_rootfs=bool((config.get("root") or {}).get("readonly", False)),
        annotations=tuple(sorted((k, v) for k, v in (config.get("annotations") or {}).items()
                                 if k != INIT_ANNOTATION)),
        init=init_requested(config),
    )
