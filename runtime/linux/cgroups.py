"""Control groups v1 and v2 behind one small API.

A container's cgroup is ``/ptc/<id>`` relative to each hierarchy's root
(:func:`pytest_containers.runtime.spec.cgroups_path`). :func:`open_cgroup`
returns a :class:`CgroupV1` (one directory per controller hierarchy, e.g.
``/sys/fs/cgroup/memory/ptc/<id>``) or a :class:`CgroupV2` (one directory in
the unified tree, kernel ``Documentation/admin-guide/cgroup-v2.rst``).

Both take ``root`` so that tests can point them at a fake tree; every
directory creation goes through :func:`_make_dir` and every write through
:func:`_write` (one ``write(2)`` of the whole value, as the kernel wants).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Literal

from ..types import Resources, Stats
from . import syscalls
from .mounts import mountinfo

__all__ = [
    "CGROUP2_SUPER_MAGIC",
    "CgroupV1",
    "CgroupV2",
    "V1_CONTROLLERS",
    "V2_CONTROLLERS",
    "detect",
    "hierarchies",
    "open_cgroup",
    "remove_everywhere",
]

CGROUP2_SUPER_MAGIC = 0x63677270
DEFAULT_ROOT = Path("/sys/fs/cgroup")

#: v1 hierarchies a container joins, by mount directory name under the root
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer")
#: v2 controllers enabled for containers (those the root offers)
V2_CONTROLLERS = ("memory", "cpu", "pids")

#: EBUSY retries of rmdir: a task that just exited may still be listed briefly
_RMDIR_TRIES = 200
_RMDIR_DELAY = 0.005


def detect(root: Path = DEFAULT_ROOT) -> Literal[1, 2]:
    """2 when ``root`` is a cgroup2 mount (``CGROUP2_SUPER_MAGIC``), else 1 (v1 or hybrid)."""
    return 2 if syscalls.statfs_type(root) == CGROUP2_SUPER_MAGIC else 1


def open_cgroup(
    path: str, *, root: Path = DEFAULT_ROOT, version: int | None = None
) -> CgroupV1 | CgroupV2:
    """The cgroup at ``path`` (like ``"/ptc/<id>"``) under ``root``; nothing is created.

    ``version`` defaults to :func:`detect` of ``root``.
    """
    if version is None:
        version = detect(root)
    if version == 2:
        return CgroupV2(path, root=root)
    if version == 1:
        return CgroupV1(path, root=root)
    raise ValueError(f"cgroup version must be 1 or 2, got {version!r}")


# -- file helpers (module level so tests can observe them) -------------------------


def _make_dir(path: Path) -> None:
    """``mkdir`` one cgroup directory (the kernel fills in its interface files)."""
    os.mkdir(path)


def _remove_dir(path: Path) -> None:
    """``rmdir`` one cgroup directory (the kernel drops its interface files)."""
    os.rmdir(path)


def _write(path: Path, value: str) -> None:
    """Write ``value`` to a cgroup interface file in a single ``write(2)``.

    Raises ``CgroupError`` naming the file and the value.
    """
    from pytest_containers.exceptions import CgroupError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(
            f"cannot write {value!r} to {path}: {os.strerror(exc.errno or 0)}",
            path=str(path), errno=exc.errno, value=value,
        ) from exc


def _read(path: Path | str) -> str | None:
    """The file's text, or ``None`` when it does not exist (``open``/``read``/``close``:
    interface files are small, and a buffered text file costs four more syscalls)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii")


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """Parse flat-keyed files (``"key value"`` lines: ``cpu.stat``, ``memory.events``)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _parse_procs(text: str | None) -> list[int]:
    return [int(p) for p in (text or "").split()]


def _rmdir(path: Path) -> None:
    """Remove one cgroup directory; ENOENT tolerated, EBUSY retried briefly."""
    from pytest_containers.exceptions import CgroupError

    for attempt in range(_RMDIR_TRIES):
        try:
            _remove_dir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == _RMDIR_TRIES - 1:
                raise CgroupError(
                    f"cannot remove cgroup {path}: {os.strerror(exc.errno or 0)}",
                    path=str(path), errno=exc.errno,
                ) from exc
            time.sleep(_RMDIR_DELAY)


def _rmdir_parent(path: Path) -> None:
    """Remove the shared parent (``ptc``) only if it is empty: EBUSY/ENOTEMPTY/ENOENT
    mean another container still uses it or it is already gone."""
    try:
        _remove_dir(path)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT, errno.EEXIST):
            raise


def hierarchies() -> list[tuple[str, Path]]:
    """Every mounted cgroup hierarchy as ``(fstype, mount point)``; fstype is
    ``cgroup`` (v1, named ones such as ``name=systemd`` included) or ``cgroup2``."""
    return [(m.fstype, Path(m.mount_point)) for m in mountinfo()
            if m.fstype in ("cgroup", "cgroup2")]


def remove_everywhere(path: str) -> None:
    """rmdir ``path`` (``/ptc/<id>``) in every mounted hierarchy — runc also makes it
    in ``name=systemd`` and a hybrid host's ``unified`` — then each empty parent
    up to (not including) the hierarchy root. Missing is fine; a busy leaf is
    retried briefly, then ``CgroupError``."""
    rel = path.strip("/")
    for _, mount in hierarchies():
        leaf = mount / rel
        if leaf.is_dir():
            _rmdir(leaf)
        for parent in list(leaf.relative_to(mount).parents)[:-1]:
            _rmdir_parent(mount / parent)


def _kill_until_empty(read_pids, timeout: float = 5.0) -> None:
    """SIGKILL every pid ``read_pids()`` lists until it lists none (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = read_pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


class _Cgroup:
    version: int
    path: str

    def __init__(self, path: str, *, root: Path = DEFAULT_ROOT) -> None:
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"cgroup path must be absolute without '..', got {path!r}")
        self.path = path
        self.root = Path(root)
        self._rel = path.strip("/")
        self._parts = self._rel.split("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, root={str(self.root)!r})"

    def _mkdirs(self, base: Path, on_parent=None) -> list[Path]:
        """mkdir each component of the path under ``base``; returns the dirs made.

        ``on_parent(dir)`` is called for every ancestor (existing or made) before its
        child is created. A concurrent removal of an empty shared parent (ENOENT on
        the child) is retried.
        """
        made: list[Path] = []
        leaf = base / self._rel
        if on_parent is None:
            try:  # the common case: the shared parent exists, one mkdir
                _make_dir(leaf)
                return [leaf]
            except FileNotFoundError:
                pass
        for _attempt in range(20):
            current = base
            try:
                for i, part in enumerate(self._parts):
                    if on_parent is not None:
                        on_parent(current)
                    current = current / part
                    try:
                        _make_dir(current)
                        made.append(current)
                    except FileExistsError:
                        if i == len(self._parts) - 1:
                            raise
                return made
            except FileNotFoundError:
                if not base.is_dir():
                    raise
                continue  # an empty parent was removed under us by another container
        raise FileNotFoundError(errno.ENOENT, "cgroup parent keeps disappearing", str(base))

    def _error(self, message: str, exc: OSError, path: Path):
        from pytest_containers.exceptions import CgroupError

        return CgroupError(f"{message} {path}: {os.strerror(exc.errno or 0)}",
                           path=str(path), errno=exc.errno)


class CgroupV1(_Cgroup):
    """A cgroup in each v1 hierarchy ``<root>/<controller>/<path>`` (those mounted).

    Limits: memory ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``
    (same value: no swap), cpu ``cpu.cfs_period_us``/``cpu.cfs_quota_us``, pids
    ``pids.max``. The process also joins cpuacct, cpuset, blkio, devices and
    freezer so that it sits in ``ptc/<id>`` everywhere.
    """

    version = 1

    def hierarchies(self) -> list[str]:
        """The controllers of :data:`V1_CONTROLLERS` mounted under ``root`` (looked up once)."""
        found = self.__dict__.get("_hierarchies")
        if found is None:
            found = [c for c in V1_CONTROLLERS if os.path.exists(f"{self.root}/{c}/cgroup.procs")]
            self._hierarchies = found
        return found

    def dir(self, controller: str) -> Path:
        """This cgroup's directory in ``controller``'s hierarchy."""
        return self.root / controller / self._rel

    def procs_paths(self) -> list[Path]:
        """The ``cgroup.procs`` files to write a pid into to join this cgroup."""
        return [self.dir(c) / "cgroup.procs" for c in self.hierarchies()]

    def self_join_paths(self) -> list[tuple[Path, str]]:
        """``(hierarchy root, file relative to it)`` of the ``tasks`` files a
        single-threaded process writes ``0`` into to join this cgroup itself. The
        kernel moves the writing thread without taking the global
        ``cgroup_threadgroup_rwsem`` (Linux 5.16+), whose write lock waits for an RCU
        grace period (5-20 ms) when it has not been taken for a while."""
        return [(self.root / c, f"{self._rel}/tasks") for c in self.hierarchies()]

    def create(self, resources: Resources) -> None:
        """mkdir in every hierarchy and write the limits; on error remove what was
        made and raise ``CgroupError`` naming the file and value."""
        made: list[Path] = []
        try:
            for controller in self.hierarchies():
                base = self.root / controller
                try:
                    made += self._mkdirs(base)
                    if controller == "cpuset":
                        self._cpuset_fill(base)
                except FileExistsError as exc:
                    raise self._error("cgroup already exists:", exc, self.dir(controller)) from exc
                except OSError as exc:
                    if hasattr(exc, "fields"):
                        raise
                    raise self._error("cannot create cgroup", exc, self.dir(controller)) from exc
            self._write_limits(resources)
        except BaseException:
            for path in reversed(made):
                try:
                    _rmdir(path) if path.name != "ptc" else _rmdir_parent(path)
                except OSError:
                    pass
            raise

    def _cpuset_fill(self, base: Path) -> None:
        """A new v1 cpuset has empty ``cpus``/``mems``: copy each ancestor's down
        (ancestors first; an ancestor's are read only when the child's are empty)."""
        current = base
        for part in self._parts:
            child = current / part
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (_read(child / name) or "").strip():
                    continue
                inherited = (_read(current / name) or "").strip()
                if inherited:
                    _write(child / name, inherited)
            current = child

    def _write_limits(self, r: Resources) -> None:
        if r.memory_max_bytes is not None and "memory" in self.hierarchies():
            mem = self.dir("memory")
            _write(mem / "memory.limit_in_bytes", str(r.memory_max_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                _write(mem / "memory.memsw.limit_in_bytes", str(r.memory_max_bytes))
        if r.cpu_quota_us is not None and "cpu" in self.hierarchies():
            cpu = self.dir("cpu")
            _write(cpu / "cpu.cfs_period_us", str(r.cpu_period_us))
            _write(cpu / "cpu.cfs_quota_us", str(r.cpu_quota_us))
        if r.pids_max is not None and "pids" in self.hierarchies():
            _write(self.dir("pids") / "pids.max", str(r.pids_max))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (0: the caller) into this cgroup in every hierarchy."""
        for path in self.procs_paths():
            _write(path, str(pid))

    def pids(self) -> list[int]:
        """Every process in this cgroup, over all hierarchies, sorted."""
        found: set[int] = set()
        for controller in self.hierarchies():
            found.update(_parse_procs(_read(f"{self.root}/{controller}/{self._rel}/cgroup.procs")))
        return sorted(found)

    def oom_kills(self) -> int:
        """The memory controller's ``oom_kill`` counter (0 without it): one read."""
        return _keyed(_read(self.dir("memory") / "memory.oom_control")).get("oom_kill", 0)

    def stats(self) -> Stats:
        """The kernel's counters; memory in bytes, cpu in microseconds."""
        mem, cpu = self.dir("memory"), self.dir("cpu")
        oom = self.oom_kills()
        usage_ns = _read_int(self.dir("cpuacct") / "cpuacct.usage")
        cpu_stat = _keyed(_read(cpu / "cpu.stat"))
        throttled_ns = cpu_stat.get("throttled_time")
        return Stats(
            memory_current_bytes=_read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes"),
            oom_kills=oom,
            cpu_usage_us=None if usage_ns is None else usage_ns // 1000,
            cpu_throttled_us=None if throttled_ns is None else throttled_ns // 1000,
            pids_current=_read_int(self.dir("pids") / "pids.current"),
            pids_peak=_read_int(self.dir("pids") / "pids.peak"),
            cgroup_version=1,
        )

    def kill_all(self) -> None:
        """SIGKILL every process of the cgroup until none is left (frozen meanwhile
        when the freezer hierarchy is there, so a fork loop cannot outrun it)."""
        if not self.pids():
            return
        freezer = self.dir("freezer") / "freezer.state"
        frozen = False
        if freezer.exists():
            try:
                _write(freezer, "FROZEN")
                frozen = True
            except OSError:
                frozen = False
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                try:
                    _write(freezer, "THAWED")
                except OSError:
                    pass
        _kill_until_empty(self.pids)

    def remove(self) -> None:
        """rmdir the leaf in every hierarchy (ENOENT tolerated, EBUSY retried), then
        the shared parents if they became empty."""
        controllers = self.hierarchies()
        for controller in controllers:
            _rmdir(self.dir(controller))
        for controller in controllers:
            parts = self._parts[:-1]
            while parts:
                _rmdir_parent(self.root / controller / "/".join(parts))
                parts = parts[:-1]


class CgroupV2(_Cgroup):
    """A cgroup in the unified hierarchy ``<root>/<path>``.

    ``create`` enables ``+memory +cpu +pids`` (those in ``cgroup.controllers``)
    in the ``cgroup.subtree_control`` of each ancestor, then writes
    ``memory.max``, ``memory.swap.max`` (0), ``cpu.max`` (``"quota period"``) and
    ``pids.max``.
    """

    version = 2

    @property
    def dir_path(self) -> Path:
        return self.root / self._rel

    def procs_paths(self) -> list[Path]:
        """The ``cgroup.procs`` file to write a pid into to join this cgroup."""
        return [self.dir_path / "cgroup.procs"]

    def self_join_paths(self) -> list[tuple[Path, str]]:
        """``(root, file relative to it)`` of the file a process writes ``0`` into to
        join this cgroup itself (``cgroup.procs``: v2 moves whole processes only)."""
        return [(self.root, f"{self._rel}/cgroup.procs")]

    def _enable_controllers(self, parent: Path) -> None:
        available = (_read(parent / "cgroup.controllers") or "").split()
        enabled = (_read(parent / "cgroup.subtree_control") or "").split()
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in wanted))

    def create(self, resources: Resources) -> None:
        """mkdir (parents included) and write the limits; on error remove what was
        made and raise ``CgroupError`` naming the file and value."""
        made: list[Path] = []
        try:
            try:
                made = self._mkdirs(self.root, on_parent=self._enable_controllers)
            except FileExistsError as exc:
                raise self._error("cgroup already exists:", exc, self.dir_path) from exc
            except OSError as exc:
                if hasattr(exc, "fields"):
                    raise
                raise self._error("cannot create cgroup", exc, self.dir_path) from exc
            self._write_limits(resources)
        except BaseException:
            for path in reversed(made):
                try:
                    _rmdir(path) if path == self.dir_path else _rmdir_parent(path)
                except OSError:
                    pass
            raise

    def _write_limits(self, r: Resources) -> None:
        d = self.dir_path
        if r.memory_max_bytes is not None:
            _write(d / "memory.max", str(r.memory_max_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
        if r.cpu_quota_us is not None:
            _write(d / "cpu.max", f"{r.cpu_quota_us} {r.cpu_period_us}")
        if r.pids_max is not None:
            _write(d / "pids.max", str(r.pids_max))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (0: the caller) into this cgroup."""
        _write(self.dir_path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """The processes of this cgroup (``cgroup.procs``), sorted."""
        return sorted(_parse_procs(_read(self.dir_path / "cgroup.procs")))

    def oom_kills(self) -> int:
        """``memory.events`` ``oom_kill`` (0 without the file): one read."""
        return _keyed(_read(self.dir_path / "memory.events")).get("oom_kill", 0)

    def stats(self) -> Stats:
        """The kernel's counters; memory in bytes, cpu in microseconds."""
        d = self.dir_path
        cpu = _keyed(_read(d / "cpu.stat"))
        events = _keyed(_read(d / "memory.events"))
        return Stats(
            memory_current_bytes=_read_int(d / "memory.current"),
            memory_peak_bytes=_read_int(d / "memory.peak"),
            oom_kills=events.get("oom_kill", 0),
            cpu_usage_us=cpu.get("usage_usec"),
            cpu_throttled_us=cpu.get("throttled_usec"),
            pids_current=_read_int(d / "pids.current"),
            pids_peak=_read_int(d / "pids.peak"),
            cgroup_version=2,
        )

    def kill_all(self) -> None:
        """``cgroup.kill`` when the kernel has it (5.14+), else SIGKILL every pid until
        ``cgroup.procs`` is empty."""
        kill_file = self.dir_path / "cgroup.kill"
        if kill_file.exists():
            try:
                _write(kill_file, "1")
            except OSError as exc:
                if getattr(exc, "errno", None) != errno.ENOENT:
                    raise
        _kill_until_empty(self.pids)

    def remove(self) -> None:
        """rmdir the leaf (ENOENT tolerated, EBUSY retried), then the shared parents
        if they became empty."""
        _rmdir(self.dir_path)
        parts = self._parts[:-1]
        while parts:
            _rmdir_parent(self.root / "/".join(parts))
            parts = parts[:-1]
