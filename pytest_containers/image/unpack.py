"""Unpack one image layer into its own overlayfs snapshot directory.

Implements OCI image-spec ``layer.md``: "Distributable Format" (tar, gzip,
zstd), "Change Types" / "File Types" / "File Attributes", "Changesets" and
"Whiteouts" (``.wh.NAME`` and the opaque ``.wh..wh..opq``), plus
``config.md`` ``rootfs.diff_ids`` (the DiffID is the sha256 of the
*uncompressed* tar) and the layer types of ``media-types.md`` and Docker's
image manifest v2 schema 2. The snapshot is written in the overlayfs
whiteout format (kernel ``Documentation/filesystems/overlayfs.rst``,
"whiteouts and opaque directories"), as containerd's overlay snapshotter
does: every layer is unpacked on its own into an empty directory, and the
snapshots are stacked later as overlay lowerdirs, base last.

Decisions:

- Names are cleaned lexically; a leading ``/`` is stripped (``/etc/x`` is
  ``etc/x``, as docker does); ``..`` climbing above the root is rejected.
- Parents are resolved inside the root with securejoin semantics (umoci):
  a symlink is followed as if ``dest`` were ``/``, ``..`` is clamped at the
  root, at most 255 symlinks per name; missing ones are created. The final
  component is never followed: a non-directory there is removed first, a
  directory merged with a directory entry and removed for anything else.
  Symlinks are written as they are, absolute targets included.
- Hardlink targets are cleaned and resolved the same way (creating
  nothing), must exist and must not be directories; the link is made to the
  target itself, never through it.
- Whiteouts become 0/0 character devices, opaque markers the xattr
  ``trusted.overlay.opaque=y``. A whiteout never hides its own layer's
  entries ("Whiteouts"): a non-directory already written stays, a directory
  becomes opaque, and a directory later made in place of a whiteout is
  opaque. Other ``.wh..wh.`` names are skipped.
- PAX ``SCHILY.xattr.*`` are applied only for ``user.*``,
  ``security.capability`` and the POSIX ACLs; ``trusted.*`` (which could
  forge overlay whiteouts and redirects) and LSM labels are dropped.

Needs root (CAP_CHOWN, CAP_MKNOD, CAP_SYS_ADMIN for ``trusted.*``). Lower
layers are not visible while unpacking, so a symlink there is not followed
(``lib/x`` over a lower ``lib -> usr/lib`` makes a real ``lib``).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    UnsafeLayerError,
    UnsupportedMediaTypeError,
)

__all__ = ["LAYER_MEDIA_TYPES", "unpack_layer"]

LAYER_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
"""Layer media types :func:`unpack_layer` accepts; the compression actually
used is sniffed from the first bytes (gzip ``1f 8b``, zstd ``28 b5 2f fd``)."""

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAX_SYMLINKS = 255
_CHUNK = 1 << 20
_WH_PREFIX = ".wh."
_WH_META_PREFIX = ".wh..wh."
_WH_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PREFIX = "SCHILY.xattr."


def unpack_layer(
    src: BinaryIO,
    dest: Path,
    media_type: str,
    *,
    digest: str | None = None,
    diff_id: str | None = None,
    parents: Sequence[Path] = (),
) -> str:
    """Unpack the layer blob ``src`` into the empty snapshot directory ``dest``.

    ``src`` is an open binary file of the blob as stored (compressed or not),
    read once from its current position to EOF: decompress, hash, extract in
    one pass. ``media_type`` must be one of :data:`LAYER_MEDIA_TYPES`.
    ``digest`` (``sha256:<64 hex>`` of the blob) only names the layer in
    errors; if ``diff_id`` is given the result must equal it. ``parents``
    are the snapshots of the lower layers, base first (read only): a
    directory the layer implies without an entry copies mode, owner and
    mtime from the nearest parent holding it, as containerd does (else 0755,
    the caller, now), so the overlay does not mask the lower directory's metadata.

    Returns the DiffID ``sha256:<64 hex>``: the sha256 of the whole
    uncompressed tar stream, end-of-archive blocks and padding included
    (image-spec ``config.md`` ``rootfs.diff_ids``).

    Raises :class:`UnsupportedMediaTypeError` (unknown type, or zstd without
    the ``zstandard`` package), :class:`UnsafeLayerError` (an entry would
    escape ``dest``, replace its root, hardlink a directory, or loops through
    symlinks), :class:`ImageError` (not a valid gzip/tar stream, a parent
    that is not a directory, a missing hardlink target, an unknown entry
    type), :class:`DigestMismatchError` (``diff_id`` differs), ``OSError``
    (writing to ``dest`` failed), ``FileExistsError`` if ``dest`` is not
    empty. On any error ``dest`` is left half written and the caller must
    delete it; nothing is ever written outside it.
    """
    if media_type not in LAYER_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            f"unsupported layer media type {media_type!r}", media_type=media_type
        )
    root = os.path.abspath(dest)
    if any(os.scandir(root)):
        raise FileExistsError(errno.ENOTEMPTY, "snapshot directory is not empty", root)
    label = digest or str(getattr(src, "name", "<layer>"))
    hashing = _HashingReader(_decompress(src, media_type))
    try:
        first = _read_full(hashing, tarfile.BLOCKSIZE)
        if first.strip(b"\0"):  # Python's tarfile rejects an empty archive
            stream = _Prefixed(first, hashing)
            with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
                _Unpacker(root, label, digest, parents).run(archive)
        while hashing.read(_CHUNK):  # the rest of the stream belongs to the DiffID
            pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ImageError(
            f"layer {label} is not a valid tar stream: {exc}", digest=digest, path=label
        ) from exc
    actual = "sha256:" + hashing.sha256.hexdigest()
    if diff_id is not None and diff_id != actual:
        raise DigestMismatchError(
            f"layer {label}: DiffID {actual} does not match {diff_id}",
            digest=diff_id,
            actual=actual,
            size=hashing.size,
        )
    return actual


def _read_full(reader: Any, size: int) -> bytes:
    """Read up to ``size`` bytes, fewer only at EOF."""
    parts: list[bytes] = []
    while size > 0:
        chunk = reader.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


class _Prefixed:
    """``prefix`` then the rest of ``inner``."""

    def __init__(self, prefix: bytes, inner: Any) -> None:
        self._prefix = prefix
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                rest = size - len(head) if size >= 0 else -1
                return head + (self._inner.read(rest) if rest else b"")
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        return self._inner.read(size)


class _HashingReader:
    """Counts and sha256-hashes every byte read through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _decompress(src: BinaryIO, media_type: str) -> Any:
    """The uncompressed tar stream of ``src``; the magic bytes win over the type."""
    magic = _read_full(src, 4)
    raw = _Prefixed(magic, src)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[call-overload]
    if magic == _ZSTD_MAGIC:
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise UnsupportedMediaTypeError(
                f"zstd layer ({media_type}) needs the zstandard package", media_type=media_type
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def _clean(name: str) -> str | None:
    """``name`` as a clean relative path ('' is the root); None if it climbs out."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _mtime_ns(member: tarfile.TarInfo, key: str = "mtime") -> int:
    """Exact nanoseconds from the PAX header if present, else the ustar seconds."""
    text = member.pax_headers.get(key)
    if text is not None:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except InvalidOperation:
            pass
    return int(member.mtime) * 1_000_000_000


def _xattr_allowed(name: str, member: tarfile.TarInfo) -> bool:
    if name.startswith("user.") or name == "system.posix_acl_access":
        return member.isreg() or member.isdir()
    if name == "system.posix_acl_default":
        return member.isdir()
    return name == "security.capability" and member.isreg()


class _Unpacker:
    """Writes the members of one tar stream below ``root``."""

    def __init__(self, root: str, label: str, digest: str | None, parents: Sequence[Path]) -> None:
        self.root = root
        self.parents = [os.path.abspath(p) for p in reversed(parents)]  # nearest first
        self.label = label
        self.digest = digest
        self.dir_mtimes: dict[str, tuple[int, int]] = {}

    def run(self, archive: tarfile.TarFile) -> None:
        for member in archive:
            self.entry(archive, member)
        for path in sorted(self.dir_mtimes, key=lambda p: p.count("/"), reverse=True):
            st = _lstat(path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.utime(path, ns=self.dir_mtimes[path], follow_symlinks=False)

    def unsafe(self, entry: str, why: str, kind: type[ImageError] = UnsafeLayerError) -> ImageError:
        return kind(f"layer {self.label}: entry {entry!r} {why}", digest=self.digest, path=entry)

    def bad(self, entry: str, why: str) -> ImageError:
        return self.unsafe(entry, why, ImageError)

    def resolve_dir(self, rel: str, entry: str, *, create: bool) -> str:
        """Absolute path of directory ``rel``, symlinks followed inside the root.

        Every component of the result is a real directory (securejoin
        semantics). Missing ones are created if ``create``, a whiteout device
        of this layer becomes an opaque directory; else ImageError.
        """
        parts: list[str] = []
        todo = list(reversed(rel.split("/")))
        links = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            path = os.path.join(self.root, *parts, part)
            st = _lstat(path)
            if st is not None and stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise self.unsafe(entry, "resolves through too many symlinks")
                target = os.readlink(path)
                if target.startswith("/"):
                    parts = []
                todo.extend(reversed(target.split("/")))
                continue
            if st is None or _is_whiteout(st):
                if not create:
                    raise self.bad(entry, f"refers to a missing directory {path!r}")
                self.make_dir(path, st)
                if st is None:
                    self.copy_parent_dir(path, [*parts, part])
            elif not stat.S_ISDIR(st.st_mode):
                raise self.bad(entry, f"has a parent that is not a directory: {path!r}")
            parts.append(part)
        return os.path.join(self.root, *parts)

    def make_dir(self, path: str, st: os.stat_result | None) -> None:
        """mkdir ``path`` (mode 0755) in place of ``st``; opaque if that was a whiteout."""
        if st is not None:
            self.remove(path, st)
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)  # not subject to the umask
        if st is not None and _is_whiteout(st):
            os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)

    def remove(self, path: str, st: os.stat_result) -> None:
        """Remove ``path`` (no symlink below the root), forgetting its directory mtimes."""
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        shutil.rmtree(path)
        for gone in [p for p in self.dir_mtimes if p == path or p.startswith(path + "/")]:
            del self.dir_mtimes[gone]  # else the path could later lead through a symlink

    def copy_parent_dir(self, path: str, parts: list[str]) -> None:
        """Give implied directory ``path`` the metadata of the nearest parent's."""
        for parent in self.parents:
            st = None
            for part in parts:  # every component a real directory: never follow a link
                parent = os.path.join(parent, part)
                st = _lstat(parent)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    break
            if st is None:
                continue  # not in this layer: look lower
            if stat.S_ISDIR(st.st_mode):
                os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
                os.chmod(path, stat.S_IMODE(st.st_mode))
                self.dir_mtimes[path] = (st.st_atime_ns, st.st_mtime_ns)
            return  # a non-directory or whiteout hides the lower layers

    def entry(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean(member.name)
        if name is None:
            raise self.unsafe(member.name, "climbs out of the root with '..'")
        parent, _, base = name.rpartition("/")
        if not name:
            if not member.isdir():
                raise self.unsafe(member.name, "would replace the root directory")
            self.metadata(self.root, member)
            return
        if base == _WH_OPAQUE:
            path = self.resolve_dir(parent, member.name, create=True)
            os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(_WH_META_PREFIX):
            return  # reserved (AUFS hardlink bookkeeping and the like)
        if base.startswith(_WH_PREFIX):
            self.whiteout(member.name, parent, base[len(_WH_PREFIX) :])
            return
        target = None
        if member.islnk():
            target = self.link_target(member)
        path = os.path.join(self.resolve_dir(parent, member.name, create=True), base)
        st = _lstat(path)
        if member.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):
                self.make_dir(path, st)
            self.metadata(path, member)
            return
        if target == path:
            return  # a hardlink to itself
        if st is not None:
            self.remove(path, st)
        if member.isreg():
            self.write_file(archive, member, path)
        elif member.islnk():
            os.link(target, path, follow_symlinks=False)  # type: ignore[arg-type]
            return  # shares the target's inode and metadata
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mknod(path, stat.S_IFIFO | 0o600)
        else:
            raise self.bad(member.name, f"has unsupported tar type {member.type!r}")
        self.metadata(path, member)

    def whiteout(self, entry: str, parent: str, name: str) -> None:
        if name in ("", ".", ".."):
            raise self.unsafe(entry, "is a whiteout of an invalid name")
        path = os.path.join(self.resolve_dir(parent, entry, create=True), name)
        st = _lstat(path)
        if st is None:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        elif stat.S_ISDIR(st.st_mode):  # unpacked by this layer: keep it, hide the lower
            os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)
        # a non-directory of this layer already hides the lower one

    def link_target(self, member: tarfile.TarInfo) -> str:
        rel = _clean(member.linkname)
        if rel is None:
            raise self.unsafe(member.name, f"hardlinks {member.linkname!r} outside the root")
        if not rel:
            raise self.unsafe(member.name, "hardlinks the root directory")
        parent, _, base = rel.rpartition("/")
        path = os.path.join(self.resolve_dir(parent, member.name, create=False), base)
        st = _lstat(path)
        if st is None:
            raise self.bad(member.name, f"hardlinks a missing file {member.linkname!r}")
        if stat.S_ISDIR(st.st_mode):
            raise self.unsafe(member.name, f"hardlinks a directory {member.linkname!r}")
        return path

    def write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        data = archive.extractfile(member)
        with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            if data is not None:
                shutil.copyfileobj(data, out, _CHUNK)

    def metadata(self, path: str, member: tarfile.TarInfo) -> None:
        """Owner, mode, xattrs, then times (directories: deferred to the end)."""
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid
        for key, value in member.pax_headers.items():
            name = key.removeprefix(_XATTR_PREFIX)
            if name != key and _xattr_allowed(name, member):
                raw = value.encode("utf-8", "surrogateescape")  # tarfile's decoding, undone
                try:
                    os.setxattr(path, name, raw, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno != errno.ENOTSUP:
                        raise
        mtime = _mtime_ns(member)
        atime = _mtime_ns(member, "atime") if "atime" in member.pax_headers else mtime
        if member.isdir():
            self.dir_mtimes[path] = (atime, mtime)
        else:
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
