"""cgroup v1: one directory per controller hierarchy, ``<root>/<controller>/<path>``.

Files written, per runtime-spec field (kernel ``Documentation/admin-guide/cgroup-v1/``
``memory.rst``, ``cpusets.rst``, ``pids.rst``, ``blkio-controller.rst``,
``devices.rst``, ``hugetlb.rst``, ``freezer-subsystem.rst``; scheduler
``sched-bwc.rst`` for CFS bandwidth), in runc's order:

===================================  =============================================
memory.limit / swap                  ``memory.limit_in_bytes`` /
                                     ``memory.memsw.limit_in_bytes`` (memory+swap;
                                     swap first when raising, as runc)
memory.reservation                   ``memory.soft_limit_in_bytes``
memory.disableOOMKiller              ``memory.oom_control`` ``1``
memory.swappiness                    ``memory.swappiness``
cpu.shares                           ``cpu.shares`` (read back: the kernel clamps)
cpu.period / quota                   ``cpu.cfs_period_us`` / ``cpu.cfs_quota_us``
cpu.cpus / mems                      ``cpuset.cpus`` / ``cpuset.mems`` (empty ones
                                     filled from the parent first)
pids.limit                           ``pids.max`` (``max`` for -1)
blockIO.weight / weightDevice        ``blkio.weight`` / ``blkio.weight_device``, else
                                     the BFQ ones ``blkio.bfq.weight[_device]``
blockIO.leafWeight                   ``blkio.leaf_weight[_device]``
blockIO.throttle*Device              ``blkio.throttle.{read,write}_{bps,iops}_device``
                                     ``"MAJ:MIN value"``
hugepageLimits                       ``hugetlb.<size>.limit_in_bytes``
devices                              ``devices.deny`` / ``devices.allow``, then
                                     runc's default allowed devices
unified                              error: it is v2 only
===================================  =============================================

A limit whose hierarchy is not mounted under ``root`` is an error, as in runc
("cannot set hugetlb limit: container could not join or create cgroup"): on a
hybrid host with hugetlb on cgroup2 only, ``hugepageLimits`` fails with
``CgroupError`` naming the field; without them nothing is said.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...types import Resources, Stats
from . import fs
from .base import FREEZE_TIMEOUT, Cgroup, kill_until_empty
from .resources import Limits, parse

#: v1 hierarchies a container joins, by mount directory name under the root
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer",
                  "hugetlb")

_F = "linux.resources"

#: :meth:`CgroupV1.hierarchies` by cgroup root, found once per process
_MOUNTED: dict[str, tuple[str, ...]] = {}


def _failcnt(mem: Path) -> int | None:
    """``memory.failcnt`` + ``memory.memsw.failcnt``: a charge is tried against
    memory+swap first, and one refused there never reaches the memory counter (so
    with memory+swap equal to memory, as without swap, only memsw counts)."""
    counts = [fs.read_int(mem / name) for name in ("memory.failcnt", "memory.memsw.failcnt")]
    found = [c for c in counts if c is not None]
    return sum(found) if found else None


class CgroupV1(Cgroup):
    """A cgroup in each v1 hierarchy ``<root>/<controller>/<path>`` (those mounted).

    The process joins every hierarchy of :data:`V1_CONTROLLERS` that is mounted,
    so that it sits in ``<path>`` everywhere.
    """

    version = 1

    def hierarchies(self) -> list[str]:
        """The controllers of :data:`V1_CONTROLLERS` mounted under ``root`` (looked up once
        per root and process: the host's hierarchies do not come and go)."""
        root = str(self.root)
        found = _MOUNTED.get(root)
        if found is None:
            found = tuple(c for c in V1_CONTROLLERS if os.path.exists(f"{root}/{c}/cgroup.procs"))
            _MOUNTED[root] = found
        return list(found)

    def dir(self, controller: str) -> Path:
        """This cgroup's directory in ``controller``'s hierarchy."""
        return self.root / controller / self._rel

    def _dir(self, controller: str) -> str:
        """:meth:`dir` as a string (no ``pathlib`` on the hot paths)."""
        return f"{self.root}/{controller}/{self._rel}"

    def procs_paths(self) -> list[Path]:
        """The ``cgroup.procs`` files to write a pid into to join this cgroup."""
        return [Path(f"{self._dir(c)}/cgroup.procs") for c in self.hierarchies()]

    def self_join_paths(self) -> list[tuple[Path, str]]:
        """``(hierarchy root, file relative to it)`` of the ``tasks`` files a
        single-threaded process writes ``0`` into to join this cgroup itself. The
        kernel moves the writing thread without taking the global
        ``cgroup_threadgroup_rwsem`` (Linux 5.16+), whose write lock waits for an RCU
        grace period (5-20 ms) when it has not been taken for a while."""
        tasks = f"{self._rel}/tasks"
        return [(Path(f"{self.root}/{c}"), tasks) for c in self.hierarchies()]

    # -- create, update ---------------------------------------------------------------

    def create(self, resources: Resources | Mapping[str, Any] | None = None) -> None:
        """mkdir in every hierarchy and write the limits.

        ``resources``: the runtime-spec ``linux.resources`` object, or a
        :class:`Resources`, or ``None`` (no limits). Raises ``CgroupError`` naming the
        field for a bad value (before anything is made), or the file and value the
        kernel refused (EINVAL, EBUSY, ENODEV...), or EEXIST when the cgroup exists;
        on error nothing of it is left.
        """
        limits = parse(resources)
        self._check_mounted(limits)
        made: list[str] = []
        try:
            for controller in self.hierarchies():
                base = f"{self.root}/{controller}"
                try:
                    new = self._mkdirs(base)
                    made += new
                    self._note_made(new, base)
                    if controller == "cpuset":
                        self._cpuset_fill(base)
                except OSError as exc:
                    raise self._mkdir_error(exc, self._dir(controller)) from exc
            self._apply(limits)
        except BaseException:
            self._undo(made)
            self._made_parents.clear()
            raise

    def update(self, resources: Resources | Mapping[str, Any]) -> None:
        """Write new limits to the existing cgroup (``runc update``); what is not set is
        left as is. Raises ``CgroupError`` as :meth:`create` (the cgroup stays, with
        the limits written before the refused one)."""
        limits = parse(resources)
        self._check_mounted(limits)
        self._apply(limits)

    def _check_mounted(self, limits: Limits) -> None:
        if limits.unified:
            raise fs.invalid(f"{_F}.unified", dict(limits.unified),
                             "needs cgroup v2 (this is a v1 hierarchy)")
        wanted = {
            "memory": (limits.sets_memory, f"{_F}.memory"),
            "cpu": (limits.cpu_shares is not None or limits.cpu_quota is not None
                    or limits.cpu_period is not None, f"{_F}.cpu"),
            "cpuset": (limits.cpuset_cpus is not None or limits.cpuset_mems is not None,
                       f"{_F}.cpu.cpus"),
            "pids": (limits.pids_limit is not None, f"{_F}.pids.limit"),
            "blkio": (limits.sets_blkio, f"{_F}.blockIO"),
            "hugetlb": (bool(limits.hugepage_limits), f"{_F}.hugepageLimits"),
            "devices": (limits.devices is not None, f"{_F}.devices"),
        }
        for controller, (asked, field) in wanted.items():
            if asked and controller not in self.hierarchies():
                raise fs.error(
                    f"{field}: cannot set a {controller} limit: no cgroup v1 {controller} "
                    f"hierarchy is mounted at {self.root / controller}", path=self.root /
                    controller, errno=errno.ENOENT, field=field)

    def _cpuset_fill(self, base: str) -> None:
        """A new v1 cpuset has empty ``cpus``/``mems``: copy each ancestor's down
        (ancestors first; an ancestor's are read only when the child's are empty)."""
        current = base
        for part in self._parts:
            child = f"{current}/{part}"
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (fs.read(f"{child}/{name}") or "").strip():
                    continue
                inherited = (fs.read(f"{current}/{name}") or "").strip()
                if inherited:
                    fs.write(f"{child}/{name}", inherited)
            current = child

    def _set(self, controller: str, name: str, value: str, field: str) -> None:
        """Write ``value`` to ``name`` in ``controller``'s directory; the error names
        ``field`` too."""
        path = f"{self._dir(controller)}/{name}"
        try:
            fs.write(path, value)
        except OSError as exc:
            extra = ""
            if exc.errno == errno.EBUSY and name == "memory.limit_in_bytes":
                usage = fs.read_int(f"{self._dir(controller)}/memory.usage_in_bytes")
                extra = f" (below the current usage of {usage} bytes)"
            raise fs.error(f"{field}: cannot write {value!r} to {path}: "
                           f"{os.strerror(exc.errno or 0)}{extra}", path=path,
                           errno=exc.errno, value=value, field=field) from exc

    def _apply(self, lim: Limits) -> None:
        self._apply_memory(lim)
        self._apply_cpu(lim)
        if lim.pids_limit is not None:
            self._set("pids", "pids.max", "max" if lim.pids_limit == -1 else
                      str(lim.pids_limit), f"{_F}.pids.limit")
        self._apply_blkio(lim)
        for size, limit in lim.hugepage_limits:
            self._set("hugetlb", f"hugetlb.{size}.limit_in_bytes", str(limit),
                      f"{_F}.hugepageLimits[{size}]")
        for rule in lim.device_rules():
            self._set("devices", "devices.allow" if rule.allow else "devices.deny",
                      rule.line(), f"{_F}.devices")

    def _apply_memory(self, lim: Limits) -> None:
        limit, swap = lim.memory_limit, lim.memory_swap
        if not lim.sets_memory:
            return
        mem = self.dir("memory")
        has_memsw = (mem / "memory.memsw.limit_in_bytes").exists()
        if limit == -1 and swap is None and has_memsw:
            swap = -1  # runc: unlimited memory means unlimited memory+swap
        if swap is not None and not has_memsw:
            if swap not in (-1, limit):
                raise fs.error(f"{_F}.memory.swap: cannot set memory+swap to {swap}: the kernel "
                               "has no swap accounting (no memory.memsw.limit_in_bytes)",
                               path=mem / "memory.memsw.limit_in_bytes", errno=errno.ENOENT,
                               value=str(swap), field=f"{_F}.memory.swap")
            swap = None  # no swap accounting: memory+swap is just memory
        writes = []
        if limit is not None:
            writes.append(("memory.limit_in_bytes", limit, "limit"))
        if swap is not None:
            writes.append(("memory.memsw.limit_in_bytes", swap, "swap"))
        if limit is not None and swap is not None:
            current = fs.read_int(mem / "memory.limit_in_bytes")
            if swap == -1 or (current is not None and current < swap):
                writes.reverse()  # raising: memory+swap first, or the kernel says EINVAL
        for name, value, key in writes:
            self._set("memory", name, str(value), f"{_F}.memory.{key}")
        if lim.memory_reservation is not None:
            self._set("memory", "memory.soft_limit_in_bytes", str(lim.memory_reservation),
                      f"{_F}.memory.reservation")
        if lim.disable_oom_killer:
            self._set("memory", "memory.oom_control", "1", f"{_F}.memory.disableOOMKiller")
        if lim.memory_swappiness is not None:
            self._set("memory", "memory.swappiness", str(lim.memory_swappiness),
                      f"{_F}.memory.swappiness")

    def _apply_cpu(self, lim: Limits) -> None:
        if lim.cpu_shares is not None:
            field = f"{_F}.cpu.shares"
            self._set("cpu", "cpu.shares", str(lim.cpu_shares), field)
            got = fs.read_int(self.dir("cpu") / "cpu.shares")
            if got is not None and got != lim.cpu_shares:
                raise fs.error(f"{field}: the kernel set cpu.shares to {got}, not "
                               f"{lim.cpu_shares}", path=self.dir("cpu") / "cpu.shares",
                               errno=errno.ERANGE, value=str(lim.cpu_shares), field=field)
        period_done = lim.cpu_period is None
        if lim.cpu_period is not None:
            try:
                self._set("cpu", "cpu.cfs_period_us", str(lim.cpu_period), f"{_F}.cpu.period")
                period_done = True
            except OSError as exc:
                # runc: a smaller period can be refused until the quota is set
                if exc.errno != errno.EINVAL or lim.cpu_quota is None:
                    raise
        if lim.cpu_quota is not None:
            self._set("cpu", "cpu.cfs_quota_us", str(lim.cpu_quota), f"{_F}.cpu.quota")
            if not period_done:
                self._set("cpu", "cpu.cfs_period_us", str(lim.cpu_period), f"{_F}.cpu.period")
        if lim.cpuset_cpus is not None:
            self._set("cpuset", "cpuset.cpus", lim.cpuset_cpus, f"{_F}.cpu.cpus")
        if lim.cpuset_mems is not None:
            self._set("cpuset", "cpuset.mems", lim.cpuset_mems, f"{_F}.cpu.mems")

    def _apply_blkio(self, lim: Limits) -> None:
        if not lim.sets_blkio:
            return
        d = self.dir("blkio")
        bfq = "" if (d / "blkio.weight").exists() else "bfq."
        if lim.blkio_weight is not None:
            self._set("blkio", f"blkio.{bfq}weight", str(lim.blkio_weight),
                      f"{_F}.blockIO.weight")
        if lim.blkio_leaf_weight is not None:
            self._set("blkio", "blkio.leaf_weight", str(lim.blkio_leaf_weight),
                      f"{_F}.blockIO.leafWeight")
        for wd in lim.blkio_weight_device:
            field = f"{_F}.blockIO.weightDevice[{wd.device}]"
            if wd.value is not None:
                self._set("blkio", f"blkio.{bfq}weight_device", f"{wd.device} {wd.value}", field)
            if wd.leaf is not None:
                self._set("blkio", "blkio.leaf_weight_device", f"{wd.device} {wd.leaf}", field)
        for key, name, entries in (
            ("throttleReadBpsDevice", "read_bps_device", lim.throttle_read_bps),
            ("throttleWriteBpsDevice", "write_bps_device", lim.throttle_write_bps),
            ("throttleReadIOPSDevice", "read_iops_device", lim.throttle_read_iops),
            ("throttleWriteIOPSDevice", "write_iops_device", lim.throttle_write_iops),
        ):
            for t in entries:
                self._set("blkio", f"blkio.throttle.{name}", f"{t.device} {t.value}",
                          f"{_F}.blockIO.{key}[{t.device}]")

    # -- processes ----------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move process ``pid`` (0: the caller) into this cgroup in every hierarchy."""
        for path in self.procs_paths():
            fs.write(path, str(pid))

    def pids(self, *, recursive: bool = False) -> list[int]:
        """Every process in this cgroup (and its descendants when ``recursive``), over
        all hierarchies, sorted."""
        found: set[int] = set()
        for controller in self.hierarchies():
            d = self.dir(controller)
            for path in [d] + (fs.descendants(d) if recursive else []):
                found.update(fs.parse_procs(fs.read(path / "cgroup.procs")))
        return sorted(found)

    def children(self) -> list[CgroupV1]:
        """The child cgroups (as found in the first mounted hierarchy), sorted by path."""
        for controller in self.hierarchies():
            kids = fs.child_dirs(self.dir(controller))
            return sorted((CgroupV1(f"{self.path}/{k.name}", root=self.root) for k in kids),
                          key=lambda c: c.path)
        return []

    # -- counters -----------------------------------------------------------------------

    def oom_kills(self) -> int:
        """``memory.oom_control`` ``oom_kill`` (0 without it): one read.

        It counts this cgroup's processes killed by the OOM killer, whichever limit
        ran out: its own or an ancestor's (a session parent's). The v1 kernel counts
        the kill in the victim's cgroup only, not in its ancestors
        (``memcg_memory_event`` does not propagate on v1); the ancestor whose limit
        was hit shows it in its ``memory.failcnt``."""
        return fs.keyed(fs.read(f"{self._dir('memory')}/memory.oom_control")).get("oom_kill", 0)

    def stats(self) -> Stats:
        """The kernel's counters: memory in bytes, cpu in microseconds (from
        ``cpuacct.usage`` and ``cpu.stat`` ``throttled_time`` in ns), io in bytes
        (``blkio.throttle.io_service_bytes_recursive``); ``None`` for a file the host
        does not have."""
        mem, cpu, pids = self.dir("memory"), self.dir("cpu"), self.dir("pids")
        usage_ns = fs.read_int(self.dir("cpuacct") / "cpuacct.usage")
        cpu_stat = fs.keyed(fs.read(cpu / "cpu.stat"))
        throttled_ns = cpu_stat.get("throttled_time")
        limit = fs.read_int(mem / "memory.limit_in_bytes")
        blkio = self.dir("blkio")
        io = None
        for name in ("blkio.throttle.io_service_bytes_recursive",
                     "blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
            io = fs.v1_io_bytes(fs.read(blkio / name))
            if io is not None:
                break
        return Stats(
            memory_current_bytes=fs.read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=fs.read_int(mem / "memory.max_usage_in_bytes"),
            oom_kills=self.oom_kills(),
            cpu_usage_us=None if usage_ns is None else usage_ns // 1000,
            cpu_throttled_us=None if throttled_ns is None else throttled_ns // 1000,
            pids_current=fs.read_int(pids / "pids.current"),
            pids_peak=fs.read_int(pids / "pids.peak"),
            cgroup_version=1,
            memory_limit_bytes=None if limit is None or limit >= fs.V1_UNLIMITED else limit,
            memory_failcnt=_failcnt(mem),
            cpu_periods=cpu_stat.get("nr_periods"),
            cpu_throttled_periods=cpu_stat.get("nr_throttled"),
            pids_max=fs.read_int(pids / "pids.max"),
            io_read_bytes=None if io is None else io[0],
            io_write_bytes=None if io is None else io[1],
        )

    # -- freezer ------------------------------------------------------------------------

    def _freezer(self) -> Path:
        if "freezer" not in self.hierarchies():
            raise fs.error(f"cannot freeze {self.path}: no cgroup v1 freezer hierarchy at "
                           f"{self.root / 'freezer'}", path=self.root / "freezer",
                           errno=errno.ENOENT)
        return self.dir("freezer") / "freezer.state"

    def _freezer_state(self) -> str:
        return (fs.read(self._freezer()) or "").strip()

    @property
    def frozen(self) -> bool:
        """Whether ``freezer.state`` reads ``FROZEN`` (by itself or a frozen ancestor)."""
        if "freezer" not in self.hierarchies():
            return False
        return self._freezer_state() == "FROZEN"

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Freeze every process of the cgroup and its descendants
        (``freezer-subsystem.rst``): write ``FROZEN`` until ``freezer.state`` settles
        from ``FREEZING`` to ``FROZEN`` — runc's loop, with a thaw every 50 tries so a
        fork loop cannot keep it ``FREEZING``. After ``timeout`` seconds it is thawed
        back and ``CgroupError`` (EBUSY) raised; also raised without a freezer."""
        state = self._freezer()
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            if tries % 50 == 49:
                fs.write(state, "THAWED")
                time.sleep(0.01)
            fs.write(state, "FROZEN")
            if tries % 25 == 24:
                time.sleep(0.001)
            now = (fs.read(state) or "").strip()
            if now == "FROZEN":
                return
            if now != "FREEZING":
                raise fs.error(f"freezer of {self.path}: unexpected state {now!r}",
                               path=state, errno=errno.EIO, value="FROZEN")
            if time.monotonic() > deadline:
                fs.write(state, "THAWED")
                raise fs.error(f"could not freeze {self.path} within {timeout} s",
                               path=state, errno=errno.EBUSY, value="FROZEN")
            tries += 1

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Write ``THAWED`` and wait for ``freezer.state`` to say so; returns at once
        when a frozen ancestor keeps it frozen (``freezer.parent_freezing`` 1)."""
        state = self._freezer()
        fs.write(state, "THAWED")
        deadline = time.monotonic() + timeout
        while (fs.read(state) or "").strip() != "THAWED":
            if fs.read_int(state.parent / "freezer.parent_freezing") == 1:
                return
            if time.monotonic() > deadline:
                raise fs.error(f"could not thaw {self.path} within {timeout} s",
                               path=state, errno=errno.EBUSY, value="THAWED")
            time.sleep(0.001)

    # -- teardown -----------------------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every process of the cgroup and its descendants until none is left.

        As runc: freeze (so a fork loop cannot outrun it; skipped if that fails), signal,
        then thaw — a v1 frozen task only dies once thawed, so this also works on a
        cgroup that :meth:`freeze` left frozen."""
        if not self.pids(recursive=True):
            return
        try:
            self.freeze(timeout=1.0)
        except OSError:
            pass
        try:
            for pid in self.pids(recursive=True):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if "freezer" in self.hierarchies():
                try:
                    self.thaw(timeout=1.0)
                except OSError:
                    pass
        kill_until_empty(lambda: self.pids(recursive=True))

    def remove(self, *, recursive: bool = True) -> None:
        """rmdir this cgroup in every hierarchy (ENOENT tolerated, EBUSY retried), then
        the parents that became empty among those :meth:`create` made and the
        top-level shared one (``ptc``). A parent made by its own ``create()`` (a
        session parent) is never removed here: its owner calls its ``remove()``.

        Child cgroups (made by the container, or a session's containers) are removed
        first, as runc does; they must have no processes (:meth:`kill_all` kills the
        subtree). ``recursive=False`` raises ``CgroupError`` (EBUSY) for them instead.
        """
        controllers = self.hierarchies()
        if not recursive:
            for controller in controllers:
                found = fs.descendants(self._dir(controller))
                if found:
                    raise fs.error(f"cannot remove cgroup {self.dir(controller)}: it has "
                                   f"child cgroups ({found[-1].name}...)",
                                   path=self.dir(controller), errno=errno.EBUSY)
        for controller in controllers:
            d = self._dir(controller)
            try:
                fs.remove_dir(d)  # the common case: no child, no process left; one rmdir
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise fs.error(f"cannot remove cgroup {d}: {os.strerror(exc.errno or 0)}",
                                   path=d, errno=exc.errno) from exc
            for child in fs.descendants(d):  # busy: child cgroups first, as runc
                fs.rmdir(child)
            fs.rmdir(d)  # or a task that just exited is still listed: retried
        parents = self._removable_parents()
        for controller in controllers:
            for rel in parents:
                fs.rmdir_if_empty(f"{self.root}/{controller}/{rel}")
