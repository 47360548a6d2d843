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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pytest_containers import _retry
from pytest_containers.exceptions import ImageError
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store


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
    no such image, :class:`RegistryUnavailableError` when the registry is
    down, :class:`AuthenticationError`, :class:`RegistryError`, and
    :class:`DigestMismatchError` when the registry reports another digest
    than what was sent (or ``destination`` names another digest).
    """
    source = reference if isinstance(reference, Reference) else Reference.parse(reference)
    image = store.require(source)
    if destination is None:
        dest = source
    else:
        dest = destination if isinstance(destination, Reference) else Reference.parse(destination)
    if chunk_bytes is not None and chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be a positive number of bytes, not {chunk_bytes!r}")
    for blob in (image.manifest.config, *image.layers):
        if not store.has_blob(blob.digest):
            raise ImageError(f"{source}: blob {blob.digest} is missing from the store {store.root}")
    mount_from = None
    if mount and source.api_host == dest.api_host and source.repository != dest.repository:
        mount_from = source.repository
    owned = client is None
    client = client or RegistryClient.for_reference(dest)
    try:
        client.ping()
        done: dict[str, list[str]] = {"uploaded": [], "mounted": [], "skipped": []}
        for blob in (image.manifest.config, *image.layers):
            how = _push_blob(client, store, dest.repository, blob, chunk_bytes, mount_from)
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


def _push_blob(
    client: RegistryClient,
    store: Store,
    repository: str,
    blob: Descriptor,
    chunk_bytes: int | None,
    mount_from: str | None,
) -> str:
    """Push one blob unless present; return ``skipped``, ``mounted`` or ``uploaded``."""
    if client.blob_exists(repository, blob.digest):
        return "skipped"

    def open_blob() -> BinaryIO:
        return store.blob_path(blob.digest).open("rb")

    def once() -> str:
        return client.upload_blob(
            repository, blob, open_blob, chunk_bytes=chunk_bytes, mount_from=mount_from
        )

    return _retry.registry_request(once)
