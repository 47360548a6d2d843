"""Fixtures for tests against the real kernel: root, namespaces, cgroups v1.

Every test here is marked ``linux``; without root or without the kernel
features the whole directory is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_containers.runtime.native.engine import NativeContainer, NativeRuntime
from pytest_containers.runtime.types import ContainerSpec

if TYPE_CHECKING:
    from tests.linux.test_runtime_cli import Cli

CGROUP_ROOT = Path("/sys/fs/cgroup")
STATE_ROOT = Path("/run/ptc")
BUSYBOX = Path("/bin/busybox")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.linux)


@pytest.fixture(scope="session", autouse=True)
def _linux_host() -> None:
    """Session: skip unless root on Linux with namespaces and v1 cgroups mounted."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists():
        pytest.skip("needs the cgroup v1 memory hierarchy at /sys/fs/cgroup/memory")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session: a read-only layer dir with ``bin/busybox`` and its applet symlinks, plus
    ``etc``/``tmp``; removed with pytest's temporary directories."""
    if not BUSYBOX.exists():
        pytest.skip("needs /bin/busybox (busybox-static)")
    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for name in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (root / name).mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "lower-marker").write_text("from the lower layer\n")
    return root


@pytest.fixture(scope="session")
def native_runtime() -> NativeRuntime:
    """Session: the native engine with state under ``/run/ptc``."""
    return NativeRuntime(state_root=STATE_ROOT)


class Containers:
    """Function-scoped helper: new ids, specs on the busybox rootfs, and every started
    container deleted at teardown."""

    def __init__(self, runtime: NativeRuntime, rootfs: Path) -> None:
        self.runtime = runtime
        self.rootfs = rootfs
        self.ids: list[str] = []
        self.started: list[NativeContainer] = []

    def new_id(self) -> str:
        cid = issue_id()
        self.ids.append(cid)
        return cid

    def spec(self, *args: str, **kwargs) -> ContainerSpec:
        return ContainerSpec(args=args, layers=(self.rootfs,), **kwargs)

    def start(self, *args: str, **kwargs) -> NativeContainer:
        container = self.runtime.start(self.spec(*args, **kwargs), container_id=self.new_id())
        self.started.append(container)
        return container

    def run(self, *args: str, timeout: float = 20.0, **kwargs):
        """Start, wait, read the outputs, delete: ``(ExitStatus, stdout, stderr, stats)``."""
        container = self.start(*args, **kwargs)
        try:
            status = container.wait(timeout)
            stats = container.stats()
            return (status, container.stdout_path.read_text(),
                    container.stderr_path.read_text(), stats)
        finally:
            container.delete()

    def cleanup(self) -> None:
        for container in self.started:
            container.delete()


#: ids handed out during the current test (checked by ``_nothing_left``)
_ISSUED: list[str] = []


def issue_id() -> str:
    """A fresh ``ptc-<12 hex>`` container id, checked for leftovers after the test."""
    cid = f"ptc-{uuid.uuid4().hex[:12]}"
    _ISSUED.append(cid)
    return cid


@pytest.fixture(autouse=True)
def _nothing_left() -> Iterator[None]:
    """Function, autouse: after the test (and its fixtures' teardown), no cgroup dir
    ``/sys/fs/cgroup/*/ptc/<id>``, no ``/run/ptc/<id>``, no mount and no process of
    any id issued during the test."""
    _ISSUED.clear()
    yield
    issued = list(_ISSUED)
    _ISSUED.clear()
    for cid in issued:
        assert leftovers(cid) == [], f"{cid} left {leftovers(cid)}"
        assert processes_in(cid) == [], f"{cid} left processes {processes_in(cid)}"


def leftovers(container_id: str) -> list[str]:
    """What remains on the host of ``container_id``: cgroup dirs, state dir, mounts."""
    found = [str(p) for p in CGROUP_ROOT.glob(f"*/ptc/{container_id}")]
    if (STATE_ROOT / container_id).exists():
        found.append(str(STATE_ROOT / container_id))
    with open("/proc/self/mountinfo") as f:
        found += [line.strip() for line in f if container_id in line]
    return found


def processes_in(container_id: str) -> list[int]:
    """Host pids whose ``/proc/<pid>/cgroup`` names the container's cgroup."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                if f"/ptc/{container_id}" in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


@pytest.fixture
def containers(native_runtime: NativeRuntime, busybox_rootfs: Path) -> Iterator[Containers]:
    """Function: a :class:`Containers` helper; deletes what it started at teardown
    (``_nothing_left`` then checks that nothing of its ids remains)."""
    helper = Containers(native_runtime, busybox_rootfs)
    try:
        yield helper
    finally:
        helper.cleanup()


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """Function: a bundle whose rootfs is a copy of the busybox test rootfs, its
    config.json from ``ptc-runtime spec``; removed with ``tmp_path``."""
    from tests.linux.test_runtime_cli import ptc_runtime

    shutil.copytree(busybox_rootfs, tmp_path / "rootfs", symlinks=True)
    (tmp_path / "rootfs").chmod(0o755)
    proc = ptc_runtime("spec", "--bundle", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return tmp_path


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """Function: ``ptc-runtime`` driven as a test would (``create`` with its stdio in
    files under ``tmp_path``); every id it made is force-deleted at teardown."""
    from tests.linux.test_runtime_cli import Cli

    helper = Cli(tmp_path)
    try:
        yield helper
    finally:
        helper.cleanup()
