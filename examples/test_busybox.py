"""What a container gives a test: its own PID namespace, hostname and network,
and memory and pids limits whose outcome the kernel reports."""

from __future__ import annotations

import os
from pathlib import Path


def test_pid_1_inside(containers, busybox):
    result = containers.run(busybox, ["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"])
    assert result.exit_code == 0, result.stderr
    pid, cmdline = result.stdout.splitlines()
    assert pid == "1"
    assert cmdline.startswith("sh -c")


def test_own_hostname(containers, busybox):
    result = containers.run(busybox, "hostname", hostname="ptc-example")
    assert result.stdout.strip() == "ptc-example"
    assert result.stdout.strip() != os.uname().nodename


def test_only_loopback_in_its_network_namespace(containers, busybox):
    result = containers.run(busybox, ["ip", "-o", "link"])
    assert result.exit_code == 0, result.stderr
    links = [line.split(":")[1].strip() for line in result.stdout.splitlines()]
    assert links == ["lo"]
    assert "UP" in result.stdout


def test_memory_hog_is_oom_killed_and_reported(containers, busybox):
    # busybox `tail -c N` keeps the last N bytes in memory: 128 MiB of anonymous
    # memory charged to a 64 MiB cgroup, so the kernel's OOM killer ends it.
    result = containers.run(
        busybox, ["sh", "-c", "head -c 134217728 /dev/zero | tail -c 134217728 > /dev/null"],
        memory="64m",
    )
    assert result.oom_killed
    assert result.exit_code != 0
    assert result.memory_peak_bytes is not None
    assert result.memory_peak_bytes <= 64 * 1024 * 1024


def test_fork_loop_is_stopped_by_pids_limit(containers, busybox):
    script = "i=0; while [ $i -lt 64 ]; do sleep 5 & i=$((i+1)); done; wait"
    result = containers.run(busybox, ["sh", "-c", script], pids=16, timeout=30)
    assert result.exit_code != 0
    assert "can't fork" in result.stderr or "Resource temporarily unavailable" in result.stderr
    assert result.stats.pids_current in (None, 0)


def test_host_is_clean_afterwards(containers, busybox):
    handle = containers.start(busybox, ["sleep", "60"], memory="32m")
    cid = handle.id
    assert _cgroup_dirs(cid)  # v1: one per hierarchy; v2: one
    containers.close()
    assert not _cgroup_dirs(cid)
    assert not Path(f"/run/ptc/{cid}").exists()
    assert cid not in Path("/proc/self/mountinfo").read_text()
    assert not os.path.exists(f"/proc/{handle.pid}")


def _cgroup_dirs(cid: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    # the fixture's containers sit in the session's cgroup, /ptc/ptc-session-<pid>/<id>
    return [*root.glob(f"ptc/*/{cid}"), *root.glob(f"*/ptc/*/{cid}")]
