"""User namespaces in ``ptc-runtime`` (runtime-spec ``config-linux.md`` ``#namespaces``
and ``#user-namespace-mappings``) against the real kernel: the maps the container
sees, root inside owning files as the mapped host IDs, the other namespaces owned
by the user namespace, ``exec`` in it, joining another container's by path, and
bad mappings refused by field with nothing left.

The bundles live in a world-searchable directory of ``/tmp``: the container's root
is a host ID other than 0 and, like runc's, needs search permission on the path to
the rootfs (pytest's own temporary directories are ``0700``).

``NativeRuntime`` (in-process) has no test here: ``ContainerSpec`` cannot ask for a
user namespace.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.runtime.native.config import id_maps_of, namespaces_of

from tests.conftest import wait_for
from tests.linux.conftest import issue_id, leftovers, processes_in
from tests.linux.test_runtime_cli import Cli, configure, ptc_runtime

#: container 0..65535 -> host 200000..265535 (uids), 300000.. (gids)
UID_MAPPINGS = [{"containerID": 0, "hostID": 200000, "size": 65536}]
GID_MAPPINGS = [{"containerID": 0, "hostID": 300000, "size": 65536}]
#: ``ioctl_ns(2)``: an fd of the user namespace that owns a namespace
NS_GET_USERNS = 0xB701


@pytest.fixture
def bundle(busybox_rootfs: Path) -> Iterator[Path]:
    """A bundle (``ptc-runtime spec``, busybox rootfs copied) with a user namespace and
    :data:`UID_MAPPINGS`/:data:`GID_MAPPINGS`, in a ``0755`` directory of ``/tmp``;
    removed after the test."""
    base = Path(tempfile.mkdtemp(prefix="ptc-test-userns-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(busybox_rootfs, base / "rootfs", symlinks=True)
        (base / "rootfs").chmod(0o755)
        proc = ptc_runtime("spec", "--bundle", str(base))
        assert proc.returncode == 0, proc.stderr
        config = json.loads((base / "config.json").read_text())
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = UID_MAPPINGS
        config["linux"]["gidMappings"] = GID_MAPPINGS
        (base / "config.json").write_text(json.dumps(config))
        yield base
    finally:
        shutil.rmtree(base)


def _owner_userns(pid: int, kind: str) -> int:
    """The inode of the user namespace owning ``/proc/<pid>/ns/<kind>``."""
    fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def test_root_in_a_user_namespace_is_the_mapped_host_id(bundle: Path, cli: Cli,
                                                        tmp_path: Path) -> None:
    """Inside: the maps as configured, ``id`` 0/0; a file made in a tmpfs is owned by
    host 200000:300000 seen through ``/proc/<pid>/root``; every other namespace,
    pid included, is owned by the container's user namespace; ``exec`` joins it."""
    configure(bundle, "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
              "touch /dev/shm/made-inside; exec sleep 30")
    cid, created, out, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    started = ptc_runtime("start", cid)
    assert started.returncode == 0, started.stderr
    pid = cli.state(cid)["pid"]
    made = Path(f"/proc/{pid}/root/dev/shm/made-inside")
    assert wait_for(made.exists)
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (200000, 300000)
    lines = [line.split() for line in out.read_text().splitlines()]
    assert lines == [["0", "200000", "65536"], ["0", "300000", "65536"], ["0"], ["0"]]
    userns = os.stat(f"/proc/{pid}/ns/user").st_ino
    assert userns != os.stat("/proc/self/ns/user").st_ino
    for kind in ("mnt", "pid", "net", "ipc", "uts", "cgroup"):
        assert _owner_userns(pid, kind) == userns, kind
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Uid:\t200000\t200000\t200000\t200000" in status
    inside = ptc_runtime("exec", cid, "sh", "-c", "id -u; readlink /proc/self/ns/user; "
                         "grep CapEff /proc/self/status")
    assert inside.returncode == 0, inside.stderr
    uid, ns, caps = inside.stdout.splitlines()
    assert uid == "0" and ns == os.readlink(f"/proc/{pid}/ns/user")
    assert int(caps.split()[1], 16) != 0  # root of its namespace keeps its capabilities


def test_second_container_joins_the_user_namespace_by_path(bundle: Path, cli: Cli) -> None:
    """B joins A's user namespace by path (no mappings of its own): B is in it, sees
    A's maps, and its new namespaces are owned by it; a foreground ``run``."""
    configure(bundle, "sleep", "30")
    first, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", first).returncode == 0
    pid = cli.state(first)["pid"]
    second_bundle = bundle / "second"
    second_bundle.mkdir()
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["sh", "-c", "readlink /proc/self/ns/user; "
                                 "cat /proc/self/uid_map; id -u"]
    config["linux"]["namespaces"] = [
        n for n in config["linux"]["namespaces"] if n["type"] != "user"] + [
        {"type": "user", "path": f"/proc/{pid}/ns/user"}]
    del config["linux"]["uidMappings"], config["linux"]["gidMappings"]
    config["root"]["path"] = str(bundle / "rootfs")
    (second_bundle / "config.json").write_text(json.dumps(config))
    second = issue_id()
    proc = ptc_runtime("run", "--bundle", str(second_bundle), second)
    assert proc.returncode == 0, proc.stderr
    ns, mapping, uid = proc.stdout.splitlines()
    assert ns == os.readlink(f"/proc/{pid}/ns/user")
    assert mapping.split() == ["0", "200000", "65536"] and uid == "0"
    assert leftovers(second) == [] and processes_in(second) == []
    assert cli.state(first)["status"] == "running"


@pytest.mark.parametrize(("change", "field"), [
    ({"uidMappings": [{"containerID": 0, "hostID": 200000, "size": 100},
                      {"containerID": 50, "hostID": 400000, "size": 100}]},
     "linux.uidMappings[1].containerID"),
    ({"gidMappings": [{"containerID": 0, "hostID": 300000, "size": 100},
                      {"containerID": 100, "hostID": 300050, "size": 100}]},
     "linux.gidMappings[1].hostID"),
    ({"uidMappings": [{"containerID": 0, "hostID": 200000, "size": 0}]},
     "linux.uidMappings[0].size"),
    ({"uidMappings": None}, "linux.uidMappings"),
    ({"gidMappings": []}, "linux.gidMappings"),
    ({"uidMappings": [{"containerID": 1, "hostID": 200000, "size": 10}]},
     "linux.uidMappings"),
    ({"uidMappings": [{"containerID": 0, "hostID": "200000", "size": 10}]},
     "linux.uidMappings[0].hostID"),
], ids=["overlapping-container-ids", "overlapping-host-ids", "size-0", "no-uid-mappings",
        "no-gid-mappings", "root-not-mapped", "hostid-type"])
def test_bad_mappings_name_the_field_and_leave_nothing(bundle: Path, cli: Cli,
                                                       change: dict, field: str) -> None:
    config = json.loads((bundle / "config.json").read_text())
    for key, value in change.items():
        if value is None:
            del config["linux"][key]
        else:
            config["linux"][key] = value
    configure(bundle, "true", linux=config["linux"])
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert field in created.stderr, created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_mappings_without_a_user_namespace_are_refused(bundle: Path, cli: Cli) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "user"]
    configure(bundle, "true", linux=config["linux"])
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert "linux.uidMappings" in created.stderr and "user namespace" in created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_a_mapping_the_kernel_refuses_fails_at_the_user_namespace(bundle: Path,
                                                                  cli: Cli) -> None:
    """Host IDs past the kernel's limit (4294967295 is never mappable): the error names
    the field and the step, and the forked child is gone."""
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 4294967294, "size": 2}]
    configure(bundle, "true", linux=config["linux"])
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert "linux.uidMappings" in created.stderr, created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_config_check_accepts_maps_of_a_caller_that_is_not_root(bundle: Path) -> None:
    """The config check, run by a forked child that dropped to uid/gid 65534, takes the
    maps as they are: what a rootless caller may map is decided when they are
    written (directly or by newuidmap, tests/linux/test_rootless.py)."""
    config = json.loads((bundle / "config.json").read_text())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                id_maps_of(config, namespaces_of(config))
                message = "accepted"
            except ValueError as exc:
                message = f"{getattr(exc, 'option', None)} {exc}"
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            message = reader.read().decode()
    finally:
        os.waitpid(pid, 0)
    assert message == "accepted", message


def test_cgroup_mount_needs_a_cgroup_namespace(bundle: Path, cli: Cli) -> None:
    """With a cgroup namespace the v1 hierarchies are mounted in the user namespace
    (the container sees its own cgroup as ``/``); without one the config is refused,
    naming the mount (the init could not return to the host's cgroup namespace)."""
    config = json.loads((bundle / "config.json").read_text())
    mounts = [*config["mounts"], {"destination": "/sys/fs/cgroup", "type": "cgroup",
                                  "source": "cgroup", "options": ["ro", "nosuid"]}]
    configure(bundle, "sh", "-c", "ls /sys/fs/cgroup/memory/cgroup.procs; "
              "grep memory /proc/self/cgroup", mounts=mounts)
    cid = issue_id()
    proc = ptc_runtime("run", "--bundle", str(bundle), cid)
    assert proc.returncode == 0, proc.stderr
    procs, memory = proc.stdout.splitlines()
    assert procs == "/sys/fs/cgroup/memory/cgroup.procs" and memory.endswith(":memory:/")
    assert leftovers(cid) == []
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "cgroup"]
    configure(bundle, "true", mounts=mounts, linux=config["linux"])
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert f"mounts[{len(mounts) - 1}].type" in created.stderr, created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []
