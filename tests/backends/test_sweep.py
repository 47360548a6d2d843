"""Owner death and the sweep, on real objects: a runc container whose owner is
``kill -9``ed dies within a second (its waiter kills the init), and
:func:`~pytest_containers.runtime.sweep.sweep` then removes its runc state,
rootfs mount, cgroups and state dir, while never touching a container whose
owner is alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from pytest_containers.runtime.linux import cgroups, mounts
from pytest_containers.runtime.ocicli import OciCliRuntime
from pytest_containers.runtime.spec import cgroups_path
from pytest_containers.runtime.sweep import owner_alive, sweep

from tests.backends.conftest import ocicli_leftovers, waiter_pids
from tests.conftest import needs, wait_for

pytestmark = [needs("runc"), pytest.mark.backends]

_OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pytest_containers.runtime.ocicli import OciCliRuntime
    from pytest_containers.runtime.types import ContainerSpec
    rt = OciCliRuntime("runc", state_root=Path(sys.argv[1]))
    c = rt.start(ContainerSpec(args=("sh", "-c", "sleep 1000 & sleep 1000"),
                               layers=(Path(sys.argv[2]),)), container_id=sys.argv[3])
    print(c.pid, flush=True)
    sys.stdin.read()
""")



def _in_cgroup(container_id: str) -> list[int]:
    return cgroups.open_cgroup(cgroups_path(container_id)).pids()


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_kill_9_of_owner_kills_the_container_then_sweep_removes_everything(
    runc_runtime: OciCliRuntime, busybox_rootfs: Path
) -> None:
    cid = f"ptc-{uuid.uuid4().hex[:12]}"
    state_dir = runc_runtime.state_root / cid
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(runc_runtime.state_root), str(busybox_rootfs), cid],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        init = int(owner.stdout.readline())
        assert init > 0
        assert wait_for(lambda: len(_in_cgroup(cid)) == 2)
        assert int((state_dir / "owner").read_text()) == owner.pid
        waiters = waiter_pids(owner.pid)
        assert len(waiters) == 2  # the container's and the spare
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert wait_for(lambda: _in_cgroup(cid) == [], timeout=1.0), _in_cgroup(cid)
        assert wait_for(lambda: waiter_pids(owner.pid) == [], timeout=1.0)
        # garbage for the sweep: runc state, the rootfs mount, cgroups, state dir
        assert mounts.is_mounted(state_dir / "bundle" / "rootfs")
        assert (state_dir / "runc-root").is_dir()
        assert sweep(runc_runtime.state_root) == [cid]
        assert ocicli_leftovers(runc_runtime, cid) == []
        assert sweep(runc_runtime.state_root) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        sweep(runc_runtime.state_root)


def test_sweep_never_touches_a_live_owners_container(
    runc_runtime: OciCliRuntime, start_runc, tmp_path: Path
) -> None:
    container = start_runc(["sleep", "60"])
    no_owner = runc_runtime.state_root / "ptc-no-owner"
    no_owner.mkdir()
    (no_owner / "runc-root").mkdir()
    dead = runc_runtime.state_root / "ptc-dead-native"
    dead.mkdir()
    (dead / "owner").write_text(f"{_dead_pid()}\n")
    (dead / "stdout").write_text("")

    assert sweep(runc_runtime.state_root) == ["ptc-dead-native"]
    assert not dead.exists()
    assert no_owner.is_dir() and (no_owner / "runc-root").is_dir()
    assert container.poll() is None
    assert mounts.is_mounted(container.rootfs)
    assert container.exec(["true"]).exit_code == 0
    no_owner.joinpath("runc-root").rmdir()
    no_owner.rmdir()


def test_sweep_with_nothing_to_do_is_cheap(runc_runtime: OciCliRuntime, start_runc) -> None:
    for _ in range(3):
        start_runc(["sleep", "60"])
    sweep(runc_runtime.state_root)  # warm
    started = time.perf_counter()
    for _ in range(10):
        assert sweep(runc_runtime.state_root) == []
    assert (time.perf_counter() - started) / 10 < 0.005
    assert sweep(runc_runtime.state_root / "missing") == []


def test_container_outlives_the_thread_that_started_it(start_runc) -> None:
    """The waiter watches the owner *process* (a pidfd), not the spawning thread
    (as ``PR_SET_PDEATHSIG`` would): a thread's end kills nothing."""
    started = []
    for _ in range(2):  # the second one uses the spare spawned by the first thread
        thread = threading.Thread(target=lambda: started.append(start_runc(["sleep", "60"])))
        thread.start()
        thread.join()
    time.sleep(0.3)
    assert [c.poll() for c in started] == [None, None]
    assert start_runc(["true"]).wait(timeout=30).exit_code == 0


def test_a_zombie_owner_counts_as_dead(tmp_path: Path) -> None:
    """An owner killed but not yet reaped by its parent (a zombie, as a killed pytest or
    monitor is until init reaps it) is dead to the sweep; a live one is alive."""
    (tmp_path / "owner").write_text(str(os.getpid()))
    assert owner_alive(tmp_path) is True
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    (tmp_path / "owner").write_text(str(child.pid))
    try:
        assert owner_alive(tmp_path) is False
    finally:
        child.wait()
    assert owner_alive(tmp_path) is False
