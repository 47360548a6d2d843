"""Pull from a real distribution registry; cross-check the store with skopeo and umoci."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from pytest_containers.plugins.oracle_images import build_busybox_layout
from pytest_containers.plugins.registry import RegistryServer

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageNotFoundError,
    InvalidReferenceError,
    ManifestUnknownError,
    PlatformNotFoundError,
    RegistryUnavailableError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image.manifest import Platform
from pytest_containers.image.pull import pull
from pytest_containers.image.reference import Reference
from pytest_containers.image.store import Store

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def skopeo_remote(ref: str, *extra: str) -> dict:
    return json.loads(run("skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"))


def skopeo_local(store: Store, ref: Reference | str, *extra: str) -> dict:
    return json.loads(run("skopeo", "inspect", *extra, f"oci:{store.layout}:{ref}"))


def assert_store_clean(store: Store, *, names: int = 0) -> None:
    """No temp files, no snapshot temp dirs, and only ``names`` index entries."""
    assert list((store.root / "tmp").iterdir()) == []
    assert [p for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp")] == []
    index = json.loads((store.layout / "index.json").read_text())
    assert len(index["manifests"]) == names


@pytest.fixture(scope="session")
def pushed(registry: RegistryServer, busybox_layout: Path, multiarch_layout: Path) -> dict:
    """Session scope: the busybox image pushed as OCI, as Docker v2s2 and as an index."""
    return {
        "oci": registry.push_oci(busybox_layout, "latest", "oracle/busybox", "oci"),
        "v2s2": registry.push_oci(busybox_layout, "latest", "oracle/busybox", "v2s2", fmt="v2s2"),
        "multi": registry.push_oci(multiarch_layout, "multi", "oracle/multi", "1"),
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_pull_oci_matches_skopeo_and_umoci(pushed: dict, store: Store) -> None:
    image = pull(pushed["oci"], store)
    remote = skopeo_remote(pushed["oci"])
    remote_manifest = skopeo_remote(pushed["oci"], "--raw")
    assert image.digest == remote["Digest"]
    assert image.source_digest is None
    assert [layer.digest for layer in image.layers] == remote["Layers"]
    assert image.manifest.config.digest == remote_manifest["config"]["digest"]
    assert image.config.cmd == ("sh",)
    assert len(image.config.diff_ids) == 1
    local = skopeo_local(store, image.reference)
    assert local["Digest"] == image.digest
    assert local["Layers"] == remote["Layers"]
    assert image.layers[0].digest[7:] in run(
        "umoci", "stat", "--image", f"{store.layout}:{image.reference}"
    )
    assert str(image.reference) in run("umoci", "ls", "--layout", str(store.layout)).splitlines()
    assert store.images() == [image]
    assert_store_clean(store, names=1)


def test_pull_docker_v2s2_stored_as_oci(pushed: dict, store: Store) -> None:
    image = pull(pushed["v2s2"], store)
    remote = skopeo_remote(pushed["v2s2"])
    assert image.source_digest == remote["Digest"]
    assert image.manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert [layer.digest for layer in image.layers] == remote["Layers"]
    local = skopeo_local(store, image.reference)
    assert local["Digest"] == image.digest
    assert local["Layers"] == remote["Layers"]
    run("umoci", "stat", "--image", f"{store.layout}:{image.reference}")


def test_pull_by_digest_and_policies(pushed: dict, store: Store, registry: RegistryServer) -> None:
    digest = skopeo_remote(pushed["oci"])["Digest"]
    ref = Reference.parse(pushed["oci"]).with_digest(digest)
    image = pull(ref, store)
    assert image.digest == digest
    assert skopeo_local(store, ref)["Digest"] == digest  # '@' and ':' in the ref name
    with pytest.raises(ImageNotFoundError) as info:
        pull(pushed["v2s2"], store, policy="never")
    assert info.value.reference == pushed["v2s2"]
    # "missing" and "never" answer from the store without any network access
    offline = f"127.0.0.1:{_closed_port()}/offline/busybox:1"
    store.tag(offline, digest)
    assert pull(offline, store, policy="never").digest == digest
    assert pull(offline, store).digest == digest
    with pytest.raises(RegistryUnavailableError):
        pull(offline, store, policy="always")
    assert pull(pushed["oci"], store, policy="always").digest == digest


def test_pull_index_selects_platform(pushed: dict, store: Store) -> None:
    remote_index = skopeo_remote(pushed["multi"], "--raw")
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in remote_index["manifests"]}
    amd64 = pull(pushed["multi"], store, platform=AMD64)
    assert amd64.digest == by_arch["amd64"]
    assert amd64.config.architecture == "amd64"
    arm_ref = Reference.parse(pushed["multi"]).with_tag("arm")
    # the same tag pulled for arm64 (without variant: normalised to v8)
    arm64 = pull(
        pushed["multi"], Store(store.root.parent / "arm"), platform=Platform("linux", "arm64")
    )
    assert (
        arm64.digest == by_arch["arm64"] != by_arch["unknown"]
        or arm64.config.architecture == "arm64"
    )
    assert arm64.config.architecture == "arm64"
    del arm_ref
    with pytest.raises(PlatformNotFoundError) as info:
        pull(pushed["multi"], store, policy="always", platform=Platform("linux", "s390x"))
    assert "linux/amd64" in info.value.available and "linux/arm64/v8" in info.value.available
    assert "unknown" not in str(info.value.platform)
    assert skopeo_local(store, amd64.reference)["Architecture"] == "amd64"


def test_unknown_repository_and_tag(registry: RegistryServer, pushed: dict, store: Store) -> None:
    for ref in (f"{registry.host}/no/such:latest", f"{registry.host}/oracle/busybox:nope"):
        with pytest.raises(ManifestUnknownError) as info:
            pull(ref, store)
        assert info.value.reference == ref
        assert ref in str(info.value)
    assert_store_clean(store)


def test_malformed_reference(store: Store) -> None:
    with pytest.raises(InvalidReferenceError):
        pull("127.0.0.1:5000/Busy Box", store)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_registry_down(store: Store) -> None:
    port = _closed_port()
    with pytest.raises(RegistryUnavailableError) as info:
        pull(f"127.0.0.1:{port}/busybox:latest", store)
    assert f"http://127.0.0.1:{port}/v2/" in str(info.value)
    assert info.value.url == f"http://127.0.0.1:{port}/v2/"
    assert_store_clean(store)


@pytest.mark.parametrize("how", ["same-size", "truncated"])
def test_corrupt_blob_never_enters_store(how: str, tmp_path: Path, store: Store) -> None:
    layout = build_busybox_layout(tmp_path / "layout")
    with RegistryServer() as server:  # private: this test corrupts its storage
        ref = server.push_oci(layout, "latest", "corrupt/busybox", "1")
        layer = skopeo_remote(ref)["Layers"][0]
        data_path = server.blob_data_path(layer)
        data = bytearray(data_path.read_bytes())
        if how == "same-size":
            data[len(data) // 2] ^= 0xFF
        else:
            del data[len(data) // 2 :]
        data_path.write_bytes(bytes(data))
        with pytest.raises(DigestMismatchError) as info:
            pull(ref, store)
    assert info.value.digest == layer
    assert str(info.value).startswith(f"pulling {ref} from registry {server.host}: ")
    assert not store.has_blob(layer)
    assert store.resolve(ref) is None
    assert_store_clean(store)


def test_schema1_is_unsupported(tmp_path: Path, busybox_layout: Path, store: Store) -> None:
    with RegistryServer(allow_schema1=True) as server:
        ref = server.push_oci(busybox_layout, "latest", "old/busybox", "s1", fmt="v2s1")
        with pytest.raises(UnsupportedMediaTypeError) as info:
            pull(ref, store)
    assert "v1+prettyjws" in info.value.media_type
    assert_store_clean(store)


def test_snapshots_unpack_once(pushed: dict, store: Store) -> None:
    pytest.importorskip("pytest_containers.image.unpack")
    image = pull(pushed["oci"], store)
    snapshots = store.snapshots(image)
    assert [p.name for p in snapshots] == [d.split(":")[1] for d in image.config.diff_ids]
    busybox = snapshots[0] / "bin" / "busybox"
    assert busybox.is_file()
    assert (snapshots[0] / "bin" / "sh").readlink() == Path("/bin/busybox")
    inode = busybox.stat().st_ino
    assert store.snapshots(image) == snapshots
    assert busybox.stat().st_ino == inode
    assert_store_clean(store, names=1)


def test_no_registry_left_running(registry: RegistryServer) -> None:
    server = RegistryServer().start()
    pid = server._process.pid  # type: ignore[union-attr]
    server.stop()
    server.stop()
    assert (
        not Path(f"/proc/{pid}").exists() or "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )
    assert not server.workdir.exists()
