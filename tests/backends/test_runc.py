"""The runc backend (``OciCliRuntime("runc")``) against the real runc: exit codes,
output, namespaces, cgroup limits with the kernel's counters, exec, and that a
failed start leaves nothing behind."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_containers.runtime import ContainerSpec, Resources
from pytest_containers.runtime.ocicli import OciCliRuntime

from pytest_containers.exceptions import CommandNotFoundError, ContainerRuntimeError
from tests.backends.conftest import ocicli_leftovers
from tests.conftest import needs

pytestmark = [needs("runc"), pytest.mark.backends]


# -- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code(start_runc, code: int) -> None:
    status = start_runc(["sh", "-c", f"exit {code}"]).wait(timeout=30)
    assert (status.exit_code, status.signal, status.oom_killed) == (code, None, False)


def test_killed_by_signal_is_128_plus_n(start_runc) -> None:
    container = start_runc(["sleep", "60"])
    assert container.poll() is None
    with pytest.raises(TimeoutError):
        container.wait(timeout=0.1)
    container.kill(9)
    status = container.wait(timeout=30)
    assert (status.exit_code, status.signal, status.oom_killed) == (128 + 9, 9, False)
    container.kill(9)  # exited: no error


def test_sigterm_to_a_shell_that_traps_it(start_runc) -> None:
    container = start_runc(
        ["sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 1; done"]
    )
    _wait_for(lambda: container.stdout_path.read_bytes() == b"ready\n")
    container.kill(15)
    assert container.wait(timeout=30).exit_code == 42


def test_stdout_and_stderr_are_separate(start_runc) -> None:
    container = start_runc(["sh", "-c", "echo out; echo err >&2; echo more"])
    assert container.wait(timeout=30).exit_code == 0
    assert container.stdout_path.read_bytes() == b"out\nmore\n"
    assert container.stderr_path.read_bytes() == b"err\n"


def test_hostname_pid1_and_loopback_only(start_runc) -> None:
    container = start_runc(
        ["sh", "-c", "hostname; echo $$; ls /sys/class/net"], hostname="ptc-host"
    )
    assert container.wait(timeout=30).exit_code == 0
    assert container.stdout_path.read_text().split() == ["ptc-host", "1", "lo"]
    assert container.stderr_path.read_bytes() == b""


def test_pid_is_the_host_pid_of_init(start_runc) -> None:
    container = start_runc(["sleep", "60"])
    assert container.pid > 1
    # runc start returns once the init is released, a moment before its execve
    _wait_for(lambda: Path(f"/proc/{container.pid}/cmdline").read_bytes() == b"sleep\x0060\x00")


def test_memory_limit_real_oom_kill(start_runc) -> None:
    # dd as PID 1 allocates a 128 MiB buffer and fills it: over the 32 MiB limit
    container = start_runc(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
        resources=Resources.from_options(memory="32m"),
    )
    status = container.wait(timeout=60)
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, True)
    assert container.stats().oom_kills >= 1


def test_within_memory_limit_is_not_oom(start_runc) -> None:
    container = start_runc(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=4"],
        resources=Resources.from_options(memory="64m"),
    )
    status = container.wait(timeout=60)
    assert (status.exit_code, status.oom_killed) == (0, False)
    stats = container.stats()
    assert stats.oom_kills == 0
    assert stats.memory_peak_bytes is not None and stats.memory_peak_bytes > 4 << 20


def test_pids_limit(start_runc) -> None:
    # busybox sh gives up at the first failed fork (exit 2): the limit stopped it
    container = start_runc(
        ["sh", "-c", "for i in $(seq 20); do sleep 60 & done; echo done; wait"],
        resources=Resources(pids_max=8),
    )
    status = container.wait(timeout=30)
    assert (status.exit_code, status.oom_killed) == (2, False)
    assert b"can't fork" in container.stderr_path.read_bytes()
    assert container.stdout_path.read_bytes() == b""
    stats = container.stats()
    assert stats.pids_peak in (None, 8)
    assert stats.pids_current == 0


def test_exec_into_running_container(start_runc) -> None:
    container = start_runc(["sleep", "60"], env=("PATH=/bin", "GREETING=hi"))
    result = container.exec(["cat", "/proc/1/cmdline"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"sleep\x0060\x00", b"")
    result = container.exec(["sh", "-c", "echo $GREETING; pwd"])
    assert (result.exit_code, result.stdout) == (0, b"hi\n/\n")
    # env replaces the container's environment; cwd replaces its working dir
    result = container.exec(
        ["sh", "-c", "echo $GREETING $EXTRA; pwd; echo e >&2; exit 5"],
        env=["PATH=/bin", "EXTRA=there"],
        cwd="/tmp",
    )
    assert (result.exit_code, result.stdout, result.stderr) == (5, b"there\n/tmp\n", b"e\n")
    result = container.exec(["sh", "-c", "kill -TERM $$"])
    assert (result.exit_code, result.signal) == (128 + 15, 15)
    with pytest.raises(CommandNotFoundError):
        container.exec(["no-such-command"])
    with pytest.raises(TimeoutError):
        container.exec(["sleep", "30"], timeout=0.5)
    listing = container.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline"]).stdout
    assert b"sleep\x0060" in listing and b"sleep\x0030" not in listing  # killed at the timeout
    assert container.poll() is None


def test_exec_into_exited_container_fails(start_runc) -> None:
    container = start_runc(["true"])
    container.wait(timeout=30)
    with pytest.raises(ContainerRuntimeError):
        container.exec(["true"])


def test_delete_is_idempotent_and_keeps_status(runc_runtime, start_runc) -> None:
    container = start_runc(["sh", "-c", "exit 7"])
    assert container.wait(timeout=30).exit_code == 7
    container.delete()
    container.delete()
    container.kill(9)
    assert container.wait().exit_code == 7
    assert ocicli_leftovers(runc_runtime, container.id) == []


def test_delete_kills_a_running_container(runc_runtime, start_runc) -> None:
    container = start_runc(["sleep", "60"])
    pid = container.pid
    container.delete()
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"sleep" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert ocicli_leftovers(runc_runtime, container.id) == []


@pytest.mark.parametrize("command", ["no-such-command", "/bin/no-such-command"])
def test_command_not_found_leaves_nothing(runc_runtime, busybox_rootfs: Path, command: str) -> None:
    container_id = f"ptc-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(args=(command, "arg"), layers=(busybox_rootfs,))
    with pytest.raises(CommandNotFoundError) as info:
        runc_runtime.start(spec, container_id=container_id)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.argv == [command, "arg"]
    assert ocicli_leftovers(runc_runtime, container_id) == []


def test_other_start_failure_is_container_start_error(
    runc_runtime, busybox_rootfs: Path, tmp_path: Path
) -> None:
    from pytest_containers.runtime import Mount

    from pytest_containers.exceptions import ContainerStartError

    container_id = f"ptc-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(
        args=("true",),
        layers=(busybox_rootfs,),
        mounts=(Mount(destination="/data", source=str(tmp_path / "missing")),),
    )
    with pytest.raises(ContainerStartError) as info:
        runc_runtime.start(spec, container_id=container_id)
    assert not isinstance(info.value, CommandNotFoundError)
    assert info.value.returncode == 1 and "missing" in info.value.stderr
    assert info.value.argv[0].endswith("runc")
    assert ocicli_leftovers(runc_runtime, container_id) == []


def test_plugin_makes_runc_and_lists_names(tmp_path: Path) -> None:
    from pytest_containers.plugins import runc as plugin

    made = plugin.containers_make_runtime(name="runc", options={"state_root": tmp_path})
    assert isinstance(made, OciCliRuntime) and made.name == "runc"
    assert made.state_root == tmp_path
    assert plugin.containers_make_runtime(name="native", options={}) is None
    assert "runc" in plugin.containers_runtime_names()
    if shutil.which("crun") and plugin.crun_problem():
        with pytest.raises(ContainerRuntimeError, match="hybrid"):
            plugin.containers_make_runtime(name="crun", options={})


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
