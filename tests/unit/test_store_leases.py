"""Snapshot leases, store lock files and their timeouts, without any binary:
prune keeps what another process (or a container of this one) leases, leases die
with their process, lock files nobody holds are pruned, and a lock that stays
held raises :class:`StoreLockTimeoutError` naming the file and its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pytest_containers.runtime import ExitStatus, Stats

from pytest_containers import StoreLockTimeoutError
from pytest_containers.cli import main
from pytest_containers.containers import Containers
from pytest_containers.image import locks
from pytest_containers.image.store import Image, Store, chain_ids
from pytest_containers.images import Images
from tests.unit.test_store_commands import age, fake_snapshot, make_image

# Holds a lease (or, with "exclusive", a plain exclusive lock) until stdin closes,
# or until it is killed; then exits without releasing anything itself.
_HOLDER = r"""
import os
import sys
from pathlib import Path
from pytest_containers.image import locks
from pytest_containers.image.store import Store

mode, root, *names = sys.argv[1:]
if mode == "lease":
    held = Store(root).lease(names)
else:
    held = locks.lock(Path(names[0]), timeout=5, what="test")
print("held", flush=True)
sys.stdin.read()
os._exit(0)  # no release, no cleanup: the kernel drops the locks
"""


def holder(*args: str) -> subprocess.Popen[str]:
    """A process holding a lease or lock (see ``_HOLDER``), once it said so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def orphan(store: Store, name: str) -> tuple[Image, str]:
    """An image whose name is removed, with an old snapshot: what prune removes."""
    image = make_image(store, f"{name}/app:1", name.encode())
    fake_snapshot(store, image)
    store.remove(f"{name}/app:1")
    age(store.root)
    return image, chain_ids(image.config.diff_ids)[-1]


@pytest.mark.parametrize("end", ["exit", "sigkill"])
def test_prune_skips_a_snapshot_another_process_leases(store: Store, end: str) -> None:
    _, chain_id = orphan(store, "leased")
    proc = holder("lease", str(store.root), chain_id)
    try:
        report = store.prune()
        assert report.in_use == [chain_id]
        assert report.snapshots == []
        assert store.snapshot_path(chain_id).is_dir()
        assert locks.holders(store.lease_path(chain_id)) == [proc.pid]
    finally:
        if end == "sigkill":
            proc.send_signal(signal.SIGKILL)
        proc.communicate("")
    assert proc.returncode == (-signal.SIGKILL if end == "sigkill" else 0)
    report = store.prune()
    assert report.in_use == []
    assert report.snapshots == [chain_id]
    assert not store.snapshot_path(chain_id).exists()
    assert not store.lease_path(chain_id).exists()
    assert not store.snapshot_lock_path(chain_id).exists()


def test_lease_in_this_process_until_released(store: Store) -> None:
    image, chain_id = orphan(store, "mine")
    with store.lease(chain_ids(image.config.diff_ids)) as lease:
        assert lease.held and lease.chain_ids == (chain_id,)
        assert lease.paths == (store.root / "leases" / f"{chain_id[7:]}.lock",)
        assert store.prune().in_use == [chain_id]
    assert not lease.held
    lease.release()  # again: nothing happens
    assert store.prune().snapshots == [chain_id]


def test_leases_are_shared(store: Store) -> None:
    _, chain_id = orphan(store, "shared")
    first = store.lease([chain_id])
    proc = holder("lease", str(store.root), chain_id)  # not blocked by ours
    try:
        second = store.lease([chain_id, chain_id], timeout=0)  # duplicates taken once
        assert second.chain_ids == (chain_id,)
        first.release()
        assert store.prune().in_use == [chain_id]
        second.release()
        assert store.prune().in_use == [chain_id]  # the other process still holds one
    finally:
        proc.communicate("")
    assert store.prune().snapshots == [chain_id]


def test_a_lease_waits_for_a_prune_and_takes_the_new_lease_file(store: Store) -> None:
    """A lessee that waited on a lease file that prune then unlinked ends up
    holding the file now at the path, which the next prune sees as held."""
    chain_id = "sha256:" + "cd" * 32
    path = store.lease_path(chain_id)
    pruning = locks.try_lock(path)  # what prune holds while it removes a snapshot
    assert pruning is not None
    taken: list[object] = []
    thread = threading.Thread(target=lambda: taken.append(store.lease([chain_id], timeout=10)))
    thread.start()
    time.sleep(3 * locks.POLL_INTERVAL)
    assert taken == []  # waiting
    path.unlink()
    locks.unlock(pruning)
    thread.join(10)
    [lease] = taken
    assert path.exists()
    assert locks.try_lock(path) is None  # held on the file at the path, not the unlinked one
    assert not locks.remove_if_free(path)
    lease.release()  # type: ignore[attr-defined]
    assert locks.remove_if_free(path) and not path.exists()


def test_lease_timeout_names_the_lease_file_and_its_holder(store: Store) -> None:
    chain_id = "sha256:" + "ef" * 32
    path = store.lease_path(chain_id)
    proc = holder("exclusive", str(store.root), str(path))
    try:
        start = time.monotonic()
        with pytest.raises(StoreLockTimeoutError) as info:
            store.lease(["sha256:" + "01" * 32, chain_id], timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 5.0
    finally:
        proc.communicate("")
    error = info.value
    assert isinstance(error, TimeoutError)
    assert (error.lock_path, error.timeout, error.digest) == (str(path), 0.3, chain_id)
    assert error.holder_pids == [proc.pid]
    assert f"pid {proc.pid} (" in str(error) and str(path) in str(error)
    assert "0.3 s" in str(error) and chain_id in str(error)
    # the first lease it had taken was let go
    assert locks.remove_if_free(store.lease_path("sha256:" + "01" * 32))


def test_index_lock_timeout_raises_store_lock_timeout_error(store: Store) -> None:
    path = store.root / "locks" / "index.json.lock"
    proc = holder("exclusive", str(store.root), str(path))
    try:
        with pytest.raises(StoreLockTimeoutError, match=f"index of the store {store.root}"):
            with store.index_lock(timeout=0.2):
                pass
        assert path.exists()
    finally:
        proc.communicate("")
    with store.index_lock(timeout=1.0):
        pass


def test_prune_removes_lock_files_nobody_holds(store: Store) -> None:
    kept = make_image(store, "kept/app:1", b"kept")
    kept_chain = chain_ids(kept.config.diff_ids)[-1]
    fake_snapshot(store, kept)
    store.prune()  # the blob locks that storing the image left (free once stored)
    free, busy = "sha256:" + "11" * 32, "sha256:" + "22" * 32
    for digest in (free, busy):
        with store.blob_lock(digest):
            pass
    gone_chain = "sha256:" + "33" * 32
    store.lease([gone_chain, kept_chain]).release()  # lease files left behind
    store.snapshot_lock_path(gone_chain).touch()
    with store.blob_lock(busy):
        report = store.prune()
    assert sorted(report.locks) == sorted(
        [
            store.blob_lock_path(free),
            store.snapshot_lock_path(gone_chain),
            store.lease_path(gone_chain),
        ]
    )
    assert store.blob_lock_path(busy).exists()  # held
    assert store.lease_path(kept_chain).exists()  # its snapshot exists
    assert (store.root / "locks" / "index.json.lock").exists()
    assert store.prune().locks == [store.blob_lock_path(busy)]
    assert report.blobs == [] and report.snapshots == []


def test_prune_output_names_kept_snapshots(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _, chain_id = orphan(store, "cli")
    for path in store.locks_dir.glob("blob-*.lock"):  # left by storing the image
        path.unlink()
    with store.blob_lock("sha256:" + "44" * 32):
        pass
    with store.lease([chain_id]):
        assert main(["--store", str(store.root), "image", "prune"]) == 0
    out = capsys.readouterr().out
    assert f"kept snapshot (in use by a container): {chain_id}" in out
    assert "deleted lock files nobody held: 1" in out
    assert main(["--store", str(store.root), "image", "prune"]) == 0
    assert f"deleted snapshot: {chain_id}" in capsys.readouterr().out


class FakeContainer:
    """Enough of :class:`pytest_containers.runtime.Container` for a handle."""

    def __init__(self, tmp_path: Path) -> None:
        self.id, self.pid = "ptc-000000000000", os.getpid()
        self.stdout_path = self.stderr_path = tmp_path / "out"
        self.deleted = False

    def poll(self) -> ExitStatus | None:
        return None

    def stats(self) -> Stats:
        return Stats()

    def delete(self) -> None:
        self.deleted = True


class FakeRuntime:
    name = "fake"

    def __init__(self, tmp_path: Path, *, fail: bool = False) -> None:
        self.tmp_path, self.fail = tmp_path, fail
        self.layers: list[Path] = []

    def start(self, spec, *, container_id: str) -> FakeContainer:  # type: ignore[no-untyped-def]
        if self.fail:
            raise OSError("cannot start")
        self.layers = list(spec.layers)
        return FakeContainer(self.tmp_path)

    def close(self) -> None:
        pass


def test_a_container_leases_its_snapshots_until_removed(store: Store, tmp_path: Path) -> None:
    image = make_image(store, "run/app:1", b"run")
    snapshot = fake_snapshot(store, image)  # unpacked already
    chain_id = chain_ids(image.config.diff_ids)[-1]
    runtime = FakeRuntime(tmp_path)
    containers = Containers(Images(store, policy="never"), runtime)  # type: ignore[arg-type]
    handle = containers.start("run/app:1", allow_foreign_platform=True)
    assert runtime.layers == [snapshot]
    store.remove("run/app:1")  # an image removed while its container runs
    age(store.root)
    report = store.prune()
    assert report.in_use == [chain_id] and snapshot.is_dir()
    handle.remove()
    assert store.prune().snapshots == [chain_id]
    assert not snapshot.exists()
    containers.close()  # removes it again: nothing happens


def test_a_container_that_fails_to_start_leases_nothing(store: Store, tmp_path: Path) -> None:
    image = make_image(store, "fail/app:1", b"fail")
    fake_snapshot(store, image)
    runtime = FakeRuntime(tmp_path, fail=True)
    containers = Containers(Images(store, policy="never"), runtime)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="cannot start"):
        containers.start("fail/app:1", allow_foreign_platform=True)
    store.remove("fail/app:1")
    age(store.root)
    assert store.prune().snapshots == chain_ids(image.config.diff_ids)
