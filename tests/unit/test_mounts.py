"""The pure parts of the container filesystem: config.json -> RootfsPlan (runtime-spec
``config.md#mounts``, ``config-linux.md``), securejoin resolution, overlay data,
mountinfo parsing."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.runtime.linux import syscalls as sc
from pytest_containers.runtime.linux.mounts import (
    DEFAULT_DEVICE_NODES,
    MountInfo,
    mountinfo,
    overlay_options,
    parse_options,
    plan_rootfs,
    resolve_in_root,
)
from pytest_containers.runtime.linux.rootfs import DeviceNode
from pytest_containers.runtime.spec import DEFAULT_MOUNTS

from pytest_containers.exceptions import InvalidOptionError


def plan(mounts: list[dict[str, Any]] | None = None, **linux: Any):
    config: dict[str, Any] = {"mounts": mounts if mounts is not None else [], "linux": linux}
    return plan_rootfs(config, "/run/ptc/x/rootfs")


def one(mount: dict[str, Any]):
    return plan([mount]).mounts[0]


# -- options -------------------------------------------------------------------------


def test_parse_options_splits_flags_propagation_and_data():
    flags, prop, data = parse_options(["ro", "nosuid", "rprivate", "size=1m", "rw", "mode=755"])
    assert flags == sc.MS_NOSUID  # rw clears the earlier ro
    assert prop == sc.MS_PRIVATE | sc.MS_REC
    assert data == "size=1m,mode=755"


def test_default_mounts_plan():
    p = plan([dict(m) for m in DEFAULT_MOUNTS])
    by_dest = {m.destination: m for m in p.mounts}
    assert list(by_dest) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert by_dest["/dev"].type == "tmpfs"
    assert by_dest["/dev"].flags == sc.MS_NOSUID | sc.MS_STRICTATIME
    assert by_dest["/dev"].data == "mode=755,size=65536k"
    assert by_dest["/dev/pts"].data == "newinstance,ptmxmode=0666,mode=0620"
    assert by_dest["/sys"].flags & sc.MS_RDONLY
    assert p.setup_dev and p.devices == DEFAULT_DEVICE_NODES
    assert [d.path for d in p.devices] == ["/dev/null", "/dev/zero", "/dev/full",
                                           "/dev/random", "/dev/urandom", "/dev/tty"]
    assert p.cgroup_v1 == ()  # no cgroup mount: no host lookup


def test_bind_flags_clear_flags_and_propagation_order():
    m = one({"destination": "/data/", "type": "bind", "source": "/srv",
             "options": ["rbind", "ro", "suid", "rslave", "shared"]})
    assert (m.destination, m.type, m.source, m.data) == ("/data", "bind", "/srv", "")
    assert m.is_bind
    assert m.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY
    assert m.clear_flags == sc.MS_NOSUID
    assert m.propagation == (sc.MS_SLAVE | sc.MS_REC, sc.MS_SHARED)  # in order, one by one


def test_bind_option_makes_a_bind_whatever_the_type():
    assert one({"destination": "/a", "type": "none", "source": "/srv",
                "options": ["bind"]}).type == "bind"
    assert one({"destination": "/a", "type": "bind", "source": "/srv"}).flags == sc.MS_BIND


def test_relative_bind_source_is_relative_to_the_bundle(tmp_path):
    config = {"mounts": [{"destination": "/a", "type": "bind", "source": "vol",
                          "options": ["rbind"]}]}
    p = plan_rootfs(config, tmp_path / "rootfs", bundle=tmp_path)
    assert p.mounts[0].source == str(tmp_path / "vol")
    with pytest.raises(InvalidOptionError, match="absolute") as info:
        plan_rootfs(config, tmp_path / "rootfs")
    assert info.value.option == "mounts[0].source"


def test_recursive_attributes_and_copy_up():
    m = one({"destination": "/a", "type": "bind", "source": "/srv",
             "options": ["rbind", "rro", "rnosuid", "rnoatime", "rexec"]})
    assert m.rec_set == 0x1 | 0x2 | 0x10  # MOUNT_ATTR_RDONLY | NOSUID | NOATIME
    assert m.rec_clear == 0x8 | 0x70  # NOEXEC, and the atime mask with an atime mode
    t = one({"destination": "/tmp", "type": "tmpfs", "options": ["tmpcopyup", "x-gvfs-hide"]})
    assert t.copy_up and t.data == ""


@pytest.mark.parametrize("mount, option, words", [
    ({"destination": "/data", "type": "tmpfs", "options": ["sise=1m"]},
     "mounts[0].options", ["/data", "'sise=1m'", "tmpfs"]),
    ({"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "readonly"]},
     "mounts[0].options", ["/data", "'readonly'", "bind"]),
    ({"destination": "/dev/pts", "type": "devpts", "options": ["ptmxmode=rw"]},
     "mounts[0].options", ["/dev/pts", "'ptmxmode=rw'", "invalid value"]),
    ({"destination": "/t", "type": "tmpfs", "options": ["size=lots"]},
     "mounts[0].options", ["/t", "'size=lots'"]),
    ({"destination": "/t", "type": "tmpfs", "options": ["mode"]},
     "mounts[0].options", ["/t", "'mode'"]),
    ({"destination": "/p", "type": "proc", "options": ["hidepid=7"]},
     "mounts[0].options", ["/p", "'hidepid=7'"]),
    ({"destination": "/s", "type": "sysfs", "options": ["size=1m"]},
     "mounts[0].options", ["/s", "'size=1m'", "sysfs"]),
    ({"destination": "/t", "type": "tmpfs", "options": ["idmap"]},
     "mounts[0].options", ["/t", "'idmap'", "user namespace"]),
    ({"destination": "/b", "type": "bind", "source": "/srv", "options": ["bind", "tmpcopyup"]},
     "mounts[0].options", ["/b", "tmpcopyup"]),
    ({"destination": "/x", "source": "none"}, "mounts[0].type", ["/x", "no type"]),
    ({"type": "tmpfs"}, "mounts[0].destination", ["destination is required"]),
    ({"destination": "/../", "type": "tmpfs"}, "mounts[0].destination", ["over the root"]),
    ({"destination": "/o", "type": "tmpfs", "options": "ro"}, "mounts[0].options",
     ["list of strings"]),
])
def test_bad_mounts_name_the_destination_and_the_option(mount, option, words):
    with pytest.raises(InvalidOptionError) as info:
        plan([{"source": "tmpfs", **mount}])
    assert isinstance(info.value, ValueError)
    assert info.value.option == option
    for word in words:
        assert word in str(info.value)


def test_filesystem_options_on_a_bind_are_dropped_like_runc():
    """runtime-tools' ``mounts`` test puts tmpfs options on binds; the kernel ignores
    data for ``MS_BIND``."""
    m = one({"destination": "/mnt/etc", "source": "/etc",
             "options": ["nosuid", "strictatime", "mode=755", "size=1k", "bind", "shared"]})
    assert (m.type, m.data) == ("bind", "")
    assert m.flags == sc.MS_BIND | sc.MS_NOSUID | sc.MS_STRICTATIME


def test_options_of_other_filesystems_go_to_the_kernel():
    m = one({"destination": "/o", "type": "overlay", "source": "overlay",
             "options": ["lowerdir=/a:/b", "ro", "index=off"]})
    assert (m.type, m.flags, m.data) == ("overlay", sc.MS_RDONLY, "lowerdir=/a:/b,index=off")


def test_known_filesystem_options_pass():
    m = one({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5", "max=1024"]})
    assert m.data == "newinstance,ptmxmode=0666,mode=0620,gid=5,max=1024"
    t = one({"destination": "/t", "type": "tmpfs",
             "options": ["size=50%", "nr_inodes=1k", "mode=1777", "uid=0", "huge=within_size",
                         "inode64", "defaults", "lazytime", "nosymfollow"]})
    assert t.flags == sc.MS_LAZYTIME | 256


# -- devices, propagation, paths -------------------------------------------------------


def test_config_devices_replace_defaults_by_path():
    p = plan(devices=[
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o20666,
         "uid": 1, "gid": 2},
        {"path": "/run/fifo", "type": "p"},
        {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2},
    ])
    paths = [d.path for d in p.devices]
    assert paths == ["/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
                     "/dev/null", "/dev/fuse", "/run/fifo"]  # /dev/ptmx: the pts symlink
    assert p.devices[6] == DeviceNode("/dev/fuse", "c", 10, 229, 0o666, 1, 2)  # S_IFMT off
    assert p.devices[7] == DeviceNode("/run/fifo", "p", 0, 0, 0o666, 0, 0)


@pytest.mark.parametrize("device, field", [
    ({"path": "dev/x", "type": "c", "major": 1, "minor": 1}, "linux.devices[0].path"),
    ({"path": "/dev/x", "type": "x", "major": 1, "minor": 1}, "linux.devices[0].type"),
    ({"path": "/dev/x", "type": "c", "minor": 1}, "linux.devices[0].major"),
    ({"path": "/dev/x", "type": "b", "major": 1, "minor": -1}, "linux.devices[0].minor"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "uid": "0"},
     "linux.devices[0].uid"),
])
def test_bad_devices_name_the_field(device, field):
    with pytest.raises(InvalidOptionError) as info:
        plan(devices=[device])
    assert info.value.option == field
    assert field in str(info.value)


def test_rootfs_propagation_cwd_readonly_and_paths():
    config = {"root": {"readonly": True}, "process": {"cwd": "/srv/app"},
              "linux": {"rootfsPropagation": "rslave", "maskedPaths": ["/proc/kcore"],
                        "readonlyPaths": ["/proc/sys"],
                        "namespaces": [{"type": "mount"}]}}
    p = plan_rootfs(config, "/r/")
    assert p.rootfs == "/r"
    assert p.root_propagation == sc.MS_SLAVE | sc.MS_REC
    assert (p.readonly_rootfs, p.cwd, p.cgroupns) == (True, "/srv/app", False)
    assert (p.masked_paths, p.readonly_paths) == (("/proc/kcore",), ("/proc/sys",))
    with pytest.raises(InvalidOptionError, match="maskedPaths"):
        plan(maskedPaths=["proc/kcore"])


def test_dev_bind_mount_means_no_device_setup():
    p = plan([{"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}])
    assert not p.setup_dev


def test_cgroup_mount_lists_the_joined_v1_hierarchies():
    p = plan([{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["ro", "nosuid"]}])
    if sc.statfs_type("/sys/fs/cgroup") == 0x63677270:
        assert p.mounts[0].type == "cgroup2" and p.cgroup_v1 == ()
        return
    names = dict(p.cgroup_v1)
    for m in mountinfo():
        parent, name = os.path.split(m.mount_point)
        if m.fstype == "cgroup" and parent == "/sys/fs/cgroup" and "memory" in m.super_options:
            assert names[name].split(",").count("memory") == 1
    assert all("name=" not in data for data in names.values())


# -- resolve_in_root (securejoin) ------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../../etc")
    (root / "chain").symlink_to("abs/../real")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("/loop1")
    (root / "file").write_text("x")
    (root / "real" / "up").symlink_to("..")
    return root


@pytest.mark.parametrize("path, expected", [
    ("/", ""),
    ("/etc/passwd", "/etc/passwd"),
    ("/../../etc", "/etc"),
    ("/abs/x", "/etc/x"),
    ("/rel/x", "/etc/x"),
    ("/chain/y", "/real/y"),
    ("/real/up/real/up/abs", "/etc"),
    ("/missing/../etc", "/etc"),
    ("/missing/a/../../abs", "/etc"),
    ("relative/./x", "/relative/x"),
    ("/file/below", "/file/below"),
])
def test_resolve_in_root_stays_inside(tree, path, expected):
    assert resolve_in_root(str(tree), path) == str(tree) + expected
    assert resolve_in_root(str(tree) + "/", path) == str(tree) + expected


def test_resolve_in_root_symlink_loop(tree):
    with pytest.raises(OSError) as info:
        resolve_in_root(str(tree), "/loop1/x")
    assert info.value.errno == errno.ELOOP


# -- host side ---------------------------------------------------------------------------


def test_overlay_options_top_first_and_checked():
    data = overlay_options([Path("/l/base"), Path("/l/top")], Path("/u"), Path("/w"))
    assert data == "lowerdir=/l/top:/l/base,upperdir=/u,workdir=/w"
    with pytest.raises(ValueError, match="at least one"):
        overlay_options([], Path("/u"), Path("/w"))
    with pytest.raises(ValueError, match="must not contain"):
        overlay_options([Path("/l/a,b")], Path("/u"), Path("/w"))


def test_mountinfo_parses_every_field():
    mounts = mountinfo()
    root = [m for m in mounts if m.mount_point == "/"]
    assert root and all(isinstance(m, MountInfo) for m in mounts)
    proc = [m for m in mounts if m.fstype == "proc"]
    assert proc and proc[0].root == "/" and proc[0].options.split(",")[0] in ("rw", "ro")
    assert proc[0].super_options.split(",")[0] in ("rw", "ro")
