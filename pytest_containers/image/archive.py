"""OCI archives: an OCI image layout (image-spec ``image-layout.md``) in a tar
file, what ``skopeo copy ... oci-archive:FILE[:REF]`` reads and writes.

Members, paths relative to the layout root (an uncompressed tar; ``load``
also takes a gzip, bzip2 or xz compressed one, and members named ``./...``)::

    oci-layout              {"imageLayoutVersion": "1.0.0"}
    index.json              an image index: one descriptor per image
    blobs/sha256/<hex>      manifests, indexes, configs, layers

:func:`save` writes one image: ``index.json`` names its manifest with the
annotation ``org.opencontainers.image.ref.name`` (and containerd's
``io.containerd.image.name``) set to the full reference, which skopeo
addresses as ``oci-archive:FILE:<reference>``; members are sorted, owned
by 0:0, dated 1970, so saving the same image twice gives the same bytes.
Each blob is hashed as it is copied: a blob of the store that no longer
matches its digest fails the save, naming it (a file is then not written; a
stream, :func:`write`, is cut short).

:func:`load` reads every image of ``index.json``. Each is named by
``io.containerd.image.name``, else by ``org.opencontainers.image.ref.name``
parsed as a reference (``test/busybox:1`` -> ``docker.io/test/busybox:1``),
unless a reference is given (then the archive must hold one image). A
docker-archive (``docker save``'s format: ``manifest.json``, no ``oci-layout``)
is recognized and refused with the ``skopeo copy`` that converts it. An index
entry that is itself an index is resolved to the manifest for the platform,
as :func:`~pytest_containers.image.pull.pull` does, and a Docker v2s2
manifest is stored converted to OCI. Every blob is verified (size, then
digest) before it enters the store, and nothing is named until all are in:
the archive is first unpacked into ``<root>/tmp/load-*``, hashed on the way.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pytest_containers.exceptions import (
    ContainersError,
    DigestMismatchError,
    ImageError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import Hasher, digest_hex, is_digest
from pytest_containers.image.manifest import (
    Descriptor,
    Index,
    Manifest,
    Platform,
    check_image_media_types,
    docker_to_oci,
    load_json_object,
    parse_manifest,
    select_manifest,
)
from pytest_containers.image.reference import Reference
from pytest_containers.image.store import Image, Store

#: containerd's annotation for an image's full name in an OCI archive's ``index.json``.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
#: How a reference is given, for messages: the command line's flag and the API's parameter.
NAME_FLAGS = "--tag/-t REF on the command line, reference= in the API"
#: Largest ``oci-layout``, ``index.json`` or manifest read, in bytes.
JSON_MAX_BYTES = 4 * 1024 * 1024
_CHUNK_BYTES = 1 << 20


class _HashingReader:
    """Reads ``src`` for ``tarfile``, hashing what it hands out."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.hasher = Hasher()

    def read(self, size: int = -1) -> bytes:
        chunk = self._src.read(size)
        self.hasher.update(chunk)
        return chunk


def save(store: Store, reference: Image | Reference | str, file: Path | str) -> Path:
    """Write the stored image ``reference`` (a name, or an :class:`Image` of
    ``store``) to ``file`` as an OCI archive; return its path.

    The archive is written to a temp file next to ``file`` and renamed into
    place when complete; after any failure ``file`` is as before. Raises
    :class:`ImageNotFoundError` naming ``reference`` when the store has no such
    image, :class:`DigestMismatchError` naming a stored blob that does not match
    its digest, and ``OSError`` naming ``file`` when it cannot be written (its
    directory is missing, it is a directory, permissions, a full disk).
    """
    image = reference if isinstance(reference, Image) else store.require(reference)
    file = Path(file)
    if file.is_dir():
        raise IsADirectoryError(
            errno.EISDIR,
            f"cannot write the archive to {file}: it is a directory; give a file name"
            f" (e.g. {file / 'image.tar'})",
        )
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    except OSError as exc:
        raise _output_error(file, exc) from exc
    try:
        with open(fd, "wb") as out:
            try:
                write(store, image, out)
            except OSError as exc:
                if isinstance(exc, ContainersError):
                    raise
                raise _output_error(file, exc) from exc
        try:
            Path(tmp_name).chmod(0o644)
            Path(tmp_name).replace(file)
        except OSError as exc:
            raise _output_error(file, exc) from exc
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return file


def _output_error(file: Path, exc: OSError) -> OSError:
    """An ``OSError`` of ``exc``'s type and errno saying why the archive ``file``
    cannot be written, naming it (not the temp file next to it)."""
    parent = file.parent
    if exc.errno == errno.ENOENT and not parent.exists():
        why = f"directory {parent} does not exist"
    elif exc.errno == errno.ENOTDIR:
        blocker = next((p for p in (parent, *parent.parents) if p.exists()), parent)
        why = f"{blocker} is not a directory"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = f"no permission to write files in {parent}"
    elif exc.errno == errno.EROFS:
        why = f"{parent} is on a read-only file system"
    else:
        why = exc.strerror or str(exc)
    return type(exc)(exc.errno, f"cannot write the archive {file}: {why}")


def write(store: Store, reference: Image | Reference | str, out: BinaryIO) -> None:
    """Write the stored image ``reference`` (a name, or an :class:`Image` of
    ``store``) as an OCI archive to the binary stream ``out`` (e.g. stdout), which
    is left open. Raises as :func:`save`; a corrupt blob is found as it is copied,
    so ``out`` then holds an archive cut short."""
    image = reference if isinstance(reference, Image) else store.require(reference)
    name, config = str(image.reference), image.config
    platform = Platform(config.os, config.architecture, config.variant)
    entry = Descriptor(
        media_type=image.manifest.media_type,
        digest=image.digest,
        size=store.blob_path(image.digest).stat().st_size,
        annotations={mt.REF_NAME_ANNOTATION: name, CONTAINERD_NAME_ANNOTATION: name},
        platform=platform if config.os and config.architecture else None,
    ).to_dict()
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry]}
    digests = sorted(
        {image.digest, image.manifest.config.digest, *(d.digest for d in image.layers)}
    )
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_info(directory, tarfile.DIRTYPE, 0))
        for digest in digests:
            path = store.blob_path(digest)
            with path.open("rb") as src:
                size = os.fstat(src.fileno()).st_size
                reader = _HashingReader(src)
                info = _info(f"blobs/sha256/{digest_hex(digest)}", tarfile.REGTYPE, size)
                tar.addfile(info, reader)  # type: ignore[arg-type]
            if reader.hasher.digest != digest:
                raise DigestMismatchError(
                    f"blob {digest} of {image.reference} in the store {store.root} is corrupt:"
                    f" {path} hashes to {reader.hasher.digest}; remove that file and pull or"
                    " load the image again",
                    digest=digest,
                    actual=reader.hasher.digest,
                    size=size,
                    path=str(path),
                )
        layout = {"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}
        for member, doc in (("index.json", index), ("oci-layout", layout)):
            data = json.dumps(doc, separators=(",", ":")).encode()
            tar.addfile(_info(member, tarfile.REGTYPE, len(data)), io.BytesIO(data))
    out.flush()


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def load(
    store: Store,
    file: Path | str,
    reference: Reference | str | None = None,
    *,
    platform: Platform | None = None,
) -> list[Image]:
    """Load the images of the OCI archive ``file`` into ``store``; return them.

    ``reference``: the name of the archive's only image (default: its
    annotations, see the module docstring). ``platform`` (default
    :meth:`Platform.host`) selects from an index. Raises :class:`ImageError`
    naming ``file`` when it is not an OCI archive (a docker-archive: saying how
    to convert it) or lacks a blob or a name, or when the store is read-only,
    :class:`DigestMismatchError` when a blob fails its size or digest,
    :class:`InvalidReferenceError`, :class:`UnsupportedMediaTypeError`,
    :class:`PlatformNotFoundError`, ``OSError`` when ``file`` cannot be read.
    After any failure the store is as before.
    """
    file = Path(file)
    with store.writing(f"load {file}"):
        staging = Path(tempfile.mkdtemp(prefix="load-", dir=store.tmp_dir))
    try:
        index = _unpack(file, staging)
        entries = index.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise ImageError(f"{file}: index.json lists no images")
        if reference is not None and len(entries) != 1:
            raise ImageError(
                f"{file} holds {len(entries)} images and a reference names only one: load it"
                f" without one ({NAME_FLAGS}) to name each image by its annotations"
            )
        plans = [_plan(file, staging, store, e, reference, platform) for e in entries]
        for _, blobs, _ in plans:
            for blob in blobs:
                if not store.has_blob(blob.digest):
                    with (staging / digest_hex(blob.digest)).open("rb") as src:
                        with store.ingest(blob.digest, blob.size) as writer:
                            shutil.copyfileobj(src, writer, _CHUNK_BYTES)  # type: ignore[misc]
        for name, _, manifest in plans:
            store.tag(name, store.put_blob(manifest))
        return [store.require(name) for name, _, _ in plans]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(file: Path, staging: Path) -> dict[str, Any]:
    """Copy each ``blobs/sha256/<hex>`` member to ``staging/<hex>``, verifying its
    digest on the way; check ``oci-layout``; return the parsed ``index.json``."""
    docs: dict[str, bytes] = {}
    docker_manifest = False
    try:
        with tarfile.open(file, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                parts = name.split("/")
                docker_manifest = docker_manifest or name == "manifest.json"
                if name in ("oci-layout", "index.json") and member.isfile():
                    if member.size > JSON_MAX_BYTES:
                        raise ImageError(f"{file}: {name} exceeds {JSON_MAX_BYTES} bytes")
                    docs[name] = _read(tar, member)
                elif len(parts) == 3 and parts[:2] == ["blobs", "sha256"] and not member.isdir():
                    digest = f"sha256:{parts[2]}"
                    if not is_digest(digest) or not member.isfile():
                        raise ImageError(
                            f"{file}: {member.name} is not a blob (a regular file named by"
                            " 64 lowercase hex digits)"
                        )
                    _stage_blob(tar, member, digest, staging / parts[2], file)
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{file} is not an OCI archive: not a readable tar file ({exc})") from exc
    if docker_manifest and "oci-layout" not in docs:
        converted = file.with_name(f"{file.stem}-oci.tar")
        raise ImageError(
            f"{file} is a docker-archive (docker save's format: manifest.json, no"
            " oci-layout), not an OCI archive; convert it, then load the result:"
            f" skopeo copy docker-archive:{file} oci-archive:{converted}"
        )
    for required in ("oci-layout", "index.json"):
        if required not in docs:
            raise ImageError(f"{file} is not an OCI archive: it has no {required}")
    layout, index = (
        load_json_object(docs["oci-layout"], f"{file}: oci-layout"),
        load_json_object(docs["index.json"], f"{file}: index.json"),
    )
    if layout.get("imageLayoutVersion") != mt.OCI_LAYOUT_VERSION:
        raise ImageError(
            f"{file}: unsupported imageLayoutVersion {layout.get('imageLayoutVersion')!r}"
        )
    return index


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    src = tar.extractfile(member)
    assert src is not None  # a regular file
    return src.read()


def _stage_blob(
    tar: tarfile.TarFile, member: tarfile.TarInfo, digest: str, dest: Path, file: Path
) -> None:
    src = tar.extractfile(member)
    assert src is not None
    hasher = Hasher()
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK_BYTES):
            hasher.update(chunk)
            out.write(chunk)
    if hasher.digest != digest:
        raise DigestMismatchError(
            f"{file}: blob {member.name} fails its digest: content hashes to {hasher.digest}",
            digest=digest,
            actual=hasher.digest,
            size=hasher.size,
        )


def _plan(
    file: Path,
    staging: Path,
    store: Store,
    entry: Any,
    reference: Reference | str | None,
    platform: Platform | None,
) -> tuple[Reference, list[Descriptor], bytes]:
    """One image to load: its name, the blobs to ingest (config, layers; each staged
    or already stored, sizes checked) and its manifest bytes (OCI)."""
    desc = Descriptor.from_dict(entry)
    if reference is not None:
        name = reference if isinstance(reference, Reference) else Reference.parse(reference)
    else:
        text = desc.annotations.get(CONTAINERD_NAME_ANNOTATION) or desc.annotations.get(
            mt.REF_NAME_ANNOTATION
        )
        if not text:
            raise ImageError(
                f"{file}: image {desc.digest} has no name ({mt.REF_NAME_ANNOTATION});"
                f" give it one ({NAME_FLAGS})"
            )
        name = Reference.parse(text)

    def staged(blob: Descriptor) -> bytes | None:
        """Check the blob is staged (or stored) with the descriptor's size; return
        its bytes if it is small enough to be JSON."""
        path = staging / digest_hex(blob.digest)
        if not path.is_file():
            path = store.blob_path(blob.digest)
        if not path.is_file():
            raise ImageError(f"{file}: blob {blob.digest} ({blob.media_type}) of {name} is missing")
        size = path.stat().st_size
        if size != blob.size:
            raise DigestMismatchError(
                f"{file}: blob {blob.digest} has {size} bytes, its descriptor says {blob.size}",
                digest=blob.digest,
                actual=None,
                size=size,
            )
        return path.read_bytes() if size <= JSON_MAX_BYTES else None

    def load(chosen: Descriptor) -> Manifest | Index:
        nonlocal desc
        desc = chosen
        return parse_manifest(_need(staged(desc), desc, file), desc.media_type or None)

    manifest, _ = select_manifest(load(desc), load, platform, str(file))
    data = _need(staged(desc), desc, file)
    check_image_media_types(manifest, f"{file}: {name}")
    blobs = [manifest.config, *manifest.layers]
    for blob in blobs:
        staged(blob)
    if manifest.media_type == mt.DOCKER_MANIFEST:
        data = docker_to_oci(data)
    return name, blobs, data


def _need(data: bytes | None, desc: Descriptor, file: Path) -> bytes:
    if data is None:
        raise ImageError(f"{file}: manifest {desc.digest} exceeds {JSON_MAX_BYTES} bytes")
    return data
