"""cgroup v2 driver against a fake cgroupfs tree laid out like the kernel's
(``Documentation/admin-guide/cgroup-v2.rst``, see ``cgroupfs_fake.py``): the
runtime-spec ``linux.resources`` -> v2 file mapping of each controller as runc
and crun do it, freeze/thaw, kill, stats, session parents, and the checks made
before anything is created."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from pytest_containers.runtime.linux import cgroups
from pytest_containers.runtime.linux.cgroups import CgroupV2, detect, fs, open_cgroup
from pytest_containers.runtime.linux.cgroups.resources import (
    blkio_to_io_weight,
    parse,
    shares_to_weight,
)
from pytest_containers.runtime.spec import linux_resources
from pytest_containers.runtime.types import Resources, Stats

from pytest_containers.exceptions import CgroupError, InvalidOptionError

from .cgroupfs_fake import FakeCgroupFs

BASE = "+cpu +io +memory +pids"


def _install(fs_: FakeCgroupFs, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFs:
    monkeypatch.setattr(fs, "make_dir", fs_.make_dir)
    monkeypatch.setattr(fs, "write", fs_.write)
    monkeypatch.setattr(fs, "remove_dir", fs_.remove_dir)
    monkeypatch.setattr(fs, "RMDIR_DELAY", 0.0)
    return fs_


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFs:
    """Function: a fake cgroup2 root in ``tmp_path`` (every controller, swap
    accounting, no BFQ); the driver's mkdir, write and rmdir go through it."""
    return _install(FakeCgroupFs(tmp_path), monkeypatch)


@pytest.fixture
def make_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Function: build a fake root with other options (controllers, swap, bfq...)."""
    def make(**kwargs) -> FakeCgroupFs:
        return _install(FakeCgroupFs(tmp_path, **kwargs), monkeypatch)
    return make


def cg(fake: FakeCgroupFs, path: str = "/ptc/c1") -> CgroupV2:
    found = open_cgroup(path, root=fake.root, version=2)
    assert isinstance(found, CgroupV2)
    return found


def leaf_writes(fake: FakeCgroupFs, leaf: str = "ptc/c1") -> list[tuple[str, str]]:
    return [(p.removeprefix(leaf + "/"), v) for p, v in fake.writes if p.startswith(leaf + "/")]


def read(fake: FakeCgroupFs, rel: str) -> str:
    return (fake.root / rel).read_text()


def nothing_left(fake: FakeCgroupFs) -> bool:
    return not [p for p in fake.root.iterdir() if p.is_dir()]


# -- basics ------------------------------------------------------------------------------


def test_open_v2_and_detect_tmpdir_is_not_cgroup2(fake):
    c = cg(fake, "/ptc/ptc-1")
    assert (c.version, c.path) == (2, "/ptc/ptc-1")
    assert detect(fake.root) == 1
    assert cgroups.V2_CONTROLLERS == ("cpu", "io", "memory", "pids")


def test_create_from_resources_writes_exact_files(fake):
    cg(fake).create(Resources(memory_max_bytes=64 << 20, cpu_quota_us=50_000, pids_max=16))
    assert fake.mkdirs == ["ptc", "ptc/c1"]
    assert fake.writes == [
        ("cgroup.subtree_control", BASE),
        ("ptc/cgroup.subtree_control", BASE),
        ("ptc/c1/memory.max", "67108864"),
        ("ptc/c1/memory.swap.max", "0"),
        ("ptc/c1/cpu.max", "50000 100000"),
        ("ptc/c1/pids.max", "16"),
    ]
    assert read(fake, "ptc/c1/cgroup.controllers").split() == ["cpu", "io", "memory", "pids"]
    assert read(fake, "ptc/c1/cpu.max") == "50000 100000\n"


def test_resources_and_their_dict_write_the_same(fake):
    r = Resources(memory_max_bytes=32 << 20, cpus=0.25, pids_max=9, cpu_shares=512)
    cg(fake, "/ptc/a").create(r)
    cg(fake, "/ptc/b").create(linux_resources(r))
    assert leaf_writes(fake, "ptc/a") == leaf_writes(fake, "ptc/b")
    assert ("cpu.max", "25000 100000") in leaf_writes(fake, "ptc/a")


def test_second_container_enables_nothing_again(fake):
    cg(fake, "/ptc/a").create(None)
    fake.writes.clear()
    cg(fake, "/ptc/b").create({"pids": {"limit": 8}})
    assert fake.writes == [("ptc/b/pids.max", "8")]


def test_only_available_controllers_enabled(make_fake):
    fake = make_fake(controllers="cpuset io memory", swap=False)
    cg(fake).create(Resources(memory_max_bytes=1 << 20))
    assert fake.writes == [
        ("cgroup.subtree_control", "+io +memory"),
        ("ptc/cgroup.subtree_control", "+io +memory"),
        ("ptc/c1/memory.max", "1048576"),  # swap off and no swap accounting: nothing to write
    ]


def test_unlimited_writes_no_limits(fake):
    cg(fake).create(Resources())
    assert [w for w in leaf_writes(fake)] == []
    assert read(fake, "ptc/c1/pids.max") == "max\n"


def test_create_existing_raises_and_keeps_it(fake):
    cg(fake).create(None)
    with pytest.raises(CgroupError) as info:
        cg(fake).create(None)
    assert info.value.errno == errno.EEXIST
    assert (fake.root / "ptc/c1").is_dir()


# -- memory ------------------------------------------------------------------------------


def test_memory_limit_swap_reservation(fake):
    cg(fake).create({"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20,
                                "swappiness": 10, "disableOOMKiller": True, "kernel": 1 << 20}})
    # swappiness, disableOOMKiller, kernel: no v2 file (runc and crun ignore them too)
    assert leaf_writes(fake) == [("memory.max", str(64 << 20)),
                                 ("memory.swap.max", str(32 << 20)),
                                 ("memory.low", str(16 << 20))]


def test_memory_unlimited_values_are_max(fake):
    cg(fake).create({"memory": {"limit": -1, "swap": -1, "reservation": -1}})
    assert leaf_writes(fake) == [("memory.max", "max"), ("memory.swap.max", "max"),
                                 ("memory.low", "max")]


def test_memory_high_from_resources_and_unified(fake):
    cg(fake, "/ptc/a").create(Resources(memory_max_bytes=64 << 20, memory_high_bytes=48 << 20))
    assert read(fake, "ptc/a/memory.high") == f"{48 << 20}\n"
    cg(fake, "/ptc/b").create({"unified": {"memory.high": "1000000", "pids.max": "7"}})
    assert leaf_writes(fake, "ptc/b") == [("memory.high", "1000000"), ("pids.max", "7")]


@pytest.mark.parametrize("memory, field", [
    ({"swap": 64 << 20}, "linux.resources.memory.swap"),            # swap without a limit
    ({"limit": 64 << 20, "swap": 32 << 20}, "linux.resources.memory.swap"),  # below limit
    ({"limit": -2}, "linux.resources.memory.limit"),
    ({"limit": "64m"}, "linux.resources.memory.limit"),
    ({"swappiness": 101}, "linux.resources.memory.swappiness"),
])
def test_memory_bad_values_rejected_before_mkdir(fake, memory, field):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"memory": memory})
    assert info.value.field == field
    assert info.value.errno == errno.EINVAL
    assert fake.mkdirs == [] and nothing_left(fake)


def test_swap_asked_without_swap_accounting_is_an_error(make_fake):
    fake = make_fake(swap=False)
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"memory": {"limit": 64 << 20, "swap": 128 << 20}})
    assert info.value.field == "linux.resources.memory.swap"
    assert nothing_left(fake)
    cg(fake).create({"memory": {"limit": 64 << 20, "swap": 64 << 20}})  # no swap: fine


# -- cpu, cpuset ---------------------------------------------------------------------------


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (512, 20), (262_144, 10_000)])
def test_cpu_shares_to_weight_crun_formula(shares, weight):
    assert shares_to_weight(shares) == weight


def test_cpu_shares_quota_period(fake):
    cg(fake).create({"cpu": {"shares": 1024, "quota": 20_000, "period": 50_000,
                             "realtimeRuntime": 1000, "realtimePeriod": 1000}})
    assert leaf_writes(fake) == [("cpu.weight", "39"), ("cpu.max", "20000 50000")]


@pytest.mark.parametrize("cpu, value", [
    ({"quota": -1, "period": 200_000}, "max 200000"),
    ({"period": 250_000}, "max 250000"),
    ({"quota": 150_000}, "150000 100000"),
])
def test_cpu_max_unlimited_and_default_period(fake, cpu, value):
    cg(fake).create({"cpu": cpu})
    assert leaf_writes(fake) == [("cpu.max", value)]
    assert read(fake, "ptc/c1/cpu.max") == value + "\n"


def test_cpus_count_is_quota_per_period(fake):
    assert Resources(cpus=0.5).effective_cpu_quota_us == 50_000
    cg(fake).create(Resources(cpus=0.5))
    assert leaf_writes(fake) == [("cpu.max", "50000 100000")]


def test_cpu_quota_the_kernel_refuses_names_file_and_leaves_nothing(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"cpu": {"quota": 500}})  # below the kernel's 1 ms minimum
    err = info.value
    assert (err.errno, err.value, err.field) == (errno.EINVAL, "500 100000",
                                                  "linux.resources.cpu.quota")
    assert err.path.endswith("ptc/c1/cpu.max")
    assert "cpu.max" in str(err) and "500" in str(err)
    assert nothing_left(fake)


def test_cpu_shares_out_of_range_rejected(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"cpu": {"shares": 1}})
    assert info.value.field == "linux.resources.cpu.shares"


def test_cpuset_enables_cpuset_and_writes(fake):
    cg(fake).create({"cpu": {"cpus": "1-2", "mems": "0"}})
    assert fake.writes[:2] == [("cgroup.subtree_control", "+cpuset " + BASE),
                               ("ptc/cgroup.subtree_control", "+cpuset " + BASE)]
    assert leaf_writes(fake) == [("cpuset.cpus", "1-2"), ("cpuset.mems", "0")]
    assert read(fake, "ptc/c1/cpuset.cpus.effective") == "1-2\n"


def test_cpuset_outside_the_host_is_refused(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"cpu": {"cpus": "0-63"}})
    assert (info.value.errno, info.value.value) == (errno.EINVAL, "0-63")
    assert info.value.path.endswith("cpuset.cpus")
    assert nothing_left(fake)


# -- pids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit, value", [(16, "16"), (-1, "max"), ("max", "max")])
def test_pids_limit(fake, limit, value):
    cg(fake).create({"pids": {"limit": limit}})
    assert leaf_writes(fake) == [("pids.max", value)]


@pytest.mark.parametrize("limit", ["16", 1.5, True])  # 0 and negative: see test_resources.py
def test_pids_bad_limit_rejected_naming_the_field(fake, limit):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"pids": {"limit": limit}})
    assert info.value.field == "linux.resources.pids.limit"
    assert "pids.limit" in str(info.value)
    assert fake.mkdirs == []


def test_pids_zero_from_resources_rejected_too(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create(Resources(pids_max=0))
    assert info.value.field == "linux.resources.pids.limit"


# -- io ------------------------------------------------------------------------------------


def test_blkio_weight_to_io_weight(fake):
    assert blkio_to_io_weight(10) == 1 and blkio_to_io_weight(1000) == 10_000
    cg(fake).create({"blockIO": {"weight": 500, "leafWeight": 300,
                                 "weightDevice": [{"major": 8, "minor": 0, "weight": 100}]}})
    assert leaf_writes(fake) == [("io.weight", "default 4950"), ("io.weight", "8:0 910")]
    assert read(fake, "ptc/c1/io.weight") == "default 4950\n8:0 910\n"


def test_blkio_weight_with_bfq_is_raw(make_fake):
    fake = make_fake(bfq=True)
    cg(fake).create({"blockIO": {"weight": 500,
                                 "weightDevice": [{"major": 254, "minor": 0, "weight": 200}]}})
    assert leaf_writes(fake) == [("io.bfq.weight", "500"), ("io.bfq.weight", "254:0 200")]


def test_leaf_weight_alone_writes_nothing(fake):
    cg(fake).create({"blockIO": {"leafWeight": 300}})
    assert leaf_writes(fake) == []


def test_throttles_one_io_max_line_per_device(fake):
    cg(fake).create({"blockIO": {
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2 << 20}],
        "throttleReadIOPSDevice": [{"major": 254, "minor": 0, "rate": 100}],
        "throttleWriteIOPSDevice": [{"major": 254, "minor": 0, "rate": 50}],
    }})
    assert leaf_writes(fake) == [("io.max", "8:0 rbps=1048576 wbps=2097152"),
                                 ("io.max", "254:0 riops=100 wiops=50")]
    assert read(fake, "ptc/c1/io.max") == ("254:0 rbps=max wbps=max riops=100 wiops=50\n"
                                           "8:0 rbps=1048576 wbps=2097152 riops=max wiops=max\n")


def test_throttle_of_unknown_device_is_refused(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"blockIO": {"throttleReadBpsDevice": [{"major": 9, "minor": 9,
                                                                 "rate": 1}]}})
    assert (info.value.errno, info.value.value) == (errno.ENODEV, "9:9 rbps=1")
    assert info.value.field == "linux.resources.blockIO.throttle[9:9]"
    assert nothing_left(fake)


def test_blkio_weight_out_of_range_rejected(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"blockIO": {"weight": 5}})
    assert info.value.field == "linux.resources.blockIO.weight"


# -- hugetlb, devices, unified ---------------------------------------------------------


def test_hugetlb_enabled_and_written(fake):
    cg(fake).create({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20},
                                        {"pageSize": "1GB", "limit": 0}]})
    assert fake.writes[0] == ("cgroup.subtree_control", BASE + " +hugetlb")
    assert leaf_writes(fake) == [("hugetlb.2MB.max", str(4 << 20)), ("hugetlb.1GB.max", "0")]


def test_hugetlb_unknown_page_size_names_it(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"hugepageLimits": [{"pageSize": "4MB", "limit": 1}]})
    assert info.value.errno == errno.ENOENT
    assert info.value.field == "linux.resources.hugepageLimits[4MB]"
    assert nothing_left(fake)


def test_hugetlb_without_the_controller_is_an_error(make_fake):
    fake = make_fake(controllers="cpu memory pids")
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]})
    assert "hugetlb controller is not available" in str(info.value)
    assert nothing_left(fake)


def test_devices_are_ignored_on_v2(fake):
    cg(fake).create(Resources(devices_allow=("c 10:200 rwm",)))
    assert leaf_writes(fake) == []


def test_unified_needs_the_file_and_a_valid_name(fake):
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"unified": {"memory.bogus": "1"}})
    assert info.value.field == "linux.resources.unified[memory.bogus]"
    assert info.value.errno == errno.ENOENT
    assert nothing_left(fake)
    with pytest.raises(CgroupError) as info:
        cg(fake).create({"unified": {"../escape": "1"}})
    assert info.value.field == "linux.resources.unified"
    with pytest.raises(CgroupError):
        cg(fake).create({"unified": {"memory.high": 5}})  # values are strings


def test_unified_enables_its_controller(make_fake):
    fake = make_fake()
    cg(fake).create({"unified": {"misc.max": "res_a 1"}})
    assert fake.writes[0] == ("cgroup.subtree_control", BASE + " +misc")


def test_every_resources_field_maps(fake):
    r = Resources(
        memory_max_bytes=64 << 20, memory_swap_bytes=80 << 20,
        memory_reservation_bytes=8 << 20, memory_high_bytes=60 << 20, memory_swappiness=5,
        oom_kill_disable=True, cpu_quota_us=30_000, cpu_period_us=60_000, pids_max=20,
        cpu_shares=2048, cpuset_cpus="0", cpuset_mems="0", blkio_weight=100,
        blkio_weight_device=((8, 0, 200),), blkio_read_bps_device=((8, 0, 1000),),
        blkio_write_bps_device=((8, 0, 2000),), blkio_read_iops_device=((254, 0, 10),),
        blkio_write_iops_device=((254, 0, 20),),
        hugepage_limits=(("2MB", 2 << 20),), devices_allow=("c 10:200 rwm", "b 8:* r"),
        unified=(("pids.max", "21"),),
    )
    spec = linux_resources(r)
    assert spec["memory"] == {"limit": 64 << 20, "swap": 80 << 20, "reservation": 8 << 20,
                              "swappiness": 5, "disableOOMKiller": True}
    assert spec["cpu"] == {"quota": 30_000, "period": 60_000, "shares": 2048, "cpus": "0",
                           "mems": "0"}
    assert spec["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
        {"allow": True, "type": "b", "major": 8, "access": "r"}]
    assert spec["unified"] == {"pids.max": "21", "memory.high": str(60 << 20)}
    lim = parse(r)
    assert lim.blkio_weight_device[0].device == "8:0"
    assert [rule.line() for rule in lim.devices or ()][:3] == [
        "a *:* rwm", "c 10:200 rwm", "b 8:* r"]
    cg(fake).create(r)
    files = dict(leaf_writes(fake))
    assert files["memory.max"] == str(64 << 20) and files["memory.swap.max"] == str(16 << 20)
    assert files["memory.low"] == str(8 << 20) and files["memory.high"] == str(60 << 20)
    assert files["cpu.weight"] == "79" and files["cpu.max"] == "30000 60000"
    assert files["cpuset.cpus"] == "0" and files["pids.max"] == "21"  # unified comes last
    assert files["hugetlb.2MB.max"] == str(2 << 20)
    assert read(fake, "ptc/c1/io.max").splitlines() == [
        "254:0 rbps=max wbps=max riops=10 wiops=20", "8:0 rbps=1000 wbps=2000 riops=max wiops=max"]


def test_bad_device_rule_in_resources_names_the_option():
    with pytest.raises(InvalidOptionError) as info:
        linux_resources(Resources(devices_allow=("c 10-200 rwm",)))
    assert info.value.option == "devices_allow"


@pytest.mark.parametrize("resources, field", [
    ("64m", "linux.resources"),
    ({"memory": []}, "linux.resources.memory"),
    ({"devices": [{"allow": "yes"}]}, "linux.resources.devices[0]"),
    ({"devices": [{"allow": True, "type": "x"}]}, "linux.resources.devices[0].type"),
    ({"devices": [{"allow": True, "access": "rwx"}]}, "linux.resources.devices[0].access"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0].minor"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus"),
])
def test_malformed_resources_name_the_field(fake, resources, field):
    with pytest.raises(CgroupError) as info:
        cg(fake).create(resources)
    assert info.value.field == field
    assert fake.mkdirs == []


# -- update ----------------------------------------------------------------------------------


def test_update_writes_only_what_is_set(fake):
    c = cg(fake)
    c.create(Resources(memory_max_bytes=64 << 20, pids_max=10))
    fake.writes.clear()
    c.update({"pids": {"limit": 20}})
    assert fake.writes == [("ptc/c1/pids.max", "20")]
    assert read(fake, "ptc/c1/memory.max") == f"{64 << 20}\n"


# -- processes, freeze, kill, remove ---------------------------------------------------------


def test_add_and_pids(fake):
    c = cg(fake, "/ptc/p")
    c.create(None)
    c.add(4242)
    c.add(17)
    assert ("ptc/p/cgroup.procs", "4242") in fake.writes
    assert c.pids() == [17, 4242]
    assert c.procs_paths() == [fake.root / "ptc/p/cgroup.procs"]
    assert read(fake, "ptc/p/cgroup.events").splitlines()[0] == "populated 1"


def test_freeze_thaw_frozen(fake):
    c = cg(fake)
    c.create(None)
    assert c.frozen is False
    c.freeze()
    assert c.frozen is True
    assert read(fake, "ptc/c1/cgroup.freeze") == "1\n"
    c.thaw()
    assert c.frozen is False
    assert leaf_writes(fake) == [("cgroup.freeze", "1"), ("cgroup.freeze", "0")]


def test_freeze_that_never_settles_is_thawed_back(fake):
    c = cg(fake)
    c.create(None)
    fake.stuck_freezing = True
    with pytest.raises(CgroupError) as info:
        c.freeze(timeout=0.05)
    assert info.value.errno == errno.EBUSY
    assert read(fake, "ptc/c1/cgroup.freeze") == "0\n"
    assert c.frozen is False


def test_frozen_parent_freezes_child_and_thaw_of_child_keeps_it(fake):
    parent, child = cg(fake, "/ptc/s"), cg(fake, "/ptc/s/c")
    parent.create(None)
    child.create(None)
    parent.freeze()
    assert child.frozen is True
    child.thaw()  # returns: the parent keeps it frozen
    assert child.frozen is True
    parent.thaw()
    assert child.frozen is False


def test_kill_all_uses_cgroup_kill_and_thaws(fake):
    c = cg(fake, "/ptc/k")
    c.create(None)
    c.add(999_999)
    c.freeze()
    c.kill_all()
    assert leaf_writes(fake, "ptc/k")[-2:] == [("cgroup.kill", "1"), ("cgroup.freeze", "0")]
    assert c.pids() == [] and c.frozen is False
    c.remove()
    assert nothing_left(fake)


def test_kill_all_of_empty_cgroup_writes_nothing(fake):
    c = cg(fake)
    c.create(None)
    c.kill_all()
    assert leaf_writes(fake) == []


def test_remove_leaf_then_empty_shared_parent(fake):
    a, b = cg(fake, "/ptc/a"), cg(fake, "/ptc/b")
    a.create(None)
    b.create(None)
    a.remove()
    assert not (fake.root / "ptc/a").exists()
    assert (fake.root / "ptc").is_dir()  # b still uses the shared parent
    cg(fake, "/ptc/b").remove()  # another object for the same cgroup: same rule
    assert nothing_left(fake)
    b.remove()  # already gone: fine


def test_remove_busy_raises_after_retries(fake, monkeypatch):
    monkeypatch.setattr(fs, "RMDIR_TRIES", 3)
    c = cg(fake, "/ptc/busy")
    c.create(None)
    c.add(1234)
    with pytest.raises(CgroupError) as info:
        c.remove()
    assert info.value.errno == errno.EBUSY


def test_path_must_be_absolute_without_dotdot(fake):
    for bad in ("ptc/x", "/ptc/../x", "/"):
        with pytest.raises(ValueError):
            open_cgroup(bad, root=fake.root, version=2)


# -- session parent ---------------------------------------------------------------------------


def test_session_parent_with_limits_and_children(fake):
    session = cg(fake, "/ptc/ptc-session-7")
    session.create(Resources(memory_max_bytes=256 << 20, pids_max=100))
    one, two = cg(fake, "/ptc/ptc-session-7/c1"), cg(fake, "/ptc/ptc-session-7/c2")
    fake.writes.clear()
    one.create(None)
    assert fake.writes == [("ptc/ptc-session-7/cgroup.subtree_control", BASE)]
    two.create({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    # hugetlb enabled later, on every ancestor; the existing child gets its files too
    assert read(fake, "ptc/ptc-session-7/cgroup.subtree_control").split() == [
        "cpu", "io", "memory", "hugetlb", "pids"]
    assert (fake.root / "ptc/ptc-session-7/c1/hugetlb.2MB.max").exists()
    assert [p.path for p in two.parent_chain()] == ["/ptc/ptc-session-7", "/ptc"]
    assert [c.path for c in session.children()] == ["/ptc/ptc-session-7/c1",
                                                    "/ptc/ptc-session-7/c2"]
    one.remove()
    two.remove()
    assert (fake.root / "ptc/ptc-session-7").is_dir()  # never removed by a child
    assert read(fake, "ptc/ptc-session-7/memory.max") == f"{256 << 20}\n"
    session.remove()
    assert nothing_left(fake)


def test_session_parent_remove_with_children(fake):
    session = cg(fake, "/ptc/ptc-session-8")
    session.create(None)
    child = cg(fake, "/ptc/ptc-session-8/c")
    child.create(None)
    child.add(4321)
    with pytest.raises(CgroupError) as info:
        session.remove(recursive=False)
    assert info.value.errno == errno.EBUSY and "child cgroups" in str(info.value)
    session.kill_all()  # cgroup.kill takes the subtree
    assert session.pids(recursive=True) == []
    session.remove()
    assert nothing_left(fake)


def test_nested_path_without_session_makes_and_removes_its_parents(fake):
    c = cg(fake, "/ptc/group/sub/c")
    c.create(None)
    assert fake.mkdirs == ["ptc", "ptc/group", "ptc/group/sub", "ptc/group/sub/c"]
    c.remove()
    assert nothing_left(fake)


def test_oom_of_child_under_parent_limit_in_child_counters(fake):
    session = cg(fake, "/ptc/ptc-session-9")
    session.create({"memory": {"limit": 64 << 20}})
    child = cg(fake, "/ptc/ptc-session-9/c")
    child.create(None)
    # what the kernel writes when the parent's limit kills the child's process:
    # memory.events is hierarchical (the victim's cgroup and its ancestors),
    # "max"/"oom" are counted where the limit sits
    (fake.root / "ptc/ptc-session-9/c/memory.events").write_text(
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\noom_group_kill 0\n")
    (fake.root / "ptc/ptc-session-9/memory.events").write_text(
        "low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert child.oom_kills() == 1
    assert child.stats().memory_limit_bytes is None  # its own: unlimited
    assert session.stats().memory_failcnt == 40
    assert session.stats().memory_limit_bytes == 64 << 20


# -- stats ------------------------------------------------------------------------------------


def test_stats_parse_kernel_formats(fake):
    c = cg(fake, "/ptc/s")
    c.create(Resources(memory_max_bytes=64 << 20, pids_max=50))
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
    (leaf / "io.stat").write_text(
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
        "254:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert c.stats() == Stats(
        memory_current_bytes=1052672, memory_peak_bytes=64 << 20, oom_kills=1,
        cpu_usage_us=123456, cpu_throttled_us=7890, pids_current=3, pids_peak=9,
        cgroup_version=2, memory_limit_bytes=64 << 20, memory_failcnt=311, cpu_periods=10,
        cpu_throttled_periods=4, pids_max=50, io_read_bytes=4196, io_write_bytes=8192)


def test_stats_without_optional_files(fake):
    c = cg(fake, "/ptc/o")
    c.create(None)
    (fake.root / "ptc/o/pids.peak").unlink()  # kernels before 6.1
    (fake.root / "ptc/o/memory.peak").unlink()  # before 5.19
    stats = c.stats()
    assert (stats.pids_peak, stats.memory_peak_bytes, stats.oom_kills) == (None, None, 0)
    assert (stats.memory_limit_bytes, stats.pids_max, stats.io_read_bytes) == (None, None, 0)
