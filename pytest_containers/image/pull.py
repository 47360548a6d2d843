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

Platforms: the index entry is chosen by :meth:`Index.select` (best match
first, attestations never). Whatever is chosen, the store's entry, the
image's config, its layer snapshots and every cache key are those of the
*chosen platform manifest* (``Image.digest``), never the index's.

Store names (:func:`store_reference`): an image pulled for the host platform
(``platform=None``, or one equal to :meth:`Platform.host` once normalized) is
named by its reference, ``str(reference)``. An image pulled for any other
platform is named by the reference with its tag extended by
``--ptc-<os>-<arch>[-<variant>]`` of the *requested* platform, e.g.
``127.0.0.1:5000/app:1.2--ptc-linux-arm64-v8``; a reference without a tag
(pinned by digest) gets the tag ``ptc-<os>-<arch>[-<variant>]`` next to its
digest: ``127.0.0.1:5000/app:ptc-linux-arm-v7@sha256:<index>``. So one
reference pulled for two platforms gives two store names, each a valid
reference and OCI ``ref.name`` (``skopeo inspect oci:<store>/oci:<name>``),
and the pull policies ``missing`` and ``never`` find it again offline.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Literal

from pytest_containers.exceptions import (
    ImageError,
    ImageNotFoundError,
    PlatformNotFoundError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    as_platform,
    docker_to_oci,
    parse_manifest,
)
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Image, Store

PullPolicy = Literal["always", "missing", "never"]
MAX_INDEX_DEPTH = 4
#: What marks a store name as resolved for a non-host platform (see the module docstring).
PLATFORM_TAG_MARK = "ptc-"
_TAG_MAX_CHARS = 128
_NOT_TAG_CHARS = re.compile(r"[^\w.-]", re.ASCII)


def store_reference(
    reference: Reference, platform: Platform | None, *, host: Platform | None = None
) -> Reference:
    """The name under which ``reference`` resolved for ``platform`` is kept in the store.

    ``reference`` itself for ``None`` or the host's platform (``host``, default
    :meth:`Platform.host`); else the reference with the tag
    ``<tag>--ptc-<os>-<arch>[-<variant>]`` (``ptc-<os>-<arch>[-<variant>]`` when it
    has none), its digest kept. A tag that would pass 128 characters is cut and
    given 12 hex digits of its sha256, so distinct tags keep distinct names.
    """
    if platform is None:
        return reference
    wanted = platform.normalized()
    here = (host or Platform.host()).normalized()
    parts = (wanted.os, wanted.architecture, wanted.variant)
    if parts == (here.os, here.architecture, here.variant):
        return reference
    suffix = PLATFORM_TAG_MARK + "-".join(_NOT_TAG_CHARS.sub("_", p) for p in parts if p)
    if reference.tag is None:
        return replace(reference, tag=suffix)
    tag = f"{reference.tag}--{suffix}"
    if len(tag) > _TAG_MAX_CHARS:
        keep = _TAG_MAX_CHARS - len(suffix) - 2 - 13
        short = hashlib.sha256(reference.tag.encode()).hexdigest()[:12]
        tag = f"{reference.tag[:keep]}-{short}--{suffix}"
    return replace(reference, tag=tag)


def pull(
    reference: Reference | str,
    store: Store,
    *,
    policy: PullPolicy = "missing",
    platform: Platform | str | None = None,
    client: RegistryClient | None = None,
) -> Image:
    """Make ``reference`` available in ``store`` and return it.

    ``policy``: ``always`` contacts the registry every time; ``missing`` only
    when the store has no image of that name; ``never`` never does and raises
    :class:`ImageNotFoundError` when the name is absent. ``platform`` (a
    :class:`Platform` or ``"os/arch[/variant]"``) defaults to
    :meth:`Platform.host`; it picks the entry of an index, and the store name
    (:func:`store_reference`). A given ``platform`` must also accept the
    config's platform of a plain (non-index) manifest, else
    :class:`PlatformNotFoundError`. ``client`` defaults to one for the
    reference's API host, closed afterwards. The returned image's
    ``reference`` is its store name.

    Raises the registry errors of :mod:`pytest_containers.image.registry`,
    :class:`PlatformNotFoundError`, :class:`UnsupportedMediaTypeError` and
    :class:`DigestMismatchError`; after any failure, no unverified blob and no
    new name is left in the store.
    """
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    if policy not in ("always", "missing", "never"):
        raise ValueError(f"pull policy must be always, missing or never, not {policy!r}")
    wanted = as_platform(platform)
    name = store_reference(ref, wanted)
    if policy != "always":
        found = store.resolve(name)
        if found is not None:
            return found
        if policy == "never":
            what = f"{ref} for platform {wanted} (as {name})" if name != ref else str(ref)
            raise ImageNotFoundError(
                f"image {what} is not in the store {store.root} and the pull policy is 'never'",
                reference=str(ref),
            )
    owned = client is None
    client = client or RegistryClient.for_reference(ref)
    try:
        client.ping()
        return _pull(client, ref, store, wanted, name)
    finally:
        if owned:
            client.close()


def _pull(
    client: RegistryClient, ref: Reference, store: Store, wanted: Platform | None, name: Reference
) -> Image:
    fetched = client.get_manifest(ref)
    document = parse_manifest(fetched.data, fetched.media_type)
    depth = 0
    while isinstance(document, Index):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise ImageError(f"{ref}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        chosen = document.select(wanted or Platform.host())
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
    if wanted is not None and depth == 0:
        _check_single_platform(client, ref, store, manifest, wanted)
    for blob in (manifest.config, *manifest.layers):
        _fetch_blob(client, ref.repository, blob, store)
    data, digest = fetched.data, fetched.digest
    if manifest.media_type == mt.DOCKER_MANIFEST:
        # OCI layouts address only OCI manifests (skopeo and umoci skip others).
        data = docker_to_oci(data)
        digest = store.put_blob(data)
    else:
        store.put_blob(data, digest)
    store.tag(name, digest, source_digest=fetched.digest)
    image = store.resolve(name)
    assert image is not None
    return image


def _check_single_platform(
    client: RegistryClient, ref: Reference, store: Store, manifest: Manifest, wanted: Platform
) -> None:
    """A plain manifest pulled for an explicit platform: its config must be for a
    platform that ``wanted`` accepts (a config without os or architecture passes)."""
    _fetch_blob(client, ref.repository, manifest.config, store)
    config = ImageConfig.from_json(store.read_blob(manifest.config.digest))
    if config.os and config.architecture and not wanted.accepts(config.platform):
        raise PlatformNotFoundError(
            f"{ref} is a single-platform image for {config.platform}, not for {wanted}",
            platform=str(wanted),
            available=[str(config.platform)],
        )


def _fetch_blob(client: RegistryClient, repository: str, blob: Descriptor, store: Store) -> None:
    if store.has_blob(blob.digest):
        return

    # One temp file for the whole download: fetch_blob retries and resumes into it
    # (Range from the bytes held), and ingest verifies size and digest of all of it.
    with store.ingest(blob.digest, blob.size) as writer:
        client.fetch_blob(repository, blob, writer)  # type: ignore[arg-type]
