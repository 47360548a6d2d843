"""cgroup v2: one directory in the unified tree, ``<root>/<path>``.

Kernel ``Documentation/admin-guide/cgroup-v2.rst``. ``create`` enables the
controllers a container needs in the ``cgroup.subtree_control`` of each ancestor
(:data:`V2_CONTROLLERS` always, where ``cgroup.controllers`` offers them; ``cpuset``
and ``hugetlb`` when the limits ask for them; the controller of each ``unified``
file), then writes, per runtime-spec field, as runc and crun do:

===================================  =============================================
memory.limit                         ``memory.max`` (``max`` for -1)
memory.swap (memory+swap)            ``memory.swap.max`` = swap - limit (``max`` for
                                     -1; skipped without swap accounting when that
                                     asks for no swap or unlimited swap)
memory.reservation                   ``memory.low``
memory.swappiness, disableOOMKiller  ignored: v2 has no such file (runc, crun)
cpu.shares                           ``cpu.weight`` = 1 + ((shares - 2) * 9999) / 262142
cpu.quota / period                   ``cpu.max`` ``"quota period"`` (``max`` quota when
                                     unlimited, period 100000 by default)
cpu.cpus / mems                      ``cpuset.cpus`` / ``cpuset.mems``
pids.limit                           ``pids.max`` (``max`` for -1)
blockIO.weight / weightDevice        ``io.bfq.weight`` when BFQ is there, else
                                     ``io.weight`` ``"default N"`` / ``"MAJ:MIN N"``
                                     with N = 1 + (weight - 10) * 9999 / 990
blockIO.leafWeight                   ignored: no v2 equivalent
blockIO.throttle*Device              ``io.max`` ``"MAJ:MIN rbps=N wbps=N riops=N wiops=N"``
hugepageLimits                       ``hugetlb.<size>.max``
devices                              ignored: v2 controls devices with an eBPF
                                     program attached to the cgroup, out of scope
unified                              each ``file: value`` as is, last
===================================  =============================================

``memory.high`` has no runtime-spec field: it comes through ``unified``
(``Resources.memory_high_bytes`` is put there by ``spec.linux_resources``).
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
from .resources import Limits, blkio_to_io_weight, parse, shares_to_weight, swap_v2

#: v2 controllers enabled for every container (those the parent offers)
V2_CONTROLLERS = ("cpu", "io", "memory", "pids")

_F = "linux.resources"


class CgroupV2(Cgroup):
    """A cgroup in the unified hierarchy ``<root>/<path>``."""

    version = 2

    @property
    def dir_path(self) -> Path:
        """This cgroup's directory."""
        return self.root / self._rel

    def procs_paths(self) -> list[Path]:
        """The ``cgroup.procs`` file to write a pid into to join this cgroup."""
        return [self.dir_path / "cgroup.procs"]

    def self_join_paths(self) -> list[tuple[Path, str]]:
        """``(root, file relative to it)`` of the file a process writes ``0`` into to
        join this cgroup itself (``cgroup.procs``: v2 moves whole processes only)."""
        return [(self.root, f"{self._rel}/cgroup.procs")]

    # -- create, update ---------------------------------------------------------------

    @staticmethod
    def _wanted(limits: Limits) -> list[str]:
        wanted = list(V2_CONTROLLERS)
        if limits.cpuset_cpus is not None or limits.cpuset_mems is not None:
            wanted.insert(0, "cpuset")
        if limits.hugepage_limits:
            wanted.append("hugetlb")
        for key, _ in limits.unified:
            controller = key.split(".", 1)[0]
            if controller != "cgroup" and controller not in wanted:
                wanted.append(controller)
        return wanted

    @staticmethod
    def _enable_controllers(parent: Path, wanted: list[str]) -> None:
        available = (fs.read(parent / "cgroup.controllers") or "").split()
        enabled = (fs.read(parent / "cgroup.subtree_control") or "").split()
        missing = [c for c in wanted if c in available and c not in enabled]
        if missing:
            fs.write(parent / "cgroup.subtree_control", " ".join("+" + c for c in missing))

    def create(self, resources: Resources | Mapping[str, Any] | None = None) -> None:
        """mkdir (parents included, controllers enabled in each) and write the limits.

        ``resources``: the runtime-spec ``linux.resources`` object, or a
        :class:`Resources`, or ``None`` (no limits). Raises ``CgroupError`` naming the
        field for a bad value (before anything is made), or the file and value the
        kernel refused, or EEXIST when the cgroup exists; on error nothing of it is
        left (controllers enabled in shared parents stay enabled).
        """
        limits = parse(resources)
        wanted = self._wanted(limits)
        made: list[str] = []
        try:
            try:
                made = self._mkdirs(self.root, lambda p: self._enable_controllers(p, wanted))
            except OSError as exc:
                raise self._mkdir_error(exc, self.dir_path) from exc
            self._note_made(made, self.root)
            self._apply(limits)
        except BaseException:
            self._undo(made)
            self._made_parents.clear()
            raise

    def update(self, resources: Resources | Mapping[str, Any]) -> None:
        """Write new limits to the existing cgroup (``runc update``); what is not set is
        left as is. Raises ``CgroupError`` as :meth:`create`."""
        self._apply(parse(resources))

    def _set(self, name: str, value: str, field: str) -> None:
        path = self.dir_path / name
        try:
            fs.write(path, value)
        except OSError as exc:
            raise fs.error(f"{field}: cannot write {value!r} to {path}: "
                           f"{os.strerror(exc.errno or 0)}", path=path, errno=exc.errno,
                           value=value, field=field) from exc

    def _require(self, controller: str, field: str) -> None:
        """``CgroupError`` (ENOENT) naming ``field`` when ``controller`` is not enabled."""
        if controller not in (fs.read(self.dir_path / "cgroup.controllers") or "").split():
            raise fs.error(f"{field}: the {controller} controller is not available to "
                           f"{self.dir_path} (not in the parent's cgroup.controllers)",
                           path=self.dir_path / "cgroup.controllers", errno=errno.ENOENT,
                           field=field)

    def _apply(self, lim: Limits) -> None:
        self._apply_memory(lim)
        if lim.cpu_shares is not None or lim.cpu_quota is not None or lim.cpu_period is not None:
            self._require("cpu", f"{_F}.cpu")
            if lim.cpu_shares is not None:
                self._set("cpu.weight", str(shares_to_weight(lim.cpu_shares)), f"{_F}.cpu.shares")
            if lim.cpu_quota is not None or lim.cpu_period is not None:
                quota = "max" if lim.cpu_quota in (None, -1) else str(lim.cpu_quota)
                self._set("cpu.max", f"{quota} {lim.cpu_period or 100_000}", f"{_F}.cpu.quota")
        for key, value in (("cpus", lim.cpuset_cpus), ("mems", lim.cpuset_mems)):
            if value is not None:
                self._require("cpuset", f"{_F}.cpu.{key}")
                self._set(f"cpuset.{key}", value, f"{_F}.cpu.{key}")
        if lim.pids_limit is not None:
            self._require("pids", f"{_F}.pids.limit")
            self._set("pids.max", "max" if lim.pids_limit == -1 else str(lim.pids_limit),
                      f"{_F}.pids.limit")
        self._apply_io(lim)
        for size, limit in lim.hugepage_limits:
            field = f"{_F}.hugepageLimits[{size}]"
            self._require("hugetlb", field)
            self._set(f"hugetlb.{size}.max", str(limit), field)
        for key, value in lim.unified:
            field = f"{_F}.unified[{key}]"
            if not (self.dir_path / key).exists():
                raise fs.error(f"{field}: {self.dir_path / key} does not exist (controller "
                               f"{key.split('.', 1)[0]!r} not enabled, or no such file)",
                               path=self.dir_path / key, errno=errno.ENOENT, value=value,
                               field=field)
            self._set(key, value, field)

    def _apply_memory(self, lim: Limits) -> None:
        if not lim.sets_memory:
            return
        swap = swap_v2(lim.memory_swap, lim.memory_limit)  # checks before any write
        if lim.memory_limit is None and lim.memory_reservation is None and swap is None:
            return  # swappiness, disableOOMKiller: no v2 file
        self._require("memory", f"{_F}.memory")
        if lim.memory_limit is not None:
            self._set("memory.max", "max" if lim.memory_limit == -1 else str(lim.memory_limit),
                      f"{_F}.memory.limit")
        if swap is not None:
            if (self.dir_path / "memory.swap.max").exists():
                self._set("memory.swap.max", swap, f"{_F}.memory.swap")
            elif swap not in ("0", "max"):  # runc: no swap accounting, asked for swap
                raise fs.error(f"{_F}.memory.swap: cannot allow {swap} bytes of swap: the "
                               "kernel has no swap accounting (no memory.swap.max)",
                               path=self.dir_path / "memory.swap.max", errno=errno.ENOENT,
                               value=swap, field=f"{_F}.memory.swap")
        if lim.memory_reservation is not None:
            self._set("memory.low", "max" if lim.memory_reservation == -1
                      else str(lim.memory_reservation), f"{_F}.memory.reservation")

    def _apply_io(self, lim: Limits) -> None:
        throttles = (lim.throttle_read_bps, lim.throttle_write_bps, lim.throttle_read_iops,
                     lim.throttle_write_iops)
        weights = [wd for wd in lim.blkio_weight_device if wd.value is not None]
        if lim.blkio_weight is None and not weights and not any(throttles):
            return  # nothing, or only leafWeight: no v2 equivalent
        self._require("io", f"{_F}.blockIO")
        bfq = (self.dir_path / "io.bfq.weight").exists()
        if lim.blkio_weight is not None:
            if bfq:
                self._set("io.bfq.weight", str(lim.blkio_weight), f"{_F}.blockIO.weight")
            else:
                self._set("io.weight", f"default {blkio_to_io_weight(lim.blkio_weight)}",
                          f"{_F}.blockIO.weight")
        for wd in weights:
            field = f"{_F}.blockIO.weightDevice[{wd.device}]"
            value = wd.value if bfq else blkio_to_io_weight(wd.value or 0)
            self._set("io.bfq.weight" if bfq else "io.weight", f"{wd.device} {value}", field)
        per_device: dict[str, list[str]] = {}
        for key, entries in zip(("rbps", "wbps", "riops", "wiops"), throttles, strict=True):
            for t in entries:
                per_device.setdefault(t.device, []).append(f"{key}={t.value}")
        for device, settings in per_device.items():
            self._set("io.max", f"{device} {' '.join(settings)}",
                      f"{_F}.blockIO.throttle[{device}]")

    # -- processes ----------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move process ``pid`` (0: the caller) into this cgroup."""
        fs.write(self.dir_path / "cgroup.procs", str(pid))

    def pids(self, *, recursive: bool = False) -> list[int]:
        """The processes of this cgroup (and of its descendants when ``recursive``), sorted."""
        dirs = [self.dir_path] + (fs.descendants(self.dir_path) if recursive else [])
        found: set[int] = set()
        for d in dirs:
            found.update(fs.parse_procs(fs.read(d / "cgroup.procs")))
        return sorted(found)

    def children(self) -> list[CgroupV2]:
        """The child cgroups, sorted by path."""
        return sorted((CgroupV2(f"{self.path}/{k.name}", root=self.root)
                       for k in fs.child_dirs(self.dir_path)), key=lambda c: c.path)

    # -- counters -----------------------------------------------------------------------

    def oom_kills(self) -> int:
        """``memory.events`` ``oom_kill`` (0 without the file): one read. The v2 counter
        is hierarchical: kills of this cgroup's and its descendants' processes,
        whichever limit ran out (its own or an ancestor's)."""
        return fs.keyed(fs.read(self.dir_path / "memory.events")).get("oom_kill", 0)

    def stats(self) -> Stats:
        """The kernel's counters: memory in bytes (``memory.current``, ``memory.peak``,
        ``memory.max``, ``memory.events``), cpu in microseconds (``cpu.stat``), pids,
        io bytes (``io.stat`` ``rbytes``/``wbytes``); ``None`` for a missing file."""
        d = self.dir_path
        cpu = fs.keyed(fs.read(d / "cpu.stat"))
        events_text = fs.read(d / "memory.events")
        events = fs.keyed(events_text)
        io = fs.v2_io_bytes(fs.read(d / "io.stat"))
        return Stats(
            memory_current_bytes=fs.read_int(d / "memory.current"),
            memory_peak_bytes=fs.read_int(d / "memory.peak"),
            oom_kills=events.get("oom_kill", 0),
            cpu_usage_us=cpu.get("usage_usec"),
            cpu_throttled_us=cpu.get("throttled_usec"),
            pids_current=fs.read_int(d / "pids.current"),
            pids_peak=fs.read_int(d / "pids.peak"),
            cgroup_version=2,
            memory_limit_bytes=fs.read_int(d / "memory.max"),
            memory_failcnt=None if events_text is None else events.get("max"),
            cpu_periods=cpu.get("nr_periods"),
            cpu_throttled_periods=cpu.get("nr_throttled"),
            pids_max=fs.read_int(d / "pids.max"),
            io_read_bytes=None if io is None else io[0],
            io_write_bytes=None if io is None else io[1],
        )

    # -- freezer ------------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """Whether ``cgroup.events`` says ``frozen 1`` (by itself or a frozen ancestor)."""
        return fs.keyed(fs.read(self.dir_path / "cgroup.events")).get("frozen") == 1

    def _wait_frozen(self, want: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if fs.keyed(fs.read(self.dir_path / "cgroup.events")).get("frozen") == want:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Write ``1`` to ``cgroup.freeze`` and wait until ``cgroup.events`` says
        ``frozen 1`` (every process of the subtree stopped). After ``timeout``
        seconds it is thawed back and ``CgroupError`` (EBUSY) raised."""
        self._set("cgroup.freeze", "1", "cgroup.freeze")
        if not self._wait_frozen(1, timeout):
            self._set("cgroup.freeze", "0", "cgroup.freeze")
            raise fs.error(f"could not freeze {self.path} within {timeout} s",
                           path=self.dir_path / "cgroup.freeze", errno=errno.EBUSY, value="1")

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Write ``0`` to ``cgroup.freeze`` and wait for ``frozen 0``; returns at once
        when a frozen ancestor keeps it frozen."""
        self._set("cgroup.freeze", "0", "cgroup.freeze")
        if any(fs.read_int(p.dir_path / "cgroup.freeze") == 1 for p in self.parent_chain()):
            return
        if not self._wait_frozen(0, timeout):
            raise fs.error(f"could not thaw {self.path} within {timeout} s",
                           path=self.dir_path / "cgroup.freeze", errno=errno.EBUSY, value="0")

    # -- teardown -----------------------------------------------------------------------

    def kill_all(self) -> None:
        """Kill every process of the subtree: ``cgroup.kill`` (Linux 5.14+; it works on a
        frozen cgroup: fatal signals wake v2-frozen tasks), else freeze, SIGKILL each,
        thaw; then SIGKILL until ``cgroup.procs`` is empty. A cgroup left frozen is
        thawed."""
        if not self.pids(recursive=True):
            return
        kill_file = self.dir_path / "cgroup.kill"
        frozen_by_us = False
        if kill_file.exists():
            try:
                fs.write(kill_file, "1")
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        else:
            try:
                self.freeze(timeout=1.0)
                frozen_by_us = True
            except OSError:
                pass
            for pid in self.pids(recursive=True):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if frozen_by_us or fs.read_int(self.dir_path / "cgroup.freeze") == 1:
            try:
                self.thaw(timeout=1.0)
            except OSError:
                pass
        kill_until_empty(lambda: self.pids(recursive=True))

    def remove(self, *, recursive: bool = True) -> None:
        """rmdir this cgroup (ENOENT tolerated, EBUSY retried), then the parents that
        became empty among those :meth:`create` made and the top-level shared one
        (``ptc``). A parent made by its own ``create()`` (a session parent) is never
        removed here: its owner calls its ``remove()``.

        Child cgroups (made by the container, or a session's containers) are removed
        first, as runc does; they must have no processes (:meth:`kill_all` kills the
        subtree). ``recursive=False`` raises ``CgroupError`` (EBUSY) for them instead.
        """
        kids = fs.descendants(self.dir_path)
        if kids and not recursive:
            raise fs.error(f"cannot remove cgroup {self.dir_path}: it has child cgroups "
                           f"({kids[-1].name}...)", path=self.dir_path, errno=errno.EBUSY)
        for child in kids:
            fs.rmdir(child)
        fs.rmdir(self.dir_path)
        for rel in self._removable_parents():
            fs.rmdir_if_empty(self.root / rel)
