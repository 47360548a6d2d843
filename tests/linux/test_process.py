"""The container process (runtime/native/process.py) against the real kernel.

Each test forks a child that enters a private mount namespace (and, for the init, a
new pid namespace), chroots into the busybox rootfs with its own /proc and a tmpfs
on /tmp, then calls apply_process + exec_process (or run_as_init) on busybox
commands; results are read from /proc/<pid>/status, the shell's own output and the
exit status.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import resource
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_containers.runtime.linux import syscalls as sc
from pytest_containers.runtime.linux.capabilities import NAMES, UnknownCapabilityError
from pytest_containers.runtime.native import process as proc

from pytest_containers.exceptions import ContainerStartError, InvalidOptionError

from .conftest import CGROUP_ROOT, issue_id

CAP = {name: 1 << number for number, name in enumerate(NAMES)}
HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

MKDIR_DENIED = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                  "errnoRet": errno.EPERM}],
}


@pytest.fixture
def rootfs(busybox_rootfs: Path) -> Path:
    """The session's busybox rootfs, its top dir searchable by any uid (mktemp makes
    it 0700)."""
    busybox_rootfs.chmod(0o755)
    return busybox_rootfs


def config(*args: str, **fields) -> dict:
    """A runtime-spec ``process`` for busybox ``args``, with ``fields`` replaced."""
    process = {"args": list(args), "env": ["PATH=/bin"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}}
    process.update(fields)
    return process


@dataclasses.dataclass
class Ran:
    pid: int
    status: int
    stdout: str
    stderr: str

    @property
    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)


def enter_rootfs(rootfs: Path) -> None:
    """In the forked child: a private mount namespace, /proc, a tmpfs /tmp, a tmpfs /dev
    with the host's /dev/null bound in, chroot."""
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("proc", f"{rootfs}/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sc.mount("tmpfs", f"{rootfs}/tmp", "tmpfs", 0, "mode=1777")
    sc.mount("tmpfs", f"{rootfs}/dev", "tmpfs", sc.MS_NOSUID, "mode=755")
    os.close(os.open(f"{rootfs}/dev/null", os.O_CREAT | os.O_WRONLY, 0o666))
    sc.mount("/dev/null", f"{rootfs}/dev/null", None, sc.MS_BIND)
    os.chroot(rootfs)
    os.chdir("/")


def run_child(body: Callable[[], None], *, new_pid_ns: bool = False, timeout: float = 20.0,
              started: Callable[[int, int], None] | None = None) -> Ran:
    """Fork ``body`` (PID 1 of a new pid namespace with ``new_pid_ns``) with stdout and
    stderr on pipes; ``started(pid, stdout_fd)`` runs meanwhile. Whatever ``body``
    raises is written to stderr as ``ERROR <type> step=<step> errno=<n>: <message>``."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if new_pid_ns else -1
    pid = -1
    try:
        if new_pid_ns:
            sc.unshare(sc.CLONE_NEWPID)
        pid = os.fork()
    finally:
        if pid != 0 and own >= 0:
            sc.setns(own, sc.CLONE_NEWPID)
            os.close(own)
    if pid == 0:
        try:
            sc.set_pdeathsig(signal.SIGKILL)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            body()
        except BaseException as exc:  # noqa: B036
            os.write(2, f"ERROR {type(exc).__name__} step={getattr(exc, 'step', None)} "
                        f"errno={getattr(exc, 'errno', None)}: {exc}\n".encode())
        os._exit(99)
    os.close(out_w)
    os.close(err_w)
    out, err = bytearray(), bytearray()
    try:
        if started is not None:
            started(pid, out_r)
        deadline = time.monotonic() + timeout
        open_fds = {out_r: out, err_r: err}
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"child still running after {timeout} s: {bytes(out)!r}")
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    open_fds[fd].extend(chunk)
                else:
                    del open_fds[fd]
        status = os.waitpid(pid, 0)[1]
        pid = -1
    finally:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
    return Ran(pid, status, out.decode(), err.decode())


def run_process(rootfs: Path, process: dict, *, seccomp: dict | None = None,
                plan: proc.ProcessPlan | None = None) -> Ran:
    """prepare_process in the test, apply_process + exec_process in a chrooted child."""
    plan = plan or proc.prepare_process(process, str(rootfs), seccomp=seccomp)

    def body() -> None:
        enter_rootfs(rootfs)
        proc.apply_process(plan)
        proc.exec_process(plan)

    return run_child(body)


def status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())
            if k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd",
                     "CapAmb", "NoNewPrivs", "Seccomp")}


STATUS_SCRIPT = ("cat /proc/self/status; echo nofile=$(ulimit -n)/$(ulimit -Hn); "
                 "echo umask=$(umask); echo oom=$(cat /proc/self/oom_score_adj); "
                 "echo home=$HOME; echo pwd=$(pwd)")


def script_values(text: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition("=") for line in text.splitlines()) if _}


# -- apply + exec --------------------------------------------------------------------


def test_user_groups_capabilities_limits_as_the_kernel_reports_them(rootfs):
    ran = run_process(rootfs, config(
        "sh", "-c", STATUS_SCRIPT, cwd="/tmp",
        user={"uid": 1000, "gid": 1001, "additionalGids": [44, 55], "umask": 0o027},
        capabilities={"bounding": ["CAP_NET_RAW", "CAP_CHOWN"],
                      "effective": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"],
                      "inheritable": ["CAP_NET_RAW"], "ambient": ["CAP_NET_RAW"]},
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}],
        noNewPrivileges=True, oomScoreAdj=500))
    assert ran.exit_code == 0, ran.stderr
    status = status_fields(ran.stdout)
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1001"] * 4
    assert status["Groups"].split() == ["44", "55"]
    assert int(status["CapBnd"], 16) == CAP["CAP_NET_RAW"] | CAP["CAP_CHOWN"]
    # a non-root process keeps across execve only its ambient set
    assert int(status["CapAmb"], 16) == CAP["CAP_NET_RAW"]
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == CAP["CAP_NET_RAW"]
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "0")
    values = script_values(ran.stdout)
    assert values["nofile"] == "512/1024"
    assert values["umask"] == "0027"
    assert values["oom"] == "500"
    assert values["home"] == "/"  # uid 1000 has no /etc/passwd entry
    assert values["pwd"] == "/tmp"


def test_root_defaults_home_umask_and_no_privileges(rootfs):
    """No capabilities object: every set empty, even for root; umask 0022; HOME from
    the rootfs's /etc/passwd; oom_score_adj and rlimits left as they were."""
    ran = run_process(rootfs, config("sh", "-c", STATUS_SCRIPT))
    assert ran.exit_code == 0, ran.stderr
    status = status_fields(ran.stdout)
    assert status["Uid"].split() == ["0"] * 4 and status["Groups"] == ""
    for key in ("CapBnd", "CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(status[key], 16) == 0, key
    assert status["NoNewPrivs"] == "0"
    values = script_values(ran.stdout)
    assert values["umask"] == "0022"
    assert values["home"] == "/root"
    assert values["oom"] == Path("/proc/self/oom_score_adj").read_text().strip()
    assert values["nofile"] == "/".join(map(str, resource.getrlimit(resource.RLIMIT_NOFILE)))


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_seccomp_errno_for_mkdir_only(rootfs, no_new_privs):
    """The filter returns EPERM for mkdir/mkdirat; everything else works. Without
    noNewPrivileges it is loaded while the init still has CAP_SYS_ADMIN."""
    pytest.importorskip("pyseccomp")
    ran = run_process(rootfs, config(
        "sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/denied; echo mkdir=$?; "
                    "touch /tmp/allowed && ls /tmp", noNewPrivileges=no_new_privs,
        capabilities={k: ["CAP_CHOWN"] for k in ("bounding", "effective", "permitted")}),
        seccomp=MKDIR_DENIED)
    assert ran.exit_code == 0, ran.stderr
    assert "Operation not permitted" in ran.stderr
    lines = ran.stdout.split()
    assert lines[:2] == ["Seccomp:", "2"]
    assert "mkdir=1" in lines and lines[-1] == "allowed"


def test_capabilities_of_root_after_exec(rootfs):
    """Root: execve gives permitted = inheritable | bounding, cut to the old permitted
    set under no_new_privs (capabilities(7))."""
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    ran = run_process(rootfs, config(
        "cat", "/proc/self/status", noNewPrivileges=True,
        capabilities={"bounding": caps, "effective": caps, "permitted": caps}))
    assert ran.exit_code == 0, ran.stderr
    status = status_fields(ran.stdout)
    mask = CAP["CAP_CHOWN"] | CAP["CAP_KILL"] | CAP["CAP_NET_BIND_SERVICE"]
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == mask
    assert int(status["CapPrm"], 16) == mask and int(status["CapAmb"], 16) == 0


def test_hard_limit_above_ours_fails_before_fork(rootfs):
    """Root lacks CAP_SYS_RESOURCE here: a hard limit above the caller's is refused by
    prepare_process, naming the rlimit."""
    if proc._effective_has(proc._CAP_SYS_RESOURCE) or HARD_NOFILE == resource.RLIM_INFINITY:
        pytest.skip("this process may raise its hard limits")
    with pytest.raises(ContainerStartError) as info:
        proc.prepare_process(config("true", rlimits=[
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": HARD_NOFILE + 1}]), "/")
    assert "process.rlimits[1] (RLIMIT_NOFILE)" in str(info.value)
    assert "CAP_SYS_RESOURCE" in str(info.value)
    assert (info.value.step, info.value.errno) == ("rlimits", errno.EPERM)


def test_hard_limit_refused_in_the_container_names_the_rlimit(rootfs):
    """The same refusal at apply time (the init's limits differ from the caller's):
    setrlimit's EPERM becomes a start error naming the rlimit and the current limit."""
    if proc._effective_has(proc._CAP_SYS_RESOURCE) or HARD_NOFILE == resource.RLIM_INFINITY:
        pytest.skip("this process may raise its hard limits")
    plan = proc.prepare_process(config("true"), str(rootfs))
    label = "process.rlimits[0] (RLIMIT_NOFILE)"
    plan = dataclasses.replace(plan, rlimits=(
        (resource.RLIMIT_NOFILE, 1024, HARD_NOFILE + 1, label),))
    ran = run_process(rootfs, {}, plan=plan)
    assert ran.exit_code == 99
    assert f"ERROR ContainerStartError step=rlimits errno={errno.EPERM}" in ran.stderr
    assert label in ran.stderr and f"hard limit now {HARD_NOFILE}" in ran.stderr


def test_lowering_oom_score_adj_needs_cap_sys_resource(rootfs):
    if proc._effective_has(proc._CAP_SYS_RESOURCE):
        pytest.skip("this process may lower oom_score_adj")
    ran = run_process(rootfs, config("true", oomScoreAdj=-999))
    assert ran.exit_code == 99
    assert "step=oomScoreAdj" in ran.stderr and "process.oomScoreAdj" in ran.stderr
    assert "CAP_SYS_RESOURCE" in ran.stderr


def test_command_not_found_and_not_executable(rootfs):
    ran = run_process(rootfs, config("no-such-command"))
    assert f"step=exec errno={errno.ENOENT}" in ran.stderr
    assert 'exec: "no-such-command": executable file not found in $PATH' in ran.stderr
    assert "process.args[0]" in ran.stderr
    ran = run_process(rootfs, config("/etc/passwd"))
    assert f"step=exec errno={errno.EACCES}" in ran.stderr


def test_env_path_search_and_home_kept(rootfs):
    ran = run_process(rootfs, config(
        "sh", "-c", "echo $HOME $A; which sh", env=["PATH=/nowhere:/bin", "HOME=/h", "A=1",
                                                   "A=2"]))
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.split() == ["/h", "2", "/bin/sh"]


# -- checks in the parent ------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"args": []}, "process.args"),
    ({"args": ["sh", 3]}, "process.args[1]"),
    ({"env": ["PATH=/bin", "NOEQUALS"]}, "process.env[1]"),
    ({"cwd": "relative"}, "process.cwd"),
    ({"user": {"uid": -1, "gid": 0}}, "process.user.uid"),
    ({"user": {"uid": 0, "gid": "0"}}, "process.user.gid"),
    ({"user": {"uid": 0, "gid": 0, "umask": 0o10000}}, "process.user.umask"),
    ({"user": {"uid": 0, "gid": 0, "additionalGids": [1, "x"]}},
     "process.user.additionalGids[1]"),
    ({"rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                  {"type": "RLIMIT_BOGUS", "soft": 0, "hard": 0}]}, "process.rlimits[1].type"),
    ({"rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                  {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]}, "process.rlimits[1].type"),
    ({"rlimits": [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]}, "process.rlimits[0].soft"),
    ({"rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 1 << 64}]},
     "process.rlimits[0].hard"),
    ({"noNewPrivileges": "yes"}, "process.noNewPrivileges"),
    ({"oomScoreAdj": 1001}, "process.oomScoreAdj"),
    ({"capabilities": {"bounding": "CAP_CHOWN"}}, "process.capabilities.bounding"),
])
def test_invalid_fields_are_named(change, field):
    with pytest.raises(InvalidOptionError) as info:
        proc.prepare_process(config("true", **change), "/")
    assert info.value.option == field
    assert str(info.value).startswith(field + ":")


def test_unknown_capability_names_list_and_index():
    with pytest.raises(UnknownCapabilityError) as info:
        proc.prepare_process(config("true", capabilities={
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_BOGUS"]}), "/")
    assert "process.capabilities.bounding[3]" in str(info.value)
    assert (info.value.name, info.value.kind, info.value.index) == ("CAP_BOGUS", "bounding", 3)


def test_invalid_seccomp_names_the_field():
    pytest.importorskip("pyseccomp")
    bad = dict(MKDIR_DENIED, syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_EXPLODE"}])
    with pytest.raises(InvalidOptionError) as info:
        proc.prepare_process(config("true"), "/", seccomp=bad)
    assert info.value.option == "linux.seccomp.syscalls[0].action"


def test_plan_is_plain_values(rootfs):
    plan = proc.prepare_process(config(
        "sh", user={"uid": 0, "gid": 0, "additionalGids": [1]},
        rlimits=[{"type": "RLIMIT_CORE", "soft": 0, "hard": (1 << 64) - 1}]),
        str(rootfs))
    assert plan.args == ("sh",) and plan.path == ("/bin",) and plan.umask == 0o022
    assert plan.env == {"PATH": "/bin", "HOME": "/root"}
    assert plan.rlimits == ((resource.RLIMIT_CORE, 0, resource.RLIM_INFINITY,
                             "process.rlimits[0] (RLIMIT_CORE)"),)
    assert plan.additional_gids == (1,) and plan.seccomp is None
    assert proc._CAP_KILL not in plan.init_drop and 0 in plan.init_drop


# -- the init --------------------------------------------------------------------------


def pidns_states(init_pid: int) -> dict[int, str]:
    """Host pid -> state letter of every process in ``init_pid``'s pid namespace."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    states = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        states[int(entry)] = stat.rpartition(")")[2].split()[0]
    return states


def read_until(fd: int, marker: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} from the container, got {data!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF before {marker!r}: {data!r}"
            data += chunk
    return data


def run_init(rootfs: Path, process: dict, *, started: Callable[[int, int], None] | None = None,
             error_fd: int = -1, timeout: float = 30.0) -> Ran:
    plan = proc.prepare_process(process, str(rootfs))

    def body() -> None:
        enter_rootfs(rootfs)
        proc.run_as_init(plan, error_fd=error_fd)

    return run_child(body, new_pid_ns=True, started=started, timeout=timeout)


ORPHANS = "(sleep 0.05 &); (sleep 0.05 &); (sleep 0.05 &); echo ready; "


def test_init_reaps_orphaned_zombies(rootfs):
    seen = {}

    def check(pid: int, out: int) -> None:
        read_until(out, b"ready")
        time.sleep(0.6)  # the orphans exited long ago; the shell sleeps on
        seen.update(pidns_states(pid))

    ran = run_init(rootfs, config("sh", "-c", ORPHANS + "sleep 2; exit 3"),
                   started=check)
    assert ran.exit_code == 3, ran.stderr
    assert "Z" not in seen.values(), seen
    assert sorted(seen.values()).count("S") == 3  # init, sh, sleep


def test_without_the_init_orphans_stay_zombies(rootfs):
    """The control: PID 1 that execs the command (no init) leaves the orphans as
    zombies, which the check above would see."""
    plan = proc.prepare_process(config("sh", "-c", ORPHANS + "exec sleep 2"),
                                str(rootfs))
    seen = {}

    def body() -> None:
        enter_rootfs(rootfs)
        proc.apply_process(plan)
        proc.exec_process(plan)

    def check(pid: int, out: int) -> None:
        read_until(out, b"ready")
        time.sleep(0.6)
        seen.update(pidns_states(pid))

    ran = run_child(body, new_pid_ns=True, started=check)
    assert ran.exit_code == 0, ran.stderr
    assert list(seen.values()).count("Z") == 3, seen


def test_sigterm_to_pid1_reaches_the_process(rootfs):
    def term(pid: int, out: int) -> None:
        read_until(out, b"ready")
        os.kill(pid, signal.SIGTERM)

    ran = run_init(rootfs, config("sh", "-c", "echo ready; sleep 10"), started=term)
    assert ran.exit_code == 143, ran.stderr


def test_signals_are_forwarded_to_a_trap(rootfs):
    seen = []

    def signals(pid: int, out: int) -> None:
        seen.append(read_until(out, b"ready"))
        os.kill(pid, signal.SIGUSR1)
        seen.append(read_until(out, b"USR1"))
        os.kill(pid, signal.SIGHUP)
        seen.append(read_until(out, b"HUP"))
        os.kill(pid, signal.SIGTERM)

    script = ('trap "echo USR1" USR1; trap "echo HUP" HUP; trap "echo TERM; exit 7" TERM; '
              'echo ready; while :; do sleep 0.05; done')
    ran = run_init(rootfs, config("sh", "-c", script), started=signals)
    assert ran.exit_code == 7, ran.stderr
    assert (b"".join(seen).decode() + ran.stdout).split() == ["ready", "USR1", "HUP", "TERM"]


def test_init_exit_status_of_the_process(rootfs):
    assert run_init(rootfs, config("sh", "-c", "exit 5")).exit_code == 5
    assert run_init(rootfs, config("sh", "-c", "kill -9 $$")).exit_code == 137


def test_init_reports_failure_on_the_error_pipe(rootfs):
    err_r, err_w = os.pipe()
    try:
        ran = run_init(rootfs, config("no-such-command"), error_fd=err_w)
        os.close(err_w)
        err_w = -1
        report = os.read(err_r, 4096).decode()
    finally:
        os.close(err_r)
        if err_w >= 0:
            os.close(err_w)
    assert ran.exit_code == 127
    step, code, message = report.split("\0")
    assert (step, int(code)) == ("exec", errno.ENOENT)
    assert "no-such-command" in message


def test_init_keeps_only_cap_kill(rootfs):
    seen = {}

    def check(pid: int, out: int) -> None:
        read_until(out, b"ready")
        seen.update(status_fields(Path(f"/proc/{pid}/status").read_text()))

    ran = run_init(rootfs, config(
        "sh", "-c", "echo ready; sleep 0.3", user={"uid": 1000, "gid": 1000}), started=check)
    assert ran.exit_code == 0, ran.stderr
    assert int(seen["CapEff"], 16) == int(seen["CapBnd"], 16) == CAP["CAP_KILL"]
    assert seen["NoNewPrivs"] == "1" and seen["Uid"].split()[0] == "0"


@pytest.fixture
def memory_cgroups() -> Iterator[Callable[[], Path]]:
    """A factory of v1 memory cgroups ``ptc/<id>``, each removed after the test."""
    parent = CGROUP_ROOT / "memory" / "ptc"
    made: list[Path] = []

    def make() -> Path:
        parent.mkdir(exist_ok=True)
        path = parent / issue_id()
        path.mkdir()
        made.append(path)
        return path

    yield make
    for path in made:
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.05)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Private_Dirty) of ``pid`` in KiB."""
    fields = {}
    for name in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
        for line in Path(name).read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    return int(fields["VmRSS"]), int(fields["Private_Dirty"])


def _charge_run(rootfs: Path, cgroup: Path, script: str, *, init: bool,
                marks: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """Run ``script`` as the process (under the init or as PID 1 itself) in ``cgroup``;
    at each mark it prints, note PID 1's (VmRSS, Private_Dirty) and the cgroup's
    usage_in_bytes, then answer on its stdin."""
    plan = proc.prepare_process(config("sh", "-c", script), str(rootfs))
    stdin_r, stdin_w = os.pipe()
    samples: dict[str, tuple[int, int, int]] = {}

    def body() -> None:
        os.dup2(stdin_r, 0)
        (cgroup / "cgroup.procs").write_text("0")
        enter_rootfs(rootfs)
        if init:
            proc.run_as_init(plan)
        proc.apply_process(plan)
        proc.exec_process(plan)

    def drive(pid: int, out: int) -> None:
        for mark in marks:
            read_until(out, mark.encode(), timeout=60)
            usage = int((cgroup / "memory.usage_in_bytes").read_text())
            samples[mark] = (*rss_kib(pid), usage // 1024)
            os.write(stdin_w, b"\n")

    try:
        ran = run_child(body, new_pid_ns=True, started=drive, timeout=120)
    finally:
        os.close(stdin_r)
        os.close(stdin_w)
    assert ran.exit_code == 0, ran.stderr
    return samples


def test_init_memory_flat_per_reaped_child(rootfs, memory_cgroups):
    """500 + 500 orphans reaped by the init: its RSS and dirty pages do not grow with
    them. Its charge to the container's memory cgroup: the same shell with and without
    the init in front of it."""
    batch = "i=0; while [ $i -lt 500 ]; do (true &); i=$((i+1)); done; sleep 0.3; "
    with_init = _charge_run(rootfs, memory_cgroups(),
                            batch + "echo one; read x; " + batch + "echo two; read x",
                            init=True, marks=("one", "two"))
    without = _charge_run(rootfs, memory_cgroups(),
                          batch + "echo one; read x; " + batch + "echo two; read x",
                          init=False, marks=("one", "two"))
    (rss1, dirty1, _), (rss2, dirty2, charge) = with_init["one"], with_init["two"]
    print(f"\ninit VmRSS {rss1} -> {rss2} KiB, Private_Dirty {dirty1} -> {dirty2} KiB; "
          f"cgroup charge {charge} KiB with the init, {without['two'][2]} KiB without")
    assert rss2 - rss1 < 256 and dirty2 - dirty1 < 256
    assert charge - without["two"][2] < 4096


# -- user names from the rootfs ----------------------------------------------------------


@pytest.fixture
def user_rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "web:x:33:33::/var/www:/bin/false\n")
    (root / "etc" / "group").write_text(
        "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:web,app\nwww-data:x:33:\n")
    return root


@pytest.mark.parametrize(("user", "expected"), [
    ("", (0, 0, (10,))),
    ("root", (0, 0, (10,))),
    ("app", (1000, 1000, (10, 50))),
    ("1000", (1000, 1000, (10, 50))),
    ("app:staff", (1000, 50, ())),
    ("app:33", (1000, 33, ())),
    ("web:4242", (33, 4242, ())),
    ("4242", (4242, 0, ())),
    ("4242:www-data", (4242, 33, ())),
])
def test_resolve_user(user_rootfs, user, expected):
    assert proc.resolve_user(user_rootfs, user) == expected


def test_resolve_user_missing_names(user_rootfs):
    with pytest.raises(ContainerStartError) as info:
        proc.resolve_user(user_rootfs, "nobody")
    assert "'nobody'" in str(info.value) and "/etc/passwd" in str(info.value)
    assert str(user_rootfs) in str(info.value)
    with pytest.raises(ContainerStartError, match="group 'nogroup'.*/etc/group"):
        proc.resolve_user(user_rootfs, "app:nogroup")
    (user_rootfs / "etc" / "passwd").unlink()
    with pytest.raises(ContainerStartError, match="no /etc/passwd"):
        proc.resolve_user(user_rootfs, "app")
    assert proc.resolve_user(user_rootfs, "1000:1000") == (1000, 1000, ())


def test_passwd_symlink_to_the_host_stays_in_the_rootfs(user_rootfs, tmp_path):
    """/etc/passwd -> the host's file (absolute, or ../ enough to climb out): resolved
    inside the rootfs, so the host's entries are never read."""
    host = tmp_path / "host-passwd"
    host.write_text("hostonly:x:4321:4321::/:/bin/sh\n")
    passwd = user_rootfs / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(host)
    with pytest.raises(ContainerStartError, match="'hostonly' not found: no /etc/passwd"):
        proc.resolve_user(user_rootfs, "hostonly")
    # the same path inside the rootfs is what the link means there
    inside = user_rootfs / str(host).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("hostonly:x:77:78::/:/bin/sh\n")
    assert proc.resolve_user(user_rootfs, "hostonly") == (77, 78, ())
    passwd.unlink()
    passwd.symlink_to("../" * 40 + str(host).lstrip("/"))
    assert proc.resolve_user(user_rootfs, "hostonly") == (77, 78, ())
    passwd.unlink()
    passwd.symlink_to("/etc/passwd")  # itself, in the rootfs: a loop, not the host's
    with pytest.raises(ContainerStartError, match="cannot read /etc/passwd"):
        proc.resolve_user(user_rootfs, "root")


def test_passwd_that_is_not_a_file_is_not_read(user_rootfs):
    passwd = user_rootfs / "etc" / "passwd"
    passwd.unlink()
    os.mkfifo(passwd)  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(ContainerStartError, match="not a regular file"):
        proc.resolve_user(user_rootfs, "app")


def test_home_directory(user_rootfs):
    assert proc.home_directory(user_rootfs, 1000) == "/home/app"
    assert proc.home_directory(user_rootfs, 5) == "/"
    assert proc.home_directory(user_rootfs / "nonexistent", 0) == "/"
