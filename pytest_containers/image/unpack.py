"""Unpack one image layer into its own overlayfs snapshot directory.

Implements OCI image-spec ``layer.md``: "Distributable Format" (tar, gzip,
zstd), "Change Types" / "File Types" / "File Attributes", "Changesets" and
"Whiteouts" (``.wh.NAME`` and the opaque ``.wh..wh..opq``), plus
``config.md`` ``rootfs.diff_ids`` (the DiffID is the sha256 of the
*uncompressed* tar) and the layer types of ``media-types.md`` and Docker's
image manifest v2 schema 2. The snapshot is written in the overlayfs
whiteout format (kernel ``Documentation/filesystems/overlayfs.rst``,
"whiteouts and opaque directories"), as containerd's overlay snapshotter
does: every layer is unpacked into its own empty directory, given the
snapshots of the layers below (``parents``), and the snapshots are stacked
later as overlay lowerdirs, base last. The entries are applied by
:mod:`pytest_containers.image.layerapply`.

Decisions (the merged overlay must equal ``umoci unpack``'s rootfs):

- Compression is sniffed from the first bytes (gzip ``1f 8b``, zstd
  ``28 b5 2f fd``, else plain tar); the media type only has to be a layer
  type. zstd is read with the ``zstandard`` package, streaming, across frames.
- Names are cleaned lexically; a leading ``/`` is stripped and ``..`` is
  clamped at the root (``../up.txt`` and ``/abs.txt`` land at the root, as
  in umoci and containerd). Hardlink targets are cleaned the same way.
- Names are resolved in the merged view of this layer over its parents,
  with securejoin semantics (umoci): a symlink, of this layer or a lower
  one, is followed as if ``dest`` were ``/``, ``..`` is clamped at the root,
  at most 255 symlinks per name. So ``lib/x`` over a lower ``lib -> usr/lib``
  writes ``usr/lib/x``. A directory of a lower layer on the way becomes a
  directory of this snapshot with the lower owner, mode and times
  (containerd's ``mkparent``); a missing one is created 0755, owned by the
  caller. The final component is never followed: a non-directory of this
  layer there is removed first, a directory merged with a directory entry
  and removed for anything else; lower ones are simply hidden by the
  overlay. An entry below a non-directory is an error (as in umoci).
- Hardlinks across layers: a link's target is resolved in the merged view
  too (must exist, must not be a directory). If it lives in a lower
  snapshot it is *copied up* into this snapshot at its own path (content,
  owner, mode, xattrs, times) and the link made to the copy, as containerd
  applies a layer with its parents; a later rewrite of the target leaves
  the links with the old content, sharing one inode. Limitation: other
  names of the lower inode keep the lower copy (umoci would keep all of
  them in one inode). A snapshot's content therefore depends on its
  parents (copy-ups, copied directory metadata, symlinks followed): the
  store keys snapshots by chainID, not diffID.
- Whiteouts become 0/0 character devices, opaque markers the xattr
  ``trusted.overlay.opaque=y``. A whiteout or opaque marker whose directory
  is missing or not a directory in the merged view does nothing (umoci). A
  whiteout never hides its own layer's entries ("Whiteouts"): a
  non-directory already written stays, a directory becomes opaque, and a
  directory later made in place of a whiteout is opaque. An opaque marker
  keeps exactly this layer's entries in the directory wherever it comes in
  the tar (first or last): what this layer only copied up or created on the
  way is pruned. Other ``.wh..wh.`` names are skipped.
- PAX ``SCHILY.xattr.*`` are applied only for ``user.*``,
  ``security.capability`` and the POSIX ACLs; ``trusted.*`` (which could
  forge overlay whiteouts and redirects) and LSM labels are dropped.
  ``security.*`` refused for lack of privilege is skipped with a warning.
- Owners are set before modes (chown clears setuid/setgid). Device nodes
  are made when ``mknod`` is allowed, else skipped with a
  :class:`RuntimeWarning` (:func:`~pytest_containers.image.layerapply.device_skippable`).

Needs root (CAP_CHOWN, CAP_MKNOD, CAP_SYS_ADMIN for ``trusted.*``).
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
from pathlib import Path
from typing import Any, BinaryIO

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image.layerapply import LayerApplier
from pytest_containers.image.tarstream import GzipReader, TarStream

try:
    import zstandard
except ImportError:  # pragma: no cover - a dependency, but keep gzip layers working
    zstandard = None  # type: ignore[assignment]

__all__ = ["LAYER_MEDIA_TYPES", "rmtree", "unpack_layer"]

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
_CHUNK = 1 << 20
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    *((zstandard.ZstdError,) if zstandard is not None else ()),
)


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
    (writing to ``dest`` failed; a note names the layer and the entry),
    ``FileExistsError`` if ``dest`` is not empty. Errors name the layer
    (``digest``) and the entry (``path``). On any error ``dest`` is emptied
    again (the caller removes the directory itself); nothing is ever
    written outside it.
    """
    if media_type not in LAYER_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            f"unsupported layer media type {media_type!r}", media_type=media_type
        )
    root = os.path.abspath(dest)
    if any(os.scandir(root)):
        raise FileExistsError(errno.ENOTEMPTY, "snapshot directory is not empty", root)
    label = digest or str(getattr(src, "name", "<layer>"))
    try:
        hashing = _HashingReader(_decompress(src, media_type))
        try:
            first = _read_full(hashing, tarfile.BLOCKSIZE)
            if first.strip(b"\0"):  # Python's tarfile rejects an empty archive
                archive = TarStream(_Prefixed(first, hashing))
                LayerApplier(root, label, digest, [str(p) for p in parents]).run(archive)
            while hashing.read(_CHUNK):  # the rest of the stream belongs to the DiffID
                pass
        except _STREAM_ERRORS as exc:
            raise ImageError(
                f"layer {label} is not a valid tar stream: {exc}", digest=digest, path=label
            ) from exc
    except BaseException:
        _empty(root)
        raise
    actual = "sha256:" + hashing.sha256.hexdigest()
    if diff_id is not None and diff_id != actual:
        _empty(root)
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
        return GzipReader(raw)  # gzip.GzipFile's rules, larger reads
    if magic == _ZSTD_MAGIC:
        if zstandard is None:
            raise UnsupportedMediaTypeError(
                f"zstd layer ({media_type}) needs the zstandard package", media_type=media_type
            )
        decompressor = zstandard.ZstdDecompressor()
        return decompressor.stream_reader(raw, read_across_frames=True)  # type: ignore[arg-type]
    return raw


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a tree even if it holds read-only directories; a missing path is fine."""

    def onerror(func: Any, name: str, exc_info: Any) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(name)

    shutil.rmtree(path, onerror=onerror)


def _empty(root: str) -> None:
    """Remove everything below ``root`` (read-only directories included), keep ``root``."""
    for item in os.scandir(root):
        if item.is_dir(follow_symlinks=False):
            os.chmod(item.path, 0o700)
            rmtree(item.path)
        else:
            os.unlink(item.path)
