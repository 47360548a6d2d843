"""``ptc-runtime`` against what a new user tried to break (issue 5): a ``create``
killed half-way, pids/memory limits at and beyond their edges, a command that is
not there or not executable, signal 0, pause before start, ``ps`` options,
non-ASCII ids, failing hooks, the JSON log, and error messages without Python's
class names. runc 1.1.5 is the oracle where it is installed: its words for the
same failure on the same bundle.

Containers live under ``/run/ptc``; the conftest's ``_nothing_left`` checks every
issued id (no state dir, cgroup, mount or process left).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.runtime.linux.cgroups import CgroupV1, open_cgroup
from pytest_containers.runtime.native.state import process_alive
from pytest_containers.runtime.sweep import sweep
from pytest_containers.runtime.types import Resources

from pytest_containers.exceptions import InvalidOptionError
from tests.conftest import wait_for
from tests.linux.conftest import (
    CGROUP_ROOT,
    STATE_ROOT,
    Containers,
    issue_id,
    leftovers,
    processes_in,
)
from tests.linux.test_runtime_cli import CLI, Cli, configure, ptc_runtime

#: what must not appear in a message for a person
PYTHON_WORDS = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b|\[Errno \d+\]|Traceback")


def set_resources(bundle: Path, resources: dict[str, Any]) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["resources"] = resources
    (bundle / "config.json").write_text(json.dumps(config))


def cgroup_dirs(container_id: str) -> list[Path]:
    """The container's cgroup in every mounted hierarchy (v1 ones and ``unified``)."""
    return sorted(CGROUP_ROOT.glob(f"*/ptc/{container_id}"))


def host_mounts(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def runc_words(bundle: Path, tmp_path: Path, args: list[str]) -> str | None:
    """What runc 1.1 says when ``process.args`` is ``args`` on this bundle: the
    ``exec: ...`` part of its error (``None`` without runc)."""
    if shutil.which("runc") is None:
        return None
    configure(bundle, *args)
    cid = issue_id()
    proc = subprocess.run(["runc", "--root", str(tmp_path / "runc-root"), "run", "--bundle",
                           str(bundle), cid], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    subprocess.run(["runc", "--root", str(tmp_path / "runc-root"), "delete", "--force", cid],
                   capture_output=True, timeout=60, check=False)
    assert not list(CGROUP_ROOT.glob(f"*/{cid}")), "runc left its cgroup"
    found = re.search(r'exec: \\"[^"\\]*\\": [^"]*?(?=")', proc.stderr)
    assert found, proc.stderr
    return found.group(0).replace('\\"', '"')


# -- a create killed half-way ---------------------------------------------------------------


def _sleeping_hook(tmp_path: Path) -> tuple[Path, Path]:
    """A createRuntime hook (a host executable) that writes its pid, then sleeps."""
    hook, marker = tmp_path / "hook.sh", tmp_path / "hook.pid"
    hook.write_text(f"#!/bin/sh\necho $$ > {marker}.tmp && mv {marker}.tmp {marker}\n"
                    "exec sleep 60\n")
    hook.chmod(0o755)
    return hook, marker


def _kill_create_in_hook(bundle: Path, tmp_path: Path, cid: str) -> tuple[dict[str, Any], int]:
    """``create`` with a sleeping createRuntime hook, SIGKILLed while the hook sleeps
    (the cgroup is made, the init forked and waiting); returns the state it left
    and the pid of the hook (still sleeping: a host process, not the container's)."""
    hook, marker = _sleeping_hook(tmp_path)
    configure(bundle, "sleep", "30", hooks={"createRuntime": [{"path": str(hook)}]})
    create = subprocess.Popen([*CLI, "create", "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        assert wait_for(marker.exists, timeout=30), "the hook did not run"
    finally:
        create.kill()
        create.wait()
    left = json.loads((STATE_ROOT / cid / "state.json").read_text())
    return left, int(marker.read_text())


@pytest.mark.parametrize("cleanup", ["delete --force", "sweep"])
def test_create_killed_in_a_hook_leaves_nothing_after_delete_force(
        bundle: Path, cli: Cli, tmp_path: Path, cleanup: str) -> None:
    """The state names the cgroup (as ours, written before it was made) and the init;
    ``delete --force`` (or the sweep: the creator is dead) removes the init, the
    cgroup in every hierarchy, mounts and the state dir; the id works again. A new
    ``create`` of the id before that is refused, naming ``delete --force`` (runc
    refuses too: "container with given ID already exists", and leaks the cgroup)."""
    cid = issue_id()
    left, hook_pid = _kill_create_in_hook(bundle, tmp_path, cid)
    try:
        assert (left["status"], left["cgroup_created"]) == ("creating", True)
        assert left["cgroup_path"] == f"/ptc/{cid}" and left["pid"] > 0
        assert cgroup_dirs(cid), "the hook runs once the cgroup is made"
        assert cli.state(cid)["status"] == "stopped"
        again = cli.create(bundle, cid)[1]
        assert again.returncode == 1
        assert f"container with id {cid!r} exists" in again.stderr
        assert f"'ptc-runtime delete --force {cid}'" in again.stderr
        if cleanup == "sweep":
            assert cid in sweep(STATE_ROOT)
        else:
            forced = ptc_runtime("delete", "--force", cid)
            assert (forced.returncode, forced.stderr) == (0, "")
        assert leftovers(cid) == [] and processes_in(cid) == [] and cgroup_dirs(cid) == []
        assert not process_alive(left["pid"], left["start_time"])
        assert host_mounts(bundle) == []
        configure(bundle, "sleep", "30", hooks={})
        created = cli.create(bundle, cid)[1]
        assert created.returncode == 0, created.stderr
        assert cli.state(cid)["status"] == "created"
        assert ptc_runtime("delete", "--force", cid).returncode == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hook_pid, signal.SIGKILL)
    assert leftovers(cid) == []


def test_half_made_container_with_a_live_init_is_removed(bundle: Path, cli: Cli,
                                                         tmp_path: Path) -> None:
    """What a ``kill -9`` between the init's go and the "created" state leaves: the
    init waiting on the exec fifo, the state still ``creating``, the owner dead
    (reproduced by writing that state over a created container's). It is stopped
    for ``state`` and ``kill``; a plain ``delete`` kills the init and removes it all."""
    configure(bundle, "sleep", "30")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    state_dir = STATE_ROOT / cid
    saved = json.loads((state_dir / "state.json").read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state_dir / "owner").write_text(f"{dead.pid}\n")
    (state_dir / "state.json").write_text(json.dumps({**saved, "status": "creating"}))
    assert process_alive(saved["pid"], saved["start_time"])
    assert cli.state(cid)["status"] == "stopped"
    killed = ptc_runtime("kill", cid, "0")
    assert killed.returncode == 1 and "not running" in killed.stderr
    deleted = ptc_runtime("delete", cid)
    assert deleted.returncode == 0, deleted.stderr
    assert wait_for(lambda: not process_alive(saved["pid"], saved["start_time"]), timeout=5)
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_leftover_cgroup_is_taken_over_when_empty_refused_when_busy(bundle: Path,
                                                                    cli: Cli) -> None:
    """No state dir, but ``/ptc/<id>`` is there: empty, ``create`` makes it anew (runc
    reuses an existing cgroup) and ``delete`` removes it; with a process in it, it
    belongs to someone else: refused naming ``linux.cgroupsPath``, left as it was."""
    configure(bundle, "sleep", "30")
    cid = issue_id()
    leftover = open_cgroup(f"/ptc/{cid}")
    leftover.create({"pids": {"limit": 3}})
    cid, created, _, _ = cli.create(bundle, cid)
    assert created.returncode == 0, created.stderr
    assert (CGROUP_ROOT / "pids" / "ptc" / cid / "pids.max").read_text().strip() == "max"
    assert ptc_runtime("delete", "--force", cid).returncode == 0
    assert cgroup_dirs(cid) == []

    busy = open_cgroup(f"/ptc/{cid}")
    busy.create(None)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        busy.add(sleeper.pid)
        refused = cli.create(bundle, cid)[1]
        assert refused.returncode == 1
        assert "linux.cgroupsPath" in refused.stderr and "holds processes" in refused.stderr
        assert str(sleeper.pid) in refused.stderr
        assert busy.pids() == [sleeper.pid] and not (STATE_ROOT / cid).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        busy.remove()


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, -5])
def test_pids_limit_zero_or_negative_is_unlimited(bundle: Path, cli: Cli, limit: int) -> None:
    """As runc (and podman, which sends 0 or -1 for unlimited): ``pids.max`` is
    ``max``, and the container forks freely."""
    configure(bundle, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait")
    set_resources(bundle, {"pids": {"limit": limit}})
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert (CGROUP_ROOT / "pids" / "ptc" / cid / "pids.max").read_text().strip() == "max"
    assert ptc_runtime("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize("limit", [4096, 1 << 20])
def test_memory_limit_below_the_minimum_is_refused_before_anything(bundle: Path, cli: Cli,
                                                                   limit: int) -> None:
    """A one-page limit used to end in an OOM kill with no word (exit 137); runc
    refuses it when it writes the limit ("unable to set memory limit to 4096
    (current usage: ...)"). Now the config check says so, before any mkdir."""
    configure(bundle, "true")
    set_resources(bundle, {"memory": {"limit": limit}})
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert f"linux.resources.memory.limit: {limit} bytes is below the minimum memory limit" \
        in created.stderr
    assert leftovers(cid) == [] and not PYTHON_WORDS.search(created.stderr)
    set_resources(bundle, {"memory": {"limit": 6 << 20}})
    ran = ptc_runtime("run", "--bundle", str(bundle), issue_id())
    assert ran.returncode == 0, ran.stderr


def test_memory_limit_beyond_the_kernel_is_refused_naming_it(bundle: Path, cli: Cli) -> None:
    configure(bundle, "true")
    set_resources(bundle, {"memory": {"limit": 10**20}})
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert "linux.resources.memory.limit: 100000000000000000000 bytes is above the most the " \
        "kernel can hold" in created.stderr
    assert leftovers(cid) == []


@pytest.mark.parametrize(("cpu", "field", "value"), [
    ({"cpus": "0-63"}, "linux.resources.cpu.cpus", "0-63"),
    ({"quota": 500}, "linux.resources.cpu.quota", "500"),
])
def test_limit_the_kernel_refuses_names_the_field(bundle: Path, cli: Cli, cpu: dict[str, Any],
                                                  field: str, value: str) -> None:
    """A kernel EINVAL (ERANGE for cpus beyond nr_cpu_ids on 6.x) on a limit write:
    an error naming the field and the value, nothing left."""
    configure(bundle, "true")
    set_resources(bundle, {"cpu": cpu})
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert f"{field}: the kernel refused {value}" in created.stderr, created.stderr
    assert not PYTHON_WORDS.search(created.stderr)
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_memory_option_beyond_the_kernel_leaves_nothing(containers: Containers) -> None:
    """``Containers.start(resources=Resources(memory_max_bytes=10**20))`` in the native
    engine (``memory=`` is refused before, by ``Resources.from_options``): an
    ``InvalidOptionError`` naming the memory option, not the swap file; nothing is
    left."""
    with pytest.raises(InvalidOptionError) as info:
        containers.start("true", resources=Resources(memory_max_bytes=10**20))
    assert info.value.option == "memory"
    assert "memsw" not in str(info.value) and "100000000000000000000" in str(info.value)
    cgroup = open_cgroup(f"/ptc/{issue_id()}")
    assert isinstance(cgroup, CgroupV1)
    with pytest.raises(InvalidOptionError):
        cgroup.create(Resources(memory_max_bytes=10**20))
    assert not cgroup.dir("memory").exists()


# -- a command that cannot be run: 127, 126, runc's words ------------------------------------------


@pytest.mark.parametrize(("command", "code"), [
    ("no-such-command", 127), ("/no/such/file", 127), ("/not-executable", 126), ("/tmp", 126),
])
def test_command_that_cannot_be_run(bundle: Path, cli: Cli, tmp_path: Path, command: str,
                                    code: int) -> None:
    """``run`` and ``exec`` exit 127 (not found) or 126 (not executable) with runc's
    words for the same bundle (runc itself exits 1 for run, 255 for exec: docker's
    and podman's codes are ours, podman reads the words)."""
    (bundle / "rootfs" / "not-executable").write_text("echo no\n")
    words = runc_words(bundle, tmp_path, [command]) or ""
    configure(bundle, command)
    ran = ptc_runtime("run", "--bundle", str(bundle), issue_id())
    assert ran.returncode == code, ran.stderr
    assert 'exec: "' + command + '": ' in ran.stderr and words in ran.stderr
    assert not PYTHON_WORDS.search(ran.stderr)
    configure(bundle, "sleep", "30")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    execd = ptc_runtime("exec", cid, command)
    assert execd.returncode == code, execd.stderr
    assert f"exec in container {cid!r} failed: " + (words or 'exec: "') in execd.stderr
    configure(bundle, command)
    created = cli.create(bundle)[1]
    assert created.returncode == code and words in created.stderr, created.stderr


# -- small ones -------------------------------------------------------------------------------


def test_kill_signal_zero_checks_liveness(bundle: Path, cli: Cli) -> None:
    configure(bundle, "sleep", "30")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("kill", cid, "0").returncode == 0  # created
    assert ptc_runtime("start", cid).returncode == 0
    alive = ptc_runtime("kill", cid, "0")
    assert (alive.returncode, alive.stderr) == (0, "")
    assert cli.state(cid)["status"] == "running"  # nothing was sent
    assert ptc_runtime("kill", cid, "KILL").returncode == 0
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    dead = ptc_runtime("kill", cid, "0")
    assert dead.returncode == 1 and f"container {cid!r} is not running" in dead.stderr


def test_pause_a_created_container_as_runc(bundle: Path, cli: Cli) -> None:
    """runc 1.1.5: ``pause`` of a created container freezes it (``paused``), ``start``
    refuses it then, ``resume`` makes it ``created`` again; ``exec`` waits for
    ``--ignore-paused``."""
    configure(bundle, "sh", "-c", "echo started")
    cid, created, out, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("pause", cid).returncode == 0
    assert cli.state(cid)["status"] == "paused"
    assert (CGROUP_ROOT / "freezer" / "ptc" / cid / "freezer.state").read_text().strip() \
        == "FROZEN"
    refused = ptc_runtime("start", cid)
    assert refused.returncode == 1 and "it is paused, not created" in refused.stderr
    execd = ptc_runtime("exec", cid, "true")
    assert execd.returncode == 1 and "--ignore-paused" in execd.stderr
    assert ptc_runtime("resume", cid).returncode == 0
    assert cli.state(cid)["status"] == "created"
    assert ptc_runtime("start", cid).returncode == 0
    assert wait_for(lambda: out.read_text() == "started\n")
    assert ptc_runtime("delete", "--force", cid).returncode == 0


def test_ps_passes_options_to_ps(bundle: Path, cli: Cli) -> None:
    """runc's ``ps ID [ps options]``: ``ps -ef`` by default, filtered on the PID
    column; ``-o args`` (no PID column, where runc fails) lists the container's."""
    configure(bundle, "sleep", "31")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", cid).returncode == 0
    pid = cli.state(cid)["pid"]
    table = ptc_runtime("ps", cid)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"]
    assert [row.split()[1] for row in rows] == [str(pid)] and rows[0].endswith("sleep 31")
    args = ptc_runtime("ps", cid, "-o", "args")
    assert args.returncode == 0, args.stderr
    assert args.stdout.splitlines() == ["COMMAND", "sleep 31"]
    both = ptc_runtime("ps", cid, "-o", "pid,comm")
    assert [line.split() for line in both.stdout.splitlines()] == [["PID", "COMMAND"],
                                                                    [str(pid), "sleep"]]
    assert json.loads(ptc_runtime("ps", "--format", "json", cid).stdout) == [pid]
    bad = ptc_runtime("ps", cid, "--no-such-option")
    assert bad.returncode == 1 and "ps --no-such-option failed" in bad.stderr
    assert ptc_runtime("delete", "--force", cid).returncode == 0


def test_failing_create_runtime_hook_names_index_path_status_and_output(
        bundle: Path, cli: Cli, tmp_path: Path) -> None:
    """As runc's "error running hook #1: exit status 3, stdout: ..., stderr: ...":
    which hook (kind, index, path), its exit status, its stderr and stdout apart."""
    hook = tmp_path / "failing-hook"
    hook.write_text("#!/bin/sh\necho on-stdout\necho first >&2\necho second >&2\nexit 3\n")
    hook.chmod(0o755)
    hooks = {"createRuntime": [{"path": "/bin/true"}, {"path": str(hook)}],
             "createContainer": []}
    configure(bundle, "true", hooks=hooks)
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert (f'hooks.createRuntime[1] ({hook}) exited with status 3, stderr: "first\\nsecond", '
            'stdout: "on-stdout"') in created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []
    # one run in the container's init: its error crosses a pipe, still without class names
    hooks = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 4"]}]}
    configure(bundle, "true", hooks=hooks)
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert 'hooks.createContainer[0] (/bin/sh) exited with status 4, stderr: "no"' \
        in created.stderr
    assert not PYTHON_WORDS.search(created.stderr), created.stderr
    assert leftovers(cid) == []


def test_errors_have_no_python_class_names(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    cid = issue_id()
    outputs = [
        ptc_runtime("create", "--bundle", str(tmp_path / "none"), cid),
        ptc_runtime("exec", "--process", str(tmp_path / "none.json"), cid),
        ptc_runtime("exec", "--process", str(tmp_path / "bad.json"), cid),
        ptc_runtime("create", "--bundle", str(bundle), "--pid-file",
                    str(tmp_path / "no" / "dir" / "pid"), cid),
        ptc_runtime("--root", str(tmp_path / "file" / "x"), "list"),
        ptc_runtime("state", cid),
    ]
    (tmp_path / "file").write_text("")
    outputs.append(ptc_runtime("--root", str(tmp_path / "file"), "create", "--bundle",
                               str(bundle), cid))
    for proc in outputs:
        assert proc.returncode in (0, 1), proc
        assert not PYTHON_WORDS.search(proc.stderr), proc.stderr
    assert "--pid-file" in outputs[3].stderr and "No such file or directory" in outputs[3].stderr
    assert leftovers(cid) == []


@pytest.mark.parametrize("container_id", ["caf\u00e9", "ptc-\u0661", "x\u200by"])
def test_non_ascii_ids_are_refused_as_runc(bundle: Path, container_id: str) -> None:
    for command in (["create", "--bundle", str(bundle)], ["run", "--bundle", str(bundle)],
                    ["state"], ["delete", "--force"]):
        proc = ptc_runtime(*command, container_id)
        assert proc.returncode == 1 and "invalid container id" in proc.stderr, command
        assert not (STATE_ROOT / container_id).exists()
    if shutil.which("runc"):
        runc = subprocess.run(["runc", "--root", str(bundle / "runc-root"), "state",
                               container_id], capture_output=True, text=True, timeout=30)
        assert "invalid container ID format" in runc.stderr
