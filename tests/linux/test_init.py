"""An init as PID 1 (``ContainerSpec(init=True)``, docker's ``--init``) and ``top``
(the processes of a container's cgroup) against the real kernel.

The init is asked for by the config's annotation ``org.ptc.init`` and run by the
native engine's child (``run_as_init``); the tests that need it are skipped,
saying so, while ``runtime/native/plan.py`` does not pass the annotation on to
``InitPlan.init``.

What happens without an init, measured here with busybox 1.35 (Debian 12's
busybox-static): PID 1 is the command. A shell that is PID 1 and still has work
after its foreground command (``...; sleep 2; echo done``) reaps the orphans that
come to it while it waits (ash waits with ``waitpid(-1)``); but ``sh -c
'...; sleep 2'`` execs its last command, so PID 1 is ``sleep``, which never
waits: the orphans stay zombies until the container ends. And a PID 1 without
a handler for SIGTERM (``sleep``) never gets it: a stop ends in SIGKILL (137).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pytest_containers.runtime.linux.cgroups import open_cgroup
from pytest_containers.runtime.native.plan import prepare
from pytest_containers.runtime.native.top import process_info, processes
from pytest_containers.runtime.ocicli import OciCliRuntime
from pytest_containers.runtime.protocol import (
    ListsProcesses,
    container_cgroup,
    container_processes,
)
from pytest_containers.runtime.spec import (
    INIT_ANNOTATION,
    from_config,
    init_requested,
    to_config,
)
from pytest_containers.runtime.types import ContainerSpec

from pytest_containers.exceptions import CommandNotFoundError, InvalidOptionError
from tests.conftest import wait_for

from .conftest import STATE_ROOT, issue_id, leftovers

#: three background subshells whose ``sleep`` is orphaned and exits at once
ORPHANS = "(sleep 0.05 &); (sleep 0.05 &); (sleep 0.05 &); echo ready; "




@pytest.fixture(scope="module")
def init_wired(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Module: whether the engine's plan passes the init annotation on to the child
    (``InitPlan.init``), found by preparing (not running) such a config."""
    spec = ContainerSpec(args=("true",), layers=(busybox_rootfs,), init=True)
    config = to_config(spec, container_id="ptc-000000000000", rootfs=str(busybox_rootfs))
    prepared = prepare(config, container_id="ptc-000000000000",
                       state_dir=tmp_path_factory.mktemp("plan"), bundle=str(busybox_rootfs),
                       rootfs=str(busybox_rootfs))
    prepared.close()
    return bool(getattr(prepared.plan, "init", False))


@pytest.fixture
def needs_init(init_wired: bool) -> None:
    if not init_wired:
        pytest.skip("runtime/native/plan.py does not set InitPlan(init=init_requested(config))"
                    " yet: the init annotation is not passed to the engine's child")


def pidns_states(container) -> dict[int, str]:
    """``{pid in the container: State letter}`` of the container's PID 1 and its
    descendants, zombies included (an exited process has left the cgroup's procs
    file, so ``top`` does not list it: the tree is walked through ``/proc``)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = process_info(int(entry))
            if info is not None:
                parents[info.pid] = info
    found, todo = {}, [container.pid]
    while todo:
        pid = todo.pop()
        info = parents.get(pid)
        if info is not None and info.ns_pid:
            found[info.ns_pid] = info.state
        todo += [p.pid for p in parents.values() if p.ppid == pid]
    return found


def read_until(path: Path, text: str, timeout: float = 10.0) -> None:
    assert wait_for(lambda: text in path.read_text(), timeout), path.read_text()


# -- the annotation ----------------------------------------------------------------------


def test_init_is_an_annotation_of_the_config(busybox_rootfs):
    spec = ContainerSpec(args=("sh",), layers=(busybox_rootfs,), init=True,
                         annotations=(("a", "b"),))
    config = to_config(spec, container_id="ptc-0123456789ab")
    assert config["annotations"] == {"a": "b", INIT_ANNOTATION: "true"}
    assert init_requested(config)
    back = from_config(config, bundle="/b")
    assert back.init is True and back.annotations == (("a", "b"),)
    plain = to_config(ContainerSpec(args=("sh",), layers=(busybox_rootfs,)),
                      container_id="ptc-0123456789ab")
    assert INIT_ANNOTATION not in plain["annotations"] and not init_requested(plain)
    assert not init_requested({"annotations": {INIT_ANNOTATION: "yes"}})
    assert not init_requested({"annotations": "not an object"})


# -- zombies -------------------------------------------------------------------------------


def test_with_the_init_no_zombie_remains(containers, needs_init):
    c = containers.start("sh", "-c", ORPHANS + "sleep 2; exit 3", init=True)
    read_until(c.stdout_path, "ready")
    time.sleep(0.6)  # the orphans exited long ago; the shell sleeps on
    states = pidns_states(c)
    assert "Z" not in states.values(), states
    assert sorted(states) == [1, 2, max(states)]  # init, sh, sleep 2
    assert c.wait(10).exit_code == 3


@pytest.mark.parametrize(("script", "zombies"), [
    # ash reaps any child (waitpid(-1)) while it waits for its foreground command
    (ORPHANS + "sleep 2; echo done", 0),
    # ash execs the last command of -c: PID 1 is sleep, which never reaps
    (ORPHANS + "sleep 2", 3),
])
def test_without_the_init_it_depends_on_pid_1(containers, script, zombies):
    c = containers.start("sh", "-c", script)
    read_until(c.stdout_path, "ready")
    time.sleep(0.6)
    states = pidns_states(c)
    assert list(states.values()).count("Z") == zombies, states
    assert c.wait(10).exit_code == 0


# -- signals, exit status, exec ------------------------------------------------------------


def test_sigterm_reaches_the_process_through_the_init(containers, needs_init):
    c = containers.start("sleep", "300", init=True)
    assert wait_for(lambda: len(container_processes(c)) == 2)
    started = time.monotonic()
    c.kill(signal.SIGTERM)
    assert c.wait(5).exit_code == 143  # sleep has no handler: SIGTERM ends it
    assert time.monotonic() - started < 2


def test_without_the_init_pid_1_ignores_sigterm(containers):
    c = containers.start("sleep", "300")
    assert wait_for(lambda: container_processes(c))
    c.kill(signal.SIGTERM)
    with pytest.raises(TimeoutError):
        c.wait(0.5)
    c.kill(signal.SIGKILL)
    assert c.wait(5).exit_code == 137


def test_exit_status_passes_through_the_init(containers, needs_init):
    status, out, err, _ = containers.run("sh", "-c", "echo $$; exit 7", init=True)
    assert (status.exit_code, out, err) == (7, "2\n", "")  # the command is PID 2
    status, _, _, _ = containers.run("sh", "-c", "kill -9 $$", init=True)
    assert status.exit_code == 137


def test_exec_works_with_the_init(containers, needs_init):
    c = containers.start("sleep", "300", init=True)
    result = c.exec(["sh", "-c", "cat /proc/1/status | grep ^Name; echo $$; exit 4"])
    assert result.exit_code == 4
    name, pid = result.stdout.decode().split("\n")[:2]
    assert name.split()[1] != "sleep" and int(pid) > 2


def test_command_not_found_with_the_init_leaves_nothing(native_runtime, busybox_rootfs,
                                                        needs_init):
    cid = issue_id()
    spec = ContainerSpec(args=("no-such-command",), layers=(busybox_rootfs,), init=True)
    with pytest.raises(CommandNotFoundError, match="no-such-command"):
        native_runtime.start(spec, container_id=cid)
    assert leftovers(cid) == []


# -- top ------------------------------------------------------------------------------------


def test_processes_of_a_container(containers):
    c = containers.start("sh", "-c", "sleep 300 & exec sleep 301")
    assert isinstance(container_cgroup(c), type(c.cgroup))
    found = wait_for(lambda: [p for p in container_processes(c) if p.args[-1] == "300"])
    assert found, container_processes(c)
    listed = {p.args: p for p in container_processes(c)}
    pid1 = listed[("sleep", "301")]
    assert (pid1.pid, pid1.ns_pid, pid1.user, pid1.uid, pid1.state) == (c.pid, 1, "root", 0, "S")
    child = listed[("sleep", "300")]
    assert child.ppid == c.pid and child.ns_pid not in (None, 1)
    assert child.command == "sleep 300"
    c.kill(signal.SIGKILL)
    c.wait(5)
    c.delete()
    assert container_processes(c) == []


def test_user_names_come_from_the_containers_passwd(containers):
    assert "nobody" in Path("/etc/passwd").read_text()  # the host's, uid 65534
    c = containers.start("sleep", "300", uid=65534, gid=65534)
    assert wait_for(lambda: container_processes(c))
    [p] = container_processes(c)
    assert (p.uid, p.user) == (65534, "65534")  # the rootfs's passwd has root only


def test_process_info_of_a_gone_pid_and_an_empty_cgroup(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert process_info(proc.pid) is None
    assert processes(open_cgroup(f"/ptc/{issue_id()}")) == []
    me = process_info(os.getpid())
    assert me is not None and (me.pid, me.ns_pid, me.ppid) == (os.getpid(), None, os.getppid())
    assert list(me.args) == Path("/proc/self/cmdline").read_text().split("\0")[:-1]


# -- the command line backend ----------------------------------------------------------------


def test_runc_refuses_init_before_making_anything(tmp_path, busybox_rootfs):
    if shutil.which("runc") is None:
        pytest.skip("needs runc")
    runtime = OciCliRuntime("runc", state_root=tmp_path / "ptc")
    try:
        cid = issue_id()
        spec = ContainerSpec(args=("true",), layers=(busybox_rootfs,), init=True)
        with pytest.raises(InvalidOptionError, match="init") as info:
            runtime.start(spec, container_id=cid)
        assert info.value.option == "init"
        assert not (tmp_path / "ptc" / cid).exists()
    finally:
        runtime.close()


def test_ptc_runtime_honours_the_annotation(busybox_rootfs, needs_init):
    if shutil.which("ptc-runtime") is None:
        pytest.skip("needs ptc-runtime on PATH")
    runtime = OciCliRuntime("ptc-runtime", state_root=STATE_ROOT)
    cid = issue_id()
    spec = ContainerSpec(args=("sleep", "300"), layers=(busybox_rootfs,), init=True)
    container = runtime.start(spec, container_id=cid)
    try:
        assert isinstance(container, ListsProcesses)
        found = wait_for(lambda: len(container.processes()) == 2)
        assert found, container.processes()
        assert sorted(p.ns_pid for p in container.processes()) == [1, 2]
        container.kill(signal.SIGTERM)
        assert container.wait(10).exit_code == 143
    finally:
        container.delete()
        runtime.close()
    assert json.dumps(leftovers(cid)) == "[]"
