"""The native engine against the real kernel: namespaces, overlay, cgroups v1."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.capabilities import (
    NAMES,
    CapabilitySets,
    UnknownCapabilityError,
    last_cap,
    mask_of,
    names_of,
)
from pytest_containers.runtime.linux.cgroups import remove_everywhere
from pytest_containers.runtime.native.engine import NativeRuntime
from pytest_containers.runtime.protocol import Container, Runtime
from pytest_containers.runtime.spec import DEFAULT_CAPABILITIES
from pytest_containers.runtime.sweep import sweep
from pytest_containers.runtime.types import Mount, Resources

from pytest_containers.exceptions import CommandNotFoundError, ContainerStartError
from tests.conftest import wait_for

from .conftest import CGROUP_ROOT, STATE_ROOT, issue_id, leftovers, processes_in


def test_protocols(native_runtime, containers):
    assert isinstance(native_runtime, Runtime)
    assert native_runtime.name == "native"
    c = containers.start("true")
    assert isinstance(c, Container)
    assert c.wait(10).exit_code == 0


def test_pid_1(containers):
    status, out, err, _ = containers.run("sh", "-c", "echo $$; cut -d' ' -f1 /proc/self/stat; true")
    assert (status.exit_code, err) == (0, "")
    lines = out.split()
    assert lines[0] == "1"
    assert int(lines[1]) > 1  # cut: a child in the same namespace


def test_hostname(containers):
    status, out, _, _ = containers.run("hostname", hostname="box-7")
    assert status.exit_code == 0
    assert out.strip() == "box-7"


def test_only_loopback_and_up(containers):
    status, out, err, _ = containers.run(
        "sh", "-c", "cat /proc/net/dev; echo ---; ip link; echo ---; ip addr show lo")
    assert status.exit_code == 0, err
    netdev, iplink, addr = out.split("---")
    names = [line.split(":")[0].strip() for line in netdev.splitlines()[2:] if line.strip()]
    assert names == ["lo"]
    links = [line for line in iplink.splitlines() if line[:1].isdigit()]
    assert len(links) == 1 and links[0].startswith("1: lo:")
    assert "UP" in links[0].split("<")[1].split(">")[0].split(",")
    assert "127.0.0.1" in addr


def test_host_network(containers):
    status, out, _, _ = containers.run("cat", "/proc/net/dev", network="host")
    host = Path("/proc/net/dev").read_text()
    assert status.exit_code == 0
    names = sorted(line.split(":")[0].strip() for line in out.splitlines()[2:])
    host_names = sorted(line.split(":")[0].strip() for line in host.splitlines()[2:])
    assert names == host_names


def test_rootfs_is_overlay_writes_go_to_upper(containers, busybox_rootfs):
    c = containers.start("sh", "-c", "echo new > /created; echo changed > /lower-marker; "
                         "grep ' / / ' /proc/self/mountinfo")
    status = c.wait(10)
    assert status.exit_code == 0, c.stderr_path.read_text()
    root_line = c.stdout_path.read_text()
    assert " - overlay ptc " in root_line and "upperdir=" in root_line
    upper = c.state_dir / "upper"
    assert (upper / "created").read_text() == "new\n"
    assert (upper / "lower-marker").read_text() == "changed\n"
    assert not (busybox_rootfs / "created").exists()
    assert (busybox_rootfs / "lower-marker").read_text() == "from the lower layer\n"


def test_sys_readonly_and_masked_paths(containers):
    status, out, err, _ = containers.run(
        "sh", "-c",
        "grep ' /sys ' /proc/mounts; touch /sys/x && echo WROTE; "
        "echo 1 > /proc/sys/kernel/ns_last_pid && echo WROTE2; cat /proc/keys | wc -c")
    assert status.exit_code == 0
    sys_line, keys = out.splitlines()[0], out.splitlines()[-1]
    assert sys_line.split()[3].split(",")[0] == "ro"
    assert "WROTE" not in out
    assert "Read-only file system" in err
    assert keys.strip() == "0"  # masked by /dev/null


def test_readonly_rootfs_and_tmpfs_mount(containers):
    status, out, err, _ = containers.run(
        "sh", "-c", "touch /x || echo RO; touch /scratch/y && echo TMPFS",
        read_only_rootfs=True, mounts=(Mount("/scratch", type="tmpfs"),))
    assert status.exit_code == 0
    assert out.split() == ["RO", "TMPFS"]


def test_bind_mount_symlink_stays_in_rootfs(containers, tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    (source / "f").write_text("bound\n")
    status, out, err, _ = containers.run(
        "cat", "/etc/data/f", mounts=(Mount("/etc/data", source=str(source), read_only=True),))
    assert (status.exit_code, out) == (0, "bound\n"), err


def test_exit_codes_and_signals(containers):
    assert containers.run("sh", "-c", "exit 3")[0].exit_code == 3
    c = containers.start("sleep", "100")
    assert c.poll() is None
    with pytest.raises(TimeoutError):
        c.wait(0.05)
    c.kill(signal.SIGKILL)
    status = c.wait(10)
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, False)
    c.kill(signal.SIGKILL)  # already exited: no error


def test_stdout_stderr_separate(containers):
    status, out, err, _ = containers.run("sh", "-c", "echo to-out; echo to-err >&2")
    assert (status.exit_code, out, err) == (0, "to-out\n", "to-err\n")


def test_env_cwd_user(containers):
    status, out, _, _ = containers.run(
        "sh", "-c", "echo $GREETING; pwd; id -u; id -g",
        env=("PATH=/bin", "GREETING=hello"), cwd="/tmp", uid=1000, gid=1001)
    assert status.exit_code == 0
    assert out.split() == ["hello", "/tmp", "1000", "1001"]


def test_oom_killed_from_counter(containers):
    c = containers.start("dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
                         resources=Resources(memory_max_bytes=64 << 20))
    status = c.wait(30)
    stats = c.stats()
    assert status.oom_killed is True
    assert status.exit_code == 137
    assert stats.oom_kills == 1
    assert stats.memory_peak_bytes is not None and stats.memory_peak_bytes <= 64 << 20
    limit = CGROUP_ROOT / "memory" / "ptc" / c.id / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 64 << 20


def test_exit_137_without_oom_is_not_oom(containers):
    status = containers.run(
        "sh", "-c", "exit 137", resources=Resources(memory_max_bytes=64 << 20))[0]
    assert (status.exit_code, status.oom_killed) == (137, False)


def test_fork_loop_stops_at_pids_limit(containers):
    c = containers.start("sleep", "100", resources=Resources(pids_max=16))
    # busybox sh gives up at its first failed fork: run the loop as an exec
    result = c.exec(["sh", "-c", "for i in $(seq 40); do sleep 30 & done; echo unreachable"],
                    timeout=20)
    assert result.exit_code != 0
    assert b"can't fork" in result.stderr
    assert b"unreachable" not in result.stdout
    stats = c.stats()
    assert stats.pids_peak == 16
    # left: PID 1 and the sleeps forked before the limit (sh and the exec helper exited)
    assert 1 < stats.pids_current <= 14
    assert int((CGROUP_ROOT / "pids" / "ptc" / c.id / "pids.max").read_text()) == 16


def test_cpu_quota_written_and_throttled(containers):
    c = containers.start("sh", "-c", "while :; do :; done",
                         resources=Resources.from_options(cpus=0.2))
    cpu = CGROUP_ROOT / "cpu" / "ptc" / c.id
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 20_000
    assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
    time.sleep(0.5)
    stats = c.stats()
    assert stats.cpu_throttled_us and stats.cpu_throttled_us > 0
    assert stats.cpu_usage_us is not None and stats.cpu_usage_us < 400_000
    c.kill()
    assert c.wait(10).signal == signal.SIGKILL


def test_exec_joins_namespaces(containers):
    c = containers.start("sleep", "100", hostname="exec-box")
    result = c.exec(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $$; "
                     "echo err >&2; ls /proc | grep -c '^[0-9]'"])
    assert result.exit_code == 0
    lines = result.stdout.decode().split("\n")
    assert lines[0].strip() == "sleep 100"
    assert lines[1] == "exec-box"
    assert 1 < int(lines[2]) < 100  # a pid of the container's namespace
    assert result.stderr == b"err\n"
    assert sorted(processes_in(c.id)) == [c.pid]  # the exec helper is gone
    signaled = c.exec(["sh", "-c", "kill -TERM $$"])
    assert (signaled.exit_code, signaled.signal) == (143, 15)
    assert c.exec(["sh", "-c", "exit 5"], cwd="/tmp").exit_code == 5
    with pytest.raises(CommandNotFoundError):
        c.exec(["no-such-tool"])
    with pytest.raises(TimeoutError):
        c.exec(["sleep", "30"], timeout=0.3)
    assert c.poll() is None


def test_command_not_found_leaves_nothing(native_runtime, containers):
    cid = containers.new_id()
    with pytest.raises(CommandNotFoundError) as info:
        native_runtime.start(containers.spec("no-such-command"), container_id=cid)
    assert info.value.argv == ["no-such-command"]
    assert leftovers(cid) == []
    assert processes_in(cid) == []
    assert not (STATE_ROOT / cid).exists()


def test_start_error_names_step(native_runtime, containers, tmp_path):
    cid = containers.new_id()
    spec = containers.spec("true", mounts=(Mount("/data", source=str(tmp_path / "missing")),))
    with pytest.raises(ContainerStartError) as info:
        native_runtime.start(spec, container_id=cid)
    assert info.value.step == "mount /data"
    assert leftovers(cid) == []


def test_delete_is_idempotent(containers):
    c = containers.start("sleep", "100")
    c.delete()
    c.delete()
    assert c.wait(1).exit_code == 137
    assert leftovers(c.id) == []


_OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pytest_containers.runtime.native.engine import NativeRuntime
    from pytest_containers.runtime.types import ContainerSpec
    rt = NativeRuntime(state_root=Path(sys.argv[1]))
    uid = int(sys.argv[4])
    c = rt.start(ContainerSpec(args=("sh", "-c", "sleep 1000 & sleep 1000"),
                               layers=(Path(sys.argv[2]),), uid=uid, gid=uid),
                 container_id=sys.argv[3])
    print(c.pid, flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("uid", [0, 1000])
def test_kill_9_of_owner_then_sweep(busybox_rootfs, uid):
    """Also as a non-root user: the uid change clears the parent-death signal, which
    the init sets again before exec."""
    cid = issue_id()
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(STATE_ROOT),
                              str(busybox_rootfs), cid, str(uid)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        init_pid = int(owner.stdout.readline())
        assert wait_for(lambda: len(processes_in(cid)) == 2)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        gone = wait_for(lambda: processes_in(cid) == [], timeout=1.0, interval=0.01)
        assert gone, f"container processes survive: {processes_in(cid)}"
        assert not Path(f"/proc/{init_pid}").exists() or processes_in(cid) == []
        assert (STATE_ROOT / cid).exists()  # garbage, for the sweep
        swept = sweep(STATE_ROOT)
        assert cid in swept
        assert leftovers(cid) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        sweep(STATE_ROOT)


def test_state_dir_layout(containers):
    c = containers.start("sleep", "100")
    names = sorted(p.name for p in c.state_dir.iterdir())
    assert names == ["config.json", "owner", "rootfs", "stderr", "stdout", "upper", "work"]
    assert int((c.state_dir / "owner").read_text()) == os.getpid()
    assert c.state_dir == STATE_ROOT / c.id


def test_init_is_our_child_in_every_hierarchy(containers):
    """One fork: PID 1 is the caller's own child (reaped by ``wait``), and it joined
    ``ptc/<id>`` in every mounted v1 hierarchy itself."""
    c = containers.start("sleep", "100")
    stat = Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[1]) == os.getpid()
    hierarchies = sorted(CGROUP_ROOT.glob(f"*/ptc/{c.id}"))
    assert len(hierarchies) >= 4
    for cgroup in hierarchies:
        assert (cgroup / "cgroup.procs").read_text().split() == [str(c.pid)], cgroup
    c.kill()
    assert c.wait(10).signal == signal.SIGKILL
    assert not Path(f"/proc/{c.pid}").exists() or \
        Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_pid_namespace_restore_failure_raises_and_leaves_nothing(
        native_runtime, containers, monkeypatch):
    """When the calling thread cannot ``setns`` back into its own pid namespace, start
    raises, the init is killed and nothing is left; a later fork in that thread fails
    instead of landing in the container's namespace. (In a thread of its own: the
    namespace for children is per thread.)"""
    from pytest_containers.runtime.native import engine

    def refuse(fd, nstype=0):
        raise OSError(errno.EPERM, "refused")

    monkeypatch.setattr(engine.sc, "setns", refuse)
    cid = containers.new_id()
    result = {}

    def run():
        try:
            native_runtime.start(containers.spec("sleep", "100"), container_id=cid)
        except ContainerStartError as exc:
            result["step"] = exc.step
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            result["forked"] = True
        except OSError as exc:
            result["fork_errno"] = exc.errno

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert result == {"step": "pid namespace", "fork_errno": errno.ENOMEM}
    assert leftovers(cid) == []
    assert processes_in(cid) == []


def test_lifecycle_faster_than_threshold(native_runtime, containers):
    """The whole lifecycle of ``true`` (median of 10) stays well under 100 ms."""
    durations = []
    for _ in range(10):
        t0 = time.perf_counter()
        c = native_runtime.start(containers.spec("true"), container_id=containers.new_id())
        c.wait(10)
        c.delete()
        durations.append(time.perf_counter() - t0)
    durations.sort()
    assert durations[len(durations) // 2] < 0.1


def test_plugin_makes_native_runtime(tmp_path):
    from pytest_containers.plugins import native

    rt = native.containers_make_runtime(name="native", options={"state_root": tmp_path})
    assert isinstance(rt, NativeRuntime) and rt.state_root == tmp_path
    assert native.containers_make_runtime(name="runc", options={}) is None
    assert native.containers_runtime_names() == ["native"]


# -- capabilities (runtime-spec config.md#linux-process; runc as the oracle) ----------

CAP_SYS_ADMIN = 1 << 21
DEFAULT_MASK = 0x00000000A80425FB  # docker's 14 defaults, as runc shows them


def cap_status(text: str) -> dict[str, int]:
    """``{"CapEff": mask, ...}`` from ``grep Cap /proc/<pid>/status`` output."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value, 16)
    return out


@pytest.fixture
def with_capabilities(monkeypatch):
    """Function: ``set(caps)`` makes the native engine's config.json carry
    ``process.capabilities = caps`` (ContainerSpec has no field for them)."""
    from pytest_containers.runtime.native import engine

    original = engine.to_config

    def set_caps(caps):
        def to_config(spec, **kwargs):
            config = original(spec, **kwargs)
            config["process"]["capabilities"] = caps
            return config
        monkeypatch.setattr(engine, "to_config", to_config)

    return set_caps


@pytest.fixture(scope="session")
def runc_rootfs(busybox_rootfs, tmp_path_factory):
    """Session: a copy of the busybox rootfs whose root dir is 0755 (pytest's are 0700,
    which a non-root user could not traverse; the native overlay's root is 0755)."""
    root = tmp_path_factory.mktemp("runc-rootfs") / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    root.chmod(0o755)
    return root


@pytest.fixture
def runc_status(tmp_path, runc_rootfs):
    """Function: ``run(spec, caps=None)`` -> the ``Cap*`` lines runc gives
    ``grep Cap /proc/self/status`` run with the same config.json (read-only rootfs);
    ``None`` when runc is not installed."""
    from pytest_containers.runtime.spec import to_config

    def run(spec, caps=None):
        if shutil.which("runc") is None:
            return None
        cid = issue_id()
        config = to_config(spec, container_id=cid, rootfs=str(runc_rootfs))
        config["root"]["readonly"] = True
        config["process"]["args"] = ["grep", "Cap", "/proc/self/status"]
        if caps is not None:
            config["process"]["capabilities"] = caps
        bundle = tmp_path / cid
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(config))
        try:
            result = subprocess.run(["runc", "--root", str(tmp_path / "runc-state"), "run",
                                     "--bundle", str(bundle), cid],
                                    capture_output=True, text=True, timeout=60)
        finally:  # runc leaves the shared parent ``ptc`` in every hierarchy
            remove_everywhere(config["linux"]["cgroupsPath"])
        assert result.returncode == 0, result.stderr
        return cap_status(result.stdout)

    return run


def native_status(containers, **kwargs) -> dict[str, int]:
    status, out, err, _ = containers.run("grep", "Cap", "/proc/self/status", **kwargs)
    assert status.exit_code == 0, err
    return cap_status(out)


def test_default_capabilities_are_dockers_like_runc(containers, runc_status):
    expected = mask_of(DEFAULT_CAPABILITIES)
    assert expected == DEFAULT_MASK
    got = native_status(containers)
    assert got == {"CapInh": 0, "CapPrm": expected, "CapEff": expected, "CapBnd": expected,
                   "CapAmb": 0}
    oracle = runc_status(containers.spec("true"))
    assert oracle in (None, got)


def test_no_remount_of_sys_no_proc_mount(containers):
    """The known escape: with CAP_SYS_ADMIN, remount /sys rw or mount a fresh proc whose
    /proc/sys is writable (core_pattern). Without it both mounts fail."""
    status, out, err, _ = containers.run(
        "sh", "-c",
        "mount -o remount,rw /sys && echo REMOUNTED; mkdir /tmp/p; "
        "mount -t proc proc /tmp/p && echo MOUNTED; "
        "echo '|/x' > /proc/sys/kernel/core_pattern && echo WROTE; grep ' /sys ' /proc/mounts")
    assert status.exit_code == 0, err
    assert "REMOUNTED" not in out and "MOUNTED" not in out and "WROTE" not in out
    assert err.count("permission denied") == 2, err
    assert out.splitlines()[-1].split()[3].split(",")[0] == "ro"


def test_config_granting_sys_admin_gets_it(containers, with_capabilities, runc_status):
    names = [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]
    caps = {k: names for k in ("bounding", "effective", "permitted")}
    with_capabilities(caps)
    got = native_status(containers)
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == DEFAULT_MASK | CAP_SYS_ADMIN
    assert runc_status(containers.spec("true"), caps) in (None, got)
    status, out, err, _ = containers.run("sh", "-c", "mkdir /tmp/p && mount -t proc proc /tmp/p "
                                         "&& echo MOUNTED")
    assert (status.exit_code, out) == (0, "MOUNTED\n"), err


def test_bounding_limits_what_root_gets(containers, with_capabilities, runc_status):
    """For uid 0 execve makes permitted = bounding | inheritable (cut down to the old
    permitted set under noNewPrivileges), whatever effective says."""
    caps = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "permitted": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"]}
    with_capabilities(caps)
    got = native_status(containers)
    assert got["CapBnd"] == mask_of(caps["bounding"])
    assert got["CapEff"] == got["CapPrm"] == mask_of(caps["permitted"])
    assert runc_status(containers.spec("true"), caps) in (None, got)


@pytest.mark.parametrize("caps", [
    None,  # docker's defaults: all dropped by execve of a file without capabilities
    {"bounding": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
     "permitted": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
     "effective": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
     "inheritable": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
     "ambient": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"]},
    # ambient but not inheritable: the kernel refuses it, runc ignores that
    {"bounding": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"], "effective": ["CAP_NET_RAW"],
     "ambient": ["CAP_NET_RAW"]},
], ids=["defaults", "ambient", "ambient-not-inheritable"])
def test_non_root_user_gets_what_runc_gives(containers, with_capabilities, runc_status, caps):
    if caps is not None:
        with_capabilities(caps)
    got = native_status(containers, uid=1000, gid=1000)
    granted = mask_of(caps["ambient"]) if caps and "inheritable" in caps else 0
    bounding = mask_of(caps["bounding"]) if caps else DEFAULT_MASK
    assert got == {"CapInh": mask_of((caps or {}).get("inheritable", ())), "CapPrm": granted,
                   "CapEff": granted, "CapBnd": bounding, "CapAmb": granted}
    assert runc_status(containers.spec("true", uid=1000, gid=1000), caps) in (None, got)


@pytest.mark.parametrize("uid", [0, 1000])
def test_exec_gets_the_init_capabilities(containers, with_capabilities, uid):
    with_capabilities({"bounding": [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"],
                       "permitted": ["CAP_CHOWN", "CAP_NET_RAW"],
                       "effective": ["CAP_CHOWN", "CAP_NET_RAW"],
                       "inheritable": ["CAP_NET_RAW"], "ambient": ["CAP_NET_RAW"]})
    c = containers.start("sleep", "100", uid=uid, gid=uid)
    result = c.exec(["grep", "Cap", "/proc/self/status"])
    assert result.exit_code == 0, result.stderr
    init = cap_status(Path(f"/proc/{c.pid}/status").read_text())
    assert cap_status(result.stdout.decode()) == init
    assert init["CapBnd"] == DEFAULT_MASK | CAP_SYS_ADMIN
    assert init["CapAmb"] == 1 << 13  # CAP_NET_RAW
    denied = c.exec(["sh", "-c", "mount -t tmpfs t /tmp && echo MOUNTED"])
    assert b"MOUNTED" not in denied.stdout


def test_unknown_capability_fails_before_fork(native_runtime, containers, with_capabilities,
                                              monkeypatch):
    from pytest_containers.runtime.native import engine

    def no_fork():
        raise AssertionError("forked despite an unknown capability")

    monkeypatch.setattr(engine, "_fork_into_new_pidns", no_fork)
    with_capabilities({"bounding": ["CAP_CHOWN", "CAP_BOGUS"], "permitted": ["CAP_CHOWN"]})
    cid = containers.new_id()
    with pytest.raises(ContainerStartError) as info:
        native_runtime.start(containers.spec("true"), container_id=cid)
    assert "CAP_BOGUS" in str(info.value) and "bounding" in str(info.value)
    assert info.value.step == "capabilities"
    assert isinstance(info.value.__cause__, UnknownCapabilityError)
    assert info.value.__cause__.name == "CAP_BOGUS"
    assert leftovers(cid) == [] and processes_in(cid) == []
    assert not (STATE_ROOT / cid).exists()


def test_capset_refused_is_start_error(native_runtime, containers, with_capabilities):
    """Inheritable outside the bounding set: capset fails with EPERM (runc: "unable to
    apply caps: operation not permitted"), reported as the capabilities step."""
    with_capabilities({"bounding": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"],
                       "inheritable": ["CAP_CHOWN"]})
    cid = containers.new_id()
    with pytest.raises(ContainerStartError) as info:
        native_runtime.start(containers.spec("true"), container_id=cid)
    assert (info.value.step, info.value.errno) == ("capabilities", errno.EPERM)
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_capability_sets_from_config():
    sets = CapabilitySets.from_config(
        {"bounding": ["CAP_CHOWN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"],
         "permitted": ["CAP_CHOWN"], "inheritable": ["CAP_CHOWN"],
         "ambient": ["CAP_CHOWN", "CAP_KILL"]}, top=39)
    assert sets.bounding == 1 | 1 << 39  # 40 is above this kernel's last cap: left out
    assert sets.drop == tuple(range(1, 39))
    assert sets.ambient == 1 | 1 << 5 and sets.ambient_raise == (0,)
    assert names_of(sets.bounding) == ["CAP_CHOWN", "CAP_BPF"]
    empty = CapabilitySets.from_config(None, top=40)
    assert (empty.bounding, empty.effective, empty.drop) == (0, 0, tuple(range(41)))
    with pytest.raises(UnknownCapabilityError, match="'chown'.*effective") as info:
        CapabilitySets.from_config({"effective": ["chown"]})
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.name, back.kind, str(back)) == ("chown", "effective", str(info.value))
    assert len(NAMES) == 41 and NAMES[21] == "CAP_SYS_ADMIN"
    assert last_cap() == int(Path("/proc/sys/kernel/cap_last_cap").read_text())
