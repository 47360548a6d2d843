"""``unpack_layer`` snapshots stacked with overlayfs, against ``umoci unpack``.

The image is built with umoci on a temporary OCI layout: layer 1 by
``umoci repack`` of a rootfs with busybox and its symlinks, layer 2 by
``repack`` after deletions and changes (umoci writes ``.wh.`` files), layer
3 hand-crafted with an opaque whiteout and added with ``umoci raw
add-layer``. Each layer is unpacked into its own snapshot, the snapshots are
mounted as overlay lowerdirs, and the merged tree must equal umoci's rootfs.
Needs root, overlayfs and umoci; every mount is undone in a ``finally``.

The same image recompressed with ``skopeo copy --dest-compress-format zstd``
must unpack to the same tree. Then one small hand-made image per issue
case (cross-layer hardlinks, opaque markers first or last, directories
replaced by symlinks, escapes against a canary directory outside the rootfs,
type changes, long names, modes, devices, capabilities): each is unpacked
both ways, by ``umoci raw add-layer`` + ``umoci unpack`` and by
``unpack_layer`` per layer with its parents, and the merged overlay must
equal umoci's rootfs (or both must refuse the image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_containers.exceptions import ImageError
from pytest_containers.image.unpack import unpack_layer

pytestmark = [
    pytest.mark.linux,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, mount)"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci"),
]

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ["ls", "cat", "echo", "true", "env", "mkdir", "rm", "ln"]
TAG = "test"


def run(*argv: str | Path) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def write(
    path: Path, data: bytes | str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def build_layer1(rootfs: Path) -> None:
    """busybox with absolute and relative symlinks, owners, modes, special files."""
    for name in ("bin", "etc", "usr/bin", "var/lib/app", "home/user", "empty", "dev"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        os.symlink("/bin/busybox", rootfs / "bin" / applet)  # absolute, as busybox images do
    os.symlink("busybox", rootfs / "bin/sh")
    os.symlink("../../bin/busybox", rootfs / "usr/bin/env")
    write(rootfs / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:\n")
    write(rootfs / "etc/shadow", "root:*:1::::::\n", mode=0o640, owner=(0, 42))
    write(rootfs / "etc/hosts", "127.0.0.1 localhost\n")
    write(rootfs / "usr/bin/suid", b"\x7fELF fake", mode=0o4755)
    write(rootfs / "usr/bin/hl1", "linked\n", mode=0o755)
    os.link(rootfs / "usr/bin/hl1", rootfs / "usr/bin/hl2")
    for name in "abc":
        write(rootfs / "var/lib/app" / name, name * 100)
    write(rootfs / "home/user/.profile", "export PS1='$ '\n", mode=0o600, owner=(1000, 1000))
    os.chown(rootfs / "home/user", 1000, 1000)
    os.chmod(rootfs / "home/user", 0o700)
    write(rootfs / "home/user/notes", "x" * 5000, owner=(1000, 1000))
    os.setxattr(rootfs / "home/user/notes", "user.comment", b"whited out later")
    os.setxattr(rootfs / "home/user/.profile", "user.comment", b"kept")
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)
    os.mkfifo(rootfs / "var/lib/fifo", 0o600)
    os.mknod(rootfs / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(rootfs / "dev/null", 0o666)
    os.symlink("../etc/hosts", rootfs / "var/hosts-link")


def build_layer2(rootfs: Path) -> None:
    """Deletions (umoci writes whiteouts), a dir replaced wholesale, mode/owner changes."""
    os.unlink(rootfs / "etc/hosts")
    shutil.rmtree(rootfs / "var/lib/app")
    write(rootfs / "var/lib/app/d", "new d\n")
    os.chmod(rootfs / "etc/passwd", 0o600)
    os.chown(rootfs / "etc/shadow", 0, 0)
    os.unlink(rootfs / "bin/rm")
    write(rootfs / "bin/rm", "#!/bin/sh\necho no rm\n", mode=0o755)  # symlink -> file
    os.unlink(rootfs / "var/hosts-link")
    (rootfs / "var/hosts-link").mkdir()  # symlink -> dir
    write(rootfs / "opt/tool/bin/run", "run\n", mode=0o750, owner=(1000, 0))
    shutil.rmtree(rootfs / "empty")


def layer3() -> bytes:
    """A layer with an opaque whiteout and plain whiteouts (umoci's repack never writes one)."""

    def info(name: str, kind: bytes, mode: int, data: bytes = b"", **kw) -> None:
        entry = tarfile.TarInfo(name)
        entry.type, entry.mode, entry.mtime = kind, mode, 1_700_000_000
        entry.uid, entry.gid = kw.get("uid", 0), kw.get("gid", 0)
        entry.linkname = kw.get("linkname", "")
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data) if data else None)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info("var/", tarfile.DIRTYPE, 0o755)
        info("var/lib/", tarfile.DIRTYPE, 0o755)
        info("var/lib/app/", tarfile.DIRTYPE, 0o750, uid=1000)
        info("var/lib/app/.wh..wh..opq", tarfile.REGTYPE, 0o644)
        info("var/lib/app/fresh", tarfile.REGTYPE, 0o640, b"only me\n", uid=1000)
        info("etc/", tarfile.DIRTYPE, 0o755)
        info("etc/.wh.shadow", tarfile.REGTYPE, 0o644)
        info("home/user/.wh.notes", tarfile.REGTYPE, 0o644)
        info("bin/.wh.ln", tarfile.REGTYPE, 0o644)
        info("usr/bin/hl3", tarfile.REGTYPE, 0o755, b"three\n")
        info("usr/bin/hl4", tarfile.LNKTYPE, 0o755, linkname="usr/bin/hl3")
    return buf.getvalue()


@dataclass(frozen=True)
class Image:
    work: Path
    layers: list[tuple[str, Path]]  # (media type, blob path), base first
    diff_ids: list[str]
    oracle: Path  # umoci unpack's rootfs


def blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return layout / "blobs" / algorithm / hexdigest


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    work = Path(tempfile.mkdtemp(prefix="ptc-unpack-oracle-", dir=tmp_path_factory.getbasetemp()))
    layout, bundle, ref = work / "layout", work / "bundle", f"{work / 'layout'}:{TAG}"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", ref)
    run("umoci", "unpack", "--image", ref, bundle)
    build_layer1(bundle / "rootfs")
    run("umoci", "repack", "--refresh-bundle", "--image", ref, bundle)
    build_layer2(bundle / "rootfs")
    run("umoci", "repack", "--refresh-bundle", "--image", ref, bundle)
    (work / "layer3.tar").write_bytes(layer3())
    run("umoci", "raw", "add-layer", "--image", ref, work / "layer3.tar")
    run("umoci", "unpack", "--image", ref, work / "oracle")
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG
    ]
    manifest = json.loads(blob(layout, entry["digest"]).read_text())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_text())
    layers = [(layer["mediaType"], blob(layout, layer["digest"])) for layer in manifest["layers"]]
    assert len(layers) == 3
    return Image(work, layers, config["rootfs"]["diff_ids"], work / "oracle" / "rootfs")


@pytest.fixture(scope="module")
def snapshots(image: Image) -> list[Path]:
    """One snapshot per layer, base first, each unpacked on its own."""
    result = []
    for index, (media_type, path) in enumerate(image.layers):
        dest = image.work / f"snap{index}"
        dest.mkdir()
        with path.open("rb") as src:
            diff_id = unpack_layer(src, dest, media_type, parents=result)
        assert diff_id == image.diff_ids[index]
        result.append(dest)
    return result


@contextmanager
def overlay(work: Path, snapshots: list[Path]) -> Iterator[Path]:
    """The snapshots (base first) mounted as overlay lowerdirs; unmounted on exit."""
    top = Path(tempfile.mkdtemp(prefix="ptc-overlay-", dir=work))
    upper, workdir, mnt = top / "upper", top / "work", top / "mnt"
    for path in (upper, workdir, mnt):
        path.mkdir()
    lower = ":".join(str(s) for s in reversed(snapshots))  # top layer first
    options = f"lowerdir={lower},upperdir={upper},workdir={workdir}"
    run("mount", "-t", "overlay", "overlay", "-o", options, mnt)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def merged(image: Image, snapshots: list[Path]) -> Iterator[Path]:
    with overlay(image.work, snapshots) as mnt:
        yield mnt


def describe(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size/target/rdev, sha256, user xattrs, non-dir mtime)."""
    tree: dict[str, tuple] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            digest = None
            if stat.S_ISREG(kind):
                detail = st.st_size
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                detail = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = ()
            if not stat.S_ISLNK(kind):
                xattrs = tuple(
                    sorted(
                        (x, os.getxattr(path, x))
                        for x in os.listxattr(path)
                        if x.startswith("user.") or x == "security.capability"
                    )
                )
            mtime = None if stat.S_ISDIR(kind) else int(st.st_mtime)
            tree[os.path.relpath(path, root)] = (
                kind,
                oct(stat.S_IMODE(st.st_mode)),
                st.st_uid,
                st.st_gid,
                detail,
                digest,
                xattrs,
                mtime,
            )
    return tree


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    by_inode: dict[int, set[str]] = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                by_inode.setdefault(st.st_ino, set()).add(os.path.relpath(path, root))
    return {frozenset(group) for group in by_inode.values() if len(group) > 1}


def test_diff_ids_equal_config(image: Image, snapshots: list[Path]) -> None:
    assert len(snapshots) == len(image.diff_ids) == 3  # checked per layer in the fixture


def test_merged_overlay_equals_umoci_unpack(image: Image, merged: Path) -> None:
    ours, oracle = describe(merged), describe(image.oracle)
    assert sorted(set(ours) ^ set(oracle)) == []
    differing = {path: (ours[path], oracle[path]) for path in ours if ours[path] != oracle[path]}
    assert differing == {}
    assert "var/lib/app/fresh" in ours and "var/lib/app/d" not in ours  # opaque worked
    assert "etc/hosts" not in ours and ours["bin/ls"][4] == "/bin/busybox"
    assert ours["home/user/.profile"][6] == (("user.comment", b"kept"),)
    assert hardlink_groups(merged) == hardlink_groups(image.oracle)
    assert {"usr/bin/hl1", "usr/bin/hl2"} in hardlink_groups(merged)


def test_busybox_runs_in_merged_tree(merged: Path) -> None:
    out = run("chroot", merged, "/bin/sh", "-c", "ls /var/lib/app; cat /usr/bin/hl4")
    assert out.split() == ["fresh", "three"]


def test_snapshots_use_overlay_whiteouts(snapshots: list[Path]) -> None:
    base, second, third = snapshots
    for snapshot in snapshots:
        names = [n for _t, ds, fs in os.walk(snapshot) for n in ds + fs]
        assert not [n for n in names if n.startswith(".wh.")]
    assert os.path.islink(base / "bin/ls") and os.readlink(base / "bin/ls") == "/bin/busybox"
    for whiteout in ("etc/hosts", "var/lib/app/a", "var/lib/app/b"):
        st = os.lstat(second / whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, whiteout
    assert os.getxattr(third / "var/lib/app", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(third / "etc/shadow").st_mode)
    assert not os.path.lexists(base / "etc/.wh.hosts")


def test_zstd_layers_equal_gzip_rootfs(image: Image, tmp_path: Path) -> None:
    """skopeo recompresses the image's layers with zstd; same diffIDs, same tree."""
    zstd_layout = tmp_path / "zstd"
    run(
        "skopeo", "copy", "--dest-compress-format", "zstd",
        f"oci:{image.work / 'layout'}:{TAG}", f"oci:{zstd_layout}:{TAG}",
    )  # fmt: skip
    index = json.loads((zstd_layout / "index.json").read_text())
    manifest = json.loads(blob(zstd_layout, index["manifests"][0]["digest"]).read_text())
    snapshots: list[Path] = []
    for layer, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        path = blob(zstd_layout, layer["digest"])
        assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
        dest = tmp_path / f"ptc-snap{len(snapshots)}"
        dest.mkdir()
        with path.open("rb") as src:
            got = unpack_layer(src, dest, layer["mediaType"], digest=layer["digest"],
                               diff_id=diff_id, parents=snapshots)  # fmt: skip
        assert got == diff_id
        snapshots.append(dest)
    with overlay(tmp_path, snapshots) as mnt:
        assert describe(mnt) == describe(image.oracle)
        assert hardlink_groups(mnt) == hardlink_groups(image.oracle)


# --- one small image per case, against umoci --------------------------------

Entry = tuple[tarfile.TarInfo, bytes]


def e(
    name: str,
    kind: str = "f",
    data: bytes = b"",
    *,
    link: str = "",
    mode: int | None = None,
    owner: tuple[int, int] = (0, 0),
    pax: dict[str, str] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> Entry:
    types = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
             "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE}  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = types[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "d" else 0o644)
    info.uid, info.gid = owner
    info.mtime = 1_650_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.pax_headers = dict(pax or {})
    info.size = len(data) if kind == "f" else 0
    return info, data


def tar_bytes(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


@dataclass
class Result:
    tree: dict[str, tuple] | None  # None: refused
    links: set[frozenset[str]]
    error: str = ""


def umoci_result(work: Path, layers: list[bytes]) -> Result:
    layout, ref = work / "layout", f"{work / 'layout'}:{TAG}"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", ref)
    for index, data in enumerate(layers):
        (work / f"layer{index}.tar").write_bytes(data)
        run("umoci", "raw", "add-layer", "--image", ref, work / f"layer{index}.tar")
    done = subprocess.run(["umoci", "unpack", "--image", ref, str(work / "bundle")],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return Result(None, set(), done.stderr)
    rootfs = work / "bundle" / "rootfs"
    return Result(describe(rootfs), hardlink_groups(rootfs))


@contextmanager
def ours(work: Path, layers: list[bytes]) -> Iterator[Result | Path]:
    """Our snapshots, mounted; yields the mount point, or a refused Result."""
    snapshots: list[Path] = []
    for index, data in enumerate(layers):
        dest = work / f"ptc-snap{index}"
        dest.mkdir()
        try:
            unpack_layer(io.BytesIO(data), dest, "application/vnd.oci.image.layer.v1.tar",
                         digest=f"sha256:{hashlib.sha256(data).hexdigest()}",
                         parents=snapshots)  # fmt: skip
        except ImageError as exc:
            assert os.listdir(dest) == []  # a failed unpack leaves nothing behind
            yield Result(None, set(), str(exc))
            return
        snapshots.append(dest)
    with overlay(work, snapshots) as mnt:
        yield mnt


def tree_state(root: Path) -> set[tuple]:
    return {(p, *v) for p, v in describe(root).items()}


CANARY = f"ptc-canary-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A directory outside every rootfs of the test, with a file; must stay untouched."""
    path = Path(tempfile.gettempdir()) / CANARY
    path.mkdir(exist_ok=True)
    (path / "hostname").write_text("canary\n")
    before = tree_state(path)
    yield path
    try:
        assert tree_state(path) == before, "something was written outside the rootfs"
    finally:
        shutil.rmtree(path)


CAP = "\x01\x00\x00\x02" + "\x20\x00\x00\x00" + "\x00" * 12  # cap_net_bind_service


def cases(canary: Path) -> dict[str, list[list[Entry]]]:
    out = str(canary)
    long_dir = "/".join(["d" * 70, "e" * 70])
    return {
        "hardlinks_to_rewritten_file": [
            [e("keep", data=b"k")],
            [e("t1", data=b"old"), e("t2", "h", link="t1"), e("t3", "h", link="t1")],
            [e("t1", data=b"new")],
        ],
        "hardlinks_across_layers": [
            [e("t1", data=b"old", mode=0o640, owner=(7, 8)), e("x", data=b"x")],
            [e("t2", "h", link="t1"), e("t3", "h", link="/t1"), e("x", "h", link="t1")],
            [e("t1", data=b"new")],
        ],
        "hardlink_name_exists": [
            [e("a", data=b"a"), e("b", data=b"b")],
            [e("c", data=b"c"), e("c", "h", link="a"), e("b", "h", link="a")],
        ],
        "opaque_last": [
            [e("a/b/foo", data=b"foo"), e("a/keep", data=b"k")],
            [e("a/new", data=b"n"), e("a/sub/x", data=b"x"), e("a/.wh..wh..opq")],
        ],
        "opaque_first": [
            [e("a/b/foo", data=b"foo"), e("a/keep", data=b"k")],
            [e("a/.wh..wh..opq"), e("a/new", data=b"n"), e("a/sub/x", data=b"x")],
        ],
        "opaque_after_copy_up": [
            [e("a/b/foo", data=b"foo"), e("a/keep", data=b"k")],
            [e("a/h", "h", link="a/b/foo"), e("a/.wh..wh..opq")],
        ],
        "dir_to_symlink_then_whiteouts": [
            [e("d/x", data=b"x"), e("d/y", data=b"y"), e("t/x", data=b"tx")],
            [e("d", "l", link=out), e("d/.wh.x"), e("d/.wh.y"), e("e", "l", link="t"),
             e("e/.wh.x")],
        ],
        "escape_dot_symlink": [[e(".", "l", link=out)], [e("hostname", data=b"pwned")]],
        "escape_relative_symlink": [
            [e("up", "l", link="../../.."), e("in/deep", "l", link="../../../..")],
            [e("up/hostname", data=b"pwned"), e("in/deep/x", data=b"x")],
        ],
        "escape_dotdot_and_absolute_names": [
            [e("../up.txt", data=b"up"), e("/abs.txt", data=b"abs"), e(f"{out}/f", data=b"in")],
        ],
        "escape_hardlink_dotdot_missing": [[e("h", "h", link="../../../etc/hostname")]],
        "escape_hardlink_dotdot": [
            [e("etc/hostname", data=b"inside")],
            [e("h", "h", link="../../../etc/hostname")],
        ],
        "escape_symlink_dir_then_dir": [
            [e("l", "l", link=out)],
            [e("l/sub", "d"), e("l/sub/f", data=b"f"), e("l/hostname", data=b"pwned")],
        ],
        "lower_symlink_followed": [
            [e("usr/lib", "d"), e("lib", "l", link="usr/lib"), e("abs", "l", link="/usr")],
            [e("lib/x", data=b"x"), e("abs/lib/y", data=b"y")],
        ],
        "type_changes": [
            [e("a/x", data=b"x"), e("b", data=b"b"), e("c/x", data=b"x"), e("s", "l", link="a"),
             e("f", data=b"f")],
            [e("a", data=b"now a file"), e("b", "d"), e("b/y", data=b"y"), e("c", "l", link="a"),
             e("s", "d"), e("s/z", data=b"z"), e("f/.wh.x"), e("f/.wh..wh..opq"),
             e("nothere/.wh.x")],
            [e("a/.wh.x"), e("c/.wh.q")],
        ],
        "long_names_pax": [
            [e(f"{long_dir}/{'f' * 90}", data=b"long"),
             e("sym", "l", link=f"{long_dir}/{'f' * 90}"),
             e(f"{long_dir}/hl-{'h' * 100}", "h", link=f"{long_dir}/{'f' * 90}")],
        ],
        "modes_and_owners": [
            [e("bin", "d"), e("bin/su", data=b"su", mode=0o4755, owner=(1000, 1000)),
             e("bin/wall", data=b"w", mode=0o2755, owner=(0, 5)),
             e("tmp", "d", mode=0o1777), e("srv", "d", mode=0o2770, owner=(1000, 100)),
             e("bin/both", data=b"b", mode=0o6711, owner=(3, 4))],
            [e("bin/su", data=b"su2", mode=0o4750, owner=(0, 1000)), e("srv/f", data=b"f")],
        ],
        "devices": [
            [e("dev", "d"), e("dev/null", "c", mode=0o666, dev=(1, 3)),
             e("dev/loop0", "b", mode=0o660, owner=(0, 6), dev=(7, 0))],
        ],
        "capability_xattr": [
            [e("ping", data=b"elf", mode=0o755, pax={"SCHILY.xattr.security.capability": CAP,
                                                     "SCHILY.xattr.user.x": "y"})],
        ],
    }  # fmt: skip


GNU_CASES = {"long_names_gnu": "long_names_pax"}
CASE_NAMES = [*cases(Path("/x")), *GNU_CASES]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_equals_umoci(case: str, canary: Path, tmp_path: Path) -> None:
    fmt = tarfile.GNU_FORMAT if case in GNU_CASES else tarfile.PAX_FORMAT
    layers = [tar_bytes(entries, fmt) for entries in cases(canary)[GNU_CASES.get(case, case)]]
    work = Path(tempfile.mkdtemp(prefix="ptc-case-", dir=tmp_path))
    (work / "umoci").mkdir()
    oracle = umoci_result(work / "umoci", layers)
    with ours(work, layers) as got:
        if oracle.tree is None:
            assert isinstance(got, Result), f"umoci refused ({oracle.error}), we did not"
            return
        assert isinstance(got, Path), f"we refused: {getattr(got, 'error', '')}"
        tree = describe(got)
        assert sorted(set(tree) ^ set(oracle.tree)) == []
        assert {p: (tree[p], oracle.tree[p]) for p in tree if tree[p] != oracle.tree[p]} == {}
        assert hardlink_groups(got) == oracle.links
        CHECKS.get(case, lambda _m: None)(got)


def _check_rewritten(mnt: Path) -> None:
    t2, t3 = os.lstat(mnt / "t2"), os.lstat(mnt / "t3")
    assert t2.st_ino == t3.st_ino and t2.st_nlink >= 2
    assert (mnt / "t2").read_bytes() == b"old" and (mnt / "t1").read_bytes() == b"new"


def _check_opaque(mnt: Path) -> None:
    assert sorted(str(p.relative_to(mnt / "a")) for p in (mnt / "a").rglob("*")) == [
        "new", "sub", "sub/x"
    ]  # fmt: skip


CHECKS: dict[str, Callable[[Path], None]] = {
    "hardlinks_to_rewritten_file": _check_rewritten,
    "hardlinks_across_layers": _check_rewritten,
    "opaque_last": _check_opaque,
    "opaque_first": _check_opaque,
}
