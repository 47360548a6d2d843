"""``linux.resources`` limits against what the kernel holds, and ``ptc-runtime``'s
checks of a config's resources (runtime/linux/cgroups/resources.py,
runtime/native/config.py): pids ``0`` and negative as runc reads them, byte
limits above ``PAGE_COUNTER_MAX`` pages, the memory floor, and a kernel EINVAL
turned into an ``InvalidOptionError`` naming the field. The cgroup v2 side runs
against the fake cgroupfs tree (``cgroupfs_fake.py``), as ``test_cgroups_v2.py``.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.cgroups import CgroupV2, fs, open_cgroup
from pytest_containers.runtime.linux.cgroups.resources import (
    MAX_LIMIT_BYTES,
    PID_MAX_LIMIT,
    option_error,
    parse,
)
from pytest_containers.runtime.native.config import MIN_MEMORY_LIMIT_BYTES, check_resources
from pytest_containers.runtime.types import Resources

from pytest_containers.exceptions import CgroupError, InvalidOptionError

from .cgroupfs_fake import FakeCgroupFs


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFs:
    """Function: a fake cgroup2 root in ``tmp_path``; the driver's mkdir, write and
    rmdir go through it."""
    tree = FakeCgroupFs(tmp_path)
    monkeypatch.setattr(fs, "make_dir", tree.make_dir)
    monkeypatch.setattr(fs, "write", tree.write)
    monkeypatch.setattr(fs, "remove_dir", tree.remove_dir)
    monkeypatch.setattr(fs, "RMDIR_DELAY", 0.0)
    return tree


def v2(fake: FakeCgroupFs, path: str = "/ptc/c1") -> CgroupV2:
    found = open_cgroup(path, root=fake.root, version=2)
    assert isinstance(found, CgroupV2)
    return found


def leaf_writes(fake: FakeCgroupFs, leaf: str = "ptc/c1") -> list[tuple[str, str]]:
    return [(p.removeprefix(leaf + "/"), v) for p, v in fake.writes if p.startswith(leaf + "/")]


def nothing_made(fake: FakeCgroupFs) -> bool:
    return fake.mkdirs == [] and not [p for p in fake.root.iterdir() if p.is_dir()]


# -- pids.limit as runc reads it ----------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(0, None), (-1, -1), (-5, -1), ("max", -1),
                                                 (1, 1), (PID_MAX_LIMIT, PID_MAX_LIMIT)])
def test_pids_limit_zero_is_unset_and_negative_unlimited(limit, expected) -> None:
    """runc 1.1 ``fs/pids.go``: ``PidsLimit != 0`` writes, ``> 0`` the number, else
    ``max``; podman sends 0 or -1 for "unlimited"."""
    assert parse({"pids": {"limit": limit}}).pids_limit == expected


@pytest.mark.parametrize(("limit", "written"), [(0, None), (-1, "max"), (-7, "max"), (9, "9")])
def test_pids_limit_on_v2(fake: FakeCgroupFs, limit, written) -> None:
    v2(fake).create({"pids": {"limit": limit}})
    writes = dict(leaf_writes(fake))
    assert writes.get("pids.max") == written
    assert (fake.root / "ptc/c1/pids.max").read_text() == f"{written or 'max'}\n"


def test_pids_limit_above_the_kernel_maximum_names_the_field(fake: FakeCgroupFs) -> None:
    with pytest.raises(InvalidOptionError) as info:
        v2(fake).create({"pids": {"limit": PID_MAX_LIMIT + 1}})
    assert (info.value.option, info.value.value) == ("linux.resources.pids.limit",
                                                     PID_MAX_LIMIT + 1)
    assert "PID_MAX_LIMIT" in str(info.value)
    assert nothing_made(fake)


@pytest.mark.parametrize("pids", [0, -1])
def test_resources_pids_must_stay_positive(pids: int) -> None:
    """``Resources.pids_max`` is the user's ``pids=`` option: 0 is not "unlimited"."""
    with pytest.raises(CgroupError) as info:
        parse(Resources(pids_max=pids))
    assert info.value.field == "linux.resources.pids.limit"
    with pytest.raises(InvalidOptionError) as option:
        Resources.from_options(pids=pids)
    assert option.value.option == "pids"


# -- byte limits the kernel can hold ------------------------------------------------------


def test_max_limit_is_int64_max_a_common_unlimited() -> None:
    """``9223372036854775807`` is how some tools say "unlimited" (runc takes it; the
    kernel rounds it down to ``PAGE_COUNTER_MAX`` pages): passed on."""
    assert MAX_LIMIT_BYTES == 2**63 - 1
    assert parse({"memory": {"limit": MAX_LIMIT_BYTES}}).memory_limit == MAX_LIMIT_BYTES


@pytest.mark.parametrize(("resources", "field"), [
    ({"memory": {"limit": 10**20}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": 64 << 20, "swap": MAX_LIMIT_BYTES + 1}},
     "linux.resources.memory.swap"),
    ({"memory": {"reservation": 2**64}}, "linux.resources.memory.reservation"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 2**63}]},
     "linux.resources.hugepageLimits[0].limit"),
])
def test_byte_limit_above_the_kernel_maximum_names_the_field(fake: FakeCgroupFs, resources,
                                                             field) -> None:
    with pytest.raises(InvalidOptionError) as info:
        v2(fake).create(resources)
    assert info.value.option == info.value.field == field
    assert str(MAX_LIMIT_BYTES) in str(info.value) and "int64" in str(info.value)
    assert nothing_made(fake)


def test_memory_option_too_big_names_memory(fake: FakeCgroupFs) -> None:
    """``Containers.run(memory=10**20)``: the cgroup refuses ``memory_max_bytes``
    naming the ``memory`` option, not the swap file the kernel would have refused
    (EINVAL on ``memory.memsw.limit_in_bytes``)."""
    resources = Resources(memory_max_bytes=10**20)
    with pytest.raises(InvalidOptionError) as info:
        v2(fake).create(resources)
    assert (info.value.option, info.value.value) == ("memory", 10**20)
    assert info.value.field == "linux.resources.memory.limit"
    assert str(info.value).startswith("memory: 100000000000000000000 bytes is above")
    assert nothing_made(fake)
    with pytest.raises(InvalidOptionError, match="memory_reservation_bytes"):
        parse(Resources(memory_reservation_bytes=2**64))


# -- a kernel EINVAL, as an InvalidOptionError ----------------------------------------------


@pytest.mark.parametrize(("resources", "field", "value"), [
    ({"cpu": {"quota": 500}}, "linux.resources.cpu.quota", "500 100000"),
    ({"cpu": {"cpus": "0-63"}}, "linux.resources.cpu.cpus", "0-63"),
])
def test_kernel_einval_becomes_an_invalid_option(fake: FakeCgroupFs, resources, field,
                                                 value) -> None:
    with pytest.raises(CgroupError) as info:
        v2(fake).create(resources)
    assert [p for p in fake.root.iterdir() if p.is_dir()] == []  # nothing half-made
    mapped = option_error(info.value)
    assert isinstance(mapped, InvalidOptionError)
    assert (mapped.option, mapped.field, mapped.value, mapped.errno) == (field, field, value,
                                                                         errno.EINVAL)
    assert mapped.path == info.value.path and "Invalid argument" in str(mapped)
    wrapped = RuntimeError("cannot create cgroup")
    wrapped.__cause__ = info.value
    assert option_error(wrapped).option == field  # found behind a wrapper too


def test_other_cgroup_errors_are_not_invalid_options(fake: FakeCgroupFs) -> None:
    v2(fake).create(None)
    with pytest.raises(CgroupError) as info:
        v2(fake).create(None)  # EEXIST
    assert option_error(info.value) is None
    assert option_error(ValueError("x")) is None


# -- ptc-runtime's config check ---------------------------------------------------------------


@pytest.mark.parametrize("limit", [4096, 1 << 20, MIN_MEMORY_LIMIT_BYTES - 1])
def test_memory_limit_below_the_minimum_is_refused(limit: int) -> None:
    with pytest.raises(InvalidOptionError) as info:
        check_resources({"linux": {"resources": {"memory": {"limit": limit}}}})
    assert info.value.option == "linux.resources.memory.limit" and info.value.value == limit
    assert "minimum memory limit allowed" in str(info.value)


@pytest.mark.parametrize("memory", [{"limit": MIN_MEMORY_LIMIT_BYTES}, {"limit": -1},
                                    {"limit": 0}, {"reservation": 4096}, {}])
def test_memory_limit_at_the_minimum_unlimited_or_unset_passes(memory) -> None:
    check_resources({"linux": {"resources": {"memory": memory}}})
    check_resources({})


def test_config_resources_are_checked_whole() -> None:
    with pytest.raises(CgroupError) as info:
        check_resources({"linux": {"resources": {"cpu": {"shares": 1}}}})
    assert info.value.field == "linux.resources.cpu.shares"
    with pytest.raises(InvalidOptionError) as big:
        check_resources({"linux": {"resources": {"memory": {"limit": 10**20}}}})
    assert big.value.option == "linux.resources.memory.limit"
