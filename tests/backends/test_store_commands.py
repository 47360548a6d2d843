"""``image inspect|tag|rm|prune|push|save|load`` against real tools: a
distribution registry, skopeo and umoci as oracles, and our native runtime."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from pytest_containers.plugins.registry import RegistryServer

from pytest_containers._pluginmanager import make_runtime
from pytest_containers.containers import Containers
from pytest_containers.exceptions import DigestMismatchError, RegistryUnavailableError
from pytest_containers.image.push import push
from pytest_containers.image.store import Store, chain_ids
from pytest_containers.images import Images

OLD = time.time() - 7200


def cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_containers.cli", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def tool(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def skopeo(*args: str) -> dict:
    return json.loads(tool("skopeo", "inspect", *args))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def pulled(busybox_ref: str, store_dir: Path) -> str:
    proc = cli(store_dir, "image", "pull", busybox_ref)
    assert proc.returncode == 0, proc.stderr
    return busybox_ref


def test_inspect_matches_skopeo(pulled: str, store_dir: Path) -> None:
    proc = cli(store_dir, "image", "inspect", pulled)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    local = skopeo(f"oci:{store_dir}/oci:{pulled}")
    assert info["reference"] == pulled
    assert info["digest"] == local["Digest"]
    assert [layer["digest"] for layer in info["layers"]] == local["Layers"]
    assert info["platform"] == f"{local['Os']}/{local['Architecture']}"
    assert info["config"]["config"]["Cmd"] == ["sh"]
    raw = skopeo("--raw", f"oci:{store_dir}/oci:{pulled}")
    assert info["manifest"] == raw
    assert info["size"] > sum(layer["size"] for layer in info["layers"])


def test_tag_rm_prune_keep_the_layout_readable(pulled: str, store_dir: Path) -> None:
    other = "127.0.0.1:5000/renamed/busybox:2"
    assert cli(store_dir, "image", "tag", pulled, other).returncode == 0
    listed = [line.split()[0] for line in cli(store_dir, "image", "ls").stdout.splitlines()[1:]]
    assert listed == [pulled, other]
    digest = skopeo(f"oci:{store_dir}/oci:{pulled}")["Digest"]
    assert skopeo(f"oci:{store_dir}/oci:{other}")["Digest"] == digest
    proc = cli(store_dir, "image", "rm", pulled)
    assert (proc.returncode, proc.stdout) == (0, f"Untagged: {pulled}\n")
    listed = [line.split()[0] for line in cli(store_dir, "image", "ls").stdout.splitlines()[1:]]
    assert listed == [other]
    store = Store(store_dir)
    image = store.require(other)
    snapshots = store.snapshots(image)  # unpacked for real
    # an unreferenced blob and snapshot, old enough to go
    orphan = store.put_blob(b"nobody names me\n")
    orphan_snapshot = store.snapshot_path("sha256:" + "ab" * 32)
    (orphan_snapshot / "etc").mkdir(parents=True)
    for path in (store.blob_path(orphan), orphan_snapshot / "etc", orphan_snapshot):
        os.utime(path, (OLD, OLD))
    proc = cli(store_dir, "image", "prune")
    assert proc.returncode == 0, proc.stderr
    assert f"deleted blob: {orphan}" in proc.stdout
    assert f"deleted snapshot: sha256:{'ab' * 32}" in proc.stdout
    assert "Total reclaimed space" in proc.stdout
    assert not store.has_blob(orphan) and not orphan_snapshot.exists()
    assert all(path.is_dir() for path in snapshots)
    assert [p.name for p in snapshots] == [c[7:] for c in chain_ids(image.config.diff_ids)]
    assert skopeo(f"oci:{store_dir}/oci:{other}")["Digest"] == digest
    tool("umoci", "stat", "--image", f"{store_dir}/oci:{other}")
    assert cli(store_dir, "image", "rm", other).returncode == 0
    assert cli(store_dir, "image", "ls").stdout.splitlines()[1:] == []


@pytest.mark.parametrize(
    "args",
    [
        ("image", "inspect", "no/such:1"),
        ("image", "tag", "no/such:1", "x:1"),
        ("image", "rm", "no/such:1"),
        ("image", "push", "no/such:1", "127.0.0.1:1/x:1"),
        ("image", "save", "no/such:1", "-o", "{tmp}/never-written.tar"),
    ],
)
def test_unknown_reference_exits_125(
    store_dir: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    proc = cli(store_dir, *(arg.format(tmp=tmp_path) for arg in args))
    assert proc.returncode == 125
    assert proc.stderr.startswith("pytest-containers: error: image docker.io/no/such:1 ")
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.glob("*.tar")) == []


def test_push_monolithic_chunked_and_mounted(
    pulled: str, store_dir: Path, registry: RegistryServer, tmp_path: Path
) -> None:
    store = Store(store_dir)
    image = store.require(pulled)
    blobs = (image.manifest.config.digest, *(d.digest for d in image.layers))
    with RegistryServer() as private:  # empty: every blob is uploaded
        mono = push(pulled, store, f"{private.host}/mono/busybox:1", mount=False)
        chunked = push(pulled, store, f"{private.host}/chunked/busybox:1", chunk_bytes=65536)
        again = push(pulled, store, f"{private.host}/mono/busybox:1")
        for result in (mono, chunked):
            assert result.digest == image.digest
            assert result.uploaded == blobs and result.mounted == ()
            remote = skopeo("--tls-verify=false", f"docker://{result.reference}")
            assert remote["Digest"] == image.digest
            assert remote["Layers"] == [d.digest for d in image.layers]
        assert again.skipped == blobs and again.uploaded == ()
        tool("skopeo", "copy", "--src-tls-verify=false",
             f"docker://{chunked.reference}", f"oci:{tmp_path / 'back'}:x")  # fmt: skip
        assert skopeo(f"oci:{tmp_path / 'back'}:x")["Digest"] == image.digest
    dest = f"{registry.host}/mounted/busybox:v1"  # same registry as the pulled image
    proc = cli(store_dir, "image", "push", pulled, dest)
    assert (proc.returncode, proc.stdout) == (0, f"{dest}: {image.digest}\n"), proc.stderr
    assert skopeo("--tls-verify=false", f"docker://{dest}")["Digest"] == image.digest
    mounted = push(pulled, store, f"{registry.host}/mounted2/busybox:v1")
    assert mounted.mounted == blobs


def test_push_to_a_registry_that_is_down(pulled: str, store_dir: Path) -> None:
    dest = f"127.0.0.1:{closed_port()}/x/busybox:1"
    with pytest.raises(RegistryUnavailableError):
        push(pulled, Store(store_dir), dest)
    proc = cli(store_dir, "image", "push", pulled, dest)
    assert proc.returncode == 125 and "registry unavailable" in proc.stderr


def test_save_is_read_by_skopeo_and_umoci(pulled: str, store_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "busybox.tar"
    proc = cli(store_dir, "image", "save", pulled, "-o", str(file))
    assert proc.returncode == 0, proc.stderr
    digest = Store(store_dir).require(pulled).digest
    assert skopeo(f"oci-archive:{file}")["Digest"] == digest
    assert skopeo(f"oci-archive:{file}:{pulled}")["Digest"] == digest
    tool("skopeo", "copy", f"oci-archive:{file}", f"oci:{tmp_path / 'copy'}:x")
    assert skopeo(f"oci:{tmp_path / 'copy'}:x")["Digest"] == digest
    tool("umoci", "stat", "--image", f"{tmp_path / 'copy'}:x")


@pytest.fixture
def skopeo_archive(busybox_layout: Path, tmp_path: Path) -> Path:
    file = tmp_path / "from-skopeo.tar"
    tool("skopeo", "copy", f"oci:{busybox_layout}:latest", f"oci-archive:{file}:test/loaded:1")
    return file


def test_load_an_archive_written_by_skopeo_and_run_it(
    skopeo_archive: Path, store_dir: Path
) -> None:
    proc = cli(store_dir, "image", "load", "-i", str(skopeo_archive))
    assert (proc.returncode, proc.stdout) == (0, "Loaded image: docker.io/test/loaded:1\n")
    assert (
        skopeo(f"oci:{store_dir}/oci:docker.io/test/loaded:1")["Digest"]
        == skopeo(f"oci-archive:{skopeo_archive}")["Digest"]
    )
    containers = Containers(Images(Store(store_dir), policy="never"), make_runtime("native"))
    try:
        result = containers.run("docker.io/test/loaded:1", ["sh", "-c", "echo loaded; exit 3"])
    finally:
        containers.close()
    assert (result.exit_code, result.stdout) == (3, "loaded\n")
    proc = cli(store_dir, "run", "--pull", "never", "test/loaded:1", "echo", "via-cli")
    assert (proc.returncode, proc.stdout) == (0, "via-cli\n"), proc.stderr


def test_load_refuses_a_corrupt_blob_and_a_non_archive(
    skopeo_archive: Path, store_dir: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.tar"
    with tarfile.open(skopeo_archive) as tin, tarfile.open(corrupt, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None and member.size > 100_000:  # the layer
                data = data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:]
            tout.addfile(member, None if data is None else io.BytesIO(data))
    with pytest.raises(DigestMismatchError):
        Images(Store(store_dir)).load(corrupt)
    not_tar = tmp_path / "not-an-archive.tar"
    not_tar.write_text("hello\n")
    for file, message in ((corrupt, "fails its digest"), (not_tar, "is not an OCI archive")):
        proc = cli(store_dir, "image", "load", "-i", str(file))
        assert proc.returncode == 125 and message in proc.stderr, proc.stderr
        assert str(file) in proc.stderr
    store = Store(store_dir)
    assert store.images() == []
    assert list(store.blobs_dir.iterdir()) == [] and list((store.root / "tmp").iterdir()) == []
