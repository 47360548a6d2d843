"""Push an image from the local :class:`Store` to a registry.

Steps (OCI distribution spec v1.0, "Push"): ping ``/v2/``; for the config
and each layer, base first: ``HEAD /v2/<name>/blobs/<digest>`` and skip the
blob when the repository has it ("Checking if content exists"); otherwise,
when the source image's repository is on the same registry, try a
cross-repository mount (``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>``,
"Mounting a blob from another repository"), and else upload it (``POST
/v2/<name>/blobs/uploads/`` then one ``PUT <Location>?digest=<digest>``
with the whole blob, or ``PATCH`` chunks then an empty ``PUT`` when
``chunk_bytes`` is given: "Pushing a blob monolithically" / "in chunks").
Last, ``PUT /v2/<name>/manifests/<tag or digest>`` with the stored
manifest's exact bytes and its media type ("Pushing Manifests"). Every
answer's ``Docker-Content-Digest`` must equal what was sent.

The store keeps OCI manifests (a pulled Docker v2s2 manifest was converted),
so the pushed manifest is OCI and its digest is the store's
(:attr:`Image.digest`), not :attr:`Image.source_digest`.

Refused (:class:`ImageError`, before any request), because the registry would
silently end up with something else than it had or than was meant:

- pushing an image pulled from a multi-platform index back to the reference it
  was pulled from (the store records both, see :mod:`~pytest_containers.image.pull`):
  the index would be replaced by one platform's manifest;
- pushing, without a destination, an image pulled for another platform than the
  host's: its store name carries our platform tag (``1.2--ptc-linux-arm64-v8``),
  which would be published.

Every blob the repository lacks (asked by ``HEAD`` for all of them first) is
verified against its digest before anything is sent: a corrupt blob in the
store is named, with its path, and nothing is pushed (instead of the
registry's refusal halfway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pytest_containers import _retry
from pytest_containers.exceptions import DigestMismatchError, ImageError
from pytest_containers.image.digest import digest_of_file
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Image, Store


@dataclass(frozen=True)
class PushResult:
    """The outcome of :func:`push`: ``reference`` pushed to, manifest ``digest``
    (``sha256:<hex>``), and the blob digests, base first, that were
    ``uploaded``, ``mounted`` from the source repository, or ``skipped``
    (already in the destination repository)."""

    reference: Reference
    digest: str
    uploaded: tuple[str, ...] = ()
    mounted: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def push(
    reference: Reference | str,
    store: Store,
    destination: Reference | str | None = None,
    *,
    chunk_bytes: int | None = None,
    mount: bool = True,
    client: RegistryClient | None = None,
) -> PushResult:
    """Push the stored image ``reference`` to ``destination`` (default: ``reference``).

    ``chunk_bytes``: upload each blob in ``PATCH`` chunks of this many bytes
    (default: one monolithic ``PUT``). ``mount``: try cross-repository mounts
    from the source repository when it is on the destination's registry.
    ``client`` defaults to one for the destination's API host, closed afterwards.

    Raises :class:`ImageNotFoundError` naming ``reference`` when the store has
    no such image; :class:`ImageError` for the refusals of the module docstring
    (telling to give another destination) and for a blob missing from the store;
    :class:`DigestMismatchError` naming the blob and its file when a stored blob
    does not match its digest (checked before it is sent), or when the registry
    reports another digest than what was sent (or ``destination`` names another
    digest); :class:`RegistryUnavailableError` when the registry is down,
    :class:`AuthenticationError`, :class:`RegistryError`.
    """
    source = reference if isinstance(reference, Reference) else Reference.parse(reference)
    image = store.require(source)
    if destination is None:
        dest = image.reference
    else:
        dest = destination if isinstance(destination, Reference) else Reference.parse(destination)
    if chunk_bytes is not None and chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be a positive number of bytes, not {chunk_bytes!r}")
    _check_destination(image, dest, given=destination is not None)
    for blob in (image.manifest.config, *image.layers):
        if not store.has_blob(blob.digest):
            raise ImageError(f"{source}: blob {blob.digest} is missing from the store {store.root}")
    _verify_blob(store, image, image.digest, len(store.read_blob(image.digest)))
    mount_from = None
    if mount and source.api_host == dest.api_host and source.repository != dest.repository:
        mount_from = source.repository
    owned = client is None
    client = client or RegistryClient.for_reference(dest)
    try:
        client.ping()
        blobs = list({b.digest: b for b in (image.manifest.config, *image.layers)}.values())
        present = {b.digest for b in blobs if client.blob_exists(dest.repository, b.digest)}
        for blob in blobs:  # all of them before anything is sent
            if blob.digest not in present:
                _verify_blob(store, image, blob.digest, blob.size)
        done: dict[str, list[str]] = {"uploaded": [], "mounted": [], "skipped": []}
        for blob in (image.manifest.config, *image.layers):
            if blob.digest in present:
                how = "skipped"
            else:
                how = _push_blob(client, store, dest.repository, blob, chunk_bytes, mount_from)
                present.add(blob.digest)
            done[how].append(blob.digest)
        data = store.read_blob(image.digest)
        digest = client.put_manifest(dest, data, image.manifest.media_type)
    finally:
        if owned:
            client.close()
    return PushResult(
        reference=dest,
        digest=digest,
        uploaded=tuple(done["uploaded"]),
        mounted=tuple(done["mounted"]),
        skipped=tuple(done["skipped"]),
    )


def _check_destination(image: Image, dest: Reference, *, given: bool) -> None:
    """Refuse what the module docstring lists, naming the image and what to do."""
    name = image.reference
    if image.source_reference and image.index_digest:
        source = Reference.parse(image.source_reference)
        same_tag = dest.tag is not None and dest.tag == source.tag
        same_digest = dest.digest is not None and dest.digest in (source.digest, image.index_digest)
        if dest.name == source.name and (same_tag or same_digest):
            raise ImageError(
                f"refusing to push {name} to {dest}: it was pulled from there, where"
                f" {source.identifier} names the multi-platform index {image.index_digest};"
                f" pushing this one platform's manifest ({image.config.platform}) would replace"
                " that index. Give another destination (pytest-containers image push"
                f" {name} HOST/REPO:TAG)",
                reference=str(name),
                destination=str(dest),
            )
    if not given and image.source_reference and str(name) != image.source_reference:
        raise ImageError(
            f"refusing to push {name} without a destination: it is the store's name for"
            f" {image.source_reference} pulled for {image.config.platform}, and its tag"
            f" {name.tag!r} is internal to the store. Give a destination (pytest-containers"
            f" image push {name} HOST/REPO:TAG)",
            reference=str(name),
            destination=None,
        )


def _verify_blob(store: Store, image: Image, digest: str, size: int) -> None:
    """Raise :class:`DigestMismatchError` naming the stored blob ``digest`` and its
    file when its content does not hash to it (or has not ``size`` bytes)."""
    path = store.blob_path(digest)
    with path.open("rb") as file:
        actual, actual_size = digest_of_file(file)
    if actual != digest or actual_size != size:
        raise DigestMismatchError(
            f"local blob {digest} of {image.reference} is corrupt: {path} has {actual_size}"
            f" bytes hashing to {actual} (expected {size} bytes); nothing was pushed. Remove"
            f" the file and pull or load the image again",
            digest=digest,
            actual=actual,
            size=actual_size,
            path=str(path),
        )


def _push_blob(
    client: RegistryClient,
    store: Store,
    repository: str,
    blob: Descriptor,
    chunk_bytes: int | None,
    mount_from: str | None,
) -> str:
    """Push one blob the repository lacks; return ``mounted`` or ``uploaded``."""

    def open_blob() -> BinaryIO:
        return store.blob_path(blob.digest).open("rb")

    def once() -> str:
        return client.upload_blob(
            repository, blob, open_blob, chunk_bytes=chunk_bytes, mount_from=mount_from
        )

    return _retry.registry_request(once)
