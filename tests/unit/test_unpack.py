"""Unit tests of ``pytest_containers.image.unpack`` with layers built in memory.

Tests that need privileges (other owners, devices, ``trusted.*`` xattrs)
skip when not run as root; the safety tests run as any user.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    UnsafeLayerError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import unpack as unpack_module
from pytest_containers.image.unpack import unpack_layer

TAR = "application/vnd.oci.image.layer.v1.tar"
TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MTIME = 1_600_000_000
ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")
OPAQUE = "trusted.overlay.opaque"


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    mtime: float = MTIME,
    linkname: str = "",
    pax: dict[str, str] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.uid = os.getuid() if uid is None else uid
    info.gid = os.getgid() if gid is None else gid
    info.mtime = mtime
    info.linkname = linkname
    info.devmajor, info.devminor = dev
    info.pax_headers = dict(pax or {})
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info, data


def d(name: str, **kw) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.DIRTYPE, **kw)


def f(name: str, data: bytes = b"", **kw) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.REGTYPE, data, **kw)


def sym(name: str, target: str, **kw) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.SYMTYPE, linkname=target, **kw)


def hard(name: str, target: str, **kw) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.LNKTYPE, linkname=target, **kw)


def make_tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(dest: Path, blob: bytes, media_type: str = TAR, **kw) -> str:
    return unpack_layer(io.BytesIO(blob), dest, media_type, **kw)


@dataclass
class Box:
    """``dest`` deep inside a sentinel directory whose other contents must not change."""

    tmp: Path
    sentinel: Path
    outside: Path
    dest: Path

    def state(self) -> set[tuple[str, int, int, int, bytes]]:
        seen = set()
        for top, dirs, files in os.walk(self.tmp):
            dirs[:] = [x for x in dirs if os.path.join(top, x) != str(self.dest)]
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                body = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else b""
                seen.add((path, st.st_mode, st.st_nlink, st.st_mtime_ns, body))
        return seen

    def untouched(self) -> bool:
        return self.state() == self.before


@pytest.fixture
def box(tmp_path: Path) -> Box:
    sentinel = tmp_path / "sentinel"
    outside = sentinel / "outside"
    outside.mkdir(parents=True)
    (outside / "passwd").write_text("secret")
    (outside / "sub").mkdir()
    dest = sentinel / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    result = Box(tmp_path, sentinel, outside, dest)
    result.before = result.state()  # type: ignore[attr-defined]
    yield result
    assert result.untouched(), "something was written outside dest"


@pytest.fixture
def dest(box: Box) -> Path:
    return box.dest


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- entry types, metadata -------------------------------------------------


def test_entry_types_and_metadata(dest: Path) -> None:
    blob = make_tar(
        d("./", mode=0o755),
        d("etc", mode=0o750, mtime=MTIME + 1),
        f("etc/hosts", b"127.0.0.1 localhost\n", mode=0o640, mtime=MTIME + 2),
        f("etc/suid", b"x", mode=0o4755),
        d("tmp", mode=0o1777),
        sym("etc/rel", "hosts", mtime=MTIME + 3),
        sym("bin/sh", "/bin/busybox"),
        hard("etc/hosts.link", "etc/hosts"),
        member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    )
    unpack(dest, blob)
    etc = os.lstat(dest / "etc")
    assert stat.S_IMODE(etc.st_mode) == 0o750 and etc.st_mtime == MTIME + 1  # after contents
    hosts = os.lstat(dest / "etc/hosts")
    assert (dest / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert stat.S_IMODE(hosts.st_mode) == 0o640 and hosts.st_mtime == MTIME + 2
    assert stat.S_IMODE(os.lstat(dest / "etc/suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert os.readlink(dest / "etc/rel") == "hosts"
    assert os.lstat(dest / "etc/rel").st_mtime == MTIME + 3
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"  # absolute target kept as it is
    assert os.lstat(dest / "etc/hosts.link").st_ino == hosts.st_ino
    assert hosts.st_nlink == 2
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert os.lstat(dest).st_mtime == MTIME
    assert sorted(os.listdir(dest)) == ["bin", "etc", "run", "tmp"]


def test_pax_nanosecond_mtime(dest: Path) -> None:
    unpack(dest, make_tar(f("x", mtime=MTIME + 0.25), d("dir", mtime=MTIME + 0.5)))
    assert os.lstat(dest / "x").st_mtime_ns == MTIME * 10**9 + 250_000_000
    assert os.lstat(dest / "dir").st_mtime_ns == MTIME * 10**9 + 500_000_000


def test_implicit_parents_and_long_names(dest: Path) -> None:
    deep = "/".join(["x" * 60] * 4) + "/file"
    unpack(dest, make_tar(f(deep, b"deep")))
    assert (dest / deep).read_bytes() == b"deep"
    assert stat.S_IMODE(os.lstat(dest / ("x" * 60)).st_mode) == 0o755


@root_only
def test_implied_dirs_copy_parent_metadata(tmp_path: Path) -> None:
    base, mid, top = (tmp_path / n for n in ("base", "mid", "top"))
    for path in (base, mid, top):
        path.mkdir()
    unpack(base, make_tar(d("home", mode=0o711), d("home/u", uid=1000, gid=1000, mode=0o700)))
    unpack(mid, make_tar(d("home", mode=0o751), f(".wh.srv"), sym("lnk", "/home")))
    unpack(top, make_tar(f("home/u/.wh.x"), f("srv/new"), f("other/y")), parents=[base, mid])
    assert stat.S_IMODE(os.lstat(top / "home").st_mode) == 0o751  # the nearest parent
    u = os.lstat(top / "home/u")
    assert (u.st_uid, u.st_gid, stat.S_IMODE(u.st_mode)) == (1000, 1000, 0o700)
    assert u.st_mtime == MTIME
    assert stat.S_IMODE(os.lstat(top / "srv").st_mode) == 0o755  # whited out below: default
    assert stat.S_IMODE(os.lstat(top / "other").st_mode) == 0o755


@root_only
def test_owner_devices_and_xattrs(dest: Path) -> None:
    pax = {
        "SCHILY.xattr.user.note": "hello",
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02" + "\x00" * 16,
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0",
    }
    blob = make_tar(
        d("home", uid=1000, gid=1001, mode=0o700),
        f("home/ping", b"elf", uid=1000, gid=1001, mode=0o4755, pax=pax),
        sym("home/link", "ping", uid=1000, gid=1002),
        member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        member("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, dev=(7, 0)),
    )
    unpack(dest, blob)
    home = os.lstat(dest / "home")
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1001, 0o700)
    ping = os.lstat(dest / "home/ping")
    assert (ping.st_uid, ping.st_gid) == (1000, 1001)
    assert stat.S_IMODE(ping.st_mode) == 0o4755  # setuid survives the chown
    names = set(os.listxattr(dest / "home/ping"))
    assert names == {"user.note", "security.capability"}
    assert os.getxattr(dest / "home/ping", "user.note") == b"hello"
    assert os.getxattr(dest / "home/ping", "security.capability")[:4] == b"\x01\x00\x00\x02"
    assert os.lstat(dest / "home/link").st_gid == 1002
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    assert loop.st_gid == 6


# --- whiteouts -------------------------------------------------------------


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def test_whiteout_becomes_char_device(dest: Path) -> None:
    unpack(dest, make_tar(d("etc"), f("etc/.wh.passwd"), f(".wh.gone")))
    assert is_whiteout(dest / "etc/passwd") and is_whiteout(dest / "gone")
    assert not (dest / "etc/.wh.passwd").exists() and sorted(os.listdir(dest)) == ["etc", "gone"]


@root_only
def test_opaque_whiteout_sets_xattr(dest: Path) -> None:
    blob = make_tar(d("var"), f("var/.wh..wh..opq"), f("var/new", b"n"), f("new/.wh..wh..opq"))
    unpack(dest, blob)
    assert opaque(dest / "var")
    assert not os.path.lexists(dest / "new")  # no such directory: a no-op, as in umoci
    assert os.listdir(dest / "var") == ["new"]


@root_only
def test_whiteout_never_hides_its_own_layer(dest: Path) -> None:
    blob = make_tar(
        f("keep", b"k"),
        f(".wh.keep"),  # same layer: the file stays
        d("dir"),
        f("dir/a"),
        f(".wh.dir"),  # same layer dir: stays, lower one hidden (opaque)
        f(".wh.re"),
        d("re"),  # new dir after a whiteout: opaque
        f(".wh.up"),
        f("up/f", b"f"),  # implicit parent over a whiteout: opaque
        f(".wh..wh.plnk"),  # reserved, skipped
    )
    unpack(dest, blob)
    assert (dest / "keep").read_bytes() == b"k"
    assert opaque(dest / "dir") and os.listdir(dest / "dir") == ["a"]
    assert opaque(dest / "re") and opaque(dest / "up")
    assert (dest / "up/f").read_bytes() == b"f"
    assert sorted(os.listdir(dest)) == ["dir", "keep", "re", "up"]


def test_whiteout_of_dotdot_is_rejected(dest: Path) -> None:
    with pytest.raises(UnsafeLayerError):
        unpack(dest, make_tar(f("etc/.wh..."), f("ok")))


# --- replacement -----------------------------------------------------------


def test_later_entry_replaces_earlier(dest: Path) -> None:
    blob = make_tar(
        f("a", b"first"),
        f("a", b"second"),
        f("b", b"file"),
        sym("b", "a"),
        sym("c", "a"),
        f("c", b"now a file"),
        d("m", mode=0o700),
        f("m/one"),
        d("m", mode=0o755),
        f("m/two"),
        d("gone"),
        f("gone/child"),
        f("gone", b"was a dir"),
        f("e", b"file"),
        d("e"),
    )
    unpack(dest, blob)
    assert (dest / "a").read_bytes() == b"second"
    assert os.readlink(dest / "b") == "a"
    assert not os.path.islink(dest / "c") and (dest / "c").read_bytes() == b"now a file"
    assert sorted(os.listdir(dest / "m")) == ["one", "two"]
    assert stat.S_IMODE(os.lstat(dest / "m").st_mode) == 0o755
    assert (dest / "gone").read_bytes() == b"was a dir"
    assert (dest / "e").is_dir() and not opaque(dest / "e")


def test_hardlink_keeps_inode_when_target_replaced(dest: Path) -> None:
    unpack(dest, make_tar(f("t", b"old"), hard("h", "t"), f("t", b"new"), f("s"), hard("s", "s")))
    assert (dest / "h").read_bytes() == b"old" and (dest / "t").read_bytes() == b"new"


# --- diffID, compression, media types --------------------------------------


@pytest.mark.parametrize(
    "media_type", [TAR, "application/vnd.oci.image.layer.nondistributable.v1.tar"]
)
def test_diffid_plain(dest: Path, media_type: str) -> None:
    blob = make_tar(f("x", b"x" * 5000))
    assert len(blob) % tarfile.RECORDSIZE == 0  # padding after the end blocks counts
    assert unpack(dest, blob, media_type) == sha256(blob)


@pytest.mark.parametrize("media_type", [TGZ, DOCKER, NONDIST, TAR])
def test_diffid_gzip_and_mislabelled(dest: Path, media_type: str) -> None:
    blob = make_tar(f("x", os.urandom(70000)))
    assert unpack(dest, gzip.compress(blob), media_type) == sha256(blob)
    assert (dest / "x").stat().st_size == 70000


def test_plain_tar_labelled_gzip(dest: Path) -> None:
    blob = make_tar(f("x", b"plain"))
    assert unpack(dest, blob, TGZ) == sha256(blob)
    assert (dest / "x").read_bytes() == b"plain"


def test_diff_id_checked(tmp_path: Path) -> None:
    blob, other = make_tar(f("x")), make_tar(f("y"))
    assert unpack(tmp_path, blob, diff_id=sha256(blob)) == sha256(blob)
    (tmp_path / "2").mkdir()
    with pytest.raises(DigestMismatchError) as info:
        unpack(tmp_path / "2", other, diff_id=sha256(blob))
    assert info.value.actual == sha256(other) and info.value.digest == sha256(blob)


def test_empty_layers(dest: Path) -> None:
    empty = b"\0" * 1024
    assert unpack(dest, gzip.compress(empty), TGZ) == sha256(empty)
    assert unpack(dest, make_tar(), TAR) == sha256(make_tar())
    assert os.listdir(dest) == []


def test_non_seekable_source(dest: Path) -> None:
    blob = make_tar(f("a/b", b"streamed"))
    gz = gzip.compress(blob)

    class Pipe:
        def __init__(self) -> None:
            self.buf = io.BytesIO(gz)

        def read(self, size: int = -1) -> bytes:
            return self.buf.read(min(size, 7) if size > 0 else 7)  # short reads

    assert unpack_layer(Pipe(), dest, TGZ) == sha256(blob)  # type: ignore[arg-type]
    assert (dest / "a/b").read_bytes() == b"streamed"


def test_unknown_media_type(dest: Path) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        unpack(dest, make_tar(), "application/vnd.oci.image.manifest.v1+json")
    assert info.value.media_type == "application/vnd.oci.image.manifest.v1+json"


def test_zstd_without_zstandard(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack_module, "zstandard", None)
    with pytest.raises(UnsupportedMediaTypeError):
        unpack(dest, b"\x28\xb5\x2f\xfd" + b"\0" * 20, ZSTD)


@pytest.mark.parametrize(
    "blob", [b"\x1f\x8b\x08\x00garbage", b"not a tar at all" * 40, gzip.compress(b"x" * 700)]
)
def test_corrupt_layers(dest: Path, blob: bytes) -> None:
    with pytest.raises(ImageError):
        unpack(dest, blob, TGZ)


def test_truncated_layer(dest: Path) -> None:
    blob = make_tar(f("big", os.urandom(100_000)))
    with pytest.raises(ImageError):
        unpack(dest, gzip.compress(blob)[:3000], TGZ)


def test_dest_must_be_empty(dest: Path) -> None:
    (dest / "x").write_text("x")
    with pytest.raises(FileExistsError):
        unpack(dest, make_tar())


def test_root_replaced_by_file_rejected(dest: Path) -> None:
    with pytest.raises(UnsafeLayerError):
        unpack(dest, make_tar(f("./", b"x")))


# --- malicious layers --------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./../../../escape"])
def test_dotdot_clamped_at_root(box: Box, name: str) -> None:
    unpack(box.dest, make_tar(f(name, b"clamped")))  # as umoci and containerd
    assert (box.dest / "escape").read_bytes() == b"clamped"
    assert os.listdir(box.dest) == ["escape"]


def test_dotdot_root_file_rejected(box: Box) -> None:
    with pytest.raises(UnsafeLayerError) as info:
        unpack(box.dest, make_tar(f("..", b"pwned")))
    assert info.value.path == ".." and ".." in str(info.value)


def test_dotdot_inside_is_fine(dest: Path) -> None:
    unpack(dest, make_tar(f("a/../b", b"b")))
    assert (dest / "b").read_bytes() == b"b" and os.listdir(dest) == ["b"]  # lexical


def test_absolute_name_stays_inside(box: Box) -> None:
    name = f"/etc/ptc-unpack-{uuid.uuid4().hex}"
    unpack(box.dest, make_tar(f(name, b"inside"), f(str(box.outside / "passwd"), b"mine")))
    assert (box.dest / name.lstrip("/")).read_bytes() == b"inside"
    assert not os.path.lexists(name)
    assert (box.dest / str(box.outside / "passwd").lstrip("/")).read_bytes() == b"mine"


def test_symlink_to_root_then_write(box: Box) -> None:
    name = f"ptc-unpack-{uuid.uuid4().hex}"
    unpack(box.dest, make_tar(sym("l", "/"), f(f"l/etc/{name}", b"x")))
    assert (box.dest / "etc" / name).read_bytes() == b"x"
    assert os.readlink(box.dest / "l") == "/"
    assert not os.path.lexists(f"/etc/{name}")


def test_symlink_dotdot_clamped(box: Box) -> None:
    unpack(box.dest, make_tar(sym("l", "../../.."), f("l/x", b"x"), sym("m", "a/../../../b")))
    assert (box.dest / "x").read_bytes() == b"x"
    assert os.readlink(box.dest / "m") == "a/../../../b"


def test_symlink_dotdot_then_deeper(box: Box) -> None:
    blob = make_tar(d("d"), sym("d/up", "../../../.."), f("d/up/outside/passwd", b"clamped"))
    unpack(box.dest, blob)
    assert (box.dest / "outside/passwd").read_bytes() == b"clamped"


def test_symlink_outside_then_hardlink(box: Box) -> None:
    blob = make_tar(sym("l", str(box.outside)), hard("h", "l/passwd"))
    with pytest.raises(ImageError):
        unpack(box.dest, blob)
    assert os.stat(box.outside / "passwd").st_nlink == 1


def test_symlink_outside_hardlink_resolves_inside(box: Box) -> None:
    inner = str(box.outside / "passwd").lstrip("/")
    blob = make_tar(f(inner, b"inner"), sym("l", str(box.outside)), hard("h", "l/passwd"))
    unpack(box.dest, blob)
    assert os.lstat(box.dest / "h").st_ino == os.lstat(box.dest / inner).st_ino
    assert os.stat(box.outside / "passwd").st_nlink == 1


@pytest.mark.parametrize("target", ["../../outside/passwd", "/../../outside/passwd"])
def test_hardlink_escape_clamped(box: Box, target: str) -> None:
    with pytest.raises(ImageError, match="missing"):
        unpack(box.dest, make_tar(f("a"), hard("h", target)))
    assert os.listdir(box.dest) == []  # emptied again
    unpack(box.dest, make_tar(f("outside/passwd", b"in"), hard("h", target)))
    assert os.lstat(box.dest / "h").st_ino == os.lstat(box.dest / "outside/passwd").st_ino
    assert os.stat(box.outside / "passwd").st_nlink == 1


def test_hardlink_to_root_rejected(box: Box) -> None:
    with pytest.raises(UnsafeLayerError):
        unpack(box.dest, make_tar(f("a"), hard("h", "a/../..")))


def test_hardlink_to_symlink_links_the_symlink(box: Box) -> None:
    outside = str(box.outside / "passwd")
    unpack(box.dest, make_tar(sym("s", outside), hard("h", "s"), f("s2", b"x")))
    assert os.readlink(box.dest / "h") == outside
    assert os.lstat(box.dest / "h").st_ino == os.lstat(box.dest / "s").st_ino


def test_hardlink_to_directory_rejected(box: Box) -> None:
    with pytest.raises(UnsafeLayerError):
        unpack(box.dest, make_tar(d("dir"), hard("h", "dir")))
    with pytest.raises(ImageError):
        unpack(box.dest, make_tar(hard("h", "missing")))
    assert os.listdir(box.dest) == []


def test_symlink_chain(box: Box) -> None:
    blob = make_tar(
        sym("a", "b"),
        sym("b", "/c/../d"),
        d("d"),
        sym("d/e", "../../../../outside"),
        f("a/e/passwd", b"chained"),
    )
    unpack(box.dest, blob)
    assert (box.dest / "outside/passwd").read_bytes() == b"chained"


def test_symlink_loop(box: Box) -> None:
    with pytest.raises(UnsafeLayerError):
        unpack(box.dest, make_tar(sym("x", "y"), sym("y", "x"), f("x/file", b"loop")))
    (box.dest / "2").mkdir()
    with pytest.raises(UnsafeLayerError):
        unpack(box.dest / "2", make_tar(sym("self", "self/a"), f("self/file")))


def test_file_replaces_symlink_to_outside(box: Box) -> None:
    target = str(box.outside / "passwd")
    blob = make_tar(
        sym("etc-passwd", target),
        f("etc-passwd", b"root::0:0"),
        sym("dir", str(box.outside)),
        d("dir"),
    )
    unpack(box.dest, blob)
    assert not os.path.islink(box.dest / "etc-passwd")
    assert (box.dest / "etc-passwd").read_bytes() == b"root::0:0"
    assert (box.outside / "passwd").read_text() == "secret"
    assert (box.dest / "dir").is_dir() and not os.path.islink(box.dest / "dir")


def test_whiteout_through_symlink_stays_inside(box: Box) -> None:
    unpack(box.dest, make_tar(sym("l", str(box.outside)), f("l/.wh.passwd")))
    assert os.listdir(box.dest) == ["l"]  # no such directory inside the root: a no-op
    inner = str(box.outside).lstrip("/")
    (box.dest / "l2").mkdir()
    unpack(box.dest / "l2", make_tar(d(inner), sym("l", str(box.outside)), f("l/.wh.passwd")))
    assert is_whiteout(box.dest / "l2" / inner / "passwd")


def test_fifo_and_symlink_over_outside_symlink(box: Box) -> None:
    blob = make_tar(
        sym("p", str(box.outside / "passwd")),
        member("p", tarfile.FIFOTYPE),
        sym("q", str(box.outside / "passwd")),
        sym("q", "elsewhere"),
    )
    unpack(box.dest, blob)
    assert stat.S_ISFIFO(os.lstat(box.dest / "p").st_mode)
    assert os.readlink(box.dest / "q") == "elsewhere"


def test_error_names_layer_and_entry(box: Box) -> None:
    digest = "sha256:" + "ab" * 32
    with pytest.raises(UnsafeLayerError) as info:
        unpack_layer(io.BytesIO(make_tar(f("ok"), sym("./", "/x"))), box.dest, TAR, digest=digest)
    assert info.value.digest == digest and info.value.path == "./"
    assert digest in str(info.value) and "'./'" in str(info.value)
    assert os.listdir(box.dest) == []  # a failed unpack leaves nothing behind


def test_dir_mtime_not_set_through_later_symlink(box: Box) -> None:
    blob = make_tar(d("a"), d("a/sub", mtime=1), sym("a", str(box.outside)), d("c", mtime=2))
    unpack(box.dest, blob)
    assert os.readlink(box.dest / "a") == str(box.outside)
    assert os.lstat(box.dest / "c").st_mtime == 2
    assert os.lstat(box.outside / "sub").st_mtime != 1
