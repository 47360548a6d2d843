"""Pull an image from a registry into the local :class:`Store`.

Steps (distribution spec "Pull"): ping ``/v2/``; fetch the manifest for the
tag or digest; if it is an index, select the entry for the platform and
fetch that manifest (nested indexes followed up to ``MAX_INDEX_DEPTH``);
fetch the config and each layer blob not already stored, each verified by
size then digest before it enters the store; name the manifest in the
store's ``index.json`` with the full reference. A Docker v2 schema 2
manifest is stored converted to an OCI manifest (same blobs, new manifest
digest), because OCI layout readers (skopeo, umoci) only address OCI
manifests; the registry's digest is kept as the entry's
``SOURCE_DIGEST_ANNOTATION`` and in :attr:`Image.source_digest`.
"""

from __future__ import annotations

from typing import Literal

from pytest_containers import _retry
from pytest_containers.exceptions import (
    ImageError,
    ImageNotFoundError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.manifest import (
    Descriptor,
    Index,
    Manifest,
    Platform,
    docker_to_oci,
    parse_manifest,
)
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Image, Store

PullPolicy = Literal["always", "missing", "never"]
MAX_INDEX_DEPTH = 4


def pull(
    reference: Reference | str,
    store: Store,
    *,
    policy: PullPolicy = "missing",
    platform: Platform | None = None,
    client: RegistryClient | None = None,
) -> Image:
    """Make ``reference`` available in ``store`` and return it.

    ``policy``: ``always`` contacts the registry every time; ``missing`` only
    when the store has no image of that name; ``never`` never does and raises
    :class:`ImageNotFoundError` when the name is absent. ``platform`` defaults
    to :meth:`Platform.host`. ``client`` defaults to one for the reference's
    API host, closed afterwards.

    Raises the registry errors of :mod:`pytest_containers.image.registry`,
    :class:`PlatformNotFoundError`, :class:`UnsupportedMediaTypeError` and
    :class:`DigestMismatchError`; after any failure, no unverified blob and no
    new name is left in the store.
    """
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    if policy not in ("always", "missing", "never"):
        raise ValueError(f"pull policy must be always, missing or never, not {policy!r}")
    if policy != "always":
        found = store.resolve(ref)
        if found is not None:
            return found
        if policy == "never":
            raise ImageNotFoundError(
                f"image {ref} is not in the store {store.root} and the pull policy is 'never'",
                reference=str(ref),
            )
    owned = client is None
    client = client or RegistryClient.for_reference(ref)
    try:
        client.ping()
        return _pull(client, ref, store, platform or Platform.host())
    finally:
        if owned:
            client.close()


def _pull(client: RegistryClient, ref: Reference, store: Store, platform: Platform) -> Image:
    fetched = client.get_manifest(ref)
    document = parse_manifest(fetched.data, fetched.media_type)
    depth = 0
    while isinstance(document, Index):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise ImageError(f"{ref}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        chosen = document.select(platform)
        fetched = client.get_manifest(ref.with_digest(chosen.digest))
        document = parse_manifest(fetched.data, fetched.media_type)
    manifest: Manifest = document
    if manifest.config.media_type not in mt.CONFIG_TYPES:
        raise UnsupportedMediaTypeError(
            f"{ref}: config media type {manifest.config.media_type!r} is not an image config",
            media_type=manifest.config.media_type,
        )
    for layer in manifest.layers:
        if layer.media_type not in mt.LAYER_TYPES:
            raise UnsupportedMediaTypeError(
                f"{ref}: layer {layer.digest} has unsupported media type {layer.media_type!r}",
                media_type=layer.media_type,
            )
    for blob in (manifest.config, *manifest.layers):
        _fetch_blob(client, ref.repository, blob, store)
    data, digest = fetched.data, fetched.digest
    if manifest.media_type == mt.DOCKER_MANIFEST:
        # OCI layouts address only OCI manifests (skopeo and umoci skip others).
        data = docker_to_oci(data)
        digest = store.put_blob(data)
    else:
        store.put_blob(data, digest)
    store.tag(ref, digest, source_digest=fetched.digest)
    image = store.resolve(ref)
    assert image is not None
    return image


def _fetch_blob(client: RegistryClient, repository: str, blob: Descriptor, store: Store) -> None:
    if store.has_blob(blob.digest):
        return

    def once() -> None:
        with store.ingest(blob.digest, blob.size) as writer:
            client.fetch_blob(repository, blob, writer)  # type: ignore[arg-type]

    _retry.registry_request(once)
