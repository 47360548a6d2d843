"""Rootless containers against the real kernel: ``ptc-runtime`` and the in-process
``NativeRuntime`` run by uid 65534 (``nobody``), as runc's rootless mode works
(``runtime/native/rootless.py``).

The rootless side runs as ``nobody``: ``ptc-runtime`` through ``setpriv --reuid
65534 --regid 65534 --clear-groups`` with a Python that user can execute and the
package imported from its source tree (:data:`BOOT`), ``XDG_RUNTIME_DIR`` a
``0700`` directory of ``/tmp`` owned by it; ``NativeRuntime`` in a forked child of
the test that drops to 65534. The bundles live in a world-readable directory of
``/tmp`` (pytest's temporary directories are ``0700``). Checks run as root from
outside: the container's processes run as host uid 65534 (``/proc/<pid>/status``),
files made inside are owned by the mapped host ids, and afterwards no state dir,
process or mount of the container remains.

This host has cgroup v1 hierarchies owned by root, so a rootless container has no
cgroup (runc's rootless mode on v1): limits are refused naming the field; cgroup v2
delegation is tested against the fake tree in ``tests/unit/test_rootless.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_containers.runtime
from pytest_containers.runtime.native import rootless
from pytest_containers.runtime.native.engine import NativeRuntime
from pytest_containers.runtime.native.rootless import to_rootless
from pytest_containers.runtime.native.state import proc_start_time
from pytest_containers.runtime.types import ContainerSpec, Resources

import pytest_containers
from pytest_containers.exceptions import ContainerStartError
from tests.conftest import wait_for
from tests.linux.conftest import issue_id
from tests.linux.test_runtime_cli import ptc_runtime

NOBODY = 65534
#: subordinate ids the ``subids`` fixture gives ``nobody`` (far from test_userns's)
SUB_START = 1_100_000
SUB_COUNT = 65536
#: imports ``pytest_containers`` and its ``runtime`` from their source dirs (argv 1, 2)
#: and runs ``ptc-runtime`` with the remaining arguments: the editable install's
#: finder lives in root's site-packages, which ``nobody`` cannot read
BOOT = """
import importlib.util, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(
        name, path + "/__init__.py", submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
package = load("pytest_containers", sys.argv[1])
package.runtime = load("pytest_containers.runtime", sys.argv[2])
from pytest_containers.runtime.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _runs_as_nobody(python: str, prefix: str | None) -> bool:
    """Whether uid 65534 can run ``python`` as a Python of our version with its own
    standard library (``sys.prefix`` ``prefix`` when given: one whose prefix it
    cannot read starts anyway, with another one's)."""
    try:
        proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", python, "-c",
                               "import sys; print(sys.version_info[:2], sys.prefix)"],
                              capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return False
    version, _, found = proc.stdout.strip().partition(") ")
    return (proc.returncode == 0 and version + ")" == str(sys.version_info[:2])
            and (prefix is None or found == prefix))


@pytest.fixture(scope="module")
def python_for_nobody() -> str:
    """Module: a Python of our version that uid 65534 can run (ours, else the system's
    ``/usr/bin/python3.X``); skips without one or without ``setpriv``."""
    system = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate, prefix in ((sys.executable, sys.prefix), (system, None)):
        if os.path.exists(candidate) and _runs_as_nobody(candidate, prefix):
            return candidate
    pytest.skip("no Python of this version that uid 65534 can run (setpriv needed)")


def _private_dir(prefix: str, uid: int = NOBODY, mode: int = 0o700) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@pytest.fixture
def xdg() -> Iterator[Path]:
    """Function: ``XDG_RUNTIME_DIR`` for ``nobody``, a ``0700`` dir of ``/tmp`` it owns;
    at teardown its ``ptc`` state root must hold no container, then it is removed."""
    path = _private_dir("ptc-test-xdg-")
    try:
        yield path
        left = sorted(os.listdir(path / "ptc")) if (path / "ptc").exists() else []
        assert left == [], f"state dirs left: {left}"
    finally:
        shutil.rmtree(path)


def _make_rootfs(root: Path, busybox_rootfs: Path) -> None:
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else path.stat().st_mode | 0o444)
    (root / "tmp").chmod(0o1777)


@pytest.fixture
def bundle(busybox_rootfs: Path) -> Iterator[Path]:
    """Function: a bundle in a ``0755`` dir of ``/tmp`` (the busybox rootfs, owned by
    root, readable by all; ``/tmp`` ``1777``), its config from ``ptc-runtime spec`` with
    a user namespace mapping container 0 to host 65534 (size 1, uids and gids)."""
    base = Path(tempfile.mkdtemp(prefix="ptc-test-rootless-", dir="/tmp"))
    try:
        base.chmod(0o755)
        _make_rootfs(base / "rootfs", busybox_rootfs)
        proc = ptc_runtime("spec", "--bundle", str(base))
        assert proc.returncode == 0, proc.stderr
        config = json.loads((base / "config.json").read_text())
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": NOBODY, "size": 1}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": NOBODY, "size": 1}]
        (base / "config.json").write_text(json.dumps(config))
        (base / "config.json").chmod(0o644)
        yield base
    finally:
        shutil.rmtree(base)


def configure(bundle: Path, *args: str, linux: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set ``process.args`` and update ``linux`` in the bundle's config."""
    config = json.loads((bundle / "config.json").read_text())
    if args:
        config["process"]["args"] = list(args)
    config["linux"].update(linux or {})
    (bundle / "config.json").write_text(json.dumps(config))
    return config


class Nobody:
    """Function-scoped: ``ptc-runtime`` run as uid/gid 65534 with ``XDG_RUNTIME_DIR``;
    every id it used force-deleted (as 65534) at teardown."""

    def __init__(self, python: str, xdg: Path, tmp: Path) -> None:
        self.python, self.xdg, self.tmp = python, xdg, tmp
        self.ids: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                self.python, "-c", BOOT, pytest_containers.__path__[0],
                pytest_containers.runtime.__path__[0], *args]

    def env(self, **changes: str | None) -> dict[str, str]:
        env = dict(os.environ, XDG_RUNTIME_DIR=str(self.xdg))
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL,
                              env=env or self.env())

    def new_id(self) -> str:
        cid = issue_id()
        self.ids.append(cid)
        return cid

    def create(self, bundle: Path) -> tuple[str, subprocess.CompletedProcess[str], Path]:
        """``create --bundle B ID`` with its stdio (the container's, kept open by the
        init) in files; returns ``(id, result, stdout file)``."""
        cid = self.new_id()
        out, err = self.tmp / f"{cid}.out", self.tmp / f"{cid}.err"
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.run(self.argv("create", "--bundle", str(bundle), cid),
                                  stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL,
                                  env=self.env(), timeout=60, check=False)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                             err.read_text())
        return cid, result, out

    def state(self, cid: str) -> dict[str, Any]:
        proc = self.run("state", cid)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def cleanup(self) -> None:
        for cid in self.ids:
            self.run("delete", "--force", cid)


@pytest.fixture
def nobody(python_for_nobody: str, xdg: Path, tmp_path: Path) -> Iterator[Nobody]:
    helper = Nobody(python_for_nobody, xdg, tmp_path)
    try:
        yield helper
    finally:
        helper.cleanup()


def _namespaced_processes() -> set[int]:
    """Host pids running as uid 65534 in a user namespace other than ours: the
    processes of rootless containers (and of nothing else these tests start)."""
    ours = os.stat("/proc/self/ns/user").st_ino
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            if f"Uid:\t{NOBODY}\t" in status and \
                    os.stat(f"/proc/{entry}/ns/user").st_ino != ours:
                found.add(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def no_new_processes() -> Iterator[None]:
    """Function: after the test, no rootless container process is left that was not
    there before."""
    before = _namespaced_processes()
    yield
    assert wait_for(lambda: not (_namespaced_processes() - before), timeout=10), \
        f"processes left: {_namespaced_processes() - before}"


def _gone(pid: int) -> bool:
    found = proc_start_time(pid)
    return found is None or found[0] in ("Z", "X")


def _nothing_left(nobody: Nobody, cid: str) -> None:
    assert not (nobody.xdg / "ptc" / cid).exists()
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if cid in line]


# -- ptc-runtime as nobody ------------------------------------------------------------------


def test_run_is_root_inside_and_passes_the_exit_code(bundle: Path, nobody: Nobody,
                                                     no_new_processes: None) -> None:
    """Foreground ``run`` as uid 65534 with the own-id map (written directly, no
    helper, ``setgroups`` denied as the kernel requires): ``id`` says root inside,
    the exit code comes through; a root-owned file of the rootfs shows as the
    overflow uid; nothing is left."""
    configure(bundle, "sh", "-c", "id; cat /proc/self/uid_map /proc/self/setgroups; "
              "stat -c %u /bin/busybox; exit 7")
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(bundle), cid)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0")
    assert lines[1].split() == ["0", str(NOBODY), "1"] and lines[2] == "deny"
    overflow = Path("/proc/sys/kernel/overflowuid").read_text().strip()
    assert lines[3] == overflow
    _nothing_left(nobody, cid)


def test_create_start_state_kill_delete(bundle: Path, nobody: Nobody,
                                        no_new_processes: None) -> None:
    """The whole lifecycle as 65534: the init really runs as host uid 65534 (all four
    ids of ``/proc/<pid>/status``) and is PID 1 of its pid namespace; ``exec`` and
    ``ps`` work without a cgroup (``ps`` lists the pid namespace); ``pause`` says why
    it cannot; after ``kill`` and ``delete`` nothing is left."""
    configure(bundle, "sh", "-c", "echo started; exec sleep 30")
    cid, created, out = nobody.create(bundle)
    assert created.returncode == 0, created.stderr
    state = nobody.state(cid)
    assert state["status"] == "created"
    pid = state["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}" in status
    assert f"Gid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}" in status
    assert status.split("NSpid:")[1].split("\n")[0].split()[-1] == "1"
    started = nobody.run("start", cid)
    assert started.returncode == 0, started.stderr
    assert nobody.state(cid)["status"] == "running"
    assert wait_for(lambda: out.read_text() == "started\n")
    inside = nobody.run("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() == ["0", "0", str(NOBODY), "1"]
    ps = nobody.run("ps", "--format", "json", cid)
    assert ps.returncode == 0, ps.stderr
    assert json.loads(ps.stdout) == [pid]
    paused = nobody.run("pause", cid)
    assert paused.returncode == 1 and "cannot be paused" in paused.stderr
    assert nobody.run("kill", cid, "KILL").returncode == 0
    assert wait_for(lambda: nobody.state(cid)["status"] == "stopped")
    deleted = nobody.run("delete", cid)
    assert deleted.returncode == 0, deleted.stderr
    gone = nobody.run("state", cid)
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    assert wait_for(lambda: _gone(pid))
    _nothing_left(nobody, cid)


def test_delete_force_of_a_running_container(bundle: Path, nobody: Nobody,
                                             no_new_processes: None) -> None:
    configure(bundle, "sleep", "30")
    cid = nobody.new_id()
    proc = nobody.run("run", "--detach", "--bundle", str(bundle), cid)
    assert proc.returncode == 0, proc.stderr
    pid = nobody.state(cid)["pid"]
    assert nobody.run("delete", "--force", cid).returncode == 0
    assert wait_for(lambda: _gone(pid))
    _nothing_left(nobody, cid)


@pytest.fixture
def subids() -> Iterator[int]:
    """Function: ``nobody:<SUB_START>:<SUB_COUNT>`` added to ``/etc/subuid`` and
    ``/etc/subgid`` (each written to a temp file and renamed over, mode and owner
    kept), under an ``flock`` of ``/etc`` so that two test processes do not edit them
    at once; yields the first subordinate id. Both files are restored byte for byte
    the same way afterwards, also when the test fails."""
    lock = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(lock, fcntl.LOCK_EX)
    saved: list[tuple[Path, bytes, os.stat_result]] = []

    def replace(path: Path, data: bytes, like: os.stat_result) -> None:
        tmp = path.with_name(f".{path.name}.ptc-test-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, like.st_uid, like.st_gid)
            os.fchmod(fd, like.st_mode & 0o7777)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)

    try:
        for path in (rootless.SUBUID_FILE, rootless.SUBGID_FILE):
            data = path.read_bytes()
            saved.append((path, data, path.stat()))
            extra = b"" if not data or data.endswith(b"\n") else b"\n"
            replace(path, data + extra + b"nobody:%d:%d\n" % (SUB_START, SUB_COUNT),
                    saved[-1][2])
        yield SUB_START
    finally:
        for path, data, like in saved:
            replace(path, data, like)
        os.close(lock)


def test_newuidmap_maps_the_subordinate_ids(bundle: Path, nobody: Nobody, subids: int,
                                            no_new_processes: None) -> None:
    """0 -> 65534 (size 1) and 1..65536 -> the subordinate range: beyond the own id, so
    ``newuidmap``/``newgidmap`` write the maps (setgroups stays ``allow``: the ranges
    are the user's); a file chowned to 1000:1000 inside is owned by the mapped host
    ids ``start + 999`` seen from outside."""
    maps = [{"containerID": 0, "hostID": NOBODY, "size": 1},
            {"containerID": 1, "hostID": subids, "size": SUB_COUNT}]
    configure(bundle, "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map "
              "/proc/self/setgroups; touch /dev/shm/f; chown 1000:1000 /dev/shm/f; "
              "echo done; exec sleep 30", linux={"uidMappings": maps, "gidMappings": maps})
    cid, created, out = nobody.create(bundle)
    assert created.returncode == 0, created.stderr
    assert nobody.run("start", cid).returncode == 0
    assert wait_for(lambda: out.read_text().endswith("done\n"))
    lines = [line.split() for line in out.read_text().splitlines()]
    expected = [["0", str(NOBODY), "1"], ["1", str(subids), str(SUB_COUNT)]]
    assert lines[:5] == expected + expected + [["allow"]]
    pid = nobody.state(cid)["pid"]
    st = Path(f"/proc/{pid}/root/dev/shm/f").stat()
    assert (st.st_uid, st.st_gid) == (subids + 999, subids + 999)
    assert nobody.run("delete", "--force", cid).returncode == 0
    _nothing_left(nobody, cid)


def test_spec_rootless_config_runs_as_nobody(bundle: Path, nobody: Nobody,
                                             no_new_processes: None) -> None:
    """``ptc-runtime spec --rootless`` as 65534 (runc's rootless config: the host's
    network, ``/sys`` an rbind of the host's) runs as 65534 with the mounts a user
    namespace allows: the default devices bound from the host (``mknod`` is not
    allowed there) and usable, ``/dev/mqueue`` (an ipc namespace of the user
    namespace), the cgroup v1 hierarchies mounted in its cgroup namespace (rooted at
    the caller's cgroup: ``/`` inside); a ``sysfs`` mount without a network namespace
    of its own falls back to a bind of the host's ``/sys``."""
    own = bundle / "rootless"
    own.mkdir()
    os.chown(own, NOBODY, NOBODY)
    made = nobody.run("spec", "--rootless", "--bundle", str(own))
    assert made.returncode == 0, made.stderr
    config = json.loads((own / "config.json").read_text())
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": NOBODY, "size": 1}]
    config["root"]["path"] = str(bundle / "rootfs")
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                             "source": "cgroup", "options": ["ro", "nosuid"]})
    config["process"]["args"] = [
        "sh", "-c", "ls /sys/class/net; echo x > /dev/null; head -c 3 /dev/zero | wc -c; "
        "stat -c '%F %t,%T' /dev/null; cut -d' ' -f2,3 /proc/mounts | "
        "grep -E '^/dev/mqueue |^/sys/fs/cgroup/memory ' | sort -u; "
        "grep :memory: /proc/self/cgroup"]
    (own / "config.json").write_text(json.dumps(config))
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(own), cid)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    host_links = sorted(os.listdir("/sys/class/net"))
    assert lines[:len(host_links)] == host_links  # the host's network, its /sys
    assert lines[len(host_links):] == ["3", "character special file 1,3",
                                       "/dev/mqueue mqueue", "/sys/fs/cgroup/memory cgroup",
                                       lines[-1]]
    assert lines[-1].endswith(":memory:/")
    _nothing_left(nobody, cid)
    # a sysfs mount (not the rbind) without a network namespace: bound from the host
    config["mounts"] = [m if m["destination"] != "/sys" else
                        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                         "options": ["nosuid", "noexec", "nodev", "ro"]}
                        for m in config["mounts"]]
    config["process"]["args"] = ["ls", "/sys/class/net"]
    (own / "config.json").write_text(json.dumps(config))
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(own), cid)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == host_links
    _nothing_left(nobody, cid)


# -- errors ---------------------------------------------------------------------------------


def test_newuidmap_refusal_names_the_map(bundle: Path, nobody: Nobody,
                                         no_new_processes: None) -> None:
    """Ids the caller does not own and no subordinate ids: ``newuidmap`` refuses; the
    error names ``linux.uidMappings`` and carries its stderr; nothing is left (the
    forked child killed and reaped, no state dir)."""
    maps = [{"containerID": 0, "hostID": NOBODY, "size": 1},
            {"containerID": 1, "hostID": SUB_START, "size": SUB_COUNT}]
    configure(bundle, "true", linux={"uidMappings": maps})
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(bundle), cid)
    assert proc.returncode == 1
    assert "linux.uidMappings" in proc.stderr and "newuidmap" in proc.stderr, proc.stderr
    assert "not allowed" in proc.stderr and "/etc/subuid" in proc.stderr, proc.stderr
    _nothing_left(nobody, cid)


def test_without_a_user_namespace_the_error_names_linux_namespaces(
        bundle: Path, nobody: Nobody, no_new_processes: None) -> None:
    config = json.loads((bundle / "config.json").read_text())
    namespaces = [n for n in config["linux"]["namespaces"] if n["type"] != "user"]
    configure(bundle, "true", linux={"namespaces": namespaces})
    config = json.loads((bundle / "config.json").read_text())
    del config["linux"]["uidMappings"], config["linux"]["gidMappings"]
    (bundle / "config.json").write_text(json.dumps(config))
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(bundle), cid)
    assert proc.returncode == 1
    assert "linux.namespaces" in proc.stderr and "user namespace" in proc.stderr, proc.stderr
    _nothing_left(nobody, cid)


def test_limits_without_a_cgroup_name_the_field(bundle: Path, nobody: Nobody,
                                                no_new_processes: None) -> None:
    """cgroup v1 belongs to root: a pids limit is refused naming it; the device rules
    every default config has are ignored (runc's rootless devices controller)."""
    config = json.loads((bundle / "config.json").read_text())
    assert config["linux"]["resources"]["devices"]  # and the tests above ran with them
    configure(bundle, "true", linux={"resources": {"pids": {"limit": 32}}})
    cid = nobody.new_id()
    proc = nobody.run("run", "--bundle", str(bundle), cid)
    assert proc.returncode == 1
    assert "linux.resources.pids.limit" in proc.stderr and "cgroup" in proc.stderr
    _nothing_left(nobody, cid)


def test_state_root_not_writable(bundle: Path, nobody: Nobody) -> None:
    """``XDG_RUNTIME_DIR`` of someone else: the error names the state root and the
    variable, nothing is made there; without ``XDG_RUNTIME_DIR`` (and no
    ``/run/user/65534``) the error says to set it."""
    foreign = _private_dir("ptc-test-foreign-", uid=0, mode=0o755)
    try:
        cid = nobody.new_id()
        proc = nobody.run("run", "--bundle", str(bundle), cid,
                          env=nobody.env(XDG_RUNTIME_DIR=str(foreign)))
        assert proc.returncode == 1
        assert f"state root {foreign}/ptc" in proc.stderr, proc.stderr
        assert "XDG_RUNTIME_DIR" in proc.stderr
        assert os.listdir(foreign) == []
    finally:
        shutil.rmtree(foreign)
    if Path(f"/run/user/{NOBODY}").exists():
        return
    proc = nobody.run("list", env=nobody.env(XDG_RUNTIME_DIR=None))
    assert proc.returncode == 1 and "XDG_RUNTIME_DIR is not set" in proc.stderr, proc.stderr


# -- spec --rootless -------------------------------------------------------------------------


def test_to_rootless_matches_runc_spec_rootless(tmp_path: Path) -> None:
    """runc as the oracle: our conversion of ``runc spec``'s config is ``runc spec
    --rootless``'s (run as root: container 0 maps to host 0); and ``ptc-runtime spec
    --rootless`` writes the conversion of its own default config."""
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("needs runc")
    for name, extra in (("plain", []), ("rootless", ["--rootless"])):
        (tmp_path / name).mkdir()
        subprocess.run([runc, "spec", *extra], cwd=tmp_path / name, check=True)
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    expected = json.loads((tmp_path / "rootless" / "config.json").read_text())
    assert to_rootless(plain) == expected
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours-rootless").mkdir()
    assert ptc_runtime("spec", "--bundle", str(tmp_path / "ours")).returncode == 0
    proc = ptc_runtime("spec", "--rootless", "--bundle", str(tmp_path / "ours-rootless"))
    assert proc.returncode == 0, proc.stderr
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert json.loads((tmp_path / "ours-rootless" / "config.json").read_text()) == \
        to_rootless(ours)


# -- the in-process engine ---------------------------------------------------------------------


def _as_nobody(xdg: Path, work: Any) -> Any:
    """Run ``work()`` in a forked child that dropped to uid/gid 65534 (no supplementary
    groups) with ``XDG_RUNTIME_DIR=xdg``; returns what it returned (JSON), or raises
    ``AssertionError`` with the child's exception."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                os.environ["XDG_RUNTIME_DIR"] = str(xdg)
                data = json.dumps({"ok": work()})
            except BaseException as exc:  # noqa: BLE001 - everything goes to the test
                data = json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                   "field": getattr(exc, "field", None)})
            os.write(write_end, data.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            data = reader.read()
    finally:
        os.waitpid(pid, 0)
    message = json.loads(data or b'{"error": "the child died"}')
    assert "ok" in message, message
    return message["ok"]


def test_native_runtime_as_nobody(busybox_rootfs: Path, xdg: Path,
                                  no_new_processes: None) -> None:
    """``NativeRuntime().start(spec)`` by uid 65534: the engine adds a user namespace
    mapping the caller's ids to 0 and keeps state under ``$XDG_RUNTIME_DIR/ptc``. The
    overlay of the layers is mounted in the user namespace: files of the base layer
    owned by host root show as the overflow uid and cannot be copied up (a write
    into its ``/tmp`` fails with EOVERFLOW), those of a layer the caller unpacked
    (owned by 65534) are root's inside and writable. The container has no cgroup
    (stats unknown), ``exec`` joins its user namespace, and a memory limit is refused
    naming ``linux.resources.memory.limit``; nothing is left."""
    layers = Path(tempfile.mkdtemp(prefix="ptc-test-rootless-layers-", dir="/tmp"))
    try:
        layers.chmod(0o755)
        _make_rootfs(layers / "base", busybox_rootfs)
        (layers / "top" / "data").mkdir(parents=True)
        (layers / "top" / "data" / "old").write_text("from the top layer\n")
        for path in (layers / "top", layers / "top" / "data", layers / "top" / "data" / "old"):
            os.chown(path, NOBODY, NOBODY)
        stack = (layers / "base", layers / "top")
        script = ("id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox /data/old; "
                  "echo hi > /data/new && cat /data/new; echo x > /tmp/x; echo $$")

        def work() -> dict[str, Any]:
            runtime = NativeRuntime()
            container = runtime.start(ContainerSpec(args=("sh", "-c", script), layers=stack),
                                      container_id=cid)
            try:
                status = container.wait(20)
                out = container.stdout_path.read_text()
                err = container.stderr_path.read_text()
                stats = container.stats()
            finally:
                container.delete()
            sleeper = runtime.start(ContainerSpec(args=("sleep", "30"), layers=stack),
                                    container_id=exec_id)
            try:
                done = sleeper.exec(["sh", "-c", "id -u; cat /proc/self/uid_map"], timeout=20)
            finally:
                sleeper.delete()
            refused = ""
            try:
                runtime.start(ContainerSpec(args=("true",), layers=stack,
                                            resources=Resources(memory_max_bytes=64 << 20)),
                              container_id=refused_id)
            except ContainerStartError as exc:
                refused = f"{getattr(exc, 'field', None)} {exc}"
            return {"root": str(runtime.state_root), "code": status.exit_code, "out": out,
                    "err": err, "memory": stats.memory_current_bytes, "refused": refused,
                    "exec": [done.exit_code, done.stdout.decode()]}

        cid, exec_id, refused_id = issue_id(), issue_id(), issue_id()
        result = _as_nobody(xdg, work)
    finally:
        shutil.rmtree(layers)
    assert result["root"] == str(xdg / "ptc")
    assert result["code"] == 0, result["err"]
    overflow = Path("/proc/sys/kernel/overflowuid").read_text().strip()
    assert [line.split() for line in result["out"].splitlines()] == [
        ["0"], ["0", str(NOBODY), "1"], [overflow], ["0"], ["hi"], ["1"]]
    assert "/tmp/x" in result["err"] and "Value too large" in result["err"], result["err"]
    assert result["memory"] is None
    assert result["exec"][0] == 0 and result["exec"][1].split() == ["0", "0", str(NOBODY), "1"]
    assert result["refused"].startswith("linux.resources.memory.limit "), result["refused"]
