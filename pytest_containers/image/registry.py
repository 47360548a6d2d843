"""A distribution-spec registry client (OCI distribution spec v1.0, "Pull").

The only module that imports httpx; :func:`_map_httpx_errors` turns its
errors into ours (like httpx's own ``map_httpcore_exceptions``):

- connect errors, timeouts, broken connections -> :class:`RegistryUnavailableError`
- 401/403 after the token flow, or a token request refused -> :class:`AuthenticationError`
  (naming the realm when the token server refused)
- an unreachable token realm -> :class:`RegistryUnavailableError` naming the realm
- 404 -> :class:`ManifestUnknownError`
- other 4xx/5xx -> :class:`RegistryError` (429 and 5xx are retried by
  :func:`pytest_containers._retry.registry_request`)

Authentication (challenges parsed by :func:`pytest_containers.image.auth.parse_challenges`,
credentials found by :class:`~pytest_containers.image.auth.Keychain` when first challenged):

- ``Bearer realm=...,service=...,scope=...`` (distribution ``docs/spec/auth/token.md``):
  GET the realm for a token (with a Basic ``Authorization`` of the credentials and
  ``account=USER``, or anonymously when there are none; an ``identitytoken`` is
  POSTed as an OAuth2 ``refresh_token`` grant instead, ``oauth.md``) and retry
  once. Tokens are cached per (realm, service, scope) in a
  :class:`~pytest_containers.image.auth.TokenCache`; once a realm is known, a
  missing or expired token is fetched before the request, without a 401 first.
- ``Basic realm=...`` (RFC 7617): retry once with the credentials, then send
  them with every request; none found -> :class:`AuthenticationError` naming
  the registry and the places searched.

Scheme is plain ``http`` for loopback hosts (Docker's default insecure
loopback), ``https`` otherwise.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import httpx

from pytest_containers import _retry
from pytest_containers.exceptions import (
    AuthenticationError,
    DigestMismatchError,
    ManifestUnknownError,
    RegistryError,
    RegistryUnavailableError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.auth import (
    Credentials,
    Keychain,
    Lookup,
    TokenCache,
    challenge_error,
    find_challenge,
    parse_challenges,
)
from pytest_containers.image.digest import digest_of
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference

#: Largest manifest accepted, in bytes (distribution's own limit is 4 MiB).
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 1 << 20
#: Redirects followed for one blob read (distribution sends one 307 to its storage).
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def default_scheme(host: str) -> Literal["http", "https"]:
    """``http`` for ``localhost``, ``127.*`` and ``[::1]`` (with any port), else ``https``."""
    name = host[: host.index("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    loopback = name in ("localhost", "[::1]") or name.startswith("127.")
    return "http" if loopback else "https"


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as received: exact ``data`` bytes, HTTP ``media_type``,
    and ``digest`` (``sha256:<hex>`` computed from ``data``)."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)


@contextlib.contextmanager
def _map_httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise RegistryUnavailableError(
            f"registry unavailable at {url}: {exc or type(exc).__name__}", url=url
        ) from exc
    except httpx.HTTPError as exc:
        raise RegistryError(f"request to {url} failed: {exc}", url=url, status=None) from exc


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the default port made explicit (RFC 6454)."""
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


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


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked by ``Retry-After`` (RFC 9110 section 10.2.3: delay-seconds or an
    HTTP-date), ``None`` when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


class RegistryClient:
    """A client for one registry host (``host[:port]``, the API host, not ``docker.io``).

    Use as a context manager or call :meth:`close`. ``timeout`` is in seconds
    per network operation. ``credentials``: use these instead of searching
    ``keychain`` (default: a :class:`Keychain` of the process environment),
    which is read once, when the registry first asks for authentication.
    ``tokens``: the Bearer token cache (default: one of its own; share one to
    share tokens between clients).
    """

    def __init__(
        self,
        host: str,
        *,
        scheme: Literal["http", "https"] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        credentials: Credentials | None = None,
        keychain: Keychain | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        self.host = host
        self.base_url = f"{scheme or default_scheme(host)}://{host}"
        self._client = httpx.Client(
            timeout=timeout, transport=transport, headers={"User-Agent": "pytest-containers"}
        )
        self._keychain = keychain or Keychain()
        given = Lookup(credentials, ("credentials given to the client",))
        self._lookup = given if credentials else None
        self._tokens = tokens or TokenCache()
        #: what the registry asked for: None (nothing yet), "basic", or ("bearer", realm, service)
        self._scheme: str | tuple[str, str, str] | None = None

    @classmethod
    def for_reference(cls, reference: Reference, **kwargs: object) -> RegistryClient:
        """A client for the API host of ``reference`` (``registry-1.docker.io`` for Docker Hub)."""
        return cls(reference.api_host, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------

    @contextlib.contextmanager
    def _request(
        self, path: str, *, scope: str | None, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """GET ``path`` (streamed), authenticating once on 401 (see the module docstring)."""
        url = self.base_url + path
        headers = dict(headers or {})
        for attempt in range(2):
            authorization = self._authorization(url, scope)
            if authorization:
                headers["Authorization"] = authorization
            with _map_httpx_errors(url):
                request = self._client.build_request("GET", url, headers=headers)
                response = self._client.send(request, stream=True, follow_redirects=True)
            try:
                if response.status_code == 401 and attempt == 0 and self._scheme != "basic":
                    self._authenticate(url, response.headers.get("WWW-Authenticate", ""), scope)
                    continue
                yield response
                return
            finally:
                response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _credentials(self) -> Credentials | None:
        if self._lookup is None:
            self._lookup = self._keychain.lookup(self.host)
        return self._lookup.credentials

    def _authorization(self, url: str, scope: str | None) -> str | None:
        """The ``Authorization`` to send before any challenge, once the scheme is known."""
        if self._scheme == "basic":
            credentials = self._credentials()
            return credentials.basic_authorization if credentials else None
        if isinstance(self._scheme, tuple):
            _, realm, service = self._scheme
            token = self._tokens.get(realm, service, scope or "")
            return f"Bearer {token or self._fetch_token(url, realm, service, scope)}"
        return None

    def _authenticate(self, url: str, challenge: str, scope: str | None) -> None:
        """Act on a 401's challenges: prefer Bearer, then Basic; else fail."""
        challenges = parse_challenges(challenge)
        bearer = find_challenge(challenges, "bearer")
        if bearer is not None and "realm" in bearer.params:
            realm, service = bearer.params["realm"], bearer.params.get("service", "")
            self._scheme = ("bearer", realm, service)
            self._tokens.discard(realm, service, scope or "")  # rejected or absent
            self._fetch_token(url, realm, service, scope or bearer.params.get("scope"))
            return
        basic = find_challenge(challenges, "basic")
        if basic is not None:
            if self._credentials() is None:
                raise AuthenticationError(
                    f"registry {self.host} requires Basic authentication"
                    f" (realm {basic.params.get('realm', '')!r}) and no credentials were found"
                    f" for {self.host}; looked in: {self._searched()}",
                    url=url,
                    status=401,
                )
            self._scheme = "basic"
            return
        schemes = ", ".join(c.scheme for c in challenges) or "unknown"
        raise AuthenticationError(
            f"{url} requires {schemes} authentication, which is not supported"
            f" (WWW-Authenticate: {challenge!r})",
            url=url,
            status=401,
        )

    def _searched(self) -> str:
        return "; ".join(self._lookup.searched) if self._lookup else "nowhere"

    def _who(self) -> str:
        credentials = self._credentials()
        if credentials is None:
            return "anonymously"
        return f"as {credentials.username!r} (credentials from {credentials.source})"

    def _fetch_token(self, url: str, realm: str, service: str, scope: str | None) -> str:
        """Get a token from ``realm`` (token.md "Requesting a Token"), cache and return it."""
        credentials = self._credentials()
        query = {"service": service} if service else {}
        if scope:
            query["scope"] = scope
        wanted = f" for {scope}" if scope else ""
        asked = f"(the Bearer realm registry {self.host} asked for at {url}, {self._who()})"
        try:
            if credentials is not None and credentials.identity_token:  # oauth.md
                form = {**query, "grant_type": "refresh_token", "client_id": "pytest-containers"}
                form["refresh_token"] = credentials.identity_token
                response = self._client.post(realm, data=form)
            elif credentials is not None:
                headers = {"Authorization": credentials.basic_authorization}
                query["account"] = credentials.username
                response = self._client.get(realm, params=query, headers=headers)
            else:
                response = self._client.get(realm, params=query)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise RegistryUnavailableError(
                f"token server unavailable at {realm} {asked}: {exc or type(exc).__name__}",
                url=realm,
            ) from exc
        except httpx.HTTPError as exc:
            raise AuthenticationError(
                f"token request to {realm} {asked} failed: {exc}", url=realm, status=None
            ) from exc
        if response.status_code != 200:
            detail = response.text[:300].strip()
            raise AuthenticationError(
                f"token request to {realm}{wanted} {asked} was refused with HTTP"
                f" {response.status_code}" + (f": {detail}" if detail else ""),
                url=realm,
                status=response.status_code,
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            expires_in = float(body["expires_in"]) if body.get("expires_in") else None
        except (ValueError, TypeError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise AuthenticationError(
                f"token response from {realm} has no token", url=realm, status=response.status_code
            )
        self._tokens.put(realm, service, scope or "", token, expires_in)
        return token

    def _raise_for_status(self, response: httpx.Response, what: str, reference: str) -> None:
        status = response.status_code
        if status < 400:
            return
        response.read()
        detail = response.text[:500].strip()
        url = str(response.request.url)
        if status == 404:
            raise ManifestUnknownError(
                f"{what} not found: {reference} (HTTP 404 from {url}: {detail})",
                reference=reference,
                status=status,
                url=url,
            )
        if status in (401, 403):
            why = challenge_error(response.headers.get("WWW-Authenticate", ""))
            if self._scheme == "basic" and status == 401:
                why = f" (registry {self.host} rejected the credentials {self._who()[3:]})"
            elif self._scheme is not None:
                why += f" (registry {self.host}, {self._who()})"
                if self._credentials() is None:
                    why += f"; no credentials were found, looked in: {self._searched()}"
            raise AuthenticationError(
                f"access to {reference} denied: HTTP {status} from {url}{why}: {detail}",
                url=url,
                status=status,
            )
        raise RegistryError(f"HTTP {status} from {url}: {detail}", url=url, status=status)

    # -- API ------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/`` (spec "API version check"); 200 or 401 means a registry is there.

        Raises :class:`RegistryUnavailableError` naming the URL when it is not.
        """

        def once() -> None:
            url = f"{self.base_url}/v2/"
            with _map_httpx_errors(url):
                response = self._client.get(url)
            if response.status_code not in (200, 401):
                self._raise_for_status(response, "registry API", url)

        _retry.registry_request(once)

    def get_manifest(self, reference: Reference) -> FetchedManifest:
        """``GET /v2/<repository>/manifests/<tag or digest>``, accepting the four
        supported types (OCI manifest and index, Docker v2 manifest and list).

        The digest of the exact bytes is checked against ``Docker-Content-Digest``
        (when sent) and against ``reference.digest`` (when pulling by digest):
        :class:`DigestMismatchError` otherwise. Raises :class:`ManifestUnknownError`
        naming the reference for an unknown repository, tag or digest.
        """

        def once() -> FetchedManifest:
            path = f"/v2/{reference.repository}/manifests/{reference.identifier}"
            scope = f"repository:{reference.repository}:pull"
            with self._request(path, scope=scope, headers={"Accept": mt.MANIFEST_ACCEPT}) as resp:
                self._raise_for_status(resp, "manifest", str(reference))
                data = b""
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) > MANIFEST_MAX_BYTES:
                        raise RegistryError(
                            f"manifest of {reference} exceeds {MANIFEST_MAX_BYTES} bytes",
                            url=str(resp.request.url),
                            status=resp.status_code,
                        )
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
                header_digest = resp.headers.get("Docker-Content-Digest")
            if media_type in mt.SCHEMA1_TYPES:
                # Checked first: a signed schema 1 digest covers the payload only.
                raise UnsupportedMediaTypeError(
                    f"{reference} is a Docker schema 1 manifest ({media_type}), which is"
                    " not supported; push it again as OCI or Docker schema 2",
                    media_type=media_type,
                )
            actual = digest_of(data)
            for expected in (header_digest, reference.digest):
                if expected and expected != actual:
                    raise DigestMismatchError(
                        f"manifest of {reference}: expected {expected}, content hashes to {actual}",
                        digest=expected,
                        actual=actual,
                        size=len(data),
                    )
            return FetchedManifest(data=data, media_type=media_type, digest=actual)

        return _retry.registry_request(once)

    def fetch_blob(
        self, repository: str, descriptor: Descriptor, dest: BinaryIO, *, offset: int = 0
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

        Raises :class:`DigestMismatchError` as soon as more than
        ``descriptor.size`` bytes arrive, or when the server says the blob is
        shorter than the bytes held. The caller verifies size and digest of all
        that ``dest`` holds (see :meth:`Store.ingest`).
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
            with self._blob_response(path, f"repository:{repository}:pull", headers) as resp:
                url = str(resp.request.url)
                if resp.status_code == 416 and held:
                    self._check_complete(resp, descriptor, held, name)
                    return
                self._raise_for_blob_status(resp, name)
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
                with _map_httpx_errors(url):
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

    @contextlib.contextmanager
    def _blob_response(
        self, path: str, scope: str, headers: dict[str, str]
    ) -> Iterator[httpx.Response]:
        """GET ``path`` (streamed) for :meth:`fetch_blob`, following redirects here.

        Authenticates once on the registry's 401 as :meth:`_request` does. Each hop
        carries ``headers`` (``Range`` included); ``Authorization`` only while the
        URL has the registry's origin (scheme, host, port): httpx 0.28 would strip
        it too, but not on an ``http`` to ``https`` hop to the same host, and older
        versions not at all. A 401 from any other origin is an error, never
        answered with credentials.
        """
        start = httpx.URL(self.base_url + path)
        home = _origin(start)
        for attempt in range(2):
            url = start
            authorization = self._authorization(str(start), scope)
            for _hop in range(MAX_REDIRECTS + 1):
                sent = dict(headers)
                if authorization and _origin(url) == home:
                    sent["Authorization"] = authorization
                with _map_httpx_errors(str(url)):
                    request = self._client.build_request("GET", url, headers=sent)
                    response = self._client.send(request, stream=True, follow_redirects=False)
                location = response.headers.get("Location")
                if response.status_code not in _REDIRECT_STATUSES or not location:
                    break
                response.close()
                try:
                    url = url.join(location)
                except httpx.InvalidURL as exc:
                    raise RegistryError(
                        f"{url} redirected to an invalid URL {location!r}: {exc}",
                        url=str(url),
                        status=response.status_code,
                    ) from exc
            else:
                raise RegistryError(
                    f"more than {MAX_REDIRECTS} redirects for {start} (last to {url})",
                    url=str(url),
                    status=response.status_code,
                )
            try:
                if (
                    response.status_code == 401
                    and attempt == 0
                    and self._scheme != "basic"
                    and _origin(url) == home
                ):
                    challenge = response.headers.get("WWW-Authenticate", "")
                    self._authenticate(str(start), challenge, scope)
                    continue
                yield response
                return
            finally:
                response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_blob_status(self, response: httpx.Response, name: str) -> None:
        """Pass 200 and 206; raise for anything else. A registry's own 4xx raise as
        in :meth:`_raise_for_status`; other statuses (transient ones with their
        ``retry_after`` in seconds, any from a storage host) as :class:`RegistryError`."""
        status = response.status_code
        if status in (200, 206):
            return
        url = str(response.request.url)
        at_registry = _origin(response.url) == _origin(httpx.URL(self.base_url))
        with _map_httpx_errors(url):
            if at_registry and status >= 400 and status not in _retry.TRANSIENT_STATUSES:
                self._raise_for_status(response, "blob", name)
            response.read()
        detail = response.text[:500].strip()
        where = "" if at_registry else f" (storage that registry {self.host} redirected to)"
        raise RegistryError(
            f"HTTP {status} from {url}{where} for blob {name}" + (f": {detail}" if detail else ""),
            url=url,
            status=status,
            retry_after=_retry_after(response),
        )

    def _check_complete(
        self, response: httpx.Response, descriptor: Descriptor, held: int, name: str
    ) -> None:
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
            f"HTTP 416 from {url} for blob {name} from byte {held}"
            f" (Content-Range: {content_range!r})",
            url=url,
            status=416,
        )

    # -- push (distribution spec "Push") --------------------------------------

    def _send(
        self, method: str, url: str, repository: str, reference: str, **request: Any
    ) -> httpx.Response:
        """One request, read in full, to ``url`` (a ``/v2/...`` path or an absolute
        ``Location``) needing push access to ``repository`` (``reference`` names
        the target in errors), authenticated as GETs are (once more after a 401
        challenge). ``request``: ``headers``, ``params``, and ``content``: bytes,
        or a callable returning a fresh chunk iterator (called again for that
        second try). HTTP >= 400 raises as for GETs (404: :class:`ManifestUnknownError`)."""
        url = url if "://" in url else self.base_url + url
        if request.get("params"):  # merged: a Location keeps its own query (``_state``)
            url = str(httpx.URL(url).copy_merge_params(request.pop("params")))
        scope = f"repository:{repository}:pull,push"
        headers = dict(request.pop("headers", None) or {})
        content = request.pop("content", b"")
        what = "blob" if "/blobs/" in url else "manifest"
        for attempt in range(2):
            authorization = self._authorization(url, scope)
            if authorization:
                headers["Authorization"] = authorization
            body = content() if callable(content) else content
            with _map_httpx_errors(url):
                response = self._client.request(
                    method, url, headers=headers, content=body, **request
                )
            if response.status_code == 401 and attempt == 0 and self._scheme != "basic":
                self._authenticate(url, response.headers.get("WWW-Authenticate", ""), scope)
                continue
            self._raise_for_status(response, what, reference)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
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

    @staticmethod
    def _chunks(open_blob: Callable[[], BinaryIO]) -> Iterator[bytes]:
        with open_blob() as src:
            while chunk := src.read(CHUNK_BYTES):
                yield chunk

    def blob_exists(self, repository: str, digest: str) -> bool:
        """``HEAD /v2/<repository>/blobs/<digest>`` (spec "Checking if content exists
        in the registry"): whether the repository already has the blob."""

        def once() -> bool:
            try:
                path = f"/v2/{repository}/blobs/{digest}"
                self._send("HEAD", path, repository, f"{repository}@{digest}")
            except ManifestUnknownError:
                return False
            return True

        return _retry.registry_request(once)

    def upload_blob(
        self,
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
        response = self._send(
            "POST", f"/v2/{repository}/blobs/uploads/", repository, ref, params=mount
        )
        if response.status_code == 201 and mount_from:
            self._check_pushed(response, 201, digest, what)
            return "mounted"
        url = self._check_pushed(response, 202, digest, what)
        headers = {"Content-Type": "application/octet-stream"}
        content: bytes | Callable[[], Iterator[bytes]] = b""
        if chunk_bytes is None:
            content = lambda: self._chunks(open_blob)  # noqa: E731
            headers["Content-Length"] = str(descriptor.size)
        else:
            with open_blob() as src:
                offset = 0
                while chunk := src.read(chunk_bytes):
                    last = offset + len(chunk) - 1
                    ranged = {**headers, "Content-Range": f"{offset}-{last}"}
                    response = self._send(
                        "PATCH", url, repository, ref, headers=ranged, content=chunk
                    )
                    url, offset = self._check_pushed(response, 202, digest, what), last + 1
        if not url:
            raise RegistryError(
                f"{what}: no Location from {response.request.url}",
                url=str(response.request.url),
                status=response.status_code,
            )
        params = {"digest": digest}
        response = self._send(
            "PUT", url, repository, ref, headers=headers, content=content, params=params
        )
        self._check_pushed(response, 201, digest, what)
        return "uploaded"

    def put_manifest(self, reference: Reference, data: bytes, media_type: str) -> str:
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
            response = self._send(
                "PUT", path, reference.repository, str(reference), headers=headers, content=data
            )
            self._check_pushed(response, 201, digest, f"push of manifest {reference}")

        _retry.registry_request(once)
        return digest
