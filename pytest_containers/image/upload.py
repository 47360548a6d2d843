"""Blob and manifest writes to a registry (OCI distribution spec v1.0, "Push"):
the requests behind :func:`pytest_containers.image.push.push`, used through
:class:`~pytest_containers.image.registry.RegistryClient`'s ``blob_exists``,
``upload_blob`` and ``put_manifest``.

Every request asks for ``repository:<name>:pull,push`` and is authenticated as
reads are (:meth:`RegistrySession.exchange
<pytest_containers.image.session.RegistrySession.exchange>`); every answer's
``Docker-Content-Digest`` must equal what was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

import httpx

from pytest_containers import _retry
from pytest_containers.exceptions import (
    DigestMismatchError,
    ManifestUnknownError,
    RegistryError,
)
from pytest_containers.image.digest import digest_of
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference
from pytest_containers.image.session import RegistrySession, map_httpx_errors

#: Bytes read from the store at a time for a monolithic upload.
CHUNK_BYTES = 1 << 20


def blob_exists(session: RegistrySession, repository: str, digest: str) -> bool:
    """``HEAD /v2/<repository>/blobs/<digest>`` (spec "Checking if content exists
    in the registry"): whether the repository already has the blob. Retried as
    :func:`pytest_containers._retry.registry_request` does."""

    def once() -> bool:
        try:
            path = f"/v2/{repository}/blobs/{digest}"
            _send(session, "HEAD", path, repository, f"{repository}@{digest}")
        except ManifestUnknownError:
            return False
        return True

    return _retry.registry_request(once)


def upload_blob(
    session: RegistrySession,
    repository: str,
    descriptor: Descriptor,
    open_blob: Callable[[], BinaryIO],
    *,
    chunk_bytes: int | None = None,
    mount_from: str | None = None,
) -> Literal["mounted", "uploaded"]:
    """Push one blob (spec "Pushing blobs"); return whether it was mounted or uploaded.

    ``POST /v2/<repository>/blobs/uploads/`` opens a session; with
    ``mount_from`` it is ``?mount=<digest>&from=<mount_from>`` (spec "Mounting
    a blob from another repository"): 201 means mounted, 202 a session as usual.
    Monolithic (``chunk_bytes`` None): ``PUT <Location>?digest=<digest>`` with
    the blob. Chunked: ``PATCH <Location>`` with ``Content-Range: <first>-<last>``
    (inclusive byte offsets) per chunk of ``chunk_bytes`` bytes, each answer's
    ``Location`` used next, then ``PUT <Location>?digest=<digest>`` with no body.
    Expects 202 then 201; a ``Docker-Content-Digest`` other than the descriptor's
    raises :class:`DigestMismatchError`. ``open_blob()`` returns the blob as a
    fresh binary file. Not retried here: retry the whole call (a new session).
    """
    digest, ref = descriptor.digest, f"{repository}@{descriptor.digest}"
    what = f"upload of blob {ref}"
    mount = {"mount": digest, "from": mount_from} if mount_from else None
    response = _send(
        session, "POST", f"/v2/{repository}/blobs/uploads/", repository, ref, params=mount
    )
    if response.status_code == 201 and mount_from:
        _check_pushed(response, 201, digest, what)
        return "mounted"
    url = _check_pushed(response, 202, digest, what)
    headers = {"Content-Type": "application/octet-stream"}
    content: bytes | Callable[[], Iterator[bytes]] = b""
    if chunk_bytes is None:
        content = lambda: _chunks(open_blob)  # noqa: E731
        headers["Content-Length"] = str(descriptor.size)
    else:
        with open_blob() as src:
            offset = 0
            while chunk := src.read(chunk_bytes):
                last = offset + len(chunk) - 1
                ranged = {**headers, "Content-Range": f"{offset}-{last}"}
                response = _send(
                    session, "PATCH", url, repository, ref, headers=ranged, content=chunk
                )
                url, offset = _check_pushed(response, 202, digest, what), last + 1
    if not url:
        raise RegistryError(
            f"{what}: no Location from {response.request.url}",
            url=str(response.request.url),
            status=response.status_code,
        )
    params = {"digest": digest}
    response = _send(
        session, "PUT", url, repository, ref, headers=headers, content=content, params=params
    )
    _check_pushed(response, 201, digest, what)
    return "uploaded"


def put_manifest(
    session: RegistrySession, reference: Reference, data: bytes, media_type: str
) -> str:
    """``PUT /v2/<repository>/manifests/<tag or digest>`` with ``Content-Type:
    <media_type>`` (spec "Pushing Manifests"), after every blob it references.

    Returns the digest of ``data`` (``sha256:<hex>``); the registry's
    ``Docker-Content-Digest`` must match it, and so must ``reference.digest``
    when pushing by digest (:class:`DigestMismatchError` otherwise).
    """
    digest = digest_of(data)
    if reference.digest and reference.digest != digest:
        raise DigestMismatchError(
            f"cannot push {reference}: the manifest's digest is {digest}",
            digest=reference.digest,
            actual=digest,
            size=len(data),
        )
    path = f"/v2/{reference.repository}/manifests/{reference.identifier}"
    headers = {"Content-Type": media_type}

    def once() -> None:
        response = _send(
            session,
            "PUT",
            path,
            reference.repository,
            str(reference),
            headers=headers,
            content=data,
        )
        _check_pushed(response, 201, digest, f"push of manifest {reference}")

    _retry.registry_request(once)
    return digest


def _send(
    session: RegistrySession,
    method: str,
    url: str,
    repository: str,
    reference: str,
    **request: Any,
) -> httpx.Response:
    """One request, read in full, to ``url`` (a ``/v2/...`` path or an absolute
    ``Location``) needing push access to ``repository`` (``reference`` names
    the target in errors), authenticated as GETs are (once more after a 401
    challenge). ``request``: ``headers``, ``params``, and ``content``: bytes,
    or a callable returning a fresh chunk iterator (called again for that
    second try). HTTP >= 400 raises as for GETs (404: :class:`ManifestUnknownError`)."""
    url = url if "://" in url else session.base_url + url
    if request.get("params"):  # merged: a Location keeps its own query (``_state``)
        url = str(httpx.URL(url).copy_merge_params(request.pop("params")))
    scope = f"repository:{repository}:pull,push"
    headers = dict(request.pop("headers", None) or {})
    content = request.pop("content", b"")
    what = "blob" if "/blobs/" in url else "manifest"

    def send(authorization: str | None) -> httpx.Response:
        sent = {**headers, "Authorization": authorization} if authorization else headers
        body = content() if callable(content) else content
        with map_httpx_errors(url):
            return session.http.request(method, url, headers=sent, content=body, **request)

    response = session.exchange(url, scope, send)
    session.raise_for_status(response, what, reference)
    return response


def _check_pushed(response: httpx.Response, status: int, digest: str, what: str) -> str:
    """Expect ``status`` and, when sent, ``Docker-Content-Digest: <digest>``;
    return the ``Location`` header resolved against the request URL ("" if none)."""
    url = str(response.request.url)
    if response.status_code != status:
        raise RegistryError(
            f"{what}: expected HTTP {status} from {url}, got {response.status_code}",
            url=url,
            status=response.status_code,
        )
    sent = response.headers.get("Docker-Content-Digest")
    if sent is not None and sent != digest:
        raise DigestMismatchError(
            f"{what}: registry at {url} stored digest {sent}, expected {digest}",
            digest=digest,
            actual=sent,
            size=None,
        )
    location = response.headers.get("Location")
    return str(response.request.url.join(location)) if location else ""


def _chunks(open_blob: Callable[[], BinaryIO]) -> Iterator[bytes]:
    with open_blob() as src:
        while chunk := src.read(CHUNK_BYTES):
            yield chunk
