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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

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

    def fetch_blob(self, repository: str, descriptor: Descriptor, dest: BinaryIO) -> int:
        """Stream ``GET /v2/<repository>/blobs/<digest>`` into ``dest``; return bytes written.

        Stops with :class:`DigestMismatchError` as soon as more than
        ``descriptor.size`` bytes arrive. The caller verifies size and digest
        of what was written (see :meth:`Store.ingest`). Not retried here: a
        retry needs a fresh ``dest``.
        """
        path = f"/v2/{repository}/blobs/{descriptor.digest}"
        written = 0
        with self._request(path, scope=f"repository:{repository}:pull") as resp:
            self._raise_for_status(resp, "blob", f"{repository}@{descriptor.digest}")
            with _map_httpx_errors(str(resp.request.url)):
                for chunk in resp.iter_bytes(CHUNK_BYTES):
                    written += len(chunk)
                    if written > descriptor.size:
                        raise DigestMismatchError(
                            f"blob {descriptor.digest} of {repository} is larger than its"
                            f" descriptor's {descriptor.size} bytes",
                            digest=descriptor.digest,
                            actual=None,
                            size=written,
                        )
                    dest.write(chunk)
        return written
