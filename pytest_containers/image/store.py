"""The local image store: an OCI image layout plus unpacked layer snapshots.

On disk, under ``root``::

    oci/                    an OCI image layout (image-spec ``image-layout.md``)
      oci-layout            {"imageLayoutVersion": "1.0.0"}
      index.json            one manifest descriptor per reference
      blobs/sha256/<hex>    manifests, configs, layers (content addressed)
    snapshots/<hex>/        one unpacked layer per chainID, shared read-only
    tmp/                    blobs being downloaded (renamed into blobs/ once verified),
                            archives being loaded
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
or backslash, since snapshots become overlayfs ``lowerdir`` options.

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
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    ImageNotFoundError,
    InvalidReferenceError,
)
from pytest_containers.image import locks
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import Hasher, digest_hex, digest_of, validate_digest
from pytest_containers.image.locks import Lease
from pytest_containers.image.manifest import Descriptor, ImageConfig, Manifest
from pytest_containers.image.reference import Reference

if TYPE_CHECKING:
    from pytest_containers.image.gc import PruneReport

#: ``index.json`` annotation: the manifest digest the registry served (differs from
#: the entry's digest when a Docker manifest was converted to OCI).
SOURCE_DIGEST_ANNOTATION = "io.github.pytest-containers.source.digest"
#: Seconds to wait for another process holding a store lock.
LOCK_TIMEOUT = 600.0
#: Seconds: :meth:`Store.prune` spares unreachable blobs and snapshots younger than this
#: (a concurrent pull writes blobs before it names them), and temp files younger than
#: ``PRUNE_STALE_TEMP`` (downloads, loads and unpacks in progress).
PRUNE_GRACE = 300.0
PRUNE_STALE_TEMP = 3600.0


def default_root() -> Path:
    """``$XDG_CACHE_HOME/pytest-containers``, else ``~/.cache/pytest-containers``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pytest-containers"


@dataclass(frozen=True)
class Image:
    """An image in the store: its reference, manifest digest (``sha256:<hex>``),
    manifest and config. ``layers``: layer descriptors, base first."""

    reference: Reference
    digest: str
    manifest: Manifest
    config: ImageConfig
    source_digest: str | None = None

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers


class _VerifyingWriter:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, file: BinaryIO, digest: str, size: int | None) -> None:
        self._file = file
        self._digest = digest
        self._size = size
        self.hasher = Hasher()

    def write(self, chunk: bytes) -> int:
        self.hasher.update(chunk)
        if self._size is not None and self.hasher.size > self._size:
            self.hasher.verify(self._digest, self._size)  # raises: too large
        return self._file.write(chunk)


def rmtree(path: Path) -> None:
    """Remove a tree even if it holds read-only directories; a missing path is fine."""

    def onerror(func: Any, name: str, exc_info: Any) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(name)

    shutil.rmtree(path, onerror=onerror)


class Store:
    """An image store rooted at ``root`` (created on first use); see the module docstring."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        bad = sorted({c for c in str(self.root) if c in ":,\\"})
        if bad:
            raise ValueError(
                f"store root {self.root} must not contain {' or '.join(map(repr, bad))}: "
                "':' separates path and reference for skopeo and umoci (oci:PATH:REF), "
                "and ',' ':' '\\' separate overlay mount options (snapshots are lowerdirs)"
            )
        self.layout = self.root / "oci"
        self.blobs_dir = self.layout / "blobs" / "sha256"
        self.snapshots_dir = self.root / "snapshots"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.leases_dir = self.root / "leases"
        for directory in (
            self.blobs_dir,
            self.snapshots_dir,
            self.tmp_dir,
            self.locks_dir,
            self.leases_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        with self.index_lock():
            oci_layout = self.layout / "oci-layout"
            if not oci_layout.exists():
                self._write_atomic(oci_layout, {"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})
            if not (self.layout / "index.json").exists():
                self._write_index([])

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- blobs ----------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """``<root>/oci/blobs/sha256/<hex>`` (whether or not it exists)."""
        return self.blobs_dir / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is stored. A hit refreshes its mtime: the caller is about to
        reuse it, and :meth:`prune` spares blobs younger than ``PRUNE_GRACE``."""
        path = self.blob_path(digest)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.utime(path)
        return path.is_file()

    def read_blob(self, digest: str) -> bytes:
        """The bytes of a blob; ``FileNotFoundError`` if absent."""
        return self.blob_path(digest).read_bytes()

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None) -> Iterator[_VerifyingWriter]:
        """Write a blob: yields a writer; on exit checks size (bytes) then digest.

        The content goes to a temp file under ``<root>/tmp`` and is renamed to
        ``blobs/sha256/<hex>`` only once verified. On any error (including
        :class:`DigestMismatchError`) the temp file is removed and nothing enters
        the store.
        """
        validate_digest(digest)
        fd, tmp_name = tempfile.mkstemp(prefix=f"{digest_hex(digest)[:12]}-", dir=self.tmp_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                writer = _VerifyingWriter(file, digest, size)
                yield writer
                writer.hasher.verify(digest, size)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(digest))
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
        the lock file's path.

        ``timeout``: seconds to wait for another holder. Raises
        :class:`StoreLockTimeoutError` (fields ``digest``, ``lock_path``,
        ``timeout``, ``holder_pids``) naming the blob, the lock file and its
        holders when it is not released in time. A holder that dies releases it.
        """
        validate_digest(digest)
        what = f"another process to fetch blob {digest} into the store {self.root}"
        path = self.blob_lock_path(digest)
        with locks.exclusive(path, timeout=timeout, what=what, digest=digest):
            yield path

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
        """The manifest descriptors of ``index.json`` as stored (JSON objects), in order."""
        return self._read_index()

    def _read_index(self) -> list[dict[str, Any]]:
        doc = json.loads((self.layout / "index.json").read_text())
        return list(doc.get("manifests") or [])

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        self._write_atomic(self.layout / "index.json", doc)

    def tag(
        self, reference: Reference | str, manifest_digest: str, *, source_digest: str | None = None
    ) -> None:
        """Name the stored manifest ``manifest_digest`` as ``reference`` in ``index.json``.

        Replaces any previous entry of that name. The manifest blob must be in
        the store (``FileNotFoundError`` otherwise). ``source_digest``, if it
        differs from ``manifest_digest``, is recorded as ``SOURCE_DIGEST_ANNOTATION``.
        """
        ref = _as_reference(reference)
        data = self.read_blob(manifest_digest)
        manifest = Manifest.from_json(data)
        entry = Descriptor(
            media_type=manifest.media_type,
            digest=manifest_digest,
            size=len(data),
            annotations={mt.REF_NAME_ANNOTATION: str(ref)},
        ).to_dict()
        if source_digest and source_digest != manifest_digest:
            entry["annotations"][SOURCE_DIGEST_ANNOTATION] = validate_digest(source_digest)
        with self.index_lock():
            manifests = [m for m in self._read_index() if _ref_name(m) != str(ref)]
            manifests.append(entry)
            self._write_index(manifests)

    def untag(self, reference: Reference | str) -> bool:
        """Remove the name ``reference``; return whether it was there. Blobs stay."""
        name = str(_as_reference(reference))
        with self.index_lock():
            before = self._read_index()
            after = [m for m in before if _ref_name(m) != name]
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
        """Every named image, in ``index.json`` order (names that are not full
        references, written by other tools, are skipped)."""
        found = []
        for entry in self._read_index():
            try:
                ref = Reference.parse(_ref_name(entry) or "")
            except InvalidReferenceError:
                continue
            if entry.get("mediaType") not in mt.INDEX_TYPES:  # indexes written by other tools
                found.append(self._load(ref, entry))
        return found

    def require(self, reference: Reference | str) -> Image:
        """The image named ``reference``; :class:`ImageNotFoundError` naming it if absent."""
        ref = _as_reference(reference)
        image = self.resolve(ref)
        if image is None:
            raise ImageNotFoundError(
                f"image {ref} is not in the store {self.root}", reference=str(ref)
            )
        return image

    def remove(self, reference: Reference | str) -> None:
        """Remove the name ``reference`` (:class:`ImageNotFoundError` if absent).
        Its blobs and snapshots stay until :meth:`prune`."""
        ref = _as_reference(reference)
        if not self.untag(ref):
            raise ImageNotFoundError(
                f"image {ref} is not in the store {self.root}", reference=str(ref)
            )

    # -- garbage collection and leases ----------------------------------------

    def prune(
        self, *, grace: float = PRUNE_GRACE, stale_temp: float = PRUNE_STALE_TEMP
    ) -> PruneReport:
        """Remove the blobs and snapshots that no name reaches and no container
        leases, stale temp files (``grace`` and ``stale_temp`` in seconds), and the
        lock files nobody holds; see :func:`pytest_containers.image.gc.prune`.
        Raises :class:`StoreLockTimeoutError` when the index lock is not free within
        ``LOCK_TIMEOUT`` seconds."""
        from pytest_containers.image.gc import prune

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
        """
        wanted = list(dict.fromkeys(validate_digest(c) for c in chain_ids))
        return Lease.take([(c, self.lease_path(c)) for c in wanted], timeout=timeout)

    def _load(self, reference: Reference, entry: dict[str, Any]) -> Image:
        digest = validate_digest(entry["digest"])
        manifest = Manifest.from_json(self.read_blob(digest))
        config = ImageConfig.from_json(self.read_blob(manifest.config.digest))
        source = (entry.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION)
        return Image(reference, digest, manifest, config, source_digest=source)

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
            result.append(self._snapshot(layer, diff_id, chain_id, result))
        return result

    def _snapshot(
        self, layer: Descriptor, diff_id: str, chain_id: str, parents: list[Path]
    ) -> Path:
        final = self.snapshot_path(chain_id)
        if final.is_dir():
            return final
        from pytest_containers.image.unpack import unpack_layer

        key = digest_hex(chain_id)
        what = f"another process to unpack snapshot {chain_id} in the store {self.root}"
        lock_path = self.snapshot_lock_path(chain_id)
        with locks.exclusive(lock_path, timeout=LOCK_TIMEOUT, what=what, digest=chain_id):
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self.snapshots_dir))
            try:
                with self.blob_path(layer.digest).open("rb") as src:
                    actual = unpack_layer(
                        src, tmp, layer.media_type, digest=layer.digest, parents=list(parents)
                    )
                if actual != diff_id:
                    raise DigestMismatchError(
                        f"layer {layer.digest} unpacks to diffID {actual}, config says {diff_id}",
                        digest=diff_id,
                        actual=actual,
                        size=layer.size,
                    )
                os.rename(tmp, final)
            except BaseException:
                rmtree(tmp)
                raise
        return final


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chainID of each layer, base first (image-spec ``config.md``):
    ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``."""
    result: list[str] = []
    for diff_id in diff_ids:
        if result:
            diff_id = digest_of(f"{result[-1]} {diff_id}".encode())
        result.append(diff_id)
    return result


def _ref_name(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(mt.REF_NAME_ANNOTATION)


def _as_reference(reference: Reference | str) -> Reference:
    return reference if isinstance(reference, Reference) else Reference.parse(reference)
