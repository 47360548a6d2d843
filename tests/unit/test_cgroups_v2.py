"""cgroup v2 driver against a fake cgroupfs tree laid out like the kernel's
(``Documentation/admin-guide/cgroup-v2.rst``): interface files appear when the
driver mkdirs, ``cgroup.subtree_control`` keeps the kernel's set semantics,
``rmdir`` refuses a populated cgroup or one with children."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pytest_containers.runtime.linux import cgroups
from pytest_containers.runtime.linux.cgroups import CgroupV2, detect, open_cgroup
from pytest_containers.runtime.types import Resources, Stats

from pytest_containers.exceptions import CgroupError

ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
_ORDER = ROOT_CONTROLLERS.split()


class FakeCgroupFs:
    """A cgroup2 root in a tmp dir, and the kernel behaviour the driver relies on."""

    def __init__(self, root: Path, controllers: str = ROOT_CONTROLLERS,
                 swap: bool = True) -> None:
        self.root = root
        self.swap = swap
        self.writes: list[tuple[str, str]] = []
        self.mkdirs: list[str] = []
        files = {
            "cgroup.controllers": controllers + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "1\n",
            "cgroup.max.depth": "max\n",
            "cgroup.stat": "nr_descendants 0\nnr_dying_descendants 0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
            "memory.stat": "anon 0\n",
        }
        for name, text in files.items():
            (root / name).write_text(text)

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    # kernel: a new cgroup gets the core files plus those of the controllers its
    # parent enabled in cgroup.subtree_control
    def make_dir(self, path: Path) -> None:
        os.mkdir(path)
        self.mkdirs.append(self.rel(path))
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        files = {
            "cgroup.controllers": " ".join(enabled) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.kill": "",
            "cgroup.type": "domain\n",
            "cgroup.freeze": "0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        if "cpu" in enabled:
            files["cpu.max"] = "max 100000\n"
            files["cpu.weight"] = "100\n"
            files["cpu.stat"] += "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n" \
                "nr_bursts 0\nburst_usec 0\n"
        if "memory" in enabled:
            files.update({
                "memory.max": "max\n", "memory.high": "max\n", "memory.current": "0\n",
                "memory.peak": "0\n",
                "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
                                 "oom_group_kill 0\n",
            })
            if self.swap:
                files["memory.swap.max"] = "max\n"
                files["memory.swap.current"] = "0\n"
        if "pids" in enabled:
            files.update({"pids.max": "max\n", "pids.current": "0\n", "pids.peak": "0\n"})
        for name, text in files.items():
            (path / name).write_text(text)

    def write(self, path: Path, value: str) -> None:
        path = Path(path)
        self.writes.append((self.rel(path), value))
        if not path.exists():
            raise CgroupError(f"cannot write {value!r} to {path}: No such file",
                              path=str(path), errno=errno.ENOENT, value=value)
        name = path.name
        if name == "cgroup.subtree_control":
            available = (path.parent / "cgroup.controllers").read_text().split()
            enabled = set(path.read_text().split())
            for token in value.split():
                if token[1:] not in available:
                    raise CgroupError("ENOENT", path=str(path), errno=errno.ENOENT, value=value)
                (enabled.add if token[0] == "+" else enabled.discard)(token[1:])
            path.write_text(" ".join(c for c in _ORDER if c in enabled) + "\n")
        elif name == "cgroup.procs":
            path.write_text(path.read_text() + value + "\n")
        elif name == "cgroup.kill":
            (path.parent / "cgroup.procs").write_text("")
        elif name == "pids.max" and not (value == "max" or value.isdigit()):
            raise CgroupError(f"cannot write {value!r} to {path}: Invalid argument",
                              path=str(path), errno=errno.EINVAL, value=value)
        else:
            path.write_text(value + "\n")

    def remove_dir(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if any(p.is_dir() for p in path.iterdir()) or (path / "cgroup.procs").read_text():
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for p in path.iterdir():
            p.unlink()
        os.rmdir(path)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFs:
    """Function: a fake cgroup2 root in ``tmp_path``; the driver's mkdir, write and
    rmdir go through it."""
    fs = FakeCgroupFs(tmp_path)
    monkeypatch.setattr(cgroups, "_make_dir", fs.make_dir)
    monkeypatch.setattr(cgroups, "_write", fs.write)
    monkeypatch.setattr(cgroups, "_remove_dir", fs.remove_dir)
    monkeypatch.setattr(cgroups, "_RMDIR_DELAY", 0.0)
    return fs


def test_open_v2_and_detect_tmpdir_is_not_cgroup2(fake):
    cg = open_cgroup("/ptc/ptc-1", root=fake.root, version=2)
    assert isinstance(cg, CgroupV2)
    assert (cg.version, cg.path) == (2, "/ptc/ptc-1")
    assert detect(fake.root) == 1


def test_create_writes_exact_files(fake):
    cg = open_cgroup("/ptc/ptc-1", root=fake.root, version=2)
    cg.create(Resources(memory_max_bytes=64 << 20, cpu_quota_us=50_000, pids_max=16))
    assert fake.mkdirs == ["ptc", "ptc/ptc-1"]
    assert fake.writes == [
        ("cgroup.subtree_control", "+memory +cpu +pids"),
        ("ptc/cgroup.subtree_control", "+memory +cpu +pids"),
        ("ptc/ptc-1/memory.max", "67108864"),
        ("ptc/ptc-1/memory.swap.max", "0"),
        ("ptc/ptc-1/cpu.max", "50000 100000"),
        ("ptc/ptc-1/pids.max", "16"),
    ]
    leaf = fake.root / "ptc" / "ptc-1"
    assert (leaf / "cgroup.controllers").read_text().split() == ["cpu", "memory", "pids"]
    assert (leaf / "memory.max").read_text() == "67108864\n"
    assert (leaf / "memory.swap.max").read_text() == "0\n"
    assert (leaf / "cpu.max").read_text() == "50000 100000\n"


def test_second_container_enables_nothing_again(fake):
    open_cgroup("/ptc/a", root=fake.root, version=2).create(Resources())
    fake.writes.clear()
    open_cgroup("/ptc/b", root=fake.root, version=2).create(Resources(pids_max=8))
    assert fake.writes == [("ptc/b/pids.max", "8")]


def test_only_available_controllers_enabled(tmp_path, monkeypatch):
    fs = FakeCgroupFs(tmp_path, controllers="cpuset io memory", swap=False)
    monkeypatch.setattr(cgroups, "_make_dir", fs.make_dir)
    monkeypatch.setattr(cgroups, "_write", fs.write)
    cg = open_cgroup("/ptc/c", root=tmp_path, version=2)
    cg.create(Resources(memory_max_bytes=1 << 20))
    assert fs.writes == [
        ("cgroup.subtree_control", "+memory"),
        ("ptc/cgroup.subtree_control", "+memory"),
        ("ptc/c/memory.max", "1048576"),  # no memory.swap.max without swap accounting
    ]


def test_unlimited_writes_no_limits(fake):
    open_cgroup("/ptc/u", root=fake.root, version=2).create(Resources())
    assert [w for w in fake.writes if "ptc/u/" in w[0]] == []
    assert (fake.root / "ptc/u/pids.max").read_text() == "max\n"


def test_bad_value_raises_and_removes_what_was_made(fake):
    cg = open_cgroup("/ptc/bad", root=fake.root, version=2)
    with pytest.raises(CgroupError) as info:
        cg.create(Resources(pids_max=-1))
    assert info.value.path.endswith("ptc/bad/pids.max")
    assert info.value.value == "-1"
    assert not (fake.root / "ptc").exists()


def test_create_existing_raises(fake):
    open_cgroup("/ptc/x", root=fake.root, version=2).create(Resources())
    with pytest.raises(CgroupError):
        open_cgroup("/ptc/x", root=fake.root, version=2).create(Resources())
    assert (fake.root / "ptc/x").is_dir()


def test_add_and_pids(fake):
    cg = open_cgroup("/ptc/p", root=fake.root, version=2)
    cg.create(Resources())
    cg.add(4242)
    cg.add(17)
    assert ("ptc/p/cgroup.procs", "4242") in fake.writes
    assert cg.pids() == [17, 4242]
    assert cg.procs_paths() == [fake.root / "ptc/p/cgroup.procs"]


def test_stats_parse_kernel_formats(fake):
    cg = open_cgroup("/ptc/s", root=fake.root, version=2)
    cg.create(Resources(memory_max_bytes=64 << 20))
    leaf = fake.root / "ptc/s"
    (leaf / "memory.current").write_text("1052672\n")
    (leaf / "memory.peak").write_text("67108864\n")
    (leaf / "memory.events").write_text(
        "low 0\nhigh 0\nmax 311\noom 1\noom_kill 1\noom_group_kill 0\n")
    (leaf / "cpu.stat").write_text(
        "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 10\n"
        "nr_throttled 4\nthrottled_usec 7890\nnr_bursts 0\nburst_usec 0\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.peak").write_text("9\n")
    assert cg.stats() == Stats(
        memory_current_bytes=1052672, memory_peak_bytes=64 << 20, oom_kills=1,
        cpu_usage_us=123456, cpu_throttled_us=7890, pids_current=3, pids_peak=9,
        cgroup_version=2)


def test_stats_without_optional_files(fake):
    cg = open_cgroup("/ptc/o", root=fake.root, version=2)
    cg.create(Resources())
    (fake.root / "ptc/o/pids.peak").unlink()  # kernels before 6.x
    (fake.root / "ptc/o/memory.peak").unlink()
    stats = cg.stats()
    assert (stats.pids_peak, stats.memory_peak_bytes, stats.oom_kills) == (None, None, 0)


def test_kill_all_uses_cgroup_kill(fake):
    cg = open_cgroup("/ptc/k", root=fake.root, version=2)
    cg.create(Resources())
    cg.add(999_999)
    cg.kill_all()
    assert ("ptc/k/cgroup.kill", "1") in fake.writes
    assert cg.pids() == []


def test_remove_leaf_then_empty_parent(fake):
    a = open_cgroup("/ptc/a", root=fake.root, version=2)
    b = open_cgroup("/ptc/b", root=fake.root, version=2)
    a.create(Resources())
    b.create(Resources())
    a.remove()
    assert not (fake.root / "ptc/a").exists()
    assert (fake.root / "ptc").is_dir()  # b still uses the shared parent
    b.remove()
    assert not (fake.root / "ptc").exists()
    b.remove()  # already gone: fine


def test_remove_busy_raises_after_retries(fake, monkeypatch):
    monkeypatch.setattr(cgroups, "_RMDIR_TRIES", 3)
    cg = open_cgroup("/ptc/busy", root=fake.root, version=2)
    cg.create(Resources())
    cg.add(1234)
    with pytest.raises(CgroupError) as info:
        cg.remove()
    assert info.value.errno == errno.EBUSY


def test_path_must_be_absolute_without_dotdot(fake):
    with pytest.raises(ValueError):
        open_cgroup("ptc/x", root=fake.root, version=2)
    with pytest.raises(ValueError):
        open_cgroup("/ptc/../x", root=fake.root, version=2)
