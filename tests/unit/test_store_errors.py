"""The store as a new user meets it: bad store paths, a garbage ``index.json``, a
full disk, names other tools wrote, names with a digest, lookups by digest or
image ID, and the temp files a killed pull leaves. No binary needed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containers.exceptions import (
    ImageError,
    ImageNotFoundError,
    InvalidOptionError,
    InvalidReferenceError,
    StoreLockTimeoutError,
)
from pytest_containers.image import locks
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import digest_of
from pytest_containers.image.pull import pull
from pytest_containers.image.store import (
    INDEX_DIGEST_ANNOTATION,
    SOURCE_DIGEST_ANNOTATION,
    Store,
)
from pytest_containers.images import Images
from tests.unit.test_store_commands import age, layer_blob, make_image

OTHER = "sha256:" + "0f" * 32


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# -- opening a store ------------------------------------------------------------------


def test_an_empty_store_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(InvalidOptionError, match="store path .* is empty") as info:
            Store(empty)
        assert (info.value.option, info.value.value) == ("store", empty)
    assert list(tmp_path.iterdir()) == []  # the current directory did not become a store


@pytest.mark.parametrize("kind", ["file", "under-a-file", "uncreatable"])
def test_a_store_that_is_no_directory_is_named(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("not a store\n")
    root = {
        "file": tmp_path / "file",
        "under-a-file": tmp_path / "file" / "store",
        "uncreatable": Path("/proc/nope"),
    }[kind]
    with pytest.raises(ImageError) as info:
        Store(root)
    message = str(info.value)
    assert f"store {root} " in message
    assert {"file": "is not a directory", "under-a-file": "cannot be created",
            "uncreatable": "cannot be created"}[kind] in message  # fmt: skip
    assert info.value.root == str(root)


@pytest.mark.parametrize(
    "content",
    [b"garbage\n", b'{"schemaVersion": 2, "manifests": {"a": 1}}', b"[1, 2]", b"\xff\xfe"],
)
def test_a_garbage_index_names_the_file_and_the_way_out(store: Store, content: bytes) -> None:
    make_image(store, "a/app:1", b"one")
    index = store.layout / "index.json"
    index.write_bytes(content)
    for read in (store.images, lambda: store.resolve("a/app:1"), store.index_entries):
        with pytest.raises(ImageError) as info:
            read()
        message = str(info.value)
        assert str(index) in message and f"mv {index} {index}.bad" in message
        assert info.value.path == str(index)
    index.rename(index.with_name("index.json.bad"))  # the way out it suggests
    assert Store(store.root).images() == []


def test_a_full_disk_names_the_store_and_the_blob(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file the blob goes to reports ENOSPC: nothing of the blob stays."""
    blob, _ = layer_blob(b"x" * 100_000)
    digest = digest_of(blob)

    class FullFile:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def fileno(self) -> int:
            return self.fd

        def __enter__(self) -> FullFile:
            return self

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

    monkeypatch.setattr("pytest_containers.image.store.os.fdopen", lambda fd, *a, **k: FullFile(fd))
    with pytest.raises(ImageError) as info:
        store.put_blob(blob)
    assert str(info.value) == (
        f"store {store.root}: cannot write blob {digest} ({len(blob)} bytes):"
        " No space left on device"
    )
    assert info.value.errno == errno.ENOSPC
    assert not store.has_blob(digest)
    assert list(store.tmp_dir.iterdir()) == []


# -- names ------------------------------------------------------------------------------


def test_ls_lists_only_names_the_other_commands_resolve(store: Store) -> None:
    make_image(store, "127.0.0.1:5000/a/app:1", b"one")
    index_path = store.layout / "index.json"
    index = json.loads(index_path.read_text())
    entry = index["manifests"][0]
    for name in ("latest", "busybox", "a/app:1"):  # as umoci tag or skopeo copy write them
        index["manifests"].append({**entry, "annotations": {mt.REF_NAME_ANNOTATION: name}})
    index_path.write_text(json.dumps(index))
    assert [str(i.reference) for i in store.images()] == ["127.0.0.1:5000/a/app:1"]
    for name in ("latest", "busybox", "a/app:1"):  # docker.io/library/latest:latest, ...
        assert store.resolve(name) is None
        with pytest.raises(ImageNotFoundError):
            Images(store).inspect(name)


def test_a_name_with_another_digest_is_refused(store: Store) -> None:
    image = make_image(store, "a/app:1", b"one")
    images = Images(store)
    with pytest.raises(InvalidReferenceError) as info:
        images.tag("a/app:1", f"x/app@{OTHER}")
    assert f"{OTHER} is not a digest of that image ({image.digest})" in str(info.value)
    with pytest.raises(InvalidReferenceError, match="is not the image's"):
        store.tag(f"x/app:2@{OTHER}", image.digest)
    assert [str(i.reference) for i in store.images()] == ["docker.io/a/app:1"]
    tagged = images.tag("a/app:1", f"x/app@{image.digest}")  # its own digest: fine
    assert str(tagged.reference) == f"docker.io/x/app@{image.digest}"


def test_repository_names_must_be_lowercase(store: Store) -> None:
    make_image(store, "a/app:1", b"one")
    with pytest.raises(InvalidReferenceError) as info:
        Images(store).tag("a/app:1", "Mine:v1")
    assert "repository names must be lowercase: 'Mine' is not (did you mean 'mine:v1'?)" in str(
        info.value
    )


def test_an_image_is_found_by_its_registry_digests_and_its_id(store: Store) -> None:
    image = make_image(store, "127.0.0.1:5000/a/app:1", b"one")
    source, index = "sha256:" + "1a" * 32, "sha256:" + "2b" * 32
    store.tag("127.0.0.1:5000/a/app:1", image.digest, source_digest=source, index_digest=index)
    image = store.require("127.0.0.1:5000/a/app:1")
    assert (image.source_digest, image.index_digest, image.registry_digest) == (
        source,
        index,
        index,
    )
    entry = store.index_entries()[0]["annotations"]
    assert (entry[SOURCE_DIGEST_ANNOTATION], entry[INDEX_DIGEST_ANNOTATION]) == (source, index)
    # pull by any digest the registry knows it by finds it offline, under its name
    for digest in (image.digest, source, index):
        found = pull(f"127.0.0.1:5000/a/app@{digest}", store, policy="never")
        assert str(found.reference) == "127.0.0.1:5000/a/app:1"
        assert Images(store, policy="never").get(f"127.0.0.1:5000/a/app@{digest}") == found
    with pytest.raises(ImageNotFoundError):  # another repository: not the same image
        pull(f"127.0.0.1:5000/b/app@{source}", store, policy="never")
    # inspect, tag and save take an image ID or digest as docker does
    images = Images(store)
    config = image.manifest.config.digest
    for ident in (config, config[:19], image.digest, source[:15], config[7:]):
        assert images.inspect(ident)["reference"] == "127.0.0.1:5000/a/app:1"
    info = images.inspect(config[:19])
    assert (info["id"], info["registry_digest"], info["index_digest"]) == (config, index, index)
    assert str(images.tag(config[:19], "b/app:2").reference) == "docker.io/b/app:2"
    with pytest.raises(ImageNotFoundError, match="no image with the digest or ID sha256:ffff"):
        images.inspect("sha256:ffff")


def test_not_in_the_store_says_how_to_pull_it(store: Store) -> None:
    with pytest.raises(ImageNotFoundError) as info:
        Images(store).inspect("no/such:1")
    assert "pytest-containers image pull docker.io/no/such:1" in str(info.value)
    with pytest.raises(ImageNotFoundError) as info:
        Images(store, policy="never").get("no/such:1")
    assert "pytest-containers image pull docker.io/no/such:1" in str(info.value)


# -- pull policies -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["bogus", "Never", "", None])
def test_a_bad_pull_policy_is_refused_at_once(store: Store, policy: object) -> None:
    with pytest.raises(InvalidOptionError) as info:
        Images(store, policy=policy)  # type: ignore[arg-type]
    assert f"invalid pull policy {policy!r}" in str(info.value)
    assert "always, missing, never" in str(info.value)
    with pytest.raises(InvalidOptionError):
        Images(store).pull("a/app:1", policy=policy or "bogus")  # type: ignore[arg-type]


def test_a_reference_that_is_no_string(store: Store) -> None:
    with pytest.raises(InvalidReferenceError, match="^reference must be a string, got int"):
        Images(store).pull(5)  # type: ignore[arg-type]


# -- prune ---------------------------------------------------------------------------------


def test_prune_says_what_the_grace_period_kept(store: Store) -> None:
    image = make_image(store, "young/app:1", b"young")
    store.remove("young/app:1")
    report = store.prune()
    assert report.blobs == []
    assert sorted(report.young_blobs) == sorted(
        {image.digest, image.manifest.config.digest, image.layers[0].digest}
    )
    assert report.young_bytes > 0 and report.grace == 300
    report = store.prune(grace=0)
    assert len(report.blobs) == 3 and report.young_blobs == []


_DEAD_PULLER = r"""
import os, sys
from pytest_containers.image.store import Store
store = Store(sys.argv[1])
with store.ingest(sys.argv[2], 10**9) as writer:
    writer.write(b"x" * 100000)
    print("writing", flush=True)
    sys.stdin.read()
"""


def test_prune_removes_a_dead_pullers_temp_file_at_once(store: Store) -> None:
    digest = "sha256:" + "3c" * 32
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEAD_PULLER, str(store.root), digest],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    [temp] = store.tmp_dir.iterdir()
    assert temp.name.startswith(f"{digest[7:]}-")  # named by the blob, whose lock is held
    assert locks.holders(store.blob_lock_path(digest)) == [proc.pid]
    report = store.prune()
    assert report.temp_in_use == [temp] and temp.exists()  # being written
    proc.kill()  # SIGKILL: no cleanup
    proc.wait()
    report = store.prune()  # young as it is: its writer is gone
    assert report.temp == [temp] and report.freed_bytes >= 100000
    assert list(store.tmp_dir.iterdir()) == []
    assert not store.blob_lock_path(digest).exists()


def test_prune_removes_a_dead_unpacks_temp_dir_at_once(store: Store) -> None:
    chain_id = "sha256:" + "4d" * 32
    dead = store.snapshots_dir / f".tmp-{chain_id[7:]}-abc"
    (dead / "bin").mkdir(parents=True)
    unknown = store.tmp_dir / "load-young"  # no lock to tell: kept while young
    unknown.mkdir()
    held = locks.lock(store.snapshot_lock_path("sha256:" + "5e" * 32), timeout=1, what="test")
    alive = store.snapshots_dir / f".tmp-{'5e' * 32}-abc"
    alive.mkdir()
    try:
        report = store.prune()
    finally:
        locks.unlock(held)
    assert report.temp == [dead] and not dead.exists()
    assert report.temp_in_use == [alive] and alive.exists()
    assert report.temp_young == [unknown]
    age(unknown)
    assert store.prune().temp == [unknown, alive]


def test_a_wait_for_a_held_lock_is_logged_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locks, "WAIT_NOTICE", 0.05)
    path = store.locks_dir / "index.json.lock"
    held = locks.lock(path, timeout=1, what="test")  # another open file: it conflicts
    try:
        with pytest.raises(StoreLockTimeoutError):
            with store.index_lock(timeout=0.3):
                pass
    finally:
        locks.unlock(held)
    [record] = [r for r in caplog.records if r.name == "pytest_containers.image.locks"]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        f"waiting for the store lock {path} held by pid {os.getpid()} (this process)"
    )
    assert f"for the index of the store {store.root}" in record.getMessage()


def test_save_without_permission_names_the_output(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root every directory is writable: the temp file's refusal is simulated."""
    make_image(store, "a/app:1", b"one")
    out = tmp_path / "out" / "a.tar"
    out.parent.mkdir()

    def refuse(prefix: str, dir: Path) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}tmp123")

    monkeypatch.setattr("pytest_containers.image.archive.tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        Images(store).save("a/app:1", out)
    assert (
        info.value.strerror
        == f"cannot write the archive {out}: no permission to write files in {out.parent}"
    )
    assert "tmp123" not in str(info.value)
