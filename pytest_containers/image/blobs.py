"""Blob reads from a registry (OCI distribution spec v1.0, "Pulling blobs"):
redirects to other storage, resuming with ``Range``, and a 416 that means
"nothing is missing".

The bytes go to a caller's file as received; size and digest of the whole blob
are verified where it enters the store (:meth:`Store.ingest
<pytest_containers.image.store.Store.ingest>`, via
:meth:`Store.fetch_blob_once <pytest_containers.image.store.Store.fetch_blob_once>`).
Used through :meth:`RegistryClient.fetch_blob
<pytest_containers.image.registry.RegistryClient.fetch_blob>`.
"""

from __future__ import annotations

import contextlib
from typing import BinaryIO

import httpx

from pytest_containers import _retry
from pytest_containers.exceptions import DigestMismatchError, RegistryError
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.session import (
    RegistrySession,
    map_httpx_errors,
    origin,
    retry_after,
)

#: Redirects followed for one blob read (distribution sends one 307 to its storage).
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def fetch_blob(
    session: RegistrySession,
    repository: str,
    descriptor: Descriptor,
    dest: BinaryIO,
    *,
    offset: int = 0,
) -> int:
    """Stream ``GET /v2/<repository>/blobs/<digest>`` into ``dest``; return the
    bytes of the blob ``dest`` holds in the end (``offset`` plus those written).

    ``offset``: ``dest`` already holds the blob's first ``offset`` bytes (a
    download cut short earlier); only the rest is asked for.

    Redirects (distribution answers blob reads with a 307 to its storage when
    configured so) are followed here, at most ``MAX_REDIRECTS``; the registry's
    ``Authorization`` goes to the registry's own origin only, never to another
    host, and only the registry's 401 challenges are answered.

    Resumes: a transient failure (connection refused or cut short, timeout,
    HTTP 408, 429, 5xx) is retried under
    :func:`pytest_containers._retry.resumable_download` (a 429's or 503's
    ``Retry-After`` honoured, capped), each attempt asking for the rest with
    ``Range: bytes=<held>-`` (RFC 9110 section 14.2): a ``206`` from that byte
    is appended; a ``200`` (Range ignored) restarts from byte 0, the bytes
    already held being read and dropped; a ``416`` with ``Content-Range:
    bytes */N`` and N equal to the bytes held means nothing is missing (its
    body is never read: distribution 2.8.2 sends it with the blob's size as
    ``Content-Length``). Bytes are taken as sent (``Accept-Encoding: identity``,
    no content decoding).

    Raises ``ValueError`` for an ``offset`` outside the blob,
    :class:`DigestMismatchError` as soon as more than ``descriptor.size`` bytes
    arrive, or when the server says the blob is shorter than the bytes held, and
    the registry errors of :mod:`~pytest_containers.image.session`. The caller
    verifies size and digest of all that ``dest`` holds (see :meth:`Store.ingest
    <pytest_containers.image.store.Store.ingest>`).
    """
    if not 0 <= offset <= descriptor.size:
        raise ValueError(f"offset {offset} is outside blob of {descriptor.size} bytes")
    path = f"/v2/{repository}/blobs/{descriptor.digest}"
    name = f"{repository}@{descriptor.digest}"
    held = offset

    def once() -> None:
        nonlocal held
        headers = {"Accept-Encoding": "identity"}
        if held:
            headers["Range"] = f"bytes={held}-"
        scope = f"repository:{repository}:pull"
        with contextlib.closing(_blob_response(session, path, scope, headers)) as resp:
            url = str(resp.request.url)
            if resp.status_code == 416 and held:
                _check_complete(resp, descriptor, held, name)
                return
            _raise_for_blob_status(session, resp, name)
            skip = held if resp.status_code == 200 else 0
            if resp.status_code == 206:
                first, _ = _content_range(resp.headers.get("Content-Range", ""))
                if first != held:
                    raise RegistryError(
                        f"asked {url} for blob {name} from byte {held}, got Content-Range"
                        f" {resp.headers.get('Content-Range')!r}",
                        url=url,
                        status=206,
                    )
            with map_httpx_errors(url):
                for chunk in resp.iter_raw():  # as received: a cut loses nothing
                    if skip:  # the server ignored Range: drop what we hold already
                        dropped, skip = min(skip, len(chunk)), skip - min(skip, len(chunk))
                        chunk = chunk[dropped:]
                    if held + len(chunk) > descriptor.size:
                        raise DigestMismatchError(
                            f"blob {descriptor.digest} of {repository} is larger than its"
                            f" descriptor's {descriptor.size} bytes",
                            digest=descriptor.digest,
                            actual=None,
                            size=held + len(chunk),
                        )
                    if chunk:
                        dest.write(chunk)
                        held += len(chunk)

    _retry.resumable_download(once, lambda: held)
    return held


def _blob_response(
    session: RegistrySession, path: str, scope: str, headers: dict[str, str]
) -> httpx.Response:
    """GET ``path`` (streamed; the caller closes it) for :func:`fetch_blob`,
    following redirects here.

    Authenticates once on the registry's 401 (:meth:`RegistrySession.exchange`).
    Each hop carries ``headers`` (``Range`` included); ``Authorization`` only while
    the URL has the registry's origin (scheme, host, port): httpx 0.28 would strip
    it too, but not on an ``http`` to ``https`` hop to the same host, and older
    versions not at all. A 401 from any other origin is an error, never
    answered with credentials.
    """
    start = httpx.URL(session.base_url + path)
    home = origin(start)

    def send(authorization: str | None) -> httpx.Response:
        url = start
        for _hop in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if authorization and origin(url) == home:
                sent["Authorization"] = authorization
            with map_httpx_errors(str(url)):
                request = session.http.build_request("GET", url, headers=sent)
                response = session.http.send(request, stream=True, follow_redirects=False)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                return response
            response.close()
            try:
                url = url.join(location)
            except httpx.InvalidURL as exc:
                raise RegistryError(
                    f"{url} redirected to an invalid URL {location!r}: {exc}",
                    url=str(url),
                    status=response.status_code,
                ) from exc
        raise RegistryError(
            f"more than {MAX_REDIRECTS} redirects for {start} (last to {url})",
            url=str(url),
            status=response.status_code,
        )

    return session.exchange(
        str(start), scope, send, answerable=lambda r: origin(r.request.url) == home
    )


def _raise_for_blob_status(session: RegistrySession, response: httpx.Response, name: str) -> None:
    """Pass 200 and 206; raise for anything else. A registry's own 4xx raise as
    in :meth:`RegistrySession.raise_for_status`; other statuses (transient ones with
    their ``retry_after`` in seconds, any from a storage host) as :class:`RegistryError`."""
    status = response.status_code
    if status in (200, 206):
        return
    url = str(response.request.url)
    at_registry = origin(response.url) == origin(httpx.URL(session.base_url))
    with map_httpx_errors(url):
        if at_registry and status >= 400 and status not in _retry.TRANSIENT_STATUSES:
            session.raise_for_status(response, "blob", name)
        response.read()
    detail = response.text[:500].strip()
    where = "" if at_registry else f" (storage that registry {session.host} redirected to)"
    raise RegistryError(
        f"HTTP {status} from {url}{where} for blob {name}" + (f": {detail}" if detail else ""),
        url=url,
        status=status,
        retry_after=retry_after(response),
    )


def _check_complete(response: httpx.Response, descriptor: Descriptor, held: int, name: str) -> None:
    """Return if a 416 to ``Range: bytes=<held>-`` says the blob has ``held`` bytes
    (``Content-Range: bytes */<held>``); raise otherwise. The body is not read."""
    url = str(response.request.url)
    content_range = response.headers.get("Content-Range", "")
    _, total = _content_range(content_range)
    if total == held:
        return
    if total is not None and total < held:
        raise DigestMismatchError(
            f"blob {name}: {url} says it has {total} bytes, fewer than the {held}"
            f" already received (descriptor: {descriptor.size} bytes)",
            digest=descriptor.digest,
            actual=None,
            size=total,
        )
    raise RegistryError(
        f"HTTP 416 from {url} for blob {name} from byte {held} (Content-Range: {content_range!r})",
        url=url,
        status=416,
    )


def _content_range(value: str) -> tuple[int | None, int | None]:
    """``bytes FIRST-LAST/TOTAL`` or ``bytes */TOTAL`` (RFC 9110 section 14.4) ->
    ``(FIRST, TOTAL)``, each ``None`` when ``*`` or unreadable."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    first = span.split("-", 1)[0].strip()
    return (
        int(first) if unit == "bytes" and first.isdigit() else None,
        int(total) if unit == "bytes" and total.strip().isdigit() else None,
    )


def fetch_url(session: RegistrySession, url: str, dest: BinaryIO) -> int:
    """``GET url`` (a descriptor's ``urls`` entry, image-spec descriptor.md) into
    ``dest``, without credentials: the registry's ``Authorization`` never goes
    there. Redirects are followed (httpx: to ``http``/``https`` only, at most
    20). Returns the bytes written; verification is the
    caller's (:meth:`Store.fetch_blob_once`). Raises :class:`RegistryError` for
    a status of 400 or more, and for a connection failure or timeout
    (``session``'s timeout, seconds per network operation). No retries: the
    caller falls back to the registry.
    """
    written = 0
    with map_httpx_errors(url):
        with session.http.stream(
            "GET",
            url,
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,
        ) as response:
            if response.status_code >= 400:
                raise RegistryError(
                    f"GET {response.url}: HTTP {response.status_code}",
                    url=str(response.url),
                    status=response.status_code,
                )
            for chunk in response.iter_raw():
                dest.write(chunk)
                written += len(chunk)
    return written
