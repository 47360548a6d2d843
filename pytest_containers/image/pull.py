"""Pull an image from a registry into the local :class:`Store`.

Steps (distribution spec "Pull"): ping ``/v2/``; fetch the manifest for the
tag or digest; if it is an index, select the entry for the platform and
fetch that manifest (nested indexes followed up to ``MAX_INDEX_DEPTH``);
fetch the config and each layer blob not already stored, each verified by
size then digest before it enters the store; name the manifest in the
store's ``index.json`` with the full reference.

Concurrency: the config is fetched first, then the missing layers at once,
``PULL_WORKERS`` threads sharing the one registry client (httpx clients are
thread-safe). The first layer to fail stops the pull: the other downloads
are cancelled at their next chunk (or finish), each leaving either a
verified blob or nothing, and that first error is raised. Across processes
(xdist workers, parallel CI jobs sharing a store) each blob is downloaded
once: :meth:`Store.fetch_blob_once` holds a per-blob lock
(:mod:`~pytest_containers.image.locks`) around "check present, download,
verify, rename", so the others wait and then find it. A Docker v2 schema 2
manifest is stored converted to an OCI manifest (same blobs, new manifest
digest), because OCI layout readers (skopeo, umoci) only address OCI
manifests; the registry's digest is kept as the entry's
``SOURCE_DIGEST_ANNOTATION`` and in :attr:`Image.source_digest`.

Platforms: the index entry is chosen by :meth:`Index.select` (best match
first, attestations never). Whatever is chosen, the store's entry, the
image's config, its layer snapshots and every cache key are those of the
*chosen platform manifest* (``Image.digest``), never the index's. The index's
digest is recorded next to it (``INDEX_DIGEST_ANNOTATION``,
:attr:`Image.index_digest`), and so is the reference pulled
(``SOURCE_REFERENCE_ANNOTATION``): :func:`~pytest_containers.image.push.push`
uses both to refuse replacing the registry's index with one platform's manifest.

Digests: with the policies ``missing`` and ``never``, a reference pinned by
digest (``REPO@sha256:<hex>``) is found in the store under its own name, else
as any stored image of the same ``registry/repository`` that the digest names:
its stored manifest digest, the manifest digest the registry served (a Docker
manifest stored converted), or the index it was chosen from (then only an
image for the wanted platform). The image returned keeps its store name.

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

Blobs with ``urls`` (descriptor.md ``urls``: non-distributable and Docker
"foreign" layers): as containerd does, each URL is tried first, in order, with
a plain ``GET`` (``http``/``https`` only, redirects only to those, never the
registry's ``Authorization``), the bytes verified by size then digest like any
blob's; the registry is asked only when every URL failed (unreachable, an HTTP
error, wrong bytes). When the registry fails too, the error names the blob and
every URL with its failure: a :class:`DigestMismatchError` if a URL served
wrong bytes, else the registry's own error.
"""

from __future__ import annotations

import hashlib
import re
import threading
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import BinaryIO, Literal

from pytest_containers.exceptions import (
    ContainersError,
    DigestMismatchError,
    ImageNotFoundError,
    InvalidOptionError,
    PlatformNotFoundError,
    RegistryError,
    RegistryUnavailableError,
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
    check_image_media_types,
    docker_to_oci,
    parse_manifest,
    select_manifest,
)
from pytest_containers.image.reference import DEFAULT_REGISTRY, DOCKER_HUB_API_HOST, Reference
from pytest_containers.image.registry import FetchedManifest, RegistryClient
from pytest_containers.image.store import Image, Store

PullPolicy = Literal["always", "missing", "never"]
#: The pull policies, in the order they are listed in messages.
PULL_POLICIES: tuple[PullPolicy, ...] = ("always", "missing", "never")
#: Layer downloads at once within one pull (threads sharing the registry client).
PULL_WORKERS = 4
#: What marks a store name as resolved for a non-host platform (see the module docstring).
PLATFORM_TAG_MARK = "ptc-"
_TAG_MAX_CHARS = 128
_NOT_TAG_CHARS = re.compile(r"[^\w.-]", re.ASCII)


def check_policy(policy: object, *, option: str = "policy") -> PullPolicy:
    """Return ``policy`` if it is a pull policy (``always``, ``missing``, ``never``;
    exact spelling); else raise :class:`InvalidOptionError` (fields ``option``,
    ``value``) naming the value, ``option`` and the allowed values."""
    if policy not in PULL_POLICIES:
        raise InvalidOptionError(
            f"invalid pull policy {policy!r} for {option}: expected one of"
            f" {', '.join(PULL_POLICIES)}",
            option=option,
            value=policy,
        )
    return policy  # type: ignore[return-value]


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

    A reference pinned by digest is also found under another name of the same
    repository (see the module docstring).

    Raises :class:`InvalidOptionError` for a bad ``policy`` or ``platform``, the
    registry errors of :mod:`pytest_containers.image.registry` (for a Docker Hub
    name whose registry is unreachable, with a hint that a local registry may have
    been meant), :class:`PlatformNotFoundError`, :class:`UnsupportedMediaTypeError`,
    :class:`DigestMismatchError` (naming the reference and the registry), and
    :class:`ImageError` when the store is read-only or cannot be written; after
    any failure, no unverified blob and no new name is left in the store.
    """
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    policy = check_policy(policy)
    wanted = as_platform(platform)
    name = store_reference(ref, wanted)
    if policy != "always":
        found = store.resolve(name) or _find_by_digest(store, ref, wanted)
        if found is not None:
            return found
        if policy == "never":
            what = f"{ref} for platform {wanted} (as {name})" if name != ref else str(ref)
            raise ImageNotFoundError(
                f"image {what} is not in the store {store.root} and the pull policy is"
                f" 'never'; pull it first (pytest-containers image pull {ref})",
                reference=str(ref),
            )
    store.check_writable(f"pull {ref}")
    owned = client is None
    client = client or RegistryClient.for_reference(ref)
    try:
        client.ping()
        return _pull(client, ref, store, wanted, name)
    except DigestMismatchError as exc:
        message = f"pulling {ref} from registry {client.host}: {exc.message}"
        raise DigestMismatchError(
            message, **{**exc.fields, "reference": str(ref), "registry": client.host}
        ) from exc
    except RegistryUnavailableError as exc:
        if ref.registry != DEFAULT_REGISTRY or client.host != DOCKER_HUB_API_HOST:
            raise
        raise _docker_hub_unavailable(exc, ref, store) from exc
    finally:
        if owned:
            client.close()


def _find_by_digest(store: Store, ref: Reference, wanted: Platform | None) -> Image | None:
    """A stored image of ``ref``'s repository that ``ref.digest`` names (see the
    module docstring), or ``None``."""
    if ref.digest is None:
        return None
    platform = wanted or Platform.host()
    for image in store.by_digest(ref.digest, name=ref.name):
        if ref.digest in (image.digest, image.source_digest):
            return image
        config = image.config
        if ref.digest == image.index_digest and (
            not (config.os and config.architecture) or platform.matches(config.platform)
        ):
            return image
    return None


def _docker_hub_unavailable(
    exc: RegistryUnavailableError, ref: Reference, store: Store
) -> RegistryUnavailableError:
    """``exc`` for a Docker Hub name, saying so and suggesting a local registry's
    name (those of the store with the same repository, else ``HOST:PORT/...``)."""
    short = ref.repository.removeprefix("library/")
    suffix = f":{ref.tag}" if ref.tag else ""
    suffix += f"@{ref.digest}" if ref.digest else ""
    try:
        seen = {
            str(image.reference.name) + suffix
            for image in store.images()
            if image.reference.repository.removeprefix("library/") == short
            and image.reference.registry != DEFAULT_REGISTRY
        }
    except (ContainersError, OSError):
        seen = set()
    guess = " or ".join(sorted(seen)) or f"HOST:PORT/{short}{suffix}"
    return RegistryUnavailableError(
        f"{DOCKER_HUB_API_HOST} (Docker Hub) unavailable for {ref}, the Docker Hub name"
        f" that {short}{suffix} stands for ({exc}); did you mean {guess}?",
        **exc.fields,
    )


def _pull(
    client: RegistryClient, ref: Reference, store: Store, wanted: Platform | None, name: Reference
) -> Image:
    fetched, document = _get_manifest(client, ref)

    def load(chosen: Descriptor) -> Manifest | Index:
        nonlocal fetched
        fetched, found = _get_manifest(client, ref.with_digest(chosen.digest))
        return found

    index_digest = fetched.digest if isinstance(document, Index) else None
    manifest, depth = select_manifest(document, load, wanted, str(ref))
    check_image_media_types(manifest, str(ref), reference=str(ref))
    if wanted is not None and depth == 0:
        _check_single_platform(client, ref, store, manifest, wanted)
    _fetch_blob(client, ref.repository, manifest.config, store)
    _fetch_layers(client, ref.repository, manifest.layers, store)
    data, digest = fetched.data, fetched.digest
    if manifest.media_type == mt.DOCKER_MANIFEST:
        # OCI layouts address only OCI manifests (skopeo and umoci skip others).
        data = docker_to_oci(data)
        digest = store.put_blob(data)
    else:
        store.put_blob(data, digest)
    store.tag(
        name,
        digest,
        source_digest=fetched.digest,
        index_digest=index_digest,
        source_reference=ref,
    )
    image = store.resolve(name)
    assert image is not None
    return image


def _get_manifest(
    client: RegistryClient, ref: Reference
) -> tuple[FetchedManifest, Manifest | Index]:
    """Fetch and parse the manifest or index ``ref`` names. An unsupported media type
    (Docker schema 1 among them, whatever ``Content-Type`` it came with) raises
    :class:`UnsupportedMediaTypeError` naming ``ref`` (field ``reference``)."""
    try:
        fetched = client.get_manifest(ref)
        return fetched, parse_manifest(fetched.data, fetched.media_type)
    except UnsupportedMediaTypeError as exc:
        if exc.fields.get("reference"):
            raise
        message = exc.message if str(ref) in exc.message else f"{ref}: {exc.message}"
        raise UnsupportedMediaTypeError(message, **{**exc.fields, "reference": str(ref)}) from exc


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


class _Cancelled(Exception):
    """A layer download stopped because another one failed (never leaves this module)."""


class _CancellableWriter:
    """Passes writes to ``writer`` until ``cancel`` is set, then raises :class:`_Cancelled`."""

    def __init__(self, writer: BinaryIO, cancel: threading.Event) -> None:
        self._writer = writer
        self._cancel = cancel

    def write(self, chunk: bytes) -> int:
        if self._cancel.is_set():
            raise _Cancelled
        return self._writer.write(chunk)


def _fetch_layers(
    client: RegistryClient,
    repository: str,
    layers: Sequence[Descriptor],
    store: Store,
    *,
    workers: int | None = None,
) -> None:
    """Fetch the layers not yet stored, up to ``workers`` (default ``PULL_WORKERS``)
    at once, each digest once.

    The first failure (in time) is raised once every download has stopped: the
    others are cancelled at their next chunk and leave nothing behind, or have
    finished and are stored, verified.
    """
    missing = [
        layer
        for layer in {layer.digest: layer for layer in layers}.values()
        if not store.has_blob(layer.digest)
    ]
    workers = PULL_WORKERS if workers is None else workers
    if workers <= 1 or len(missing) <= 1:
        for layer in missing:
            _fetch_blob(client, repository, layer, store)
        return
    cancel = threading.Event()
    errors: list[BaseException] = []
    errors_lock = threading.Lock()

    def work(layer: Descriptor) -> None:
        try:
            _fetch_blob(client, repository, layer, store, cancel)
        except _Cancelled:
            pass
        except BaseException as exc:
            with errors_lock:
                errors.append(exc)
            cancel.set()
            raise

    pool = ThreadPoolExecutor(min(workers, len(missing)), thread_name_prefix="ptc-pull")
    try:
        futures = [pool.submit(work, layer) for layer in missing]
        wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # e.g. KeyboardInterrupt while waiting: stop the workers too
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]


def _fetch_blob(
    client: RegistryClient,
    repository: str,
    blob: Descriptor,
    store: Store,
    cancel: threading.Event | None = None,
) -> None:
    """Fetch ``blob`` into ``store`` unless present, once across processes; with
    ``cancel``, stop (:class:`_Cancelled`, nothing stored) once it is set.

    ``blob.urls`` are tried first, then the registry (see the module docstring).
    """
    failures: list[tuple[str, str | Exception]] = []
    for url in blob.urls:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            failures.append((url, "not an http or https URL, skipped"))
            continue

        def download(writer: BinaryIO, url: str = url) -> None:
            _fetch_url(client, url, writer, cancel)

        try:
            store.fetch_blob_once(blob.digest, blob.size, download)  # type: ignore[arg-type]
            return
        except (RegistryError, DigestMismatchError) as exc:
            # unreachable, an HTTP error, cut short, or wrong bytes
            failures.append((url, exc))

    # One temp file for the whole download: fetch_blob retries and resumes into it
    # (Range from the bytes held), and ingest verifies size and digest of all of it.
    def fill(writer: BinaryIO) -> None:
        if cancel is not None:
            if cancel.is_set():
                raise _Cancelled
            writer = _CancellableWriter(writer, cancel)  # type: ignore[assignment]
        client.fetch_blob(repository, blob, writer)

    try:
        store.fetch_blob_once(blob.digest, blob.size, fill)  # type: ignore[arg-type]
    except (RegistryError, DigestMismatchError) as exc:
        if not failures:
            raise
        raise _urls_failed(repository, blob, failures, exc) from exc


def _fetch_url(
    client: RegistryClient, url: str, writer: BinaryIO, cancel: threading.Event | None
) -> None:
    """``GET url`` into ``writer`` without credentials (:meth:`RegistryClient.fetch_url`);
    :class:`_Cancelled` once ``cancel`` is set."""
    if cancel is not None:
        if cancel.is_set():
            raise _Cancelled
        writer = _CancellableWriter(writer, cancel)  # type: ignore[assignment]
    client.fetch_url(url, writer)


def _urls_failed(
    repository: str,
    blob: Descriptor,
    failures: Sequence[tuple[str, str | Exception]],
    registry_error: RegistryError | DigestMismatchError,
) -> ContainersError:
    """The error for a blob that neither its ``urls`` nor the registry served: a
    :class:`DigestMismatchError` (fields ``digest``, ``actual``, ``size``, ``url``) if a
    URL served wrong bytes, else ``registry_error``'s type and fields; both with the
    field ``urls`` and a message naming every URL and why it failed."""
    tried = "; ".join(f"{url}: {why}" for url, why in failures)
    message = (
        f"blob {blob.digest} ({blob.size} bytes) of {repository}: none of its URLs"
        f" served it ({tried}), nor did the registry: {registry_error}"
    )
    urls = list(blob.urls)
    for url, why in failures:
        if isinstance(why, DigestMismatchError):
            fields = {"actual": why.fields.get("actual"), "size": why.fields.get("size")}
            return DigestMismatchError(message, digest=blob.digest, url=url, urls=urls, **fields)
    return type(registry_error)(message, **{**registry_error.fields, "urls": urls})
