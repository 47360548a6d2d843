"""cgroups v1 for real: the runtime-spec ``linux.resources`` mapping of each
controller written and read back, processes, freezer, OOM and pids counters,
session parents."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.cgroups import CgroupV1, detect, open_cgroup
from pytest_containers.runtime.spec import linux_resources
from pytest_containers.runtime.types import Resources

from pytest_containers.exceptions import CgroupError

from .conftest import CGROUP_ROOT, issue_id, leftovers

V1 = ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer")


@pytest.fixture
def cgroup():
    """Function: an uncreated ``CgroupV1`` ``/ptc/<id>``; killed and removed at teardown."""
    cg = open_cgroup(f"/ptc/{issue_id()}", version=1)
    assert isinstance(cg, CgroupV1)
    yield cg
    cg.kill_all()
    cg.remove()


def name_of(cg: CgroupV1) -> str:
    return cg.path.rsplit("/", 1)[1]


def read(cg: CgroupV1, controller: str, file: str) -> str:
    return (cg.dir(controller) / file).read_text().strip()


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


def _run_in(cg: CgroupV1, action) -> int:
    """Run ``action`` in a forked child inside ``cg``; return its wait status."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        pid = _child(ready_w, go_r, action)
        os.read(ready_r, 1)
        cg.add(pid)
        os.write(go_w, b"g")
        return os.waitpid(pid, 0)[1]
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)


def _spin_forever() -> None:
    while True:
        pass


def test_detect_hybrid_is_v1():
    assert detect() == 1
    assert detect(CGROUP_ROOT / "unified") == 2
    assert isinstance(open_cgroup("/ptc/x"), CgroupV1)


def test_limits_written_and_read_back(cgroup):
    cgroup.create(Resources(memory_max_bytes=64 << 20, cpu_quota_us=50_000,
                            cpu_period_us=200_000, pids_max=32))
    name = name_of(cgroup)
    for controller in V1:
        assert (CGROUP_ROOT / controller / "ptc" / name).is_dir(), controller
    assert int(read(cgroup, "memory", "memory.limit_in_bytes")) == 64 << 20
    assert int(read(cgroup, "memory", "memory.memsw.limit_in_bytes")) == 64 << 20
    assert int(read(cgroup, "cpu", "cpu.cfs_quota_us")) == 50_000
    assert int(read(cgroup, "cpu", "cpu.cfs_period_us")) == 200_000
    assert read(cgroup, "pids", "pids.max") == "32"
    assert read(cgroup, "cpuset", "cpuset.cpus") == \
        (CGROUP_ROOT / "cpuset/cpuset.cpus").read_text().strip()


def test_unlimited_leaves_defaults(cgroup):
    cgroup.create(Resources())
    assert read(cgroup, "pids", "pids.max") == "max"
    assert read(cgroup, "cpu", "cpu.cfs_quota_us") == "-1"
    stats = cgroup.stats()
    assert (stats.memory_limit_bytes, stats.pids_max) == (None, None)


def test_memory_fields(cgroup):
    cgroup.create({"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20,
                              "swappiness": 10, "disableOOMKiller": True, "kernel": 1 << 20}})
    assert int(read(cgroup, "memory", "memory.limit_in_bytes")) == 64 << 20
    assert int(read(cgroup, "memory", "memory.memsw.limit_in_bytes")) == 96 << 20
    assert int(read(cgroup, "memory", "memory.soft_limit_in_bytes")) == 32 << 20
    assert read(cgroup, "memory", "memory.swappiness") == "10"
    assert "oom_kill_disable 1" in read(cgroup, "memory", "memory.oom_control")
    assert cgroup.stats().memory_limit_bytes == 64 << 20


def test_cpu_shares_and_cpuset(cgroup):
    cgroup.create({"cpu": {"shares": 512, "quota": -1, "period": 50_000, "cpus": "1",
                           "mems": "0", "realtimeRuntime": 1000}})
    assert read(cgroup, "cpu", "cpu.shares") == "512"
    assert read(cgroup, "cpu", "cpu.cfs_quota_us") == "-1"
    assert read(cgroup, "cpu", "cpu.cfs_period_us") == "50000"
    assert (read(cgroup, "cpuset", "cpuset.cpus"), read(cgroup, "cpuset", "cpuset.mems")) == \
        ("1", "0")


@pytest.mark.parametrize("limit, value", [(-1, "max"), ("max", "max"), (7, "7")])
def test_pids_limit_values(cgroup, limit, value):
    cgroup.create({"pids": {"limit": limit}})
    assert read(cgroup, "pids", "pids.max") == value


def test_blkio_weight_and_throttles_on_this_disk(cgroup):
    device = os.stat("/").st_dev
    major, minor = os.major(device), os.minor(device)
    if not Path(f"/sys/dev/block/{major}:{minor}").exists():
        pytest.skip("/ is not on a block device")
    cgroup.create({"blockIO": {
        "weight": 300,
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }})
    d = cgroup.dir("blkio")
    weight_file = "blkio.weight" if (d / "blkio.weight").exists() else "blkio.bfq.weight"
    assert read(cgroup, "blkio", weight_file).split()[-1] == "300"
    assert read(cgroup, "blkio", "blkio.throttle.read_bps_device") == f"{major}:{minor} 1048576"
    assert read(cgroup, "blkio", "blkio.throttle.write_iops_device") == f"{major}:{minor} 100"


def test_devices_deny_all_then_runc_defaults(cgroup):
    cgroup.create(Resources(devices_allow=("c 10:200 rwm",)))
    rules = read(cgroup, "devices", "devices.list").splitlines()
    assert "a *:* rwm" not in rules
    for rule in ("c 1:3 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 5:2 rwm", "c 136:* rwm",
                 "c 10:200 rwm", "c *:* m", "b *:* m"):
        assert rule in rules, rule
    loop = "/dev/loop-control"  # 10:237, not allowed
    if not os.path.exists(loop):
        pytest.skip("no /dev/loop-control to try")
    os.close(os.open(loop, os.O_RDONLY))  # the host may open it

    def try_open():
        os.close(os.open("/dev/null", os.O_RDWR))
        try:
            os.open(loop, os.O_RDONLY)
        except PermissionError:
            os._exit(42)
        os._exit(0)

    assert os.waitstatus_to_exitcode(_run_in(cgroup, try_open)) == 42


def test_resources_dict_and_dataclass_write_the_same(cgroup):
    r = Resources(memory_max_bytes=48 << 20, cpus=0.5, pids_max=12, cpu_shares=256)
    cgroup.create(linux_resources(r))
    other = open_cgroup(f"/ptc/{issue_id()}", version=1)
    other.create(r)
    try:
        for controller, file in (("memory", "memory.limit_in_bytes"),
                                 ("memory", "memory.memsw.limit_in_bytes"),
                                 ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.cfs_period_us"),
                                 ("cpu", "cpu.shares"), ("pids", "pids.max"),
                                 ("devices", "devices.list")):
            assert read(cgroup, controller, file) == read(other, controller, file), file
        assert read(other, "cpu", "cpu.cfs_quota_us") == "50000"
    finally:
        other.remove()


def test_create_twice_fails_and_keeps_first(cgroup):
    cgroup.create(Resources())
    with pytest.raises(CgroupError) as info:
        open_cgroup(cgroup.path, version=1).create(Resources())
    assert info.value.errno == errno.EEXIST
    assert cgroup.pids() == []
    assert cgroup.dir("memory").is_dir()


def test_bad_value_names_field_and_creates_nothing(cgroup):
    with pytest.raises(CgroupError) as info:
        cgroup.create(Resources(pids_max=-5))
    assert info.value.field == "linux.resources.pids.limit"
    assert info.value.value == "-5"
    assert leftovers(name_of(cgroup)) == []


@pytest.mark.parametrize("resources, file, value, codes", [
    # cpus beyond nr_cpu_ids: ERANGE on 6.x, EINVAL on older kernels
    ({"cpu": {"cpus": "0-63"}}, "cpuset.cpus", "0-63", (errno.ERANGE, errno.EINVAL)),
    ({"cpu": {"quota": 500}}, "cpu.cfs_quota_us", "500", (errno.EINVAL,)),
    ({"cpu": {"period": 100}}, "cpu.cfs_period_us", "100", (errno.EINVAL,)),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 9, "minor": 99, "rate": 1}]}},
     "blkio.throttle.read_bps_device", "9:99 1", (errno.ENODEV,)),
])
def test_impossible_limit_refused_by_kernel_leaves_nothing(cgroup, resources, file, value,
                                                           codes):
    with pytest.raises(CgroupError) as info:
        cgroup.create(resources)
    err = info.value
    assert err.errno in codes and err.value == value
    assert err.path.endswith(f"{name_of(cgroup)}/{file}")
    assert file in str(err) and err.field.startswith("linux.resources.")
    assert leftovers(name_of(cgroup)) == []


def test_hugetlb_without_v1_hierarchy_is_an_error(cgroup):
    if (CGROUP_ROOT / "hugetlb" / "cgroup.procs").exists():
        pytest.skip("this host mounts hugetlb as v1")
    cgroup.create({"hugepageLimits": []})  # none asked: nothing to say
    with pytest.raises(CgroupError) as info:
        open_cgroup(f"/ptc/{issue_id()}", version=1).create(
            {"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]})
    assert info.value.field == "linux.resources.hugepageLimits"
    assert "no cgroup v1 hugetlb hierarchy" in str(info.value)


def test_unified_is_an_error_on_v1(cgroup):
    with pytest.raises(CgroupError) as info:
        cgroup.create(Resources(memory_high_bytes=32 << 20))
    assert info.value.field == "linux.resources.unified"
    assert leftovers(name_of(cgroup)) == []


def test_update_memory_below_usage_is_refused_and_keeps_the_cgroup(cgroup):
    cgroup.create(Resources(memory_max_bytes=256 << 20))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def hold_memory():
        block = bytearray(48 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(hold_w, b"h")
        time.sleep(30)

    pid = _child(ready_w, go_r, hold_memory)
    try:
        os.read(ready_r, 1)
        cgroup.add(pid)
        os.write(go_w, b"g")
        os.read(hold_r, 1)
        with pytest.raises(CgroupError) as info:
            cgroup.update({"memory": {"limit": 4 << 20, "swap": 4 << 20}})
        err = info.value
        assert (err.errno, err.field) == (errno.EBUSY, "linux.resources.memory.limit")
        assert "memory.limit_in_bytes" in str(err) and "current usage" in str(err)
        assert cgroup.pids() == [pid]  # no swap here: nothing could be reclaimed, no OOM
        cgroup.update({"memory": {"limit": 128 << 20, "swap": 128 << 20}})
        assert int(read(cgroup, "memory", "memory.limit_in_bytes")) == 128 << 20
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w, hold_r, hold_w):
            os.close(fd)


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
    for controller in V1:
        procs = (cgroup.dir(controller) / "cgroup.procs").read_text().split()
        assert procs == [str(pid)], controller
    os.write(go_w, b"g")
    assert os.waitpid(pid, 0)[1] == 0
    stats = cgroup.stats()
    assert stats.cgroup_version == 1
    assert stats.cpu_usage_us and stats.cpu_usage_us >= 20_000
    assert stats.memory_peak_bytes and stats.memory_peak_bytes > 0
    assert (stats.oom_kills, stats.memory_failcnt, stats.pids_current) == (0, 0, 0)
    assert stats.memory_limit_bytes == 256 << 20
    assert stats.cpu_periods == 0  # no quota: CFS bandwidth periods do not run
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_real_oom_kill_counted(cgroup):
    cgroup.create(Resources(memory_max_bytes=32 << 20))
    status = _run_in(cgroup, lambda: b"x" * (128 << 20))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    stats = cgroup.stats()
    assert stats.oom_kills == 1
    # memory+swap = memory (no swap): the charge fails on memsw first, and Linux 6.18
    # counts that in neither failcnt (with memsw unlimited, memory.failcnt counts)
    assert stats.memory_failcnt is not None


def test_oom_under_session_parent_limit(cgroup):
    """The limit sits on the parent only: the kill is counted in the child's
    ``oom_control`` (the victim's cgroup); the parent shows the hits in ``failcnt``
    and, on v1, no ``oom_kill`` of its own."""
    session = open_cgroup(f"/ptc/{issue_id()}", version=1)
    session.create({"memory": {"limit": 64 << 20}})
    child = open_cgroup(f"{session.path}/{issue_id()}", version=1)
    try:
        child.create(None)
        assert child.stats().memory_limit_bytes is None
        status = _run_in(child, lambda: b"x" * (200 << 20))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert child.oom_kills() == 1
        assert session.stats().memory_failcnt > 0
        assert session.oom_kills() == 0
        assert [p.path for p in child.parent_chain()] == [session.path, "/ptc"]
        child.remove()
        assert session.dir("memory").is_dir()  # a child never removes its session parent
    finally:
        session.kill_all()
        session.remove()
    assert not session.dir("memory").exists()


def test_pids_limit_enforced(cgroup):
    cgroup.create(Resources(pids_max=4))
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

    _run_in(cgroup, fork_loop)
    forked, failed = map(int, os.read(result_r, 100).split())
    assert (forked, failed) == (3, 7)
    assert cgroup.stats().pids_peak == 4  # pids.peak: v1 has it since Linux 6.x
    for fd in (result_r, result_w):
        os.close(fd)


def test_freeze_thaw_real_process(cgroup):
    cgroup.create(None)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = _child(ready_w, go_r, _spin_forever)
    try:
        os.read(ready_r, 1)
        cgroup.add(pid)
        os.write(go_w, b"g")
        time.sleep(0.05)
        cgroup.freeze()
        assert cgroup.frozen and read(cgroup, "freezer", "freezer.state") == "FROZEN"
        before = cgroup.stats().cpu_usage_us
        time.sleep(0.3)
        assert cgroup.stats().cpu_usage_us == before
        cgroup.thaw()
        assert not cgroup.frozen
        time.sleep(0.1)
        assert cgroup.stats().cpu_usage_us > before
        cgroup.freeze()
        cgroup.kill_all()  # frozen: signal, then thaw, as runc
        assert os.WTERMSIG(os.waitpid(pid, 0)[1]) == signal.SIGKILL
        assert not cgroup.frozen
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    cgroup.remove()
    assert leftovers(name_of(cgroup)) == []


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
    assert leftovers(name_of(cgroup)) == []


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


def test_remove_takes_child_cgroups_unless_told_not_to(cgroup):
    cgroup.create(None)
    child = open_cgroup(f"{cgroup.path}/{issue_id()}", version=1)
    child.create(None)
    with pytest.raises(CgroupError) as info:
        cgroup.remove(recursive=False)
    assert info.value.errno == errno.EBUSY
    assert [c.path for c in cgroup.children()] == [child.path]
    cgroup.remove()
    assert leftovers(name_of(cgroup)) == []
