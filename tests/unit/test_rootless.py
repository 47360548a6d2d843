"""Rootless support (``runtime/native/rootless.py``) without a kernel: id maps and
when they need ``newuidmap``, ``subuid(5)`` parsing, the state root, runc's
``spec --rootless`` conversion, the checks of ``linux.resources`` for a container
without a cgroup, and cgroup v2 delegation (``cgroup-v2.rst`` "Delegation") against
the fake cgroupfs tree of ``cgroupfs_fake.py``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.cgroups import CgroupV2, fs
from pytest_containers.runtime.native import rootless
from pytest_containers.runtime.native.rootless import (
    IdMapping,
    NoCgroup,
    SubIdRange,
    add_user_namespace,
    check_no_limits,
    delegated_cgroup,
    host_cgroup_path,
    maps_need_helper,
    open_rootless_cgroup,
    parse_id_map,
    parse_subids,
    pids_in_pid_namespace,
    prepare_state_root,
    rootless_cgroup,
    state_root,
    subordinate_ids,
    to_rootless,
)
from pytest_containers.runtime.spec import to_config
from pytest_containers.runtime.state import default_state_root, user_runtime_dir
from pytest_containers.runtime.types import ContainerSpec, Resources

from pytest_containers.exceptions import CgroupError, ContainerRuntimeError, InvalidOptionError

from .cgroupfs_fake import FakeCgroupFs

#: the delegated user of the fake cgroup tree (any uid: the tree is chowned to it)
USER = 4242
SERVICE = f"/user.slice/user-{USER}.slice/user@{USER}.service"
OWN = f"{SERVICE}/app.slice/term.scope"


# -- id maps ---------------------------------------------------------------------------


def test_parse_id_map_reads_the_lines_config_writes() -> None:
    assert parse_id_map(b"0 65534 1\n1 100000 65536\n") == (
        IdMapping(0, 65534, 1), IdMapping(1, 100000, 65536))
    assert parse_id_map("") == ()
    with pytest.raises(ValueError, match="not an id map line"):
        parse_id_map(b"0 x 1\n")


@pytest.mark.parametrize(("mappings", "needed"), [
    ([IdMapping(0, 1000, 1)], False),                       # own id, size 1: direct
    ([IdMapping(5, 1000, 1)], False),                       # any container id
    ([IdMapping(0, 1000, 2)], True),                        # more than one id
    ([IdMapping(0, 1001, 1)], True),                        # someone else's id
    ([IdMapping(0, 1000, 1), IdMapping(1, 100000, 65536)], True),
])
def test_only_a_map_of_the_own_id_is_written_without_newuidmap(
        mappings: list[IdMapping], needed: bool) -> None:
    assert maps_need_helper(mappings, 1000) is needed


def test_process_ids_must_be_mapped() -> None:
    maps = b"0 100000 1000\n"
    rootless.check_process_ids(0, 999, (5, 6), maps, maps)
    for args, field in (((1000, 0, ()), "process.user.uid"),
                        ((0, 1000, ()), "process.user.gid"),
                        ((0, 0, (7, 1000)), "process.user.additionalGids")):
        with pytest.raises(InvalidOptionError) as info:
            rootless.check_process_ids(*args, maps, maps)
        assert info.value.option == field and "0 100000 1000" in str(info.value)


def test_parse_subids_matches_by_name_or_uid() -> None:
    text = ("# subordinate ids\n"
            "alice:100000:65536\n"
            "bob:165536:65536\n"
            "1000:300000:10\n"
            "alice:500000:0\n"          # an empty range: skipped
            "alice:oops:10\n"           # malformed: skipped
            "\n"
            "alice:600000:5\n")
    assert parse_subids(text, "alice", 1000) == (
        SubIdRange(100000, 65536), SubIdRange(300000, 10), SubIdRange(600000, 5))
    assert parse_subids(text, "carol", 1002) == ()
    assert SubIdRange(100000, 65536).covers(100000, 65536)
    assert not SubIdRange(100000, 65536).covers(100001, 65536)


def test_subordinate_ids_read_the_file_of_the_user(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    name = rootless._user_name(os.getuid())
    table.write_text(f"someone:1:2\n{name}:200000:1000\n")
    assert subordinate_ids("uid", path=table) == (SubIdRange(200000, 1000),)
    assert subordinate_ids("gid", path=tmp_path / "missing") == ()


# -- the state root ----------------------------------------------------------------------


def test_state_root_root_xdg_run_user_or_a_clear_error(tmp_path: Path) -> None:
    assert state_root(uid=0, environ={"XDG_RUNTIME_DIR": "/run/user/0"}) == Path("/run/ptc")
    assert state_root(uid=1000, environ={"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "ptc"
    (tmp_path / "1000").mkdir()
    assert state_root(uid=1000, environ={}, run_user=tmp_path) == tmp_path / "1000" / "ptc"
    with pytest.raises(ContainerRuntimeError) as info:
        state_root(uid=1001, environ={}, run_user=tmp_path)
    assert "XDG_RUNTIME_DIR" in str(info.value) and "--root" in str(info.value)
    assert info.value.path == str(tmp_path / "1001")


def test_the_sweep_looks_where_a_rootless_runtime_keeps_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``default_state_root`` (the sweep's, the detached containers') is the engine's
    ``state_root`` for a user that is not root, whichever runtime dir they have."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_state_root() == state_root() == tmp_path / "ptc"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert user_runtime_dir(uid=1000, environ={}, run_user=tmp_path) is None
    (tmp_path / "1000").mkdir()
    assert user_runtime_dir(uid=1000, environ={}, run_user=tmp_path) == tmp_path / "1000"


def test_prepare_state_root_makes_it_private_and_sticky(tmp_path: Path) -> None:
    root = prepare_state_root(tmp_path / "xdg" / "ptc")
    mode = root.stat().st_mode
    assert stat.S_IMODE(mode) == 0o700 | stat.S_ISVTX
    (tmp_path / "file").write_text("")
    with pytest.raises(ContainerRuntimeError) as info:
        prepare_state_root(tmp_path / "file" / "ptc")
    assert str(tmp_path / "file" / "ptc") in str(info.value)


# -- configs -----------------------------------------------------------------------------


def _default_config() -> dict:
    """What ``ptc-runtime spec`` writes."""
    config = to_config(ContainerSpec(args=("sh",), layers=()), container_id="ptc-runtime")
    config["linux"].pop("cgroupsPath", None)
    return config


def test_to_rootless_is_runc_spec_rootless() -> None:
    config = _default_config()
    config["mounts"].append({"destination": "/dev/pts2", "type": "devpts", "source": "devpts",
                             "options": ["newinstance", "gid=5", "mode=0620", "uid=0"]})
    out = to_rootless(config, uid=1000, gid=1001)
    types = [n["type"] for n in out["linux"]["namespaces"]]
    assert "network" not in types and types[-1] == "user" and types.count("user") == 1
    assert out["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert out["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 1001, "size": 1}]
    sys_mounts = [m for m in out["mounts"] if m["destination"] == "/sys"]
    assert sys_mounts == [{"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    assert out["mounts"][-1]["options"] == ["newinstance", "mode=0620"]
    assert "resources" not in out["linux"]
    assert "network" in [n["type"] for n in config["linux"]["namespaces"]]  # a copy


def test_add_user_namespace_maps_the_callers_ids_and_keeps_the_rest() -> None:
    config = _default_config()
    out = add_user_namespace(config, uid=1000, gid=1001)
    assert [n["type"] for n in out["linux"]["namespaces"]] == [
        n["type"] for n in config["linux"]["namespaces"]] + ["user"]
    assert out["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert out["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 1001, "size": 1}]
    assert out["mounts"] == config["mounts"] and "uidMappings" not in config["linux"]
    assert add_user_namespace(out, uid=5, gid=5) == out  # has one already: as it is


def test_check_no_limits_names_the_first_limit_and_ignores_devices() -> None:
    check_no_limits(None, "why")
    check_no_limits({"devices": [{"allow": False, "access": "rwm"}]}, "why")
    check_no_limits({"memory": {"limit": 0}, "cpu": {"quota": 0, "shares": 0}}, "why")
    check_no_limits(Resources(), "why")
    cases = [({"pids": {"limit": 32}}, "linux.resources.pids.limit"),
             ({"memory": {"limit": 1 << 26}}, "linux.resources.memory.limit"),
             ({"cpu": {"quota": 50000, "period": 100000}}, "linux.resources.cpu.quota"),
             ({"unified": {"memory.high": "1G"}}, "linux.resources.unified"),
             (Resources(pids_max=16), "linux.resources.pids.limit")]
    for resources, field in cases:
        with pytest.raises(InvalidOptionError) as info:
            check_no_limits(resources, "no cgroup here")
        assert info.value.option == field
        assert str(info.value).startswith(field + ": no cgroup here")
    with pytest.raises(InvalidOptionError) as info:
        check_no_limits({"pids": {"limit": "x"}}, "why")
    assert info.value.option == "linux.resources.pids.limit"


def test_no_cgroup_does_nothing_and_refuses_to_freeze() -> None:
    cgroup = NoCgroup()
    cgroup.create(None)
    cgroup.kill_all()
    cgroup.remove()
    assert cgroup.procs_paths() == [] and cgroup.self_join_paths() == [] and cgroup.pids() == []
    assert cgroup.oom_kills() == 0 and cgroup.stats().memory_current_bytes is None
    assert not cgroup.frozen
    with pytest.raises(CgroupError, match="cannot be paused"):
        cgroup.freeze()
    with pytest.raises(InvalidOptionError):
        cgroup.update({"pids": {"limit": 5}})


def test_pids_in_pid_namespace_of_a_host_process_is_itself() -> None:
    assert pids_in_pid_namespace(os.getpid()) == [os.getpid()]
    assert pids_in_pid_namespace(2 ** 22 + 1) == []  # past pid_max: no such process


# -- cgroup v2 delegation ------------------------------------------------------------------


def _chown_cgroup(path: Path, uid: int) -> None:
    """What systemd does for a delegated unit (and the kernel for a cgroup the user
    makes): the directory and its files owned by the user."""
    os.chown(path, uid, uid)
    for child in path.iterdir():
        if child.is_file():
            os.chown(child, uid, uid)


@pytest.fixture
def delegated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFs:
    """Function (needs root to chown): a fake cgroup2 tree laid out as systemd does,
    ``user@USER.service`` and below owned by :data:`USER`; ``io`` is available in
    ``user-USER.slice`` but not enabled there (systemd delegates cpu, memory and
    pids), so enabling it from below would be refused; directories the driver makes
    are owned by :data:`USER`, as they would be for that caller."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the fake tree")
    fake = FakeCgroupFs(tmp_path)
    monkeypatch.setattr(fs, "make_dir",
                        lambda p: (fake.make_dir(p), _chown_cgroup(Path(p), USER)))
    monkeypatch.setattr(fs, "write", fake.write)
    monkeypatch.setattr(fs, "remove_dir", fake.remove_dir)
    monkeypatch.setattr(fs, "RMDIR_DELAY", 0.0)
    fake.write(tmp_path / "cgroup.subtree_control", "+cpu +io +memory +pids")
    parts = [p for p in OWN.split("/") if p]
    for depth in range(1, len(parts) + 1):
        path = tmp_path.joinpath(*parts[:depth])
        fake.make_dir(path)
        if depth < len(parts):
            fake.write(path / "cgroup.subtree_control",
                       "+cpu +io +memory +pids" if depth == 1 else "+cpu +memory +pids")
        # user.slice and user-USER.slice are root's, user@USER.service and below USER's
        _chown_cgroup(path, USER if depth >= 3 else 0)
    (tmp_path.joinpath(*parts) / "cgroup.procs").write_text("4321\n")
    fake.writes.clear()
    fake.mkdirs.clear()
    return fake


def test_delegated_cgroup_is_the_topmost_owned_one(delegated: FakeCgroupFs) -> None:
    assert delegated_cgroup(OWN, root=delegated.root, uid=USER) == SERVICE
    assert delegated_cgroup(OWN, root=delegated.root, uid=USER + 1) is None
    assert delegated_cgroup("/user.slice", root=delegated.root, uid=USER) is None


def test_rootless_cgroup_is_made_below_the_delegated_one(delegated: FakeCgroupFs) -> None:
    resources = {"memory": {"limit": 64 << 20}, "pids": {"limit": 32},
                 "devices": [{"allow": False, "access": "rwm"}]}
    cgroup = rootless_cgroup(None, "c1", resources, fs_root=delegated.root, uid=USER,
                             own=OWN, version=2)
    assert isinstance(cgroup, CgroupV2)
    host_path = host_cgroup_path(cgroup, delegated.root)
    assert host_path == f"{SERVICE}/ptc/c1"
    cgroup.create(resources)
    leaf = delegated.root / host_path.lstrip("/")
    assert (leaf / "memory.max").read_text().strip() == str(64 << 20)
    assert (leaf / "pids.max").read_text().strip() == "32"
    # every write inside the delegated cgroup: the kernel refuses the user anything above
    assert delegated.writes and all(p.startswith(SERVICE.lstrip("/") + "/")
                                    for p, _ in delegated.writes), delegated.writes
    assert open_rootless_cgroup(host_path, fs_root=delegated.root, uid=USER) == cgroup
    cgroup.remove()
    assert not (delegated.root / SERVICE.lstrip("/") / "ptc").exists()
    assert (delegated.root / OWN.lstrip("/")).is_dir()


def test_rootless_cgroup_paths(delegated: FakeCgroupFs) -> None:
    def make(path: str | None) -> CgroupV2 | NoCgroup:
        return rootless_cgroup(path, "c1", None, fs_root=delegated.root, uid=USER, own=OWN,
                               version=2)

    relative = make("team/c1")
    assert isinstance(relative, CgroupV2)
    assert host_cgroup_path(relative, delegated.root) == f"{SERVICE}/ptc/team/c1"
    absolute = make(f"{SERVICE}/mine/c1")
    assert isinstance(absolute, CgroupV2)
    assert host_cgroup_path(absolute, delegated.root) == f"{SERVICE}/mine/c1"
    with pytest.raises(InvalidOptionError) as info:
        make("/ptc/c1")
    assert info.value.option == "linux.cgroupsPath" and SERVICE in str(info.value)


def test_without_delegation_or_on_v1_there_is_no_cgroup(delegated: FakeCgroupFs) -> None:
    other = rootless_cgroup(None, "c1", {"devices": []}, fs_root=delegated.root,
                            uid=USER + 1, own=OWN, version=2)
    assert isinstance(other, NoCgroup) and host_cgroup_path(other) == ""
    with pytest.raises(InvalidOptionError) as info:
        rootless_cgroup(None, "c1", {"pids": {"limit": 8}}, fs_root=delegated.root,
                        uid=USER + 1, own=OWN, version=2)
    assert info.value.option == "linux.resources.pids.limit"
    assert "no cgroup is delegated" in str(info.value)
    with pytest.raises(InvalidOptionError) as info:
        rootless_cgroup(None, "c1", {"memory": {"limit": 1 << 26}}, uid=USER, version=1)
    assert "cgroup v1" in str(info.value)
    assert isinstance(rootless_cgroup(None, "c1", None, uid=USER, version=1), NoCgroup)
    assert isinstance(open_rootless_cgroup(""), NoCgroup)
    assert delegated.writes == [] and delegated.mkdirs == []
