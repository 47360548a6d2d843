"""cgroups v1 for real: limits written and read back, processes, OOM and pids counters."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.cgroups import CgroupV1, detect, open_cgroup
from pytest_containers.runtime.types import Resources

from pytest_containers.exceptions import CgroupError

from .conftest import CGROUP_ROOT, issue_id, leftovers

V1 = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer")


@pytest.fixture
def cgroup():
    """Function: an uncreated ``CgroupV1`` ``/ptc/<id>``; removed at teardown."""
    cg = open_cgroup(f"/ptc/{issue_id()}", version=1)
    yield cg
    cg.kill_all()
    cg.remove()


def _child(ready_w: int, go_r: int, action) -> int:
    """Fork a child that reports, waits for a byte on ``go_r``, then runs ``action``."""
    pid = os.fork()
    if pid == 0:
        try:
            os.write(ready_w, b"r")
            os.read(go_r, 1)
            action()
        finally:
            os._exit(0)
    return pid


def test_detect_hybrid_is_v1():
    assert detect() == 1
    assert detect(CGROUP_ROOT / "unified") == 2
    assert isinstance(open_cgroup("/ptc/x"), CgroupV1)


def test_limits_written_and_read_back(cgroup):
    cgroup.create(Resources(memory_max_bytes=64 << 20, cpu_quota_us=50_000,
                            cpu_period_us=200_000, pids_max=32))
    name = cgroup.path.rsplit("/", 1)[1]
    for controller in V1:
        assert (CGROUP_ROOT / controller / "ptc" / name).is_dir(), controller
    mem = CGROUP_ROOT / "memory/ptc" / name
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
    if (mem / "memory.memsw.limit_in_bytes").exists():
        assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == 64 << 20
    cpu = CGROUP_ROOT / "cpu/ptc" / name
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((cpu / "cpu.cfs_period_us").read_text()) == 200_000
    assert (CGROUP_ROOT / "pids/ptc" / name / "pids.max").read_text().strip() == "32"
    cpuset = CGROUP_ROOT / "cpuset/ptc" / name
    assert (cpuset / "cpuset.cpus").read_text().strip() == \
        (CGROUP_ROOT / "cpuset/cpuset.cpus").read_text().strip()


def test_unlimited_leaves_defaults(cgroup):
    cgroup.create(Resources())
    name = cgroup.path.rsplit("/", 1)[1]
    assert (CGROUP_ROOT / "pids/ptc" / name / "pids.max").read_text().strip() == "max"
    assert (CGROUP_ROOT / "cpu/ptc" / name / "cpu.cfs_quota_us").read_text().strip() == "-1"


def test_create_twice_fails_and_keeps_first(cgroup):
    cgroup.create(Resources())
    with pytest.raises(CgroupError):
        open_cgroup(cgroup.path, version=1).create(Resources())
    assert cgroup.pids() == []


def test_bad_value_names_file_and_removes_everything(cgroup):
    with pytest.raises(CgroupError) as info:
        cgroup.create(Resources(pids_max=-5))
    assert info.value.path.endswith("pids.max")
    assert info.value.value == "-5"
    assert leftovers(cgroup.path.rsplit("/", 1)[1]) == []


def test_add_real_process_and_stats(cgroup):
    cgroup.create(Resources(memory_max_bytes=256 << 20))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def burn():
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            pass

    pid = _child(ready_w, go_r, burn)
    os.read(ready_r, 1)
    cgroup.add(pid)
    assert cgroup.pids() == [pid]
    name = cgroup.path.rsplit("/", 1)[1]
    for controller in V1:
        procs = (CGROUP_ROOT / controller / "ptc" / name / "cgroup.procs").read_text().split()
        assert procs == [str(pid)], controller
    os.write(go_w, b"g")
    assert os.waitpid(pid, 0)[1] == 0
    stats = cgroup.stats()
    assert stats.cgroup_version == 1
    assert stats.cpu_usage_us and stats.cpu_usage_us >= 20_000
    assert stats.memory_peak_bytes and stats.memory_peak_bytes > 0
    assert stats.oom_kills == 0
    assert stats.pids_current == 0
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_real_oom_kill_counted(cgroup):
    cgroup.create(Resources(memory_max_bytes=32 << 20))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = _child(ready_w, go_r, lambda: b"x" * (128 << 20))
    os.read(ready_r, 1)
    cgroup.add(pid)
    os.write(go_w, b"g")
    status = os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert cgroup.stats().oom_kills == 1
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_pids_limit_enforced(cgroup):
    cgroup.create(Resources(pids_max=4))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()

    def fork_loop():
        children, failed = [], 0
        for _ in range(10):
            try:
                child = os.fork()
            except BlockingIOError:
                failed += 1
                continue
            if child == 0:
                time.sleep(5)
                os._exit(0)
            children.append(child)
        os.write(result_w, f"{len(children)} {failed}".encode())
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)

    pid = _child(ready_w, go_r, fork_loop)
    os.read(ready_r, 1)
    cgroup.add(pid)
    os.write(go_w, b"g")
    forked, failed = map(int, os.read(result_r, 100).split())
    os.waitpid(pid, 0)
    assert (forked, failed) == (3, 7)
    assert cgroup.stats().pids_peak == 4
    for fd in (ready_r, ready_w, go_r, go_w, result_r, result_w):
        os.close(fd)


def test_kill_all_and_remove(cgroup):
    cgroup.create(Resources())
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
        cgroup.add(pid)
    assert cgroup.pids() == sorted(pids)
    cgroup.kill_all()
    for pid in pids:
        os.waitpid(pid, 0)
    assert cgroup.pids() == []
    cgroup.remove()
    cgroup.remove()  # idempotent
    assert leftovers(cgroup.path.rsplit("/", 1)[1]) == []


def test_remove_keeps_shared_parent_in_use(cgroup):
    other = open_cgroup(f"/ptc/{issue_id()}", version=1)
    cgroup.create(Resources())
    other.create(Resources())
    try:
        cgroup.remove()
        assert (CGROUP_ROOT / "memory" / "ptc").is_dir()
        assert Path(CGROUP_ROOT / "memory" / other.path.lstrip("/")).is_dir()
    finally:
        other.remove()
