"""Store commands without any binary: names (tag, rm), garbage collection
(prune) and OCI archives (save, load) on synthetic images."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    ImageNotFoundError,
)
from pytest_containers.image import archive
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import digest_of
from pytest_containers.image.store import Image, Store, chain_ids
from pytest_containers.images import Images

OLD = time.time() - 7200  # older than prune's grace period and stale-temp age


def layer_blob(content: bytes) -> tuple[bytes, str]:
    """A gzip layer with one file ``/data``; returns (blob, diffID)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("data")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0), digest_of(raw.getvalue())


def make_image(store: Store, reference: str, content: bytes) -> Image:
    """Store a one-layer image and name it ``reference``."""
    blob, diff_id = layer_blob(content)
    layer = store.put_blob(blob)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": layer, "size": len(blob)}],
        }
    ).encode()
    store.put_blob(config)
    store.tag(reference, store.put_blob(manifest))
    return store.require(reference)


def blobs_of(image: Image) -> set[str]:
    return {image.digest, image.manifest.config.digest, *(d.digest for d in image.layers)}


def age(path: Path) -> None:
    """Make ``path`` (and everything under it) look two hours old."""
    for parent, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.utime(os.path.join(parent, name), (OLD, OLD), follow_symlinks=False)
    os.utime(path, (OLD, OLD))


def fake_snapshot(store: Store, image: Image) -> Path:
    """A snapshot dir for the image's (only) chainID, with a read-only subdirectory."""
    path = store.snapshot_path(chain_ids(image.config.diff_ids)[-1])
    (path / "ro").mkdir(parents=True)
    (path / "ro" / "data").write_bytes(b"x" * 1000)
    (path / "ro").chmod(0o555)
    return path


def assert_clean(store: Store) -> None:
    assert list((store.root / "tmp").iterdir()) == []
    assert list(store.blobs_dir.iterdir()) == []
    assert json.loads((store.layout / "index.json").read_text())["manifests"] == []


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_tag_and_rm_change_names_only(store: Store) -> None:
    image = make_image(store, "127.0.0.1:5000/a/app:1", b"one")
    images = Images(store)
    tagged = images.tag("127.0.0.1:5000/a/app:1", "other/app:2")
    assert str(tagged.reference) == "docker.io/other/app:2"
    assert tagged.digest == image.digest
    assert [str(i.reference) for i in store.images()] == [
        "127.0.0.1:5000/a/app:1",
        "docker.io/other/app:2",
    ]
    images.rm("127.0.0.1:5000/a/app:1")
    assert [str(i.reference) for i in store.images()] == ["docker.io/other/app:2"]
    assert all(store.has_blob(d) for d in blobs_of(image))
    info = images.inspect("other/app:2")
    assert info["digest"] == image.digest
    assert info["platform"] == "linux/amd64"
    assert info["layers"][0]["digest"] == image.layers[0].digest
    assert info["size"] == sum(store.blob_path(d).stat().st_size for d in blobs_of(image))


@pytest.mark.parametrize("command", ["inspect", "rm", "save", "push", "tag"])
def test_unknown_reference_is_named(store: Store, tmp_path: Path, command: str) -> None:
    images = Images(store)
    calls = {
        "inspect": lambda: images.inspect("no/such:1"),
        "rm": lambda: images.rm("no/such:1"),
        "save": lambda: images.save("no/such:1", tmp_path / "x.tar"),
        "push": lambda: images.push("no/such:1", "127.0.0.1:1/x:1"),
        "tag": lambda: images.tag("no/such:1", "x:1"),
    }
    with pytest.raises(ImageNotFoundError) as info:
        calls[command]()
    assert info.value.reference == "docker.io/no/such:1"
    assert "docker.io/no/such:1" in str(info.value)
    assert not (tmp_path / "x.tar").exists()


def test_prune_removes_only_what_no_name_reaches(store: Store) -> None:
    kept = make_image(store, "keep/app:1", b"kept")
    gone = make_image(store, "gone/app:1", b"gone")
    kept_snapshot, gone_snapshot = fake_snapshot(store, kept), fake_snapshot(store, gone)
    store.remove("gone/app:1")
    age(store.root)
    report = store.prune()
    assert sorted(report.blobs) == sorted(blobs_of(gone))
    assert report.snapshots == [chain_ids(gone.config.diff_ids)[-1]]
    assert report.freed_bytes >= 1000
    assert not gone_snapshot.exists()
    assert kept_snapshot.is_dir()
    assert all(store.has_blob(d) for d in blobs_of(kept))
    assert [p.name for p in store.snapshots_dir.iterdir()] == [kept_snapshot.name]
    assert store.prune().blobs == []


def test_prune_follows_nested_indexes(store: Store) -> None:
    image = make_image(store, "multi/app:1", b"arch")
    manifest = {"mediaType": mt.OCI_MANIFEST, "digest": image.digest, "size": 400}
    inner = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [manifest]})
    inner_digest = store.put_blob(inner.encode())
    outer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [{"mediaType": mt.OCI_INDEX, "digest": inner_digest, "size": len(inner)}],
        }
    ).encode()
    outer_digest = store.put_blob(outer)
    store.remove("multi/app:1")
    index_path = store.layout / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"].append(  # as another tool (skopeo copy --all) would write it
        {
            "mediaType": mt.OCI_INDEX,
            "digest": outer_digest,
            "size": len(outer),
            "annotations": {mt.REF_NAME_ANNOTATION: "multi"},
        }
    )
    index_path.write_text(json.dumps(index))
    snapshot = fake_snapshot(store, image)
    age(store.root)
    report = store.prune()
    assert report.blobs == [] and report.snapshots == []
    assert snapshot.is_dir()
    assert store.images() == []  # index entries are not listed as images


def test_prune_spares_young_blobs_and_live_temp_files(store: Store) -> None:
    image = make_image(store, "young/app:1", b"young")
    store.remove("young/app:1")
    (store.root / "tmp" / "downloading").write_bytes(b"partial")
    stale = store.root / "tmp" / "load-old"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "blob").write_bytes(b"left by a crash")
    stale_unpack = store.snapshots_dir / ".tmp-0123456789ab-x"
    stale_unpack.mkdir()
    age(stale)
    age(stale_unpack)
    report = store.prune()
    assert report.blobs == []
    assert all(store.has_blob(d) for d in blobs_of(image))
    assert sorted(report.temp) == sorted([stale, stale_unpack])
    assert (store.root / "tmp" / "downloading").exists()
    assert not stale.exists() and not stale_unpack.exists()


def test_has_blob_refreshes_a_reused_blob(store: Store) -> None:
    image = make_image(store, "reused/app:1", b"reused")
    store.remove("reused/app:1")
    age(store.root)
    assert store.has_blob(image.layers[0].digest)  # a pull about to reuse it
    assert store.prune().blobs == sorted([image.digest, image.manifest.config.digest])
    assert store.has_blob(image.layers[0].digest)


def test_save_then_load_round_trip(store: Store, tmp_path: Path) -> None:
    image = make_image(store, "127.0.0.1:5000/a/app:1", b"payload")
    first = archive.save(store, "127.0.0.1:5000/a/app:1", tmp_path / "a.tar")
    again = archive.save(store, "127.0.0.1:5000/a/app:1", tmp_path / "b.tar")
    assert first.read_bytes() == again.read_bytes()  # reproducible
    with tarfile.open(first) as tar:
        names = tar.getnames()
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert sorted(names[2:-2]) == sorted(f"blobs/sha256/{d[7:]}" for d in blobs_of(image))
    assert names[-2:] == ["index.json", "oci-layout"]
    other = Store(tmp_path / "other")
    [loaded] = archive.load(other, first)
    assert (str(loaded.reference), loaded.digest) == ("127.0.0.1:5000/a/app:1", image.digest)
    [renamed] = Images(other).load(first, "b/app:2")
    assert str(renamed.reference) == "docker.io/b/app:2"
    assert list((other.root / "tmp").iterdir()) == []


def _rewrite(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Copy the tar ``src`` to ``dst``, passing each (info, data) through ``change``
    (return None to drop the member)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            changed = change(member, data)
            if changed is not None:
                member.size = len(changed)
                tout.addfile(member, io.BytesIO(changed))


@pytest.mark.parametrize(
    "how", ["flipped", "truncated", "missing", "no-layout", "no-name", "not-tar"]
)
def test_bad_archives_leave_nothing(store: Store, tmp_path: Path, how: str) -> None:
    source = Store(tmp_path / "source")
    image = make_image(source, "a/app:1", b"content" * 1000)
    good = archive.save(source, "a/app:1", tmp_path / "good.tar")
    layer = image.layers[0].digest[7:]
    bad = tmp_path / "bad.tar"

    def change(member: tarfile.TarInfo, data: bytes) -> bytes | None:
        if member.name.endswith(layer):
            if how == "flipped":
                return data[:10] + bytes([data[10] ^ 1]) + data[11:]
            if how == "truncated":
                return data[: len(data) // 2]
            if how == "missing":
                return None
        if member.name == "oci-layout" and how == "no-layout":
            return None
        if member.name == "index.json" and how == "no-name":
            return data.replace(b'"annotations"', b'"x-annotations"')
        return data

    if how == "not-tar":
        bad.write_bytes(b"this is not a tar file\n" * 100)
    else:
        _rewrite(good, bad, change)
    expected = DigestMismatchError if how in ("flipped", "truncated") else ImageError
    with pytest.raises(expected) as info:
        archive.load(store, bad)
    assert str(bad) in str(info.value)
    message = {
        "flipped": layer,
        "truncated": layer,
        "missing": f"blob sha256:{layer}",
        "no-layout": "not an OCI archive: it has no oci-layout",
        "no-name": "has no name",
        "not-tar": "not an OCI archive",
    }[how]
    assert message in str(info.value)
    assert_clean(store)
