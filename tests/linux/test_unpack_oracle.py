"""``unpack_layer`` snapshots stacked with overlayfs, against ``umoci unpack``.

The image is built with umoci on a temporary OCI layout: layer 1 by
``umoci repack`` of a rootfs with busybox and its symlinks, layer 2 by
``repack`` after deletions and changes (umoci writes ``.wh.`` files), layer
3 hand-crafted with an opaque whiteout and added with ``umoci raw
add-layer``. Each layer is unpacked into its own snapshot, the snapshots are
mounted as overlay lowerdirs, and the merged tree must equal umoci's rootfs.
Needs root, overlayfs and umoci; every mount is undone in a ``finally``.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture
def merged(image: Image, snapshots: list[Path]) -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="ptc-overlay-", dir=image.work))
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
                        if x.startswith("user.")
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
