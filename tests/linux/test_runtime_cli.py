"""``ptc-runtime`` against the real kernel: the runc-style lifecycle (create, start,
state, kill, delete), run, exec, hooks, namespaces joined by path, errors that
name the id or the field and leave nothing, the JSON log, and the sweep's rules
for detached containers.

Containers here live under the default root ``/run/ptc`` (the conftest's
``_nothing_left`` checks every issued id: no state dir, cgroup, mount or
process). ``create``'s stdout and stderr are files: the container keeps them
open after ``create`` exits, as with runc.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.runtime.sweep import sweep

from tests.conftest import wait_for
from tests.linux.conftest import CGROUP_ROOT, STATE_ROOT, issue_id, leftovers, processes_in

CLI = [sys.executable, "-m", "pytest_containers.runtime.cli"]


def ptc_runtime(*args: str, cwd: Path | None = None, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
    """Run ``ptc-runtime ARGS`` to completion, output captured (not for ``create``)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, check=False, stdin=subprocess.DEVNULL)




def configure(bundle: Path, *args: str, **changes: Any) -> dict[str, Any]:
    """Set ``process.args`` (when given) and top-level ``changes`` in the bundle's config;
    returns the config written."""
    config = json.loads((bundle / "config.json").read_text())
    if args:
        config["process"]["args"] = list(args)
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))
    return config


class Cli:
    """Function-scoped: ``create`` with its stdio in files, and every id it made
    force-deleted at teardown (the conftest then checks nothing is left)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ids: list[str] = []

    def create(self, bundle: Path, container_id: str | None = None, *extra: str
               ) -> tuple[str, subprocess.CompletedProcess[str], Path, Path]:
        """``create --bundle B [extra] ID``; returns ``(id, result, stdout file, stderr
        file)``; the files are create's (and the container's) stdout and stderr."""
        cid = container_id or issue_id()
        self.ids.append(cid)
        out, err = self.tmp_path / f"{cid}.out", self.tmp_path / f"{cid}.err"
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.run([*CLI, "create", "--bundle", str(bundle), *extra, cid],
                                  stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL,
                                  timeout=60, check=False)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                             err.read_text())
        return cid, result, out, err

    def state(self, cid: str) -> dict[str, Any]:
        proc = ptc_runtime("state", cid)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def cleanup(self) -> None:
        for cid in self.ids:
            ptc_runtime("delete", "--force", cid)


def test_spec_writes_a_runtime_spec_config(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] == ["sh"]
    again = ptc_runtime("spec", "--bundle", str(bundle))
    assert again.returncode == 1 and "exists" in again.stderr


def test_run_passes_output_and_exit_code(bundle: Path) -> None:
    """Foreground ``run``: the container's stdio is ours, its exit code ours; like runc
    the rootfs is the bundle's own (written in place); the container is deleted."""
    configure(bundle, "sh", "-c", "touch /written; echo $$ $(hostname); echo err >&2; exit 5",
              hostname="bundled")
    cid = issue_id()
    proc = ptc_runtime("run", "--bundle", str(bundle), cid)
    assert (proc.returncode, proc.stdout, proc.stderr) == (5, "1 bundled\n", "err\n")
    assert (bundle / "rootfs" / "written").exists()
    assert leftovers(cid) == []


def test_run_exit_code_of_a_signal_is_128_plus_n(bundle: Path) -> None:
    """(PID 1 of a pid namespace ignores SIGKILL from inside it: the kill comes from
    ``ptc-runtime kill``.)"""
    configure(bundle, "sleep", "30")
    cid = issue_id()
    run = subprocess.Popen([*CLI, "run", "--bundle", str(bundle), cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(processes_in(cid)) == 1)
        assert ptc_runtime("kill", cid, "KILL").returncode == 0
        _, err = run.communicate(timeout=30)
        assert run.returncode == 128 + signal.SIGKILL, err
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert leftovers(cid) == []


@pytest.mark.parametrize(("container_id", "message"), [
    ("x y", "invalid container id"), ("..", "invalid container id"),
    ("caf\u00e9", "invalid container id"),  # Python's \w is Unicode; runc's (Go's) ASCII
    ("ptc-\u0661\u0662", "invalid container id"), ("x" * 256, "invalid container id")])
def test_bad_id_is_refused(bundle: Path, container_id: str, message: str) -> None:
    proc = ptc_runtime("run", "--bundle", str(bundle), container_id)
    assert proc.returncode == 1 and message in proc.stderr


def test_lifecycle_state_machine(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    """create -> created (pid file == state pid, in its cgroup, nothing run yet),
    start -> running (its output on create's stdout), kill (TERM by default) ->
    stopped (state answered until delete), delete -> gone."""
    configure(bundle, "sh", "-c", "trap 'echo got-term; exit 3' TERM; echo out-$$; "
              "echo err-line >&2; while :; do sleep 0.05; done",
              annotations={"org.example/key": "value"})
    pid_file = tmp_path / "init.pid"
    cid, created, out, err = cli.create(bundle, None, "--pid-file", str(pid_file))
    assert created.returncode == 0, created.stderr
    state = cli.state(cid)
    assert state["status"] == "created"
    assert state["id"] == cid and state["bundle"] == str(bundle)
    assert state["annotations"] == {"org.example/key": "value"}
    assert state["ociVersion"].startswith("1.")
    pid = state["pid"]
    assert pid_file.read_text() == str(pid)
    assert processes_in(cid) == [pid]  # in /ptc/<id> everywhere, and alone
    assert (CGROUP_ROOT / "pids" / "ptc" / cid).is_dir()
    assert out.read_text() == ""  # process.args not run before start

    started = ptc_runtime("start", cid)
    assert started.returncode == 0, started.stderr
    assert cli.state(cid)["status"] == "running"
    assert wait_for(lambda: out.read_text() == "out-1\n")
    assert wait_for(lambda: err.read_text() == "err-line\n")

    killed = ptc_runtime("kill", cid)  # TERM
    assert killed.returncode == 0, killed.stderr
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    assert "got-term" in out.read_text()
    stopped = cli.state(cid)
    assert (stopped["status"], stopped["pid"]) == ("stopped", 0)
    assert cli.state(cid) == stopped  # asked again: the same answer

    deleted = ptc_runtime("delete", cid)
    assert deleted.returncode == 0, deleted.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []
    gone = ptc_runtime("state", cid)
    assert gone.returncode == 1 and f"{cid!r} does not exist" in gone.stderr


def test_kill_takes_signal_names_and_numbers(bundle: Path, cli: Cli) -> None:
    configure(bundle, "sh", "-c", "trap 'echo usr1' USR1; trap 'echo hup' HUP; echo ready; "
              "while :; do sleep 0.05; done")
    cid, created, out, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", cid).returncode == 0
    assert wait_for(lambda: "ready" in out.read_text())
    assert ptc_runtime("kill", cid, "SIGUSR1").returncode == 0
    assert wait_for(lambda: "usr1" in out.read_text())
    assert ptc_runtime("kill", cid, str(int(signal.SIGHUP))).returncode == 0
    assert wait_for(lambda: "hup" in out.read_text())
    bad = ptc_runtime("kill", cid, "NOSUCH")
    assert bad.returncode == 1 and "unknown signal 'NOSUCH'" in bad.stderr
    assert ptc_runtime("kill", "--all", cid, "KILL").returncode == 0  # every process
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    again = ptc_runtime("kill", cid, "KILL")
    assert again.returncode == 1 and "not running" in again.stderr
    assert ptc_runtime("delete", cid).returncode == 0


def test_state_errors_name_the_id_and_change_nothing(bundle: Path, cli: Cli) -> None:
    """start twice, delete running without --force, kill stopped, unknown id, id in use."""
    configure(bundle, "sleep", "30")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    in_use = cli.create(bundle, cid)[1]
    assert in_use.returncode == 1 and f"{cid!r} exists" in in_use.stderr
    assert cli.state(cid)["status"] == "created"  # the first one is untouched
    not_stopped = ptc_runtime("delete", cid)
    assert not_stopped.returncode == 1
    assert f"{cid!r} that is not stopped: created" in not_stopped.stderr
    assert ptc_runtime("start", cid).returncode == 0
    twice = ptc_runtime("start", cid)
    assert twice.returncode == 1 and f"{cid!r}: it is running, not created" in twice.stderr
    running = ptc_runtime("delete", cid)
    assert running.returncode == 1 and "not stopped: running" in running.stderr
    assert cli.state(cid)["status"] == "running"
    assert ptc_runtime("kill", cid, "9").returncode == 0
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    stopped = ptc_runtime("kill", cid, "9")
    assert stopped.returncode == 1 and f"{cid!r} is not running" in stopped.stderr
    assert ptc_runtime("delete", cid).returncode == 0
    unknown = issue_id()
    for command in (["state"], ["start"], ["kill"], ["delete"], ["exec"], ["ps"]):
        args = [*command, unknown] + (["true"] if command == ["exec"] else [])
        proc = ptc_runtime(*args)
        assert proc.returncode == 1, command
        assert f"container {unknown!r} does not exist" in proc.stderr, (command, proc.stderr)
    forced = ptc_runtime("delete", "--force", unknown)  # runc: nothing to delete is success
    assert (forced.returncode, forced.stderr) == (0, "")


def test_delete_force_kills_a_running_container(bundle: Path, cli: Cli) -> None:
    configure(bundle, "sh", "-c", "sleep 30 & sleep 30")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", cid).returncode == 0
    assert wait_for(lambda: len(processes_in(cid)) == 2)
    forced = ptc_runtime("delete", "--force", cid)
    assert forced.returncode == 0, forced.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"ociVersion": "0.9.0"}, "ociVersion"),
    ({"ociVersion": "2.0.0"}, "ociVersion"),
    ({"root": {"path": "no-such-rootfs"}}, "root.path"),
    ({"linux": {"namespaces": [{"type": "mount"}, {"type": "bogus"}]}},
     "linux.namespaces[1].type"),
    ({"linux": {"namespaces": [{"type": "mount"}, {"type": "user"}]}},
     "linux.uidMappings"),
    ({"linux": {"namespaces": [{"type": "mount"}, {"type": "uts"},
                               {"type": "network", "path": "/proc/self/ns/uts"}]}},
     "linux.namespaces[2].path"),
    ({"hostname": 7}, "hostname"),
    ({"hooks": {"prestart": [{"path": "relative/hook"}]}}, "hooks.prestart[0].path"),
    ({"process": {"args": ["true"], "cwd": "/", "rlimits": [{"type": "RLIMIT_BOGUS",
                                                              "soft": 1, "hard": 1}]}},
     "process.rlimits[0].type"),
], ids=["old-version", "version-2", "missing-rootfs", "unknown-namespace", "user-namespace",
        "namespace-of-another-type", "hostname-type", "relative-hook", "rlimit-type"])
def test_bad_config_names_the_field_and_leaves_nothing(bundle: Path, cli: Cli,
                                                       change: dict, field: str) -> None:
    configure(bundle, "true", **change)
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert field in created.stderr, created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_missing_command_fails_create(bundle: Path, cli: Cli) -> None:
    """As runc: the command is looked up before create returns, not at start; in
    runc's words, with docker's exit code 127."""
    configure(bundle, "no-such-command")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_log_format_json_error_line(tmp_path: Path) -> None:
    log = tmp_path / "runtime.log"
    cid = issue_id()
    proc = ptc_runtime("--root", str(STATE_ROOT), "--log", str(log), "--log-format", "json",
                       "start", cid)
    assert proc.returncode == 1
    assert f"container {cid!r} does not exist" in proc.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and cid in entry["msg"]
    # RFC 3339 in UTC with a Z, as runc's logrus writes it: "2024-05-01T12:00:00Z"
    stamp = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    assert abs(time.time() - stamp.timestamp()) < 60
    text_log = tmp_path / "text.log"
    ptc_runtime("--log", str(text_log), "start", cid)
    assert text_log.read_text().startswith(f'time="{entry["time"][:11]}')
    assert '" level=error msg=' in text_log.read_text()
    assert text_log.read_text().split('"')[1].endswith("Z")


def test_systemd_cgroup_and_console_socket_are_refused(bundle: Path, tmp_path: Path) -> None:
    cid = issue_id()
    proc = ptc_runtime("--systemd-cgroup", "create", "--bundle", str(bundle), cid)
    assert proc.returncode == 1 and "--systemd-cgroup is not supported" in proc.stderr
    proc = ptc_runtime("create", "--console-socket", str(tmp_path / "sock"), "--bundle",
                       str(bundle), cid)
    assert proc.returncode == 1 and "terminals are not supported yet" in proc.stderr
    assert leftovers(cid) == []


# -- hooks ---------------------------------------------------------------------------


def _hook(tmp_path: Path, name: str, script: str) -> dict[str, Any]:
    """A hook running ``/bin/sh -c script`` with ``OUT`` set to ``tmp_path/name``."""
    return {"path": "/bin/sh", "args": ["sh", "-c", script],
            "env": [f"OUT={tmp_path / name}", "PATH=/usr/bin:/bin"], "timeout": 10}


def test_hooks_get_the_state_on_stdin(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    """prestart, createRuntime (runtime's namespaces), createContainer (the container's,
    before pivot_root), startContainer (in the container, after pivot_root), poststart,
    poststop: each gets the State JSON on stdin."""
    host_uts = os.readlink("/proc/self/ns/uts")
    save = "cat > $OUT; readlink /proc/self/ns/uts > $OUT.uts"
    hooks = {
        "prestart": [_hook(tmp_path, "prestart", save)],
        "createRuntime": [_hook(tmp_path, "createRuntime", save)],
        "createContainer": [_hook(tmp_path, "createContainer", save)],
        # resolved in the container: the rootfs's /bin/sh, writing into the rootfs
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /start-hook"]}],
        "poststart": [_hook(tmp_path, "poststart", save)],
        "poststop": [_hook(tmp_path, "poststop", save)],
    }
    configure(bundle, "sh", "-c", "cat /start-hook > /seen-by-process", hooks=hooks,
              annotations={"a": "b"})
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    pid = cli.state(cid)["pid"]
    for kind in ("prestart", "createRuntime", "createContainer"):
        state = json.loads((tmp_path / kind).read_text())
        assert (state["id"], state["pid"], state["status"]) == (cid, pid, "created"), kind
        assert state["bundle"] == str(bundle) and state["annotations"] == {"a": "b"}
    assert (tmp_path / "prestart.uts").read_text().strip() == host_uts
    assert (tmp_path / "createRuntime.uts").read_text().strip() == host_uts
    container_uts = os.readlink(f"/proc/{pid}/ns/uts")
    assert (tmp_path / "createContainer.uts").read_text().strip() == container_uts != host_uts
    assert not (tmp_path / "poststart").exists()
    started = ptc_runtime("start", cid)
    assert started.returncode == 0, started.stderr
    assert json.loads((tmp_path / "poststart").read_text())["status"] == "running"
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    start_state = json.loads((bundle / "rootfs" / "start-hook").read_text())
    assert start_state["id"] == cid and start_state["pid"] == pid
    assert (bundle / "rootfs" / "seen-by-process").read_text() == \
        (bundle / "rootfs" / "start-hook").read_text()
    assert ptc_runtime("delete", cid).returncode == 0
    poststop = json.loads((tmp_path / "poststop").read_text())
    assert (poststop["id"], poststop["status"]) == (cid, "stopped")


def test_failing_prestart_tears_down(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}]}
    configure(bundle, "touch", "/must-not-run", hooks=hooks)
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert "hooks.prestart[0]" in created.stderr and "exited with status 3" in created.stderr
    assert "broken" in created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []
    assert not (bundle / "rootfs" / "must-not-run").exists()


def test_hook_timeout_kills_it(bundle: Path, cli: Cli) -> None:
    hooks = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    configure(bundle, "true", hooks=hooks)
    t0 = time.monotonic()
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1
    assert time.monotonic() - t0 < 20
    assert "hooks.createRuntime[0]" in created.stderr and "timed out" in created.stderr
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_failing_poststop_only_warns(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    hooks = {"poststop": [{"path": "/bin/false"}, _hook(tmp_path, "second", "cat > $OUT")]}
    configure(bundle, "true", hooks=hooks)
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", cid).returncode == 0
    assert wait_for(lambda: cli.state(cid)["status"] == "stopped")
    deleted = ptc_runtime("delete", cid)
    assert deleted.returncode == 0
    assert "warning" in deleted.stderr and "hooks.poststop[0]" in deleted.stderr
    assert json.loads((tmp_path / "second").read_text())["id"] == cid
    assert leftovers(cid) == []


# -- exec, namespaces by path, list, ps, pause -------------------------------------------


def test_exec_process_file_and_command_line(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    configure(bundle, "sleep", "30", hostname="exec-box")
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", cid).returncode == 0
    process = {"args": ["sh", "-c", "echo $$ $(hostname) $GREETING $(id -u); "
                        "tr '\\0' ' ' < /proc/1/cmdline; echo; pwd"],
               "env": ["PATH=/bin", "GREETING=hi"], "cwd": "/tmp",
               "user": {"uid": 1000, "gid": 1000}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    proc = ptc_runtime("exec", "--process", str(tmp_path / "process.json"), cid)
    assert proc.returncode == 0, proc.stderr
    first, cmdline, cwd = proc.stdout.splitlines()
    pid, hostname, greeting, uid = first.split()
    assert 1 < int(pid) < 100 and (hostname, greeting, uid) == ("exec-box", "hi", "1000")
    assert cmdline.strip() == "sleep 30" and cwd == "/tmp"
    coded = ptc_runtime("exec", "--cwd", "/tmp", "--env", "X=4", cid, "sh", "-c",
                        "exit $X")
    assert coded.returncode == 4
    pid_file = tmp_path / "exec.pid"
    # detached, the process keeps our stdio: not a pipe we wait on
    detached = subprocess.run([*CLI, "exec", "--detach", "--pid-file", str(pid_file), cid,
                               "sleep", "20"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert detached.returncode == 0
    exec_pid = int(pid_file.read_text())
    assert exec_pid in processes_in(cid)
    listed = ptc_runtime("ps", "--format", "json", cid)
    assert exec_pid in json.loads(listed.stdout)
    missing = ptc_runtime("exec", cid, "no-such-tool")
    assert missing.returncode == 127
    assert 'exec: "no-such-tool": executable file not found in $PATH' in missing.stderr


def test_second_container_joins_network_uts_and_pid_namespaces(bundle: Path, cli: Cli,
                                                               tmp_path: Path) -> None:
    """B joins A's network, uts and pid namespaces by path: B sees A's hostname, A's
    interfaces and A's processes."""
    configure(bundle, "sleep", "30", hostname="alpha")
    first, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", first).returncode == 0
    pid = cli.state(first)["pid"]
    second_bundle = tmp_path / "second"
    second_bundle.mkdir()
    (second_bundle / "rootfs").symlink_to(bundle / "rootfs")
    config = json.loads((bundle / "config.json").read_text())
    config.pop("hostname")
    config["process"]["args"] = ["sh", "-c", "hostname; readlink /proc/self/ns/net; "
                                 "tr '\\0' ' ' < /proc/1/cmdline"]
    namespaces = [n for n in config["linux"]["namespaces"]
                  if n["type"] not in ("network", "uts", "pid")]
    namespaces += [{"type": "network", "path": f"/proc/{pid}/ns/net"},
                   {"type": "uts", "path": f"/proc/{pid}/ns/uts"},
                   {"type": "pid", "path": f"/proc/{pid}/ns/pid"}]
    config["linux"]["namespaces"] = namespaces
    config["root"]["path"] = str(bundle / "rootfs")
    (second_bundle / "config.json").write_text(json.dumps(config))
    second = issue_id()
    proc = ptc_runtime("run", "--bundle", str(second_bundle), second)
    assert proc.returncode == 0, proc.stderr
    hostname, netns, init = proc.stdout.splitlines()
    assert hostname == "alpha"
    assert netns == os.readlink(f"/proc/{pid}/ns/net")
    assert init.strip() == "sleep 30"
    assert cli.state(first)["status"] == "running"  # B's end did not touch A
    assert leftovers(second) == []


def test_run_detach_list_ps_pause_resume(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    configure(bundle, "sh", "-c", "sleep 30 & wait")
    cid = issue_id()
    cli.ids.append(cid)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        proc = subprocess.run([*CLI, "run", "--detach", "--bundle", str(bundle), cid],
                              stdout=f, stderr=subprocess.STDOUT, timeout=60, check=False)
    assert proc.returncode == 0, out.read_text()
    assert cli.state(cid)["status"] == "running"
    listed = {s["id"]: s for s in json.loads(ptc_runtime("list", "--format", "json").stdout)}
    assert listed[cid]["status"] == "running" and listed[cid]["owner"] == "root"
    assert cid in ptc_runtime("list", "-q").stdout.split()
    assert wait_for(lambda: len(json.loads(ptc_runtime("ps", "--format", "json", cid).stdout))
                    == 2)
    assert ptc_runtime("pause", cid).returncode == 0
    assert cli.state(cid)["status"] == "paused"
    assert ptc_runtime("resume", cid).returncode == 0
    assert cli.state(cid)["status"] == "running"
    assert ptc_runtime("delete", "--force", cid).returncode == 0
    assert leftovers(cid) == []


# -- lifetime: zombies, the sweep ---------------------------------------------------------

_SUBREAPER = textwrap.dedent("""
    import ctypes, json, subprocess, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us
    cli, bundle, cid, out = json.loads(sys.argv[1])
    with open(out, "wb") as f:
        subprocess.run([*cli, "create", "--bundle", bundle, "--pid-file", out + ".pid", cid],
                       stdout=f, stderr=f, check=True)
    subprocess.run([*cli, "start", cid], check=True)
    state = json.loads(subprocess.run([*cli, "state", cid], capture_output=True).stdout)
    pid = int(open(out + ".pid").read())
    deadline = time.time() + 10
    while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline
        time.sleep(0.01)
    zombie = json.loads(subprocess.run([*cli, "state", cid], capture_output=True).stdout)
    print(json.dumps([state, zombie]), flush=True)
""")


def test_zombie_init_is_stopped(bundle: Path, cli: Cli, tmp_path: Path) -> None:
    """The init's new parent (a subreaper that does not reap) leaves it a zombie:
    ``state`` says stopped, as for a reaped one."""
    configure(bundle, "true")
    cid = issue_id()
    cli.ids.append(cid)
    args = json.dumps([CLI, str(bundle), cid, str(tmp_path / "out")])
    proc = subprocess.run([sys.executable, "-c", _SUBREAPER, args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    running, zombie = json.loads(proc.stdout)
    assert running["status"] in ("running", "stopped")
    assert (zombie["status"], zombie["pid"]) == ("stopped", 0)
    assert ptc_runtime("delete", cid).returncode == 0


def test_sweep_leaves_detached_containers_and_sweeps_a_killed_run(bundle: Path, cli: Cli,
                                                                  tmp_path: Path) -> None:
    """A detached container has no owner: the sweep leaves it alone, running or stopped
    (``delete`` is the way). A foreground ``run`` killed with SIGKILL takes its
    container with it (parent-death signal) and the sweep removes the rest."""
    configure(bundle, "sleep", "30")
    detached, created, _, _ = cli.create(bundle)
    assert created.returncode == 0, created.stderr
    assert ptc_runtime("start", detached).returncode == 0
    assert detached not in sweep(STATE_ROOT)
    assert cli.state(detached)["status"] == "running"
    assert ptc_runtime("kill", detached, "KILL").returncode == 0
    assert wait_for(lambda: cli.state(detached)["status"] == "stopped")
    assert detached not in sweep(STATE_ROOT)
    assert (STATE_ROOT / detached / "state.json").exists()

    foreground = issue_id()
    run = subprocess.Popen([*CLI, "run", "--bundle", str(bundle), foreground],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(processes_in(foreground)) == 1)
        assert foreground not in sweep(STATE_ROOT)  # its owner lives
        run.kill()
        run.wait()
        assert wait_for(lambda: processes_in(foreground) == [], timeout=5)
        assert foreground in sweep(STATE_ROOT)
        assert leftovers(foreground) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


# -- podman drives it (conmon: create, start, state, exec --process --detach, kill, delete) --


def _podman_cgroups() -> set[Path]:
    return set(CGROUP_ROOT.glob("*/libpod_parent"))


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """Function: ``podman`` argv with ptc-runtime as its runtime and its storage
    (vfs) and run root in a temporary dir; a busybox image (built by umoci) pulled. At
    teardown every container is removed, then the storage, and podman's
    ``libpod_parent`` cgroups when this test made them."""
    for tool in ("podman", "conmon", "umoci"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    from pytest_containers.plugins.oracle_images import build_busybox_layout

    wrapper = tmp_path / "ptc-runtime"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m pytest_containers.runtime.cli "
                       '"$@"\n')
    wrapper.chmod(0o755)
    short = Path(tempfile.mkdtemp(prefix="ptc-podman-"))  # podman: run root <= 50 chars
    argv = ["podman", "--root", str(short / "root"), "--runroot", str(short / "run"),
            "--storage-driver", "vfs", "--runtime", str(wrapper),
            "--cgroup-manager", "cgroupfs"]
    cgroups_before = _podman_cgroups()
    layout = build_busybox_layout(tmp_path / "layout")
    try:
        pulled = subprocess.run([*argv, "pull", "-q", f"oci:{layout}:latest"],
                                capture_output=True, text=True, timeout=120)
        assert pulled.returncode == 0, pulled.stderr
        yield [*argv, "@" + pulled.stdout.split()[-1]]
    finally:
        subprocess.run([*argv, "rm", "-a", "-f"], capture_output=True, timeout=120)
        subprocess.run([*argv, "rmi", "-a", "-f"], capture_output=True, timeout=120)
        for top in _podman_cgroups() - cgroups_before:
            for path in sorted(top.rglob("*"), key=lambda p: -len(p.parts)) + [top]:
                if path.is_dir():
                    with contextlib.suppress(OSError):
                        path.rmdir()
        with open("/proc/self/mountinfo") as f:
            assert str(short) not in f.read()
        shutil.rmtree(short)


def test_podman_runs_and_execs_through_ptc_runtime(podman: list[str]) -> None:
    *argv, image = podman
    image = image[1:]
    limits = ["--network", "none", "--ulimit", "nofile=1024:1024",
              "--ulimit", "nproc=4096:4096"]  # this host lacks CAP_SYS_RESOURCE
    ran = subprocess.run([*argv, "run", "--rm", *limits, image, "sh", "-c",
                          "echo hello $$; exit 3"], capture_output=True, text=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (3, "hello 1\n"), ran.stderr
    started = subprocess.run([*argv, "run", "-d", *limits, image, "sleep", "100"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    state = json.loads(ptc_runtime("state", name).stdout)  # our default root: podman's too
    assert state["status"] == "running"
    execd = subprocess.run([*argv, "exec", name, "sh", "-c", "echo $$; exit 4"],
                           capture_output=True, text=True, timeout=120)
    assert execd.returncode == 4 and 1 < int(execd.stdout) < 100, execd.stderr
    # podman reads our words ("executable file not found", "permission denied")
    missing = subprocess.run([*argv, "exec", name, "no-such-tool"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 127, missing.stderr
    assert "executable file not found in $PATH" in missing.stderr
    denied = subprocess.run([*argv, "exec", name, "/etc/passwd"], capture_output=True,
                            text=True, timeout=120)
    assert denied.returncode == 126 and "permission denied" in denied.stderr, denied.stderr
    not_run = subprocess.run([*argv, "run", "--rm", *limits, image, "no-such-tool"],
                             capture_output=True, text=True, timeout=120)
    assert not_run.returncode == 127, not_run.stderr
    removed = subprocess.run([*argv, "rm", "-f", "-t", "0", name], capture_output=True,
                             text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert not (STATE_ROOT / name).exists()


# -- config checks and small parsers (no container needed) ---------------------------------


def test_signal_names_and_numbers() -> None:
    from pytest_containers.runtime.native.lifecycle import parse_signal

    assert parse_signal("TERM") == parse_signal("SIGTERM") == parse_signal("15") == 15
    assert parse_signal("kill") == 9 and parse_signal("RTMIN+2") == signal.SIGRTMIN + 2
    assert parse_signal("0") == 0  # kill ID 0: is it running? (runc, kill(2))
    for bad in ("99", "-1", "SIGNOPE", "", "TERM;"):
        with pytest.raises(ValueError, match="unknown signal"):
            parse_signal(bad)


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.3.0", "1.0.0-rc5+dirty"])
def test_any_1x_oci_version_is_accepted(version: str) -> None:
    from pytest_containers.runtime.native.config import check_config

    check_config({"ociVersion": version, "root": {"path": "rootfs"}})


def test_cgroups_path_default_relative_and_systemd() -> None:
    from pytest_containers.runtime.native.config import cgroup_path_of

    assert cgroup_path_of({}, "c1") == "/ptc/c1"
    assert cgroup_path_of({"linux": {"cgroupsPath": "/a/b"}}, "c1") == "/a/b"
    assert cgroup_path_of({"linux": {"cgroupsPath": "a/b"}}, "c1") == "/ptc/a/b"
    with pytest.raises(ValueError, match="linux.cgroupsPath.*--systemd-cgroup"):
        cgroup_path_of({"linux": {"cgroupsPath": "system.slice:ptc:c1"}}, "c1")
    with pytest.raises(ValueError, match="linux.cgroupsPath"):
        cgroup_path_of({"linux": {"cgroupsPath": "/a/../b"}}, "c1")


def test_namespaced_sysctl_is_set_and_a_host_one_refused(bundle: Path, cli: Cli) -> None:
    host_msgmax = Path("/proc/sys/kernel/msgmax").read_text()
    configure(bundle, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/msgmax")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}
    (bundle / "config.json").write_text(json.dumps(config))
    proc = ptc_runtime("run", "--bundle", str(bundle), issue_id())
    assert (proc.returncode, proc.stdout.split()) == (0, ["1", "4096"]), proc.stderr
    assert Path("/proc/sys/kernel/msgmax").read_text() == host_msgmax  # the host's untouched
    config["linux"]["sysctl"] = {"kernel.panic": "1"}
    (bundle / "config.json").write_text(json.dumps(config))
    cid, created, _, _ = cli.create(bundle)
    assert created.returncode == 1 and "linux.sysctl['kernel.panic']" in created.stderr
    assert leftovers(cid) == []
