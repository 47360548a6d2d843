"""The container filesystem against the real kernel: config.json ``mounts``, devices,
masked and read-only paths, ``root.readonly``, ``rootfsPropagation`` and cgroup
mounts (runtime-spec ``config.md#mounts``, ``config-linux.md``).

Config-only features run :func:`plan_rootfs` + :func:`setup_rootfs` (+
:func:`finish_rootfs`) in a forked child that does ``unshare(CLONE_NEWNS)`` and mounts
an overlay over the busybox rootfs, as the native init does, then execs busybox
inside to look at the result. The rootfs mount point carries the test's id, so the
leak check of ``conftest.py`` sees any mount that reached the host.
"""

from __future__ import annotations

import copy
import errno
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.runtime.linux import syscalls as sc
from pytest_containers.runtime.linux.cgroups import CgroupV1
from pytest_containers.runtime.linux.mounts import (
    finish_rootfs,
    mount_overlay,
    mountinfo,
    plan_rootfs,
    setup_rootfs,
)
from pytest_containers.runtime.native.child import join_cgroup_at, open_dirs
from pytest_containers.runtime.spec import DEFAULT_MOUNTS, MASKED_PATHS, READONLY_PATHS
from pytest_containers.runtime.types import Mount, Resources

from pytest_containers.exceptions import ContainerStartError, InvalidOptionError

from .conftest import issue_id

BUSYBOX_SH = "/bin/busybox"


def base_config(**linux: Any) -> dict[str, Any]:
    """What ``spec.to_config`` writes for the filesystem, plus ``linux`` overrides."""
    config: dict[str, Any] = {
        "process": {"cwd": "/"},
        "root": {"path": "rootfs", "readonly": False},
        "mounts": copy.deepcopy(list(DEFAULT_MOUNTS)),
        "linux": {"maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS),
                  "namespaces": [{"type": t} for t in ("pid", "mount", "cgroup")]},
    }
    config["linux"].update(linux)
    return config


@dataclass
class Ran:
    status: int
    out: str
    err: str

    @property
    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)


def _read_both(out_r: int, err_r: int, timeout: float) -> tuple[bytes, bytes]:
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    open_fds = {out_r, err_r}
    deadline = time.monotonic() + timeout
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("container filesystem test child still running")
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


class Rootfs:
    """Runs configs over an overlay of the busybox rootfs (plus extra layers) in a forked
    child with its own mount namespace; state under ``tmp/<id>``."""

    def __init__(self, lower: Path, tmp: Path) -> None:
        self.lower = lower
        self.id = issue_id()
        self.base = tmp / self.id
        self.base.mkdir()
        self.rootfs = self.base / "rootfs"
        self.cgroups: list[CgroupV1] = []

    def layer(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        return path

    def run(self, config: dict[str, Any], script: str, *, layers: tuple[Path, ...] = (),
            cgroup: CgroupV1 | None = None, cgroupns: bool = True,
            timeout: float = 20.0) -> Ran:
        """``setup_rootfs`` then ``sh -c script`` in the child; a failure before the exec
        comes back as exit 127 with ``step: error`` on stderr."""
        for name in ("rootfs", "upper", "work"):
            (self.base / name).mkdir(exist_ok=True)
        plan = plan_rootfs(config, self.rootfs)
        open_paths: tuple[tuple[str, str], ...] = ()
        if cgroup is not None:
            open_paths = tuple((str(d), rel) for d, rel in cgroup.self_join_paths())
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            step = ["unshare"]
            try:
                os.close(out_r)
                os.close(err_r)
                sc.set_pdeathsig(signal.SIGKILL)
                sc.unshare(sc.CLONE_NEWNS)
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                step[0] = "overlay"
                mount_overlay(self.rootfs, [self.lower, *layers], self.base / "upper",
                              self.base / "work")
                join = open_dirs(open_paths)
                null = os.open("/dev/null", os.O_RDONLY)  # the host's: /dev may be empty
                setup_rootfs(plan, step)
                step[0] = "cgroup"
                join_cgroup_at(join)
                if cgroup is not None and cgroupns:
                    sc.unshare(sc.CLONE_NEWCGROUP)
                finish_rootfs(plan, step)
                step[0] = "exec"
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.execve(BUSYBOX_SH, ["sh", "-c", script], {"PATH": "/bin"})
            except BaseException as exc:  # noqa: B036 - everything must reach the parent
                try:
                    os.write(err_w, f"{step[0]}: {type(exc).__name__}: {exc}".encode())
                except BaseException:  # noqa: B036
                    pass
            os._exit(127)
        os.close(out_w)
        os.close(err_w)
        try:
            out, err = _read_both(out_r, err_r, timeout)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(out_r)
            os.close(err_r)
            status = os.waitpid(pid, 0)[1]
        return Ran(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def cgroup(self, resources: Resources) -> CgroupV1:
        cgroup = CgroupV1(f"/ptc/{self.id}")
        cgroup.create(resources)
        self.cgroups.append(cgroup)
        return cgroup

    def cleanup(self) -> None:
        for cgroup in self.cgroups:
            cgroup.remove()


@pytest.fixture
def box(busybox_rootfs: Path, tmp_path: Path):
    """Function: a :class:`Rootfs` over the busybox rootfs; removes its cgroups."""
    helper = Rootfs(busybox_rootfs, tmp_path)
    try:
        yield helper
    finally:
        helper.cleanup()
    assert not any(helper.id in m.mount_point for m in mountinfo())  # nothing on the host


def mount_line(mountinfo_text: str, mount_point: str) -> str:
    lines = [ln for ln in mountinfo_text.splitlines() if ln.split()[4] == mount_point]
    assert lines, f"{mount_point} not mounted:\n{mountinfo_text}"
    return lines[-1]


# -- /dev ----------------------------------------------------------------------------


def test_dev_has_exactly_the_default_devices_and_links(box):
    ran = box.run(base_config(), "ls -a /dev; echo ---; "
                  "for d in null zero full random urandom tty; do "
                  "stat -c '%n %F %t %T %a' /dev/$d; done; echo ---; "
                  "for l in fd stdin stdout stderr ptmx core; do "
                  "[ -L /dev/$l ] && echo $l $(readlink /dev/$l); done; "
                  "echo ---; grep -E ' /dev(/pts|/shm|/mqueue)? ' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    names, devices, links, mounts = ran.out.split("---\n")
    has_core = os.path.exists("/proc/kcore")
    expected = {".", "..", "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin",
                "stdout", "stderr", "ptmx", "pts", "shm", "mqueue"} | ({"core"} if has_core
                                                                        else set())
    assert set(names.split()) == expected
    assert devices.splitlines() == [
        "/dev/null character special file 1 3 666",
        "/dev/zero character special file 1 5 666",
        "/dev/full character special file 1 7 666",
        "/dev/random character special file 1 8 666",
        "/dev/urandom character special file 1 9 666",
        "/dev/tty character special file 5 0 666",
    ]
    assert links.splitlines() == [
        "fd /proc/self/fd", "stdin /proc/self/fd/0", "stdout /proc/self/fd/1",
        "stderr /proc/self/fd/2", "ptmx pts/ptmx",
    ] + (["core /proc/kcore"] if has_core else [])
    fstypes = {ln.split()[4]: ln.split(" - ")[1].split()[0] for ln in mounts.splitlines()}
    assert fstypes == {"/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
                       "/dev/mqueue": "mqueue"}


def test_devices_work(box):
    ran = box.run(base_config(), "head -c 4 /dev/zero | od -An -tx1; head -c 16 /dev/urandom "
                  "| wc -c; echo gone > /dev/null && echo NULL; echo x > /dev/full || echo FULL")
    assert ran.exit_code == 0, ran.err
    assert ran.out.split() == ["00", "00", "00", "00", "16", "NULL", "FULL"]
    assert "No space left on device" in ran.err


def test_config_devices_with_numbers_mode_and_owner(box):
    config = base_config(devices=[
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600,
         "uid": 1000, "gid": 1001},
        {"path": "/dev/loop-ptc", "type": "b", "major": 7, "minor": 200, "fileMode": 0o640},
        {"path": "/run/ptc.fifo", "type": "p", "fileMode": 0o620, "gid": 5},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
    ])
    ran = box.run(config, "stat -c '%n %F %t %T %a %u %g' /dev/fuse /dev/loop-ptc "
                  "/run/ptc.fifo /dev/null")
    assert ran.exit_code == 0, ran.err
    assert ran.out.splitlines() == [
        "/dev/fuse character special file a e5 600 1000 1001",
        "/dev/loop-ptc block special file 7 c8 640 0 0",
        "/run/ptc.fifo fifo 0 0 620 0 5",
        "/dev/null character special file 1 3 600 0 0",  # the config's entry wins
    ]


def test_config_device_over_a_different_file_is_an_error(box):
    layer = box.layer("layer")
    (layer / "etc").mkdir()
    (layer / "etc" / "fuse").write_text("a file\n")
    config = base_config(devices=[
        {"path": "/etc/fuse", "type": "c", "major": 10, "minor": 229}])
    ran = box.run(config, "true", layers=(layer,))
    assert ran.exit_code == 127
    assert ran.err.startswith("devices: FileExistsError") and "/etc/fuse" in ran.err


def test_devpts_new_instance_with_ptmx(box):
    ran = box.run(base_config(), "ls /dev/pts; echo ---; exec 3<>/dev/ptmx; ls /dev/pts; "
                  "stat -c '%a %g' /dev/pts/0 /dev/pts/ptmx")
    assert ran.exit_code == 0, ran.err
    before, after = ran.out.split("---\n")
    assert before.split() == ["ptmx"]
    lines = after.splitlines()
    assert lines[:2] == ["0", "ptmx"]
    assert lines[2].split()[0] == "620"  # mode=0620
    assert lines[3] == "666 0"  # ptmxmode=0666


def test_no_devices_when_dev_is_a_bind_mount(box, tmp_path):
    devdir = tmp_path / "devdir"
    devdir.mkdir()
    config = base_config()
    config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
    config["mounts"].append({"destination": "/dev", "type": "bind", "source": str(devdir),
                             "options": ["rbind"]})
    config["linux"]["maskedPaths"].append("/etc/passwd")  # with the host's /dev/null
    ran = box.run(config, "ls -a /dev | wc -l; wc -c < /etc/passwd")
    assert ran.exit_code == 0, ran.err
    assert ran.out.split() == ["2", "0"]  # . and ..: runc's needsSetupDev
    assert list(devdir.iterdir()) == []


# -- binds, symlinks, tmpfs --------------------------------------------------------


def test_bind_ro_is_read_only_and_rw_writes_reach_the_host(box, tmp_path):
    ro_dir, rw_dir = tmp_path / "ro", tmp_path / "rw"
    ro_dir.mkdir()
    rw_dir.mkdir()
    (ro_dir / "data").write_text("host data\n")
    (tmp_path / "one-file").write_text("single file\n")
    config = base_config()
    config["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(ro_dir),
         "options": ["rbind", "rprivate", "ro"]},
        {"destination": "/srv/rw", "type": "bind", "source": str(rw_dir),
         "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/etc/file.conf", "source": str(tmp_path / "one-file"),
         "options": ["bind", "ro", "nosuid", "nodev", "noexec"]},
    ]
    ran = box.run(config, "cat /ro/data; touch /ro/new || echo RO; echo written > /srv/rw/out "
                  "&& echo RW; cat /etc/file.conf; echo x >> /etc/file.conf || echo FILE-RO; "
                  "grep -E ' /(ro|srv/rw|etc/file.conf) ' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[:5] == ["host data", "RO", "RW", "single file", "FILE-RO"]
    opts = {ln.split()[4]: ln.split()[5].split(",") for ln in lines[5:]}
    assert opts["/ro"][0] == "ro" and opts["/srv/rw"][0] == "rw"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts["/etc/file.conf"])
    assert ran.err.count("Read-only file system") == 2
    assert (rw_dir / "out").read_text() == "written\n"
    assert sorted(p.name for p in ro_dir.iterdir()) == ["data"]
    assert (tmp_path / "one-file").read_text() == "single file\n"
    # the targets were created in the container's upper layer, not on the host
    assert (box.base / "upper" / "srv" / "rw").is_dir()
    assert (box.base / "upper" / "etc" / "file.conf").is_file()


def test_symlinks_in_the_image_never_lead_to_the_host(box, tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    layer = box.layer("evil")
    (layer / "abs").symlink_to(canary)  # absolute: resolved inside the rootfs
    (layer / "rel").symlink_to("../../../../../../../../../../" + str(canary).lstrip("/"))
    (layer / "hop").symlink_to("/abs")
    (layer / "etc").mkdir()
    (layer / "etc" / "up").symlink_to("../../..")
    source = tmp_path / "src"
    source.mkdir()
    config = base_config()
    config["mounts"] += [
        {"destination": "/abs/t1", "type": "tmpfs", "source": "tmpfs", "options": []},
        {"destination": "/rel/t2", "type": "bind", "source": str(source), "options": ["bind"]},
        {"destination": "/hop/t3", "type": "tmpfs", "source": "tmpfs", "options": []},
        {"destination": "/etc/up/etc/../t4", "type": "tmpfs", "source": "tmpfs"},
    ]
    ran = box.run(config, "cat /proc/self/mountinfo", layers=(layer,))
    assert ran.exit_code == 0, ran.err
    assert list(canary.iterdir()) == []
    points = [ln.split()[4] for ln in ran.out.splitlines()]
    # /abs -> <canary> is <rootfs><canary> inside; /rel too; /hop -> /abs the same
    inside = str(canary)
    assert f"{inside}/t1" in points and f"{inside}/t2" in points
    assert f"{inside}/t3" in points and "/t4" in points
    upper = box.base / "upper"
    assert (upper / str(canary).lstrip("/") / "t1").is_dir()
    assert (upper / "t4").is_dir()


def test_symlink_loop_and_proc_over_a_symlink_are_errors(box):
    layer = box.layer("loops")
    (layer / "loop").symlink_to("loop")
    config = base_config()
    config["mounts"].append({"destination": "/loop/x", "type": "tmpfs", "source": "tmpfs"})
    ran = box.run(config, "true", layers=(layer,))
    assert ran.exit_code == 127
    assert ran.err.startswith("mount /loop/x: OSError") and "symbolic links" in ran.err

    layer2 = box.layer("procsym")
    (layer2 / "proc").symlink_to("/etc")  # hides the lower layer's /proc directory
    ran = box.run(base_config(), "true", layers=(layer2,))
    assert ran.exit_code == 127
    assert ran.err.startswith("mount /proc: NotADirectoryError"), ran.err
    assert "must be mounted on a directory" in ran.err
    assert not (box.base / "upper" / "etc").exists()  # nothing was mounted through it


def test_mounts_below_proc_are_refused(box, tmp_path):
    (tmp_path / "f").write_text("x")
    config = base_config()
    config["mounts"].append({"destination": "/proc/sys/kernel/core_pattern", "type": "bind",
                             "source": str(tmp_path / "f"), "options": ["bind"]})
    ran = box.run(config, "true")
    assert ran.exit_code == 127
    assert ran.err.startswith("mount /proc/sys/kernel/core_pattern: PermissionError")
    config["mounts"][-1]["destination"] = "/proc/uptime"  # what lxcfs covers: allowed
    ran = box.run(config, "cat /proc/uptime")
    assert (ran.exit_code, ran.out) == (0, "x"), ran.err


def test_missing_bind_source_names_the_mount(box, tmp_path):
    config = base_config()
    config["mounts"].append({"destination": "/data", "type": "bind",
                             "source": str(tmp_path / "missing"), "options": ["rbind"]})
    ran = box.run(config, "true")
    assert ran.exit_code == 127
    assert ran.err.startswith("mount /data: FileNotFoundError")
    assert str(tmp_path / "missing") in ran.err
    assert not (box.base / "upper" / "data").exists()


def test_tmpfs_size_and_mode_are_enforced(box):
    config = base_config()
    config["mounts"].append({"destination": "/small", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "size=1m", "mode=0710", "uid=1000"]})
    ran = box.run(config, "stat -c '%a %u' /small; dd if=/dev/zero of=/small/f bs=64k "
                  "count=64 2>/dev/null || echo FULL; du -k /small/f; "
                  "grep ' /small ' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "710 1000"
    assert lines[1] == "FULL"
    assert int(lines[2].split()[0]) <= 1024
    assert "size=1024k" in lines[3] and "nosuid" in lines[3].split()[5]


def test_tmpfs_keeps_the_image_directory_mode(box):
    layer = box.layer("tmpmode")
    (layer / "scratch").mkdir()
    os.chmod(layer / "scratch", 0o1777)
    config = base_config()
    config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"})
    ran = box.run(config, "stat -c %a /scratch", layers=(layer,))
    assert (ran.exit_code, ran.out) == (0, "1777\n"), ran.err


def test_tmpcopyup_copies_the_image_content(box):
    layer = box.layer("copyup")
    (layer / "etc").mkdir()
    (layer / "etc" / "app.conf").write_text("from the image\n")
    os.chmod(layer / "etc" / "app.conf", 0o640)
    (layer / "etc" / "link").symlink_to("app.conf")
    (layer / "etc" / "sub").mkdir()
    (layer / "etc" / "sub" / "deep").write_text("deep\n")
    config = base_config()
    config["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                             "options": ["tmpcopyup", "size=1m"]})
    ran = box.run(config, "cat /etc/app.conf /etc/link /etc/sub/deep /etc/passwd; "
                  "stat -c %a /etc/app.conf; echo new > /etc/new; "
                  "grep ' /etc ' /proc/self/mountinfo | grep -c tmpfs", layers=(layer,))
    assert ran.exit_code == 0, ran.err
    assert ran.out.splitlines() == ["from the image", "from the image", "deep",
                                    "root:x:0:0:root:/root:/bin/sh", "640", "1"]
    assert not (box.base / "upper" / "etc" / "new").exists()  # written to the tmpfs


def test_recursive_read_only_covers_submounts(box):
    config = base_config()
    config["mounts"].append({"destination": "/hostsys", "type": "bind", "source": "/sys",
                             "options": ["rbind", "rro", "rprivate"]})
    ran = box.run(config, "mkdir /hostsys/fs/cgroup/ptc-x || echo RRO; "
                  "grep -c ' /hostsys/fs/cgroup/memory .*ro,' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    assert ran.out.split() == ["RRO", "1"]
    assert not os.path.exists("/sys/fs/cgroup/ptc-x")


# -- propagation ---------------------------------------------------------------------


def test_mount_and_rootfs_propagation(box, tmp_path):
    (tmp_path / "p").mkdir()
    config = base_config(rootfsPropagation="shared")
    config["mounts"] += [
        {"destination": "/shared", "type": "tmpfs", "source": "tmpfs", "options": ["rshared"]},
        {"destination": "/unbindable", "type": "tmpfs", "source": "tmpfs",
         "options": ["unbindable"]},
        {"destination": "/private", "type": "bind", "source": str(tmp_path / "p"),
         "options": ["rbind", "rprivate"]},
    ]
    ran = box.run(config, "cat /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err

    def optional(point: str) -> str:
        fields = mount_line(ran.out, point).split()
        return " ".join(fields[6:fields.index("-")])

    assert optional("/").startswith("shared:")
    assert optional("/shared").startswith("shared:")
    assert optional("/unbindable") == "unbindable"
    assert optional("/private") == ""
    assert optional("/proc") == ""  # only the root was made shared


def test_bad_rootfs_propagation_is_refused(box):
    with pytest.raises(InvalidOptionError, match="rootfsPropagation") as info:
        plan_rootfs(base_config(rootfsPropagation="sideways"), box.rootfs)
    assert info.value.option == "linux.rootfsPropagation"


# -- masked, read-only, root.readonly ---------------------------------------------------


def test_masked_and_readonly_paths(box):
    config = base_config()
    config["linux"]["maskedPaths"] += ["/etc/passwd", "/no/such/path"]
    config["linux"]["readonlyPaths"] += ["/etc"]
    ran = box.run(config, "wc -c < /proc/keys; wc -c < /proc/timer_list; ls -a /sys/firmware | "
                  "wc -l; wc -c < /etc/passwd; echo 1 > /proc/sys/kernel/ns_last_pid || "
                  "echo SYS-RO; touch /etc/x || echo ETC-RO; touch /x && echo ROOT-RW; "
                  "grep ' /sys/firmware ' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[:7] == ["0", "0", "2", "0", "SYS-RO", "ETC-RO", "ROOT-RW"]
    assert lines[-1].split()[5].startswith("ro") and " - tmpfs " in lines[-1]


def test_readonly_rootfs_with_writable_tmpfs(box):
    config = base_config()
    config["root"]["readonly"] = True
    config["process"]["cwd"] = "/work/dir"
    config["mounts"] += [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},
        {"destination": "/frozen", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]},
    ]
    ran = box.run(config, "touch /x || echo ROOT-RO; touch /tmp/y && echo TMP-RW; "
                  "touch /frozen/z || echo TMPFS-RO; echo z > /dev/shm/z && echo SHM-RW; "
                  "[ -d /work/dir ] && echo CWD; "
                  "awk '$5 == \"/\" || $5 == \"/frozen\"' /proc/self/mountinfo")
    assert ran.exit_code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[:5] == ["ROOT-RO", "TMP-RW", "TMPFS-RO", "SHM-RW", "CWD"]
    for line in lines[5:]:
        assert line.split()[5].split(",")[0] == "ro", line
    assert ran.err.count("Read-only file system") == 2


# -- cgroup mounts -----------------------------------------------------------------


@pytest.mark.parametrize("cgroupns", [True, False], ids=["cgroupns", "host-cgroupns"])
def test_cgroup_mount_shows_the_containers_own_cgroup(box, cgroupns):
    cgroup = box.cgroup(Resources(memory_max_bytes=48 << 20, pids_max=33))
    config = base_config()
    if not cgroupns:
        config["linux"]["namespaces"] = [{"type": "mount"}]
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                             "source": "cgroup",
                             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    ran = box.run(config, "ls /sys/fs/cgroup; echo ---; "
                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
                  "grep -c . /sys/fs/cgroup/memory/tasks; mkdir /sys/fs/cgroup/memory/sub || "
                  "echo CG-RO; mkdir /sys/fs/cgroup/x || echo TMPFS-RO; echo ---; "
                  "grep ':memory:' /proc/self/cgroup", cgroup=cgroup, cgroupns=cgroupns)
    assert ran.exit_code == 0, ran.err
    names, values, own = ran.out.split("---\n")
    assert set(names.split()) >= {"memory", "pids", "cpu", "cpuacct", "cpuset", "devices",
                                  "freezer", "blkio"}
    assert "systemd" not in names.split()  # only the hierarchies the container joins
    assert values.split() == [str(48 << 20), "33", "2", "CG-RO", "TMPFS-RO"]  # sh, grep
    # in its own cgroup namespace the container's cgroup is its root
    assert own.strip().endswith(":memory:/" if cgroupns else f":memory:/ptc/{box.id}")


# -- plan errors and the engine ------------------------------------------------------


def test_unknown_option_names_destination_and_option(box):
    config = base_config()
    config["mounts"].append({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "sise=1m"]})
    with pytest.raises(InvalidOptionError) as info:
        plan_rootfs(config, box.rootfs)
    assert "/data" in str(info.value) and "'sise=1m'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_engine_bind_volume_rw_reaches_host_and_ro_refuses(containers, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "seed").write_text("seed\n")
    status, out, err, _ = containers.run(
        "sh", "-c", "cat /vol/seed; echo from-container > /vol/out && echo W; "
        "touch /ro/x || echo RO; cat /ro/seed",
        mounts=(Mount("/vol", source=str(volume)), Mount("/ro", source=str(volume),
                                                         read_only=True)))
    assert status.exit_code == 0, err
    assert out.splitlines() == ["seed", "W", "RO", "seed"]
    assert (volume / "out").read_text() == "from-container\n"
    assert not (volume / "x").exists()


def test_engine_failed_mount_leaves_nothing(native_runtime, containers, tmp_path):
    cid = containers.new_id()
    (tmp_path / "f").write_text("x")
    spec = containers.spec("true", mounts=(Mount("/proc/sys/kernel/core_pattern",
                                                 source=str(tmp_path / "f")),))
    with pytest.raises(ContainerStartError) as info:
        native_runtime.start(spec, container_id=cid)
    assert info.value.step == "mount /proc/sys/kernel/core_pattern"
    assert info.value.errno == errno.EPERM
