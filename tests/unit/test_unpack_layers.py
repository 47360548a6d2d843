"""``unpack_layer`` beyond one tar: zstd streams, layers over their parents
(cross-layer hardlinks, lower symlinks, opaque markers), device fallback,
and the store's chainID-keyed snapshots. Layers are built in memory."""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
import warnings
from pathlib import Path

import pytest
import zstandard

from pytest_containers.exceptions import ImageError
from pytest_containers.image import layerapply
from pytest_containers.image.layerapply import device_skippable
from pytest_containers.image.store import chain_ids
from tests.unit.test_unpack import ROOT, TAR, TGZ, ZSTD, d, f, hard, make_tar, member, sha256, sym

root_only = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")


def unpack(dest: Path, blob: bytes, media_type: str = TAR, **kw) -> str:
    dest.mkdir(exist_ok=True)
    return layerapply_unpack(io.BytesIO(blob), dest, media_type, **kw)


def layerapply_unpack(*args, **kw) -> str:
    from pytest_containers.image.unpack import unpack_layer

    return unpack_layer(*args, **kw)


def stack(tmp_path: Path, *layers: bytes) -> list[Path]:
    snapshots: list[Path] = []
    for index, blob in enumerate(layers):
        unpack(tmp_path / f"s{index}", blob, parents=list(snapshots))
        snapshots.append(tmp_path / f"s{index}")
    return snapshots


# --- zstd -------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [ZSTD, TAR, TGZ])
def test_zstd_streamed_and_sniffed(tmp_path: Path, media_type: str) -> None:
    blob = make_tar(f("a/big", os.urandom(300_000)), f("a/small", b"s"))
    frames = zstandard.ZstdCompressor(level=3)
    half = len(blob) // 2  # two frames, as multi-threaded writers emit
    compressed = frames.compress(blob[:half]) + frames.compress(blob[half:])

    class Pipe:  # non-seekable, short reads
        def __init__(self) -> None:
            self.buf = io.BytesIO(compressed)

        def read(self, size: int = -1) -> bytes:
            return self.buf.read(min(size, 4093) if size > 0 else 4093)

    dest = tmp_path / "z"
    dest.mkdir()
    assert layerapply_unpack(Pipe(), dest, media_type, diff_id=sha256(blob)) == sha256(blob)
    assert (dest / "a/small").read_bytes() == b"s"
    assert (dest / "a/big").stat().st_size == 300_000


def test_gzip_labelled_zstd(tmp_path: Path) -> None:
    blob = make_tar(f("x", b"gz"))
    assert unpack(tmp_path / "g", gzip.compress(blob), ZSTD) == sha256(blob)


def test_corrupt_zstd(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor(write_checksum=True).compress(
        make_tar(f("x", os.urandom(50_000)))
    )
    with pytest.raises(ImageError) as info:
        unpack(
            tmp_path / "c", data[:200] + b"\0" * 64 + data[264:], ZSTD, digest="sha256:" + "1" * 64
        )
    assert "sha256:" + "1" * 64 in str(info.value)
    assert os.listdir(tmp_path / "c") == []


# --- layers over their parents ----------------------------------------------


@root_only
def test_hardlink_to_lower_file_is_copied_up(tmp_path: Path) -> None:
    pax = {"SCHILY.xattr.user.k": "v"}
    base, mid, top = stack(
        tmp_path,
        make_tar(f("t1", b"old", mode=0o4750, uid=5, gid=6, pax=pax), f("u", b"u")),
        make_tar(hard("t2", "t1"), hard("t3", "./t1"), f("u", b"x"), hard("u", "t1")),
        make_tar(f("t1", b"new")),
    )
    t1, t2, t3 = (os.lstat(mid / n) for n in ("t1", "t2", "t3"))
    assert t1.st_ino == t2.st_ino == t3.st_ino == os.lstat(mid / "u").st_ino
    assert (t1.st_uid, t1.st_gid, stat.S_IMODE(t1.st_mode)) == (5, 6, 0o4750)
    assert (mid / "t1").read_bytes() == b"old" and os.getxattr(mid / "t1", "user.k") == b"v"
    assert os.lstat(base / "t1").st_nlink == 1  # the lower snapshot is untouched
    assert (top / "t1").read_bytes() == b"new"


def test_hardlink_to_lower_missing_or_dir(tmp_path: Path) -> None:
    (base,) = stack(tmp_path, make_tar(d("dir"), f("gone"), sym("l", "dir")))
    (mid,) = (tmp_path / "m",)
    unpack(mid, make_tar(f(".wh.gone")), parents=[base])
    with pytest.raises(ImageError, match="missing"):
        unpack(tmp_path / "x", make_tar(hard("h", "gone")), parents=[base, mid])
    with pytest.raises(ImageError, match="directory"):
        unpack(tmp_path / "y", make_tar(hard("h", "dir")), parents=[base, mid])
    unpack(tmp_path / "w", make_tar(hard("h", "l/")), parents=[base, mid])  # the symlink itself
    assert os.readlink(tmp_path / "w/h") == "dir" and os.readlink(tmp_path / "w/l") == "dir"
    assert os.listdir(tmp_path / "x") == os.listdir(tmp_path / "y") == []


@root_only
def test_lower_symlink_followed_and_opaque_prunes(tmp_path: Path) -> None:
    base, mid = stack(
        tmp_path,
        make_tar(d("usr/lib", mode=0o700, uid=3), sym("lib", "usr/lib"), f("a/b/foo"), f("a/k")),
        make_tar(f("lib/x", b"x"), hard("a/h", "a/b/foo"), f("a/.wh..wh..opq"), f("q/.wh.z")),
    )
    assert not os.path.islink(mid / "lib") and not os.path.lexists(mid / "lib")
    assert (mid / "usr/lib/x").read_bytes() == b"x"
    lib = os.lstat(mid / "usr/lib")
    assert (lib.st_uid, stat.S_IMODE(lib.st_mode)) == (3, 0o700)  # lower metadata copied
    assert os.listdir(mid / "a") == ["h"]  # the copy-up of a/b/foo pruned by the opaque marker
    assert not os.path.lexists(mid / "q")


@root_only
def test_whiteout_under_lower_file_is_noop(tmp_path: Path) -> None:
    base, mid = stack(tmp_path, make_tar(f("f")), make_tar(f("f/.wh.x"), f("f/.wh..wh..opq")))
    assert os.listdir(mid) == []
    with pytest.raises(ImageError, match="not a directory"):
        unpack(tmp_path / "z", make_tar(f("f/x")), parents=[base])


# --- devices ----------------------------------------------------------------


def test_device_skippable() -> None:
    assert device_skippable(PermissionError(errno.EPERM, "x"))
    assert device_skippable(OSError(errno.EACCES, "x"))
    assert not device_skippable(OSError(errno.ENOSPC, "x"))
    assert not device_skippable(OSError(errno.EEXIST, "x"))


def test_device_without_privilege_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.mknod

    def mknod(path, mode=0o600, device=0, **kw):  # type: ignore[no-untyped-def]
        if stat.S_ISCHR(mode) and device == 0 or stat.S_ISFIFO(mode):
            return real(path, mode, device, **kw)
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(layerapply.os, "mknod", mknod)
    blob = make_tar(member("dev/null", tarfile.CHRTYPE, dev=(1, 3)), f("dev/ok", b"ok"))
    with pytest.warns(RuntimeWarning, match="dev/null"):
        unpack(tmp_path / "d", blob)
    assert os.listdir(tmp_path / "d/dev") == ["ok"]


def test_device_other_error_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def mknod(path, *a, **kw):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(layerapply.os, "mknod", mknod)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OSError) as info:
            unpack(tmp_path / "d", make_tar(member("dev/null", tarfile.CHRTYPE, dev=(1, 3))),
                   digest="sha256:" + "2" * 64)  # fmt: skip
    assert any("dev/null" in n and "2" * 64 in n for n in info.value.__notes__)
    assert os.listdir(tmp_path / "d") == []


# --- the store ---------------------------------------------------------------


def test_chain_ids() -> None:
    a, b, c = ("sha256:" + x * 64 for x in "abc")
    ab = sha256(f"{a} {b}".encode())
    assert chain_ids([a, b, c]) == [a, ab, sha256(f"{ab} {c}".encode())]
    assert chain_ids([]) == []


def put_image(store, layers: list[bytes], diff_ids: list[str] | None = None):  # type: ignore[no-untyped-def]
    import json

    descs = []
    for blob in layers:
        gz = gzip.compress(blob)
        descs.append({"mediaType": TGZ, "digest": store.put_blob(gz), "size": len(gz)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha256(b) for b in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": store.put_blob(config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    store.tag("localhost/test/x:1", store.put_blob(manifest))
    return store.resolve("localhost/test/x:1")


@root_only
def test_store_snapshots_keyed_by_chain_id(tmp_path: Path) -> None:
    from pytest_containers.image.store import Store

    store = Store(tmp_path / "store")
    layers = [make_tar(f("t1", b"old")), make_tar(hard("t2", "t1")), make_tar(f("t1", b"new"))]
    image = put_image(store, layers)
    snapshots = store.snapshots(image)
    keys = chain_ids([sha256(b) for b in layers])
    assert snapshots == [store.snapshot_path(k) for k in keys]
    assert snapshots[0].name == sha256(layers[0]).split(":")[1]  # base: chainID == diffID
    assert (snapshots[1] / "t2").read_bytes() == b"old"  # copied up from the parent
    assert store.snapshots(image) == snapshots


def test_store_failed_unpack_leaves_nothing(tmp_path: Path) -> None:
    from pytest_containers.exceptions import DigestMismatchError
    from pytest_containers.image.store import Store

    store = Store(tmp_path / "store")
    image = put_image(store, [make_tar(f("a"))], ["sha256:" + "0" * 64])
    with pytest.raises(DigestMismatchError):
        store.snapshots(image)
    image = put_image(store, [make_tar(f("a")), make_tar(hard("b", "missing"))])
    with pytest.raises(ImageError, match="missing"):
        store.snapshots(image)
    assert [p.name for p in store.snapshots_dir.iterdir()] == [sha256(make_tar(f("a")))[7:]]


# --- the per-layer resolution cache ------------------------------------------


@root_only
def test_cache_dir_replaced_by_symlink_then_written(tmp_path: Path) -> None:
    """``a`` resolved (cached) as a directory, then replaced by a symlink: ``a/x``
    must follow the symlink, inside the root."""
    t = "ptc-no-such-dir-" + os.urandom(4).hex()
    (s0,) = stack(
        tmp_path,
        make_tar(d("a"), f("a/y", b"y"), sym("a", f"/{t}"), f("a/x", b"x"), f("a/z/w", b"w")),
    )
    assert os.readlink(s0 / "a") == f"/{t}" and not os.path.lexists(f"/{t}")
    assert sorted(os.listdir(s0 / t)) == ["x", "z"] and (s0 / t / "z/w").read_bytes() == b"w"


@root_only
def test_cache_symlink_replaced_by_dir_then_written(tmp_path: Path) -> None:
    """A (lower or own) symlink followed and cached, then replaced or hidden by a
    directory of this layer: later names go into the new directory."""
    base, top = stack(
        tmp_path,
        make_tar(d("t"), sym("low", "t")),
        make_tar(f("low/a", b"1"), d("low"), f("low/b", b"2"),
                 d("u"), sym("own", "u"), f("own/c", b"3"), f("own", b"file"),
                 sym("w", "u"), f("w/d", b"4"), f(".wh.w"), d("w"), f("w/e", b"5")),
    )  # fmt: skip
    assert sorted(os.listdir(top / "t")) == ["a"] and sorted(os.listdir(top / "low")) == ["b"]
    assert (top / "own").read_bytes() == b"file" and sorted(os.listdir(top / "u")) == ["c", "d"]
    assert sorted(os.listdir(top / "w")) == ["e"]


@root_only
def test_cache_dropped_by_opaque_and_whiteout(tmp_path: Path) -> None:
    """A lower directory resolved (cached, visible in the lower layer), then made
    opaque or whited out by this layer: a later hardlink into it must not find the
    lower files, and a lower symlink below it must no longer be followed."""
    (base,) = stack(
        tmp_path, make_tar(f("a/old", b"o"), sym("a/l", "/t"), d("t"), f("b/old", b"o"))
    )
    with pytest.raises(ImageError, match="missing"):
        unpack(tmp_path / "x", make_tar(f("a/n", b"n"), f("a/.wh..wh..opq"), hard("a/h", "a/old")),
               parents=[base])  # fmt: skip
    unpack(tmp_path / "y", make_tar(f("a/l/f", b"f"), f("a/.wh.l"), d("a/l"), f("a/l/g", b"g")),
           parents=[base])  # fmt: skip
    y = tmp_path / "y"
    assert os.listdir(y / "t") == ["f"] and os.listdir(y / "a/l") == ["g"]
    assert os.getxattr(y / "a/l", "trusted.overlay.opaque") == b"y"
    layer = make_tar(f("b/n", b"n"), d("b"), f("b/.wh..wh..opq"), hard("b/h", "b/n"))
    unpack(tmp_path / "z", layer, parents=[base])
    assert os.lstat(tmp_path / "z/b/h").st_ino == os.lstat(tmp_path / "z/b/n").st_ino
