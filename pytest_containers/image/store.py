"""The local image store: an OCI image layout plus unpacked layer snapshots.

On disk, under ``root``::

    oci/                    an OCI image layout (image-spec ``image-layout.md``)
      oci-layout            {"imageLayoutVersion": "1.0.0"}
      index.json            one manifest descriptor per reference
      blobs/sha256/<hex>    manifests, configs, layers (content addressed)
    snapshots/<hex>/        one unpacked layer per chainID, shared read-only
    tmp/                    blobs being written, ``<64 hex>-<random>`` (renamed into
                            blobs/ once verified; always under that blob's lock),
                            archives being loaded (``load-*``)
    locks/                  lock files (flock; :mod:`~pytest_containers.image.locks`):
      index.json.lock         held while index.json changes
      blob-<hex>.lock         held while that blob is fetched
      snapshot-<hex>.lock     held while that snapshot is unpacked (by chainID)
    leases/<hex>.lock       snapshot leases: shared locks held while a container
                            uses that snapshot (by chainID; :meth:`Store.lease`)

Reference names: each ``index.json`` entry carries the annotation
``org.opencontainers.image.ref.name`` set to the *full canonical reference*
``str(Reference)``, e.g. ``127.0.0.1:5000/busybox:latest`` or
``docker.io/library/busybox@sha256:<hex>``. That string fits the OCI
``ref.name`` grammar (``:``, ``@``, ``/`` are allowed separators), and both
``skopeo inspect oci:<root>/oci:<ref>`` and ``umoci stat --image
<root>/oci:<ref>`` address it verbatim, because both split ``PATH:REF`` at
the first colon. Consequence: ``root`` must not contain a colon; nor a comma
or backslash, since snapshots become overlayfs ``lowerdir`` options; nor be
empty (which would make the current directory a store). Entries whose name is
not such a full reference (e.g. ``latest``, as ``umoci tag`` writes it) are
left alone: no command lists or resolves them.

What an entry records besides its name (annotations, all optional):
``SOURCE_DIGEST_ANNOTATION``, the manifest digest the registry served when it
differs from the stored one (a converted Docker manifest);
``INDEX_DIGEST_ANNOTATION``, the digest of the index (multi-platform image) the
manifest was chosen from; ``SOURCE_REFERENCE_ANNOTATION``, the reference that
was pulled (which differs from the name for a pull for another platform).

Read-only stores (a read-only bind mount, a directory this user cannot write):
everything that only reads works (``index.json`` is read without its lock: it
is only ever replaced whole, by a rename); anything that would write raises
:class:`ImageError` ``store <root> is read-only (<why>): cannot <what>``.

Garbage collection (:meth:`Store.prune`, done by
:mod:`pytest_containers.image.gc`): a name is only an ``index.json`` entry;
removing it leaves blobs and snapshots in place until a prune removes
everything that no entry reaches (image-layout.md: blobs not reachable from
``index.json`` may be garbage collected) and no container leases, and the lock
files nobody holds.

Every lock of the store waits up to ``LOCK_TIMEOUT`` seconds (or the
``timeout`` given), then raises :class:`StoreLockTimeoutError` naming the lock
file and its holders.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pytest_containers.exceptions import (
    ContainersError,
    ImageError,
    ImageNotFoundError,
    InvalidOptionError,
    InvalidReferenceError,
)
from pytest_containers.image import locks
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import (
    Hasher,
    digest_hex,
    digest_of,
    is_digest,
    validate_digest,
)
from pytest_containers.image.locks import Lease
from pytest_containers.image.manifest import Descriptor, ImageConfig, Manifest
from pytest_containers.image.reference import Reference
from pytest_containers.image.snapshots import chain_ids, unpack_snapshot

if TYPE_CHECKING:
    from pytest_containers.image.gc import PruneReport

#: ``index.json`` annotation: the manifest digest the registry served (differs from
#: the entry's digest when a Docker manifest was converted to OCI).
SOURCE_DIGEST_ANNOTATION = "io.github.pytest-containers.source.digest"
#: ``index.json`` annotation: the digest of the index (a multi-platform image) that the
#: entry's manifest was chosen from, as the registry served it.
INDEX_DIGEST_ANNOTATION = "io.github.pytest-containers.source.index-digest"
#: ``index.json`` annotation: the full reference that was pulled (for a pull for another
#: platform than the host's, the entry's name is that reference with a platform tag).
SOURCE_REFERENCE_ANNOTATION = "io.github.pytest-containers.source.reference"
#: Seconds to wait for another process holding a store lock.
LOCK_TIMEOUT = 600.0
#: Seconds: :meth:`Store.prune` spares unreachable blobs and snapshots younger than this
#: (a concurrent pull writes blobs before it names them), and temp files younger than
#: ``PRUNE_STALE_TEMP`` (downloads, loads and unpacks in progress).
PRUNE_GRACE = 300.0
PRUNE_STALE_TEMP = 3600.0
#: errnos meaning "this process cannot write here" (read-only mount, permissions).
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: Name of a blob's temp file under ``tmp/``: its hex digest, ``-``, random characters.
BLOB_TEMP_RE = re.compile(r"([0-9a-f]{64})-[^/]*")
#: Blob lock files this thread holds (paths), so that :meth:`Store.blob_lock` nests.
_held_blob_locks = threading.local()


def default_root() -> Path:
    """``$XDG_CACHE_HOME/pytest-containers``, else ``~/.cache/pytest-containers``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pytest-containers"


@dataclass(frozen=True)
class Image:
    """An image in the store: its reference (its store name), manifest digest
    (``sha256:<hex>``), manifest and config. ``layers``: layer descriptors, base
    first. ``source_digest``: the manifest digest the registry served when it
    differs from ``digest`` (a Docker v2s2 manifest stored converted to OCI), else
    ``None``. ``index_digest``: the digest of the index (multi-platform image) the
    manifest was chosen from, ``None`` when there was none or it is not known.
    ``source_reference``: the reference that was pulled, ``None`` when not pulled
    under this name (tagged, loaded, or pulled by an older version)."""

    reference: Reference
    digest: str
    manifest: Manifest
    config: ImageConfig
    source_digest: str | None = None
    index_digest: str | None = None
    source_reference: str | None = None

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers

    @property
    def registry_digest(self) -> str:
        """The digest a registry knows this image by (``sha256:<hex>``): the index's
        when it came from a multi-platform image, else the manifest digest the
        registry served, else :attr:`digest`. ``REF@<it>`` pulls it again."""
        return self.index_digest or self.source_digest or self.digest

    @property
    def digests(self) -> tuple[str, ...]:
        """Every digest naming this image's manifest: :attr:`digest`, then the
        registry's manifest digest and index digest when recorded."""
        found = (self.digest, self.source_digest, self.index_digest)
        return tuple(dict.fromkeys(d for d in found if d))


class _VerifyingWriter:
    """A write-only file that hashes and counts what goes through it; an OS error
    writing it raises ``fail(exc)`` instead (the store's message)."""

    def __init__(
        self,
        file: BinaryIO,
        digest: str,
        size: int | None,
        fail: Callable[[OSError], BaseException],
    ) -> None:
        self._file = file
        self._digest = digest
        self._size = size
        self._fail = fail
        self.hasher = Hasher()

    def write(self, chunk: bytes) -> int:
        self.hasher.update(chunk)
        if self._size is not None and self.hasher.size > self._size:
            self.hasher.verify(self._digest, self._size)  # raises: too large
        view = memoryview(chunk)
        try:
            while view:  # an unbuffered file may take part of it (a full disk)
                written = self._file.write(view)
                if not written:
                    raise OSError(errno.EIO, "the file took no bytes")
                view = view[written:]
        except OSError as exc:
            raise self._fail(exc) from exc
        return len(chunk)


class Store:
    """An image store rooted at ``root`` (default :func:`default_root`; created on
    first use); see the module docstring.

    Raises :class:`InvalidOptionError` (a ``ValueError``; fields ``option="store"``,
    ``value``) for an empty path or one with ``:``, ``,`` or ``\\``; :class:`ImageError`
    (field ``root``) when ``root`` is not a directory, cannot be created, or is
    read-only without an OCI layout in it. A store this process cannot write is
    opened read-only (:attr:`read_only`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        if isinstance(root, str) and not root.strip():
            raise InvalidOptionError(
                f"store path {root!r} is empty: give a directory (an empty path would make"
                " the current directory the store)",
                option="store",
                value=root,
            )
        self.root = Path(root) if root is not None else default_root()
        bad = sorted({c for c in str(self.root) if c in ":,\\"})
        if bad:
            raise InvalidOptionError(
                f"store root {self.root} must not contain {' or '.join(map(repr, bad))}: "
                "':' separates path and reference for skopeo and umoci (oci:PATH:REF), "
                "and ',' ':' '\\' separate overlay mount options (snapshots are lowerdirs)",
                option="store",
                value=str(self.root),
            )
        self.layout = self.root / "oci"
        self.blobs_dir = self.layout / "blobs" / "sha256"
        self.snapshots_dir = self.root / "snapshots"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.leases_dir = self.root / "leases"
        #: Why this process cannot write the store (``None``: it can); see :attr:`read_only`.
        self.read_only_reason: str | None = None
        self._open()

    def _open(self) -> None:
        """Make the directories and the empty layout if missing; find out whether the
        store can be written (:attr:`read_only_reason`)."""
        if self.root.exists() and not self.root.is_dir():
            raise ImageError(f"store {self.root} is not a directory", root=str(self.root))
        for directory in (
            self.blobs_dir,
            self.snapshots_dir,
            self.tmp_dir,
            self.locks_dir,
            self.leases_dir,
        ):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno in _READ_ONLY_ERRNOS and self.root.is_dir():
                    self.read_only_reason = self.read_only_reason or _why_read_only(exc)
                    continue
                raise ImageError(
                    f"store {self.root} cannot be created: {_os_reason(exc)}",
                    root=str(self.root),
                    errno=exc.errno,
                ) from exc
        if self.read_only_reason is None:
            for directory in (self.locks_dir, self.layout, self.blobs_dir, self.tmp_dir):
                if not os.access(directory, os.W_OK):
                    self.read_only_reason = _unwritable(directory)
                    break
        oci_layout, index = self.layout / "oci-layout", self.layout / "index.json"
        if oci_layout.exists() and index.exists():
            return
        if self.read_only_reason is not None:
            missing = index if not index.exists() else oci_layout
            raise ImageError(
                f"store {self.root} is read-only ({self.read_only_reason}) and holds no OCI"
                f" layout ({missing} is missing)",
                root=str(self.root),
            )
        with self.writing("create its OCI layout"), self.index_lock():
            if not oci_layout.exists():
                self._write_atomic(oci_layout, {"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})
            if not index.exists():
                self._write_index([])

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- read-only stores and write errors --------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether this process cannot write the store (found when it was opened):
        reads work, writes raise :class:`ImageError` (see :meth:`check_writable`)."""
        return self.read_only_reason is not None

    def check_writable(self, what: str) -> None:
        """Raise :class:`ImageError` ``store <root> is read-only (<why>): cannot
        <what>`` (fields ``root``, ``errno`` ``EROFS``) if the store is read-only."""
        if self.read_only_reason is not None:
            raise self._read_only_error(what, self.read_only_reason)

    def _read_only_error(self, what: str, why: str) -> ImageError:
        return ImageError(
            f"store {self.root} is read-only ({why}): cannot {what}",
            root=str(self.root),
            errno=errno.EROFS,
        )

    def write_error(self, what: str, exc: OSError) -> ImageError:
        """The :class:`ImageError` for an OS error while writing the store: read-only
        (as :meth:`check_writable`) or ``store <root>: cannot <what>: <why>`` (a full
        disk, an I/O error); fields ``root``, ``errno``, ``path``."""
        if exc.errno in _READ_ONLY_ERRNOS:
            return self._read_only_error(what, _why_read_only(exc))
        return ImageError(
            f"store {self.root}: cannot {what}: {_os_reason(exc)}",
            root=str(self.root),
            errno=exc.errno,
            path=exc.filename,
        )

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """A block that writes the store: checks :meth:`check_writable` first, and
        raises an OS error from the block (not one of ours) as :meth:`write_error`.
        ``what``: what is being written, for the message (``"name REF"``)."""
        self.check_writable(what)
        try:
            yield
        except OSError as exc:
            if isinstance(exc, ContainersError):
                raise
            raise self.write_error(what, exc) from exc

    # -- blobs ----------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """``<root>/oci/blobs/sha256/<hex>`` (whether or not it exists)."""
        return self.blobs_dir / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is stored. A hit refreshes its mtime: the caller is about to
        reuse it, and :meth:`prune` spares blobs younger than ``PRUNE_GRACE``."""
        path = self.blob_path(digest)
        with contextlib.suppress(OSError):  # absent, or a read-only store
            os.utime(path)
        return path.is_file()

    def read_blob(self, digest: str) -> bytes:
        """The bytes of a blob; ``FileNotFoundError`` if absent."""
        return self.blob_path(digest).read_bytes()

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None) -> Iterator[_VerifyingWriter]:
        """Write a blob: yields a writer; on exit checks size (bytes) then digest.

        The content goes to the temp file ``<root>/tmp/<hex>-<random>`` and is
        renamed to ``blobs/sha256/<hex>`` only once verified. On any error
        (including :class:`DigestMismatchError`) the temp file is removed and
        nothing enters the store. The blob's lock (:meth:`blob_lock`) is held
        throughout (taken here unless this thread holds it already), so a temp
        file whose blob lock nobody holds was left by a dead writer, and
        :meth:`prune` removes it. Raises :class:`ImageError` naming the store and
        the blob when the store is read-only or an OS error (a full disk) stops a
        write, :class:`StoreLockTimeoutError` as :meth:`blob_lock`.
        """
        validate_digest(digest)
        what = f"write blob {digest}" + (f" ({size} bytes)" if size is not None else "")
        self.check_writable(what)
        with self.blob_lock(digest):
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f"{digest_hex(digest)}-", dir=self.tmp_dir)
            except OSError as exc:
                raise self.write_error(what, exc) from exc
            tmp = Path(tmp_name)

            def fail(exc: OSError) -> ImageError:
                return self.write_error(what, exc)

            try:
                with os.fdopen(fd, "wb", buffering=0) as file:
                    writer = _VerifyingWriter(file, digest, size, fail)
                    yield writer
                    writer.hasher.verify(digest, size)
                    try:
                        os.fsync(file.fileno())
                        os.chmod(tmp, 0o644)
                        os.replace(tmp, self.blob_path(digest))
                    except OSError as exc:
                        raise fail(exc) from exc
            finally:
                tmp.unlink(missing_ok=True)

    def blob_lock_path(self, digest: str) -> Path:
        """``<root>/locks/blob-<hex>.lock``: the lock held while blob ``digest``
        is fetched by :meth:`fetch_blob_once` (the file stays until a :meth:`prune`
        finds it free; only its lock matters)."""
        return self.locks_dir / f"blob-{digest_hex(digest)}.lock"

    @contextlib.contextmanager
    def blob_lock(self, digest: str, *, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
        """Hold the per-blob lock of ``digest`` (:meth:`blob_lock_path`), across
        processes and threads alike (a ``flock`` on a file opened per call); yields
        the lock file's path. Nests within a thread: a thread holding it already
        just goes on (what :meth:`ingest` relies on).

        ``timeout``: seconds to wait for another holder. Raises
        :class:`StoreLockTimeoutError` (fields ``digest``, ``lock_path``,
        ``timeout``, ``holder_pids``) naming the blob, the lock file and its
        holders when it is not released in time. A holder that dies releases it.
        """
        validate_digest(digest)
        what = f"another process to fetch blob {digest} into the store {self.root}"
        path = self.blob_lock_path(digest)
        held: set[str] | None = getattr(_held_blob_locks, "paths", None)
        if held is None:
            held = _held_blob_locks.paths = set()
        if str(path) in held:  # this thread holds it (fetch_blob_once, then ingest)
            yield path
            return
        self.check_writable(f"lock blob {digest}")
        try:
            fd = locks.lock(path, timeout=timeout, what=what, digest=digest)
        except OSError as exc:
            if isinstance(exc, ContainersError):
                raise
            raise self.write_error(f"lock blob {digest}", exc) from exc
        held.add(str(path))
        try:
            yield path
        finally:
            held.discard(str(path))
            locks.unlock(fd)

    def fetch_blob_once(
        self,
        digest: str,
        size: int | None,
        fetch: Callable[[_VerifyingWriter], object],
        *,
        timeout: float = LOCK_TIMEOUT,
    ) -> bool:
        """Store blob ``digest`` unless it is there; return whether it was fetched here.

        "Check present, download, verify, rename" runs under :meth:`blob_lock`, so
        processes (xdist workers, parallel CI jobs) and threads sharing the store
        download each blob once: the others wait for the lock, then find the blob
        present and return ``False``. ``fetch(writer)`` writes the bytes into an
        :meth:`ingest` writer (size in bytes, then digest, verified on return); a
        reader never sees a half-written blob, and on any error nothing of it stays
        (no temp file, no blob). ``timeout``: seconds to wait for the lock
        (:class:`StoreLockTimeoutError` naming the blob and lock file when exceeded).
        """
        if self.has_blob(digest):
            return False
        with self.blob_lock(digest, timeout=timeout):
            if self.has_blob(digest):
                return False
            with self.ingest(digest, size) as writer:
                fetch(writer)
        return True

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data``; check it against ``digest`` if given. Returns its digest."""
        digest = digest or digest_of(data)
        if not self.has_blob(digest):
            with self.ingest(digest, len(data)) as writer:
                writer.write(data)
        return digest

    # -- index.json -----------------------------------------------------------

    @contextlib.contextmanager
    def index_lock(self, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the lock of ``index.json`` (``locks/index.json.lock``): no name is
        added or removed meanwhile. Not reentrant. Raises
        :class:`StoreLockTimeoutError` after ``timeout`` seconds."""
        path = self.locks_dir / "index.json.lock"
        with locks.exclusive(path, timeout=timeout, what=f"the index of the store {self.root}"):
            yield

    def _write_atomic(self, path: Path, doc: Any) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(doc, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def index_entries(self) -> list[dict[str, Any]]:
        """The manifest descriptors of ``index.json`` as stored (JSON objects), in order.
        Raises :class:`ImageError` naming the file, and how to recover, when it is not
        an image index (garbage, cut short)."""
        return self._read_index()

    def _read_index(self) -> list[dict[str, Any]]:
        """``index.json``'s ``manifests``, read without the lock (it is only ever
        replaced whole, by a rename); a missing file reads as empty."""
        path = self.layout / "index.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(data)
            why = None
        except (ValueError, UnicodeDecodeError) as exc:
            doc, why = None, f"not valid JSON ({exc})"
        manifests = doc.get("manifests", []) if isinstance(doc, dict) else None
        if why is None and not (
            isinstance(manifests, list) and all(isinstance(m, dict) for m in manifests)
        ):
            why = "not an OCI image index (a JSON object whose 'manifests' lists descriptors)"
        if why is not None:
            raise ImageError(
                f"{path} is {why}: the store {self.root} cannot read its image names. To"
                f" recover, move it away (mv {path} {path}.bad): the next command starts an"
                " empty index, and the images are pulled or loaded again (blobs already in"
                " the store are reused)",
                path=str(path),
                root=str(self.root),
            )
        return list(manifests or [])

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        self._write_atomic(self.layout / "index.json", doc)

    def tag(
        self,
        reference: Reference | str,
        manifest_digest: str,
        *,
        source_digest: str | None = None,
        index_digest: str | None = None,
        source_reference: Reference | str | None = None,
    ) -> None:
        """Name the stored manifest ``manifest_digest`` as ``reference`` in ``index.json``.

        Replaces any previous entry of that name. The manifest blob must be in
        the store (``FileNotFoundError`` otherwise). ``source_digest``, if it
        differs from ``manifest_digest``, is recorded as ``SOURCE_DIGEST_ANNOTATION``;
        ``index_digest`` as ``INDEX_DIGEST_ANNOTATION``; ``source_reference`` as
        ``SOURCE_REFERENCE_ANNOTATION`` (see the module docstring).

        A ``reference`` with a digest must name one of these digests (the manifest's,
        the registry's manifest or index digest): :class:`InvalidReferenceError`
        otherwise, since ``REF@D`` says "the content of digest D". Raises
        :class:`ImageError` when the store is read-only or cannot be written.
        """
        ref = _as_reference(reference)
        known = [d for d in (manifest_digest, source_digest, index_digest) if d]
        if ref.digest is not None and ref.digest not in known:
            raise InvalidReferenceError(
                f"cannot name image {manifest_digest} {ref}: the name's digest {ref.digest}"
                f" is not the image's ({' or '.join(known)}); give a name without a digest,"
                " or with the image's",
                reference=str(ref),
            )
        data = self.read_blob(manifest_digest)
        manifest = Manifest.from_json(data)
        entry = Descriptor(
            media_type=manifest.media_type,
            digest=manifest_digest,
            size=len(data),
            annotations={mt.REF_NAME_ANNOTATION: str(ref)},
        ).to_dict()
        annotations = entry["annotations"]
        if source_digest and source_digest != manifest_digest:
            annotations[SOURCE_DIGEST_ANNOTATION] = validate_digest(source_digest)
        if index_digest:
            annotations[INDEX_DIGEST_ANNOTATION] = validate_digest(index_digest)
        if source_reference is not None:
            annotations[SOURCE_REFERENCE_ANNOTATION] = str(_as_reference(source_reference))
        with self.writing(f"name {ref}"):
            with self.index_lock():
                manifests = [m for m in self._read_index() if _ref_name(m) != str(ref)]
                manifests.append(entry)
                self._write_index(manifests)

    def untag(self, reference: Reference | str) -> bool:
        """Remove the name ``reference``; return whether it was there. Blobs stay.
        Raises :class:`ImageError` when the store is read-only."""
        name = str(_as_reference(reference))
        with self.writing(f"remove the name {name}"), self.index_lock():
            before = self._read_index()
            after = [m for m in before if _ref_name(m) != name]
            if len(after) != len(before):
                self._write_index(after)
        return len(after) != len(before)

    def resolve(self, reference: Reference | str) -> Image | None:
        """The image named ``reference``, or ``None`` if the store has no such name."""
        name = str(_as_reference(reference))
        for entry in self._read_index():
            if _ref_name(entry) == name:
                return self._load(Reference.parse(name), entry)
        return None

    def images(self) -> list[Image]:
        """Every named image, in ``index.json`` order: exactly the names that
        :meth:`resolve` finds. Entries named otherwise than by a full canonical
        reference (``latest``, as ``umoci tag`` writes it; ``busybox``, which would
        resolve to ``docker.io/library/busybox:latest``) and entries that are indexes
        (written by other tools) are skipped."""
        found = []
        for entry in self._read_index():
            ref = _canonical(entry)
            if ref is not None and entry.get("mediaType") not in mt.INDEX_TYPES:
                found.append(self._load(ref, entry))
        return found

    def by_digest(self, digest: str, *, name: str | None = None) -> list[Image]:
        """The named images (as :meth:`images`) that ``digest`` (``sha256:<hex>``, or
        a prefix of one: ``sha256:`` and at least 4 hex digits) names: their manifest
        digest, the registry's manifest or index digest (:attr:`Image.digests`), or
        their config digest (the image ID). ``name``: only images of this
        ``registry/repository``. In ``index.json`` order."""
        found = []
        for image in self.images():
            if name is not None and image.reference.name != name:
                continue
            ids = (*image.digests, image.manifest.config.digest)
            if any(d == digest or (len(digest) >= 11 and d.startswith(digest)) for d in ids):
                found.append(image)
        return found

    def require(self, reference: Reference | str) -> Image:
        """The image named ``reference``; :class:`ImageNotFoundError` naming it (and
        the command that pulls it) if absent."""
        ref = _as_reference(reference)
        image = self.resolve(ref)
        if image is None:
            raise ImageNotFoundError(
                f"image {ref} is not in the store {self.root}; pull it first"
                f" (pytest-containers image pull {ref})",
                reference=str(ref),
            )
        return image

    def remove(self, reference: Reference | str) -> None:
        """Remove the name ``reference`` (:class:`ImageNotFoundError` if absent).
        Its blobs and snapshots stay until :meth:`prune`."""
        ref = _as_reference(reference)
        if self.resolve(ref) is None or not self.untag(ref):
            raise ImageNotFoundError(
                f"image {ref} is not in the store {self.root}"
                " (pytest-containers image ls lists the names)",
                reference=str(ref),
            )

    # -- garbage collection and leases ----------------------------------------

    def prune(
        self, *, grace: float = PRUNE_GRACE, stale_temp: float = PRUNE_STALE_TEMP
    ) -> PruneReport:
        """Remove the blobs and snapshots that no name reaches and no container
        leases (those younger than ``grace`` seconds are kept, and counted), temp
        files whose writer is gone (at once when their lock is free; others after
        ``stale_temp`` seconds), and the lock files nobody holds; see
        :func:`pytest_containers.image.gc.prune`. Raises :class:`StoreLockTimeoutError`
        when the index lock is not free within ``LOCK_TIMEOUT`` seconds,
        :class:`ImageError` when the store is read-only."""
        from pytest_containers.image.gc import prune

        self.check_writable("prune")
        return prune(self, grace=grace, stale_temp=stale_temp)

    def lease_path(self, chain_id: str) -> Path:
        """``<root>/leases/<hex of chainID>.lock``: the lease file of a snapshot."""
        return self.leases_dir / f"{digest_hex(chain_id)}.lock"

    def lease(self, chain_ids: Iterable[str], *, timeout: float = LOCK_TIMEOUT) -> Lease:
        """Lease the snapshots ``chain_ids`` (``sha256:<hex>`` each, any order;
        duplicates once): until the returned :class:`Lease` is released (or used as
        a context manager, or this process dies), :meth:`prune` removes none of
        them, whether or not they exist yet. Take the lease *before*
        :meth:`snapshots`, which (re)creates missing ones: a snapshot pruned just
        before is then unpacked again, and one that exists stays.

        A shared ``flock`` per snapshot on :meth:`lease_path`; leases of any number
        of containers and processes coexist. Waits only while a prune is removing
        one of them, up to ``timeout`` seconds (:class:`StoreLockTimeoutError`,
        nothing held). Raises :class:`ImageError` for a malformed chainID.

        On a read-only store (:attr:`read_only`), the lease files that exist are
        locked read-only and missing ones are left out (see :meth:`Lease.take`).
        """
        wanted = list(dict.fromkeys(validate_digest(c) for c in chain_ids))
        return Lease.take(
            [(c, self.lease_path(c)) for c in wanted], timeout=timeout, readonly=self.read_only
        )

    def _load(self, reference: Reference, entry: dict[str, Any]) -> Image:
        digest = validate_digest(entry["digest"])
        manifest = Manifest.from_json(self.read_blob(digest))
        config = ImageConfig.from_json(self.read_blob(manifest.config.digest))
        annotations = entry.get("annotations") or {}

        def digest_annotation(key: str) -> str | None:
            value = annotations.get(key)
            return value if isinstance(value, str) and is_digest(value) else None

        source_reference = annotations.get(SOURCE_REFERENCE_ANNOTATION)
        return Image(
            reference,
            digest,
            manifest,
            config,
            source_digest=digest_annotation(SOURCE_DIGEST_ANNOTATION),
            index_digest=digest_annotation(INDEX_DIGEST_ANNOTATION),
            source_reference=source_reference if isinstance(source_reference, str) else None,
        )

    # -- snapshots ------------------------------------------------------------

    def snapshot_path(self, chain_id: str) -> Path:
        """``<root>/snapshots/<hex of chainID>`` (whether or not it exists).

        Snapshots are keyed by chainID (image-spec ``config.md`` "Layer
        ChainID"), not diffID: a layer is unpacked over its parents (hardlinks
        to lower files copied up, lower directory metadata copied, lower
        symlinks followed), so its snapshot depends on the layers below. The
        base layer's chainID is its diffID.
        """
        return self.snapshots_dir / digest_hex(chain_id)

    def snapshot_lock_path(self, chain_id: str) -> Path:
        """``<root>/locks/snapshot-<hex of chainID>.lock``: held while that
        snapshot is unpacked, and while :meth:`prune` removes it."""
        return self.locks_dir / f"snapshot-{digest_hex(chain_id)}.lock"

    def snapshots(self, image: Image) -> list[Path]:
        """The unpacked layer directories of ``image``, base first.

        Missing snapshots are unpacked now, base first, each over the
        snapshots below it and once even across processes (under
        :meth:`snapshot_lock_path`), into a temp directory renamed into place only
        after the diffID returned by ``unpack_layer`` equals the config's.
        Raises :class:`DigestMismatchError` on a diffID mismatch,
        :class:`ImageError` if layers and diffIDs do not pair up or a layer
        cannot be unpacked, :class:`StoreLockTimeoutError` when another process
        unpacks one for longer than ``LOCK_TIMEOUT`` seconds; a failed unpack
        leaves no directory behind. Hold a :meth:`lease` on them while they are
        used (:meth:`prune` may remove unleased ones once no name reaches them).
        """
        layers, diff_ids = image.layers, image.config.diff_ids
        if len(layers) != len(diff_ids):
            raise ImageError(
                f"{image.reference}: {len(layers)} layers but {len(diff_ids)} diff_ids in config"
            )
        result: list[Path] = []
        for layer, diff_id, chain_id in zip(layers, diff_ids, chain_ids(diff_ids), strict=True):
            snapshot = unpack_snapshot(self, layer, diff_id, chain_id, result, timeout=LOCK_TIMEOUT)
            result.append(snapshot)
        return result


def _ref_name(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(mt.REF_NAME_ANNOTATION)


def _as_reference(reference: Reference | str) -> Reference:
    return reference if isinstance(reference, Reference) else Reference.parse(reference)


def _canonical(entry: dict[str, Any]) -> Reference | None:
    """The entry's name as a :class:`Reference` if it is a full canonical reference
    (what this package writes), else ``None``."""
    name = _ref_name(entry)
    if not isinstance(name, str):
        return None
    try:
        ref = Reference.parse(name)
    except InvalidReferenceError:
        return None
    return ref if str(ref) == name else None


def _os_reason(exc: OSError) -> str:
    """``No space left on device: /x/tmp/abc`` (strerror and file name) for messages."""
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _why_read_only(exc: OSError) -> str:
    """Why a write failed with ``EROFS``/``EACCES``/``EPERM``, for messages."""
    if exc.errno == errno.EROFS:
        return f"read-only file system: {exc.filename}" if exc.filename else "read-only file system"
    return _os_reason(exc)


def _unwritable(directory: Path) -> str:
    """Why ``directory`` (found not writable by ``access(2)``) cannot be written."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"read-only file system: {directory}"
    except OSError:
        pass
    return f"no write permission on {directory}"
