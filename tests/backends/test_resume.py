"""Interrupted, refused and corrupted blob downloads, against the real registry.

Faults come from a :class:`FileServer` serving the storage of a registry whose
``redirect`` middleware sends blob reads there: it cuts a body after N bytes,
ignores ``Range``, or answers 429/5xx first. The ``416`` quirk of distribution
2.8.2 (``Content-Range: bytes */N`` with ``Content-Length: N``) is met on the
registry itself, by asking for a range past the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pytest_containers.plugins.file_server import FileServer
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers import _retry
from pytest_containers.exceptions import (
    DigestMismatchError,
    RegistryError,
    RegistryUnavailableError,
)
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.mediatypes import OCI_LAYER_GZIP
from pytest_containers.image.pull import pull
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store

REPOSITORY = "resume/busybox"


@dataclass
class Setup:
    registry: RegistryServer
    files: FileServer
    ref: str
    layer: Descriptor  # the busybox layer, about 1 MiB

    @property
    def layer_path(self) -> str:
        """The layer data's path on the file server."""
        hex_ = self.layer.digest.split(":")[1]
        return f"/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"


def layout_layer(layout: Path) -> Descriptor:
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_text())
    layer = manifest["layers"][0]
    return Descriptor(media_type=layer["mediaType"], digest=layer["digest"], size=layer["size"])


@pytest.fixture(scope="module")
def setup(busybox_layout: Path) -> Iterator[Setup]:
    """Module scope: a registry (no auth) redirecting blob reads to a file server
    that serves its storage; busybox pushed."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    with FileServer(Path("/nonexistent")) as files:
        registry = RegistryServer(redirect_baseurl=files.url)
        files.root = registry.storage
        with registry:
            ref = registry.push_oci(busybox_layout, "latest", REPOSITORY, "1")
            yield Setup(registry, files, ref, layout_layer(busybox_layout))


@pytest.fixture
def files(setup: Setup) -> Iterator[FileServer]:
    """The setup's file server, record cleared, faults aimed at the layer (the
    config blob is read first, untouched); faults cleared after the test."""
    setup.files.requests.clear()
    setup.files.fault_path = setup.layer_path
    yield setup.files
    setup.files.statuses.clear()
    setup.files.cuts.clear()
    setup.files.ignore_range = False
    setup.files.fault_path = ""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def assert_no_temp_files(store: Store) -> None:
    assert list((store.root / "tmp").iterdir()) == []


def test_cut_download_resumes_with_range(setup: Setup, files: FileServer, store: Store) -> None:
    half = setup.layer.size // 2
    files.cuts.append(half)
    image = pull(setup.ref, store)
    assert [d.digest for d in image.layers] == [setup.layer.digest]
    reads = files.gets(setup.layer_path)
    assert [(r.headers.get("range"), r.status, r.sent) for r in reads] == [
        (None, 200, half),
        (f"bytes={half}-", 206, setup.layer.size - half),
    ]
    assert (
        store.read_blob(setup.layer.digest)
        == setup.registry.blob_data_path(setup.layer.digest).read_bytes()
    )
    assert_no_temp_files(store)


def test_cut_again_and_again_still_completes(setup: Setup, files: FileServer, store: Store) -> None:
    """Every attempt that brings bytes renews the budget: 8 cuts > 4 attempts."""
    step = setup.layer.size // 9
    files.cuts.extend([step] * 8)
    pull(setup.ref, store)
    reads = files.gets(setup.layer_path)
    assert len(reads) == 9
    assert [r.headers.get("range") for r in reads] == [None] + [
        f"bytes={step * n}-" for n in range(1, 9)
    ]
    assert store.has_blob(setup.layer.digest)
    assert_no_temp_files(store)


def test_server_ignoring_range_restarts_from_zero(
    setup: Setup, files: FileServer, store: Store
) -> None:
    files.ignore_range = True
    files.cuts.append(setup.layer.size // 3)
    pull(setup.ref, store)
    reads = files.gets(setup.layer_path)
    assert [(r.headers.get("range"), r.status, r.sent) for r in reads] == [
        (None, 200, setup.layer.size // 3),
        (f"bytes={setup.layer.size // 3}-", 200, setup.layer.size),
    ]
    assert store.has_blob(setup.layer.digest)
    assert_no_temp_files(store)


def test_connection_cut_without_progress_gives_up(
    setup: Setup, files: FileServer, store: Store
) -> None:
    files.cuts.extend([0] * 10)
    with pytest.raises(RegistryUnavailableError) as info:
        pull(setup.ref, store)
    assert "peer closed connection" in str(info.value)
    assert len(files.gets(setup.layer_path)) == _retry.REGISTRY_ATTEMPTS
    assert not store.has_blob(setup.layer.digest)
    assert store.resolve(setup.ref) is None
    assert_no_temp_files(store)


def test_5xx_retried_with_backoff(setup: Setup, files: FileServer, store: Store) -> None:
    files.statuses.extend([(503, {}), (502, {})])
    pull(setup.ref, store)
    assert [r.status for r in files.gets(setup.layer_path)] == [503, 502, 200]
    assert store.has_blob(setup.layer.digest)


def test_5xx_attempts_are_bounded(setup: Setup, files: FileServer, store: Store) -> None:
    files.statuses.extend([(500, {})] * 10)
    start = time.monotonic()
    with pytest.raises(RegistryError) as info:
        pull(setup.ref, store)
    assert info.value.status == 500
    assert len(files.gets(setup.layer_path)) == _retry.REGISTRY_ATTEMPTS
    assert time.monotonic() - start >= 0.2 + 0.4 + 0.8  # exponential backoff
    assert not store.has_blob(setup.layer.digest)
    assert_no_temp_files(store)


def test_429_honours_retry_after(setup: Setup, files: FileServer, store: Store) -> None:
    files.statuses.append((429, {"Retry-After": "1"}))
    start = time.monotonic()
    pull(setup.ref, store)
    assert time.monotonic() - start >= 1.0
    assert [r.status for r in files.gets(setup.layer_path)] == [429, 200]


def test_429_retry_after_is_capped(
    setup: Setup, files: FileServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_retry, "RETRY_AFTER_MAX", 0.3)
    files.statuses.append((429, {"Retry-After": "3600"}))
    start = time.monotonic()
    pull(setup.ref, store)
    assert time.monotonic() - start < 10.0
    assert store.has_blob(setup.layer.digest)


def test_changed_bytes_resumed_still_mismatch(
    setup: Setup, files: FileServer, store: Store
) -> None:
    """Bytes changed in the registry's storage: a clear error, even across a resume,
    and nothing of that blob in the store."""
    data_path = setup.registry.blob_data_path(setup.layer.digest)
    original = data_path.read_bytes()
    changed = bytearray(original)
    changed[-100] ^= 0xFF
    data_path.write_bytes(bytes(changed))
    files.cuts.append(setup.layer.size // 2)
    try:
        with pytest.raises(DigestMismatchError) as info:
            pull(setup.ref, store)
    finally:
        data_path.write_bytes(original)
    assert info.value.digest == setup.layer.digest
    assert setup.layer.digest in str(info.value)
    assert len(files.gets(setup.layer_path)) == 2  # resumed once, not retried after
    assert not store.has_blob(setup.layer.digest)
    assert store.resolve(setup.ref) is None
    assert_no_temp_files(store)


# -- 416: distribution 2.8.2 answered directly (the session registry, no redirect) --


@pytest.fixture(scope="module")
def plain(registry: RegistryServer, busybox_layout: Path) -> tuple[RegistryServer, Descriptor]:
    registry.push_oci(busybox_layout, "latest", REPOSITORY, "1")
    return registry, layout_layer(busybox_layout)


def test_registry_416_has_a_wrong_content_length(
    plain: tuple[RegistryServer, Descriptor],
) -> None:
    """The quirk itself: ``Content-Length`` is the blob's size, not the body's."""
    registry, layer = plain
    url = f"{registry.url}/v2/{REPOSITORY}/blobs/{layer.digest}"
    with httpx.Client(timeout=5.0) as client:
        with client.stream("GET", url, headers={"Range": f"bytes={layer.size}-"}) as resp:
            assert resp.status_code == 416
            assert resp.headers["Content-Range"] == f"bytes */{layer.size}"
            assert int(resp.headers["Content-Length"]) == layer.size
            with pytest.raises(httpx.RemoteProtocolError):
                resp.read()  # a short body: reading it fails


def test_416_when_everything_is_held_is_complete(
    plain: tuple[RegistryServer, Descriptor], store: Store
) -> None:
    registry, layer = plain
    data = registry.blob_data_path(layer.digest).read_bytes()
    start = time.monotonic()
    with RegistryClient(registry.host, timeout=5.0) as client:
        with store.ingest(layer.digest, layer.size) as writer:
            writer.write(data)
            held = client.fetch_blob(REPOSITORY, layer, writer, offset=layer.size)  # type: ignore[arg-type]
    assert held == layer.size
    assert time.monotonic() - start < 2.0  # the short body was never waited for
    assert store.read_blob(layer.digest) == data
    assert_no_temp_files(store)


def test_resume_from_the_registry_itself(
    plain: tuple[RegistryServer, Descriptor], store: Store
) -> None:
    registry, layer = plain
    data = registry.blob_data_path(layer.digest).read_bytes()
    third = layer.size // 3
    with RegistryClient(registry.host) as client:
        with store.ingest(layer.digest, layer.size) as writer:
            writer.write(data[:third])
            held = client.fetch_blob(REPOSITORY, layer, writer, offset=third)  # type: ignore[arg-type]
    assert held == layer.size
    assert store.read_blob(layer.digest) == data


def test_416_with_a_shorter_blob_is_a_mismatch(
    setup: Setup, files: FileServer, store: Store
) -> None:
    """The storage says the blob is shorter than what we hold: a DigestMismatchError."""
    data_path = setup.registry.blob_data_path(setup.layer.digest)
    original = data_path.read_bytes()
    data_path.write_bytes(original[:-10])
    try:
        with RegistryClient(setup.registry.host) as client:
            with pytest.raises(DigestMismatchError) as info:
                with store.ingest(setup.layer.digest, setup.layer.size) as writer:
                    writer.write(original)
                    client.fetch_blob(REPOSITORY, setup.layer, writer, offset=setup.layer.size)  # type: ignore[arg-type]
    finally:
        data_path.write_bytes(original)
    assert info.value.size == setup.layer.size - 10
    assert [r.status for r in files.gets(setup.layer_path)] == [416]
    assert not store.has_blob(setup.layer.digest)
    assert_no_temp_files(store)


def test_offset_outside_the_blob_is_refused(setup: Setup) -> None:
    layer = Descriptor(media_type=OCI_LAYER_GZIP, digest=setup.layer.digest, size=10)
    with RegistryClient(setup.registry.host) as client, pytest.raises(ValueError):
        client.fetch_blob(REPOSITORY, layer, open("/dev/null", "wb"), offset=11)
