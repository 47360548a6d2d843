"""The plugin end to end, through ``pytester``: fixtures, options, teardown of
everything a test started (also when it fails), and clear option errors."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends.conftest import waiter_pids
from tests.conftest import needs

pytest_plugins = ["pytester"]

pytestmark = needs("docker-registry", "skopeo", "umoci")


def _leftovers() -> list[str]:
    """Every host object of ours, as the before-stop check finds them: ``ptc*``
    cgroup dirs (shared parents included), mounts, entries in ``/run/ptc``."""
    root = Path("/sys/fs/cgroup")
    found = [str(p) for depth in ("ptc*", "*/ptc*", "*/*/ptc*", "*/*/*/ptc*")
             for p in root.glob(depth) if p.is_dir()]
    found += [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "ptc" in line.split()[4]]
    if Path("/run/ptc").exists():
        found += [str(p) for p in Path("/run/ptc").iterdir()]
    return found


@pytest.mark.parametrize("backend", ["native", pytest.param("runc", marks=needs("runc"))])
def test_containers_fixture_runs_and_tears_down(
    pytester: pytest.Pytester, busybox_ref: str, backend: str, tmp_path: Path
) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        IMAGE = {busybox_ref!r}

        def test_run(containers):
            result = containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (result.exit_code, result.stdout, result.stderr) == (3, "out\\n", "err\\n")
            assert not result.oom_killed

        def test_start_exec_and_fail(containers):
            handle = containers.start(IMAGE, ["sleep", "60"])
            assert handle.exec(["cat", "/proc/1/cmdline"]).stdout == b"sleep\\x0060\\x00"
            pytest.fail("deliberately, with a container still running")
        """
    )
    result = pytester.runpytest_subprocess(
        f"--container-runtime={backend}",
        f"--container-store={tmp_path / 'store'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1, failed=1)
    assert _leftovers() == []


def test_unknown_runtime_lists_the_available_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--container-runtime=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown backend 'nope'; available: *native*runc*"])


def _wait_for_container(owner: int, timeout: float = 30.0) -> Path:
    """The state dir of the first container whose owner process is ``owner``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for state_dir in Path("/run/ptc").glob("ptc-*"):
            try:
                if int((state_dir / "owner").read_text()) == owner:
                    found.append(state_dir)
            except (FileNotFoundError, ValueError):
                pass
        if found:
            time.sleep(0.3)  # let the container's process start
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no container appeared")


def _container_pids(state_dir: Path, timeout: float = 10.0) -> list[int]:
    """Host pids in the container's cgroup (any hierarchy), once there are some."""
    cid = state_dir.name
    root = Path("/sys/fs/cgroup")
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for procs in [*root.glob(f"ptc/{cid}/cgroup.procs"),
                      *root.glob(f"*/ptc/{cid}/cgroup.procs"),  # a session's container:
                      *root.glob(f"*/ptc/ptc-session-*/{cid}/cgroup.procs")]:
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except FileNotFoundError:
                pass
        if pids or time.monotonic() > deadline:
            return sorted(pids)
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("backend", ["native", pytest.param("runc", marks=needs("runc"))])
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "kill-9"])
def test_interrupted_session_leaves_nothing(pytester: pytest.Pytester, busybox_ref: str,
                                            tmp_path: Path, how: signal.Signals,
                                            backend: str) -> None:
    """Ctrl-C and SIGTERM (a CI runner's timeout) tear everything down at once;
    after ``kill -9`` of pytest no
    container process (nor runc's waiting process) outlives it by more than a
    second, and the next session sweeps the cgroups, mounts, runtime state and
    state dir."""
    assert _leftovers() == []
    pytester.makepyfile(
        f"""
        import time
        def test_long(containers):
            containers.start({busybox_ref!r}, ["sleep", "300"])
            time.sleep(300)
        """
    )
    store = f"--container-store={tmp_path / 'store'}"
    proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", store,
                           f"--container-runtime={backend}"], stdin=subprocess.DEVNULL)
    try:
        state_dir = _wait_for_container(proc.pid)
        pids = _container_pids(state_dir)
        assert pids and all(_alive(p) for p in pids)
        sent = time.monotonic()
        proc.send_signal(how)
        while (any(_alive(p) for p in pids) or waiter_pids(proc.pid)) and (
            time.monotonic() - sent < 5
        ):
            time.sleep(0.01)
        gone_after = time.monotonic() - sent
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(_alive(p) for p in pids)
    assert waiter_pids(proc.pid) == []
    # runc's teardown is two more runc round trips (kill, delete), slow under load
    assert gone_after < (1.0 if backend == "native" else 2.0)
    if how != signal.SIGKILL:
        assert _leftovers() == []
    else:
        # the next session (any pytest run with the plugin) sweeps what kill -9 left
        pytester.makepyfile("def test_nothing(): pass")
        pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
        assert _leftovers() == []


def _registry_processes(config: Path) -> list[int]:
    """Live ``docker-registry serve CONFIG`` processes."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(config).encode() in argv and _alive(int(proc.name)):
                found.append(int(proc.name))
    return found


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill-term"])
def test_registry_dies_with_its_session(pytester: pytest.Pytester, how: signal.Signals) -> None:
    """The ``registry`` fixture's ``docker-registry`` does not outlive a killed
    pytest, and the next session removes its temp dir."""
    pytester.makepyfile(
        """
        import time
        def test_long(registry):
            print("WORKDIR", registry.workdir, flush=True)
            time.sleep(300)
        """
    )
    proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    workdir = None
    try:
        assert proc.stdout is not None
        output, found = b"", None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                output += chunk
                found = re.search(rb"WORKDIR (\S+)\n", output)
        assert found, f"the registry fixture did not start: {output!r}"
        workdir = Path(found.group(1).decode())
        config = workdir / "config.yml"
        registry_pids = _registry_processes(config)
        assert len(registry_pids) == 1
        assert os.getpgid(registry_pids[0]) != os.getpgid(proc.pid)  # ^C is not for it
        proc.send_signal(how)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 5
        while _registry_processes(config) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _registry_processes(config) == []
        # the next session's registry fixture sweeps the dead owner's temp dir
        pytester.makepyfile("def test_nothing(registry): pass")
        pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
        assert not workdir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if workdir is not None:
            for pid in _registry_processes(workdir / "config.yml"):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("backend", ["native", pytest.param("runc", marks=needs("runc"))])
def test_session_limits_hold_for_all_containers_together(
    pytester: pytest.Pytester, busybox_ref: str, backend: str, tmp_path: Path
) -> None:
    """``--container-session-memory`` sits on the session's parent cgroup: a
    container without a limit of its own is OOM-killed under it, and sees it;
    the parent is gone after the session."""
    pytester.makepyfile(
        f"""
        import os
        IMAGE = {busybox_ref!r}

        def test_parent_limit(containers, container_cgroup_parent):
            assert container_cgroup_parent == f"/ptc/ptc-session-{{os.getpid()}}"
            limit = open(f"/sys/fs/cgroup/memory{{container_cgroup_parent}}"
                         "/memory.limit_in_bytes").read()
            assert int(limit) == 64 << 20
            dd = ["dd", "if=/dev/zero", "bs=200M", "count=1", "of=/dev/null"]
            big = containers.run(IMAGE, dd)
            assert (big.oom_killed, big.exit_code) == (True, 137)
            small = containers.run(IMAGE, ["sh", "-c", "dd if=/dev/zero bs=8M count=1 | wc -c"])
            assert (small.exit_code, small.oom_killed) == (0, False)
            assert small.stdout.strip() == "8388608"
            # removing a container keeps the parent and its limit (runc removes empty parents)
            assert open(f"/sys/fs/cgroup/memory{{container_cgroup_parent}}"
                        "/memory.limit_in_bytes").read() == limit
        """
    )
    result = pytester.runpytest_subprocess(
        f"--container-runtime={backend}",
        f"--container-store={tmp_path / 'store'}",
        "--container-session-memory=64m",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    assert _leftovers() == []


def test_bad_session_limit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--container-session-memory=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--container-session-*memory size*lots*"])


def test_a_killed_sessions_parent_cgroup_is_swept(tmp_path: Path) -> None:
    """The parent cgroup of a session whose process is dead goes at the next
    session start (sweep_session_cgroups); a live one's stays."""
    from pytest_containers.runtime.linux.cgroups import open_cgroup
    from pytest_containers.runtime.sweep import session_cgroup_path, sweep_session_cgroups

    dead = subprocess.Popen(["true"])
    dead.wait()
    path = session_cgroup_path(dead.pid)
    cgroup = open_cgroup(path)
    cgroup.create(None)
    child = open_cgroup(f"{path}/ptc-orphan")
    child.create(None)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        child.add(sleeper.pid)
        live = open_cgroup(session_cgroup_path())
        live.create(None)
        try:
            assert sweep_session_cgroups() == [path]
            assert sleeper.wait(timeout=5) == -signal.SIGKILL
            assert not any(Path("/sys/fs/cgroup").glob(f"*{path}"))
            assert Path(f"/sys/fs/cgroup/memory{session_cgroup_path()}").is_dir()
        finally:
            live.remove()
    finally:
        sleeper.kill()
        sleeper.wait()
        child.remove()
        cgroup.remove()


def test_each_test_gets_a_bill_of_its_containers(
    pytester: pytest.Pytester, busybox_ref: str, tmp_path: Path
) -> None:
    """The ``containers`` fixture adds ``("containers", [usage...])`` to the test's
    user_properties: what each container used, from the kernel's counters."""
    pytester.makeconftest(
        """
        import json
        BILLS = {}

        def pytest_runtest_logreport(report):
            if report.when == "teardown":
                BILLS[report.nodeid] = dict(report.user_properties).get("containers")

        def pytest_sessionfinish(session):
            with open("bills.json", "w") as f:
                json.dump(BILLS, f)
        """
    )
    pytester.makepyfile(
        f"""
        IMAGE = {busybox_ref!r}

        def test_two(containers):
            containers.run(IMAGE, ["dd", "if=/dev/zero", "bs=16M", "count=1", "of=/dev/null"])
            containers.start(IMAGE, ["sleep", "60"])

        def test_none(containers):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        f"--container-store={tmp_path / 'store'}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    bills = json.loads((pytester.path / "bills.json").read_text())
    dd, sleep = bills["test_each_test_gets_a_bill_of_its_containers.py::test_two"]
    assert (dd["exit_code"], dd["oom_killed"], dd["args"][0]) == (0, False, "dd")
    assert dd["memory_peak_bytes"] >= 16 << 20 and dd["cpu_usage_us"] > 0
    assert sleep["args"] == ["sleep", "60"] and sleep["exit_code"] == 137  # killed at teardown
    assert bills["test_each_test_gets_a_bill_of_its_containers.py::test_none"] is None
