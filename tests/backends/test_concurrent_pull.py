"""Concurrent pulls into one store, against the real registry (issue "Images", part 7).

The registry redirects blob reads to a :class:`FileServer` serving its storage,
so every blob download is one ``GET`` of ``.../blobs/sha256/<2 hex>/<hex>/data``
seen there. The server here also holds each blob read for a while and notes
when that hold started and ended, so downloads that run at once overlap
visibly and processes racing for the same blob really race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.plugins.file_server import FileServer
from pytest_containers.plugins.oracle_images import build_busybox_layout
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.exceptions import DigestMismatchError, ImageError, StoreLockTimeoutError
from pytest_containers.image import pull as pull_module
from pytest_containers.image.pull import pull
from pytest_containers.image.store import Store

REPOSITORY = "concurrent/layers"
PROCESSES = 4
#: Seconds each blob read is held before it is answered (see :class:`TimedFileServer`).
BLOB_DELAY = 0.3


@dataclass(frozen=True)
class Span:
    """Part of one blob ``GET`` on the file server: URL ``path``, from its ``start``
    to the ``end`` of its hold (monotonic seconds); the request lasts at least that."""

    path: str
    start: float
    end: float


@dataclass
class TimedFileServer(FileServer):
    """A :class:`FileServer` that holds each blob ``GET`` ``delay`` seconds before
    answering it, noting a :class:`Span` for each in :attr:`spans`."""

    delay: float = 0.0
    spans: list[Span] = field(default_factory=list)

    def _fault(self, method: str, path: str) -> Any:
        if method == "GET" and "/blobs/" in path:
            start = time.monotonic()
            time.sleep(self.delay)
            self.spans.append(Span(path, start, time.monotonic()))
        return super()._fault(method, path)

    def blob_gets(self) -> dict[str, int]:
        """``GET`` requests per blob digest (``sha256:<hex>``)."""
        counts: dict[str, int] = {}
        for request in self.gets("/blobs/sha256/"):
            digest = "sha256:" + request.path.rstrip("/").split("/")[-2]
            counts[digest] = counts.get(digest, 0) + 1
        return counts


def blob_path(digest: str) -> str:
    hex_ = digest.split(":")[1]
    return f"/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"


def build_layered_layout(dest: Path, extra_layers: int) -> Path:
    """The busybox layout (one layer) plus ``extra_layers`` layers made by umoci, each
    adding ``/layer-<n>`` with 256 KiB of random (incompressible) bytes."""
    build_busybox_layout(dest)
    for n in range(1, extra_layers + 1):
        with tempfile.TemporaryDirectory(prefix="ptc-umoci-") as work:
            bundle = Path(work) / "bundle"
            image = f"{dest}:latest"
            subprocess.run(
                ["umoci", "unpack", "--rootless", "--image", image, str(bundle)],
                check=True,
                capture_output=True,
            )
            (bundle / "rootfs" / f"layer-{n}").write_bytes(os.urandom(256 * 1024))
            subprocess.run(
                ["umoci", "repack", "--image", image, str(bundle)], check=True, capture_output=True
            )
    return dest


def layout_blobs(layout: Path) -> tuple[str, list[str]]:
    """``(config digest, layer digests base first)`` of the layout's ``latest``."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    ]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_text())
    return manifest["config"]["digest"], [layer["digest"] for layer in manifest["layers"]]


@dataclass
class Setup:
    registry: RegistryServer
    files: TimedFileServer
    ref: str
    config: str
    layers: list[str]  # base first


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Module scope: a 3-layer image (busybox + 2 umoci layers) in a registry (no auth)
    that redirects blob reads to a :class:`TimedFileServer` serving its storage."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    layout = build_layered_layout(tmp_path_factory.mktemp("layered") / "layout", 2)
    config, layers = layout_blobs(layout)
    assert len(layers) == 3
    with TimedFileServer(Path("/nonexistent")) as files:
        registry = RegistryServer(redirect_baseurl=files.url)
        files.root = registry.storage
        with registry:
            ref = registry.push_oci(layout, "latest", REPOSITORY, "1")
            yield Setup(registry, files, ref, config, layers)


@pytest.fixture
def files(setup: Setup) -> Iterator[TimedFileServer]:
    """The setup's file server, records cleared; delay reset after the test."""
    setup.files.requests.clear()
    setup.files.spans.clear()
    yield setup.files
    setup.files.delay = 0.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def assert_no_temp(store: Store) -> None:
    assert list((store.root / "tmp").iterdir()) == []
    assert list(store.layout.glob(".tmp-*")) == []
    assert [p for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp")] == []


# -- one pull: layers at once ---------------------------------------------------


def test_layers_download_in_parallel(setup: Setup, files: TimedFileServer, store: Store) -> None:
    files.delay = BLOB_DELAY
    image = pull(setup.ref, store)
    assert [layer.digest for layer in image.layers] == setup.layers
    assert files.blob_gets() == {digest: 1 for digest in (setup.config, *setup.layers)}
    spans = {s.path: s for s in files.spans}
    config = spans[blob_path(setup.config)]
    layers = [spans[blob_path(d)] for d in setup.layers]
    # the config first, alone; then the three layers all in flight at one moment
    assert all(config.end <= layer.start for layer in layers)
    assert max(s.start for s in layers) < min(s.end for s in layers)
    for digest in (setup.config, *setup.layers):
        assert store.read_blob(digest) == setup.registry.blob_data_path(digest).read_bytes()
    assert_no_temp(store)


def test_workers_one_is_sequential(
    setup: Setup, files: TimedFileServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull_module, "PULL_WORKERS", 1)
    files.delay = 0.1
    pull(setup.ref, store)
    layers = sorted((s for s in files.spans if "/blobs/" in s.path), key=lambda s: s.start)
    assert len(layers) == 4
    assert all(a.end <= b.start for a, b in zip(layers, layers[1:], strict=False))


def test_corrupt_layer_fails_the_pull_and_leaves_nothing(
    setup: Setup, files: TimedFileServer, store: Store
) -> None:
    bad = setup.layers[1]
    data_path = setup.registry.blob_data_path(bad)
    original = data_path.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF
    data_path.write_bytes(bytes(changed))
    try:
        with pytest.raises(DigestMismatchError) as info:
            pull(setup.ref, store)
    finally:
        data_path.write_bytes(original)
    assert info.value.digest == bad
    assert bad in str(info.value)
    assert not store.has_blob(bad)
    assert store.resolve(setup.ref) is None
    assert json.loads((store.layout / "index.json").read_text())["manifests"] == []
    assert_no_temp(store)
    # nothing half-written under a blob name: whatever did get stored is whole
    for path in store.blobs_dir.iterdir():
        assert (
            path.read_bytes() == setup.registry.blob_data_path(f"sha256:{path.name}").read_bytes()
        )
    # and the next pull completes, fetching only what is missing
    files.requests.clear()
    pull(setup.ref, store)
    assert bad in files.blob_gets()
    assert all(n == 1 for n in files.blob_gets().values())
    assert_no_temp(store)


def test_first_error_wins_and_others_are_cancelled(
    setup: Setup, files: TimedFileServer, store: Store
) -> None:
    """Two layers fail: one error is raised (the first), and the third download, slower,
    is cancelled or completes whole; no temp file either way."""
    bad = [setup.layers[0], setup.layers[2]]
    saved = {}
    for digest in bad:
        path = setup.registry.blob_data_path(digest)
        saved[path] = path.read_bytes()
        path.write_bytes(saved[path][:-1] + bytes([saved[path][-1] ^ 0xFF]))
    try:
        with pytest.raises(DigestMismatchError) as info:
            pull(setup.ref, store)
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    assert info.value.digest in bad
    assert not any(store.has_blob(d) for d in bad)
    assert store.resolve(setup.ref) is None
    assert_no_temp(store)


# -- several processes, one store -------------------------------------------------

_CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from pytest_containers.image.pull import pull
from pytest_containers.image.store import Store

ref, root, go, run_busybox = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"
store = Store(root)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
started = time.monotonic()
image = pull(ref, store)
pulled = time.monotonic()
snapshots = store.snapshots(image)


def tree(top):
    entries = []
    for parent, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            path = os.path.join(parent, name)
            st = os.lstat(path)
            if os.path.islink(path):
                what = "l:" + os.readlink(path)
            elif os.path.isfile(path):
                what = "f:" + hashlib.sha256(open(path, "rb").read()).hexdigest()
            else:
                what = "d"
            entries.append(f"{os.path.relpath(path, top)} {st.st_mode:o} {what}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


exit_code = None
if run_busybox:
    import uuid
    from pytest_containers.runtime.native.engine import NativeRuntime
    from pytest_containers.runtime.types import ContainerSpec

    runtime = NativeRuntime(state_root=Path(sys.argv[5]))
    spec = ContainerSpec(args=("busybox", "true"), layers=tuple(snapshots))
    container = runtime.start(spec, container_id=f"ptc-{uuid.uuid4().hex[:12]}")
    try:
        exit_code = container.wait(30.0).exit_code
    finally:
        container.delete()
print(json.dumps({
    "digest": image.digest,
    "snapshots": [str(p) for p in snapshots],
    "trees": [tree(p) for p in snapshots],
    "exit_code": exit_code,
    "pull": [started, pulled],
}), flush=True)
"""


def _native_runtime_usable() -> bool:
    return os.geteuid() == 0 and Path("/sys/fs/cgroup/memory/cgroup.procs").exists()


def test_processes_pulling_one_image_download_each_blob_once(
    setup: Setup, files: TimedFileServer, tmp_path: Path
) -> None:
    files.delay = BLOB_DELAY  # every process is still downloading when the others start
    root = tmp_path / "shared-store"
    go = tmp_path / "go"
    state = tmp_path / "ptc-state"
    run_busybox = _native_runtime_usable()
    argv = [sys.executable, "-c", _CHILD, setup.ref, str(root), str(go), str(int(run_busybox))]
    children = [
        subprocess.Popen(
            [*argv, str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        go.touch()
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    # each blob downloaded exactly once, by whichever process got its lock first
    assert files.blob_gets() == {digest: 1 for digest in (setup.config, *setup.layers)}
    # the processes raced: every pull was under way while every other one was
    assert max(o["pull"][0] for o in outputs) < min(o["pull"][1] for o in outputs)
    # all four got the same image and the same snapshots, whole
    first = outputs[0]
    assert all(o["digest"] == first["digest"] for o in outputs)
    assert all(o["snapshots"] == first["snapshots"] for o in outputs)
    assert all(o["trees"] == first["trees"] for o in outputs)
    assert len(first["snapshots"]) == 3
    assert all(Path(p).is_dir() for p in first["snapshots"])
    assert (Path(first["snapshots"][0]) / "bin" / "busybox").is_file()
    assert (Path(first["snapshots"][2]) / "layer-2").stat().st_size == 256 * 1024
    if run_busybox:
        assert [o["exit_code"] for o in outputs] == [0] * PROCESSES
        assert list(state.iterdir()) == []
    store = Store(root)
    assert [str(i.reference) for i in store.images()] == [setup.ref]
    assert {p.name for p in store.blobs_dir.iterdir()} >= {
        d.split(":")[1] for d in (setup.config, *setup.layers)
    }
    # every blob went in under its lock (the manifest too: it is stored, not fetched)
    manifest = store.require(setup.ref).digest
    assert {p.name for p in (root / "locks").glob("blob-*.lock")} == {
        f"blob-{d.split(':')[1]}.lock" for d in (setup.config, *setup.layers, manifest)
    }
    assert_no_temp(store)


# -- the per-blob lock --------------------------------------------------------------

_HOLDER = r"""
import sys, filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_waiter_finds_the_blob_and_does_not_fetch(store: Store) -> None:
    data = b"one blob, fetched by whoever holds its lock first\n"
    digest = store.put_blob(data, None)
    store.blob_path(digest).unlink()  # now absent; a digest we know
    calls: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with store.blob_lock(digest):
            held.set()
            time.sleep(0.3)
            with store.ingest(digest, len(data)) as writer:
                writer.write(data)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        fetched = store.fetch_blob_once(digest, len(data), lambda w: calls.append("fetched"))
    finally:
        thread.join()
    assert fetched is False
    assert calls == []
    assert store.read_blob(digest) == data


def test_lock_timeout_names_blob_and_lock_file(store: Store) -> None:
    digest = "sha256:" + "ab" * 32
    lock_path = store.blob_lock_path(digest)
    assert lock_path == store.root / "locks" / f"blob-{'ab' * 32}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(ImageError) as info:
            store.fetch_blob_once(digest, 1, lambda w: pytest.fail("fetched"), timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 5.0
    finally:
        holder.communicate("")
    assert isinstance(info.value, StoreLockTimeoutError)  # a filelock holder counts too
    assert info.value.digest == digest
    assert info.value.lock_path == str(lock_path)
    assert info.value.holder_pids == [holder.pid]
    assert digest in str(info.value) and str(lock_path) in str(info.value)
    assert f"held by pid {holder.pid} (" in str(info.value)
    assert not store.has_blob(digest)
    assert_no_temp(store)
    # the holder gone, the lock is free again
    with store.blob_lock(digest, timeout=1.0):
        pass
