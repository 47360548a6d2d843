"""One registry host over HTTP: the httpx client, authentication, and the
one place that answers a 401 (OCI distribution spec v1.0; Docker's token auth).

httpx is imported by the registry client modules only (this one,
:mod:`~pytest_containers.image.registry`, :mod:`~pytest_containers.image.blobs`,
:mod:`~pytest_containers.image.upload`), and its errors are mapped to ours
here, by :func:`map_httpx_errors` (like httpx's own ``map_httpcore_exceptions``):

- connect errors, timeouts, broken connections -> :class:`RegistryUnavailableError`
  (a timeout names the host, the request and the timeout in seconds; a TLS
  failure with a host that is not loopback says why HTTPS was used and what to do)
- 401/403 after the token flow, or a token request refused -> :class:`AuthenticationError`
  (naming the realm when the token server refused)
- an unreachable token realm -> :class:`RegistryUnavailableError` naming the realm
- 404 -> :class:`ManifestUnknownError`
- other 4xx/5xx -> :class:`RegistryError` (429 and 5xx are retried by
  :func:`pytest_containers._retry.registry_request`)

Authentication (challenges parsed by :func:`pytest_containers.image.auth.parse_challenges`,
credentials found by :class:`~pytest_containers.image.auth.Keychain` when first challenged),
done by :meth:`RegistrySession.exchange` for every request that needs it:

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
loopback: ``localhost``, ``127.*``, ``[::1]``, names in any case), ``https``
otherwise. There is no setting for plain HTTP to other hosts (in the API, a
:class:`~pytest_containers.image.registry.RegistryClient` made with
``scheme="http"`` can be given to :func:`~pytest_containers.image.pull.pull`);
for a certificate of one's own CA, ``SSL_CERT_FILE`` names the CA file (httpx
reads it).
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Literal

import httpx

from pytest_containers.exceptions import (
    AuthenticationError,
    ManifestUnknownError,
    RegistryError,
    RegistryUnavailableError,
)
from pytest_containers.image.auth import (
    Credentials,
    Keychain,
    Lookup,
    TokenCache,
    challenge_error,
    find_challenge,
    parse_challenges,
)
from pytest_containers.image.reference import is_loopback_host


def default_scheme(host: str) -> Literal["http", "https"]:
    """``http`` for ``localhost``, ``127.*`` and ``[::1]`` (with any port; host names
    in any case), else ``https``."""
    return "http" if is_loopback_host(host) else "https"


_TIMEOUT_KINDS = {
    httpx.ConnectTimeout: ("connect", "no connection within"),
    httpx.ReadTimeout: ("read", "no data received for"),
    httpx.WriteTimeout: ("write", "could not send for"),
    httpx.PoolTimeout: ("pool", "no free connection within"),
}


def _timeout_message(exc: httpx.TimeoutException, url: str) -> str:
    """``GET <url> timed out: no data received for 30 s (read timeout)``."""
    method, seconds = "GET", None
    key, phrase = next(
        (v for k, v in _TIMEOUT_KINDS.items() if isinstance(exc, k)), ("", "timed out after")
    )
    with contextlib.suppress(RuntimeError):  # no request attached
        method = exc.request.method
        seconds = (exc.request.extensions.get("timeout") or {}).get(key)
    limit = f" {seconds:g} s" if isinstance(seconds, (int, float)) else " the timeout"
    kind = f" ({key} timeout)" if key else ""
    return f"{method} {url} timed out: {phrase}{limit}{kind}"


def tls_hint(exc: BaseException, url: str) -> str:
    """For a TLS failure with a host that is not loopback, why HTTPS was used and
    what to do (``""`` for other errors)."""
    parsed = httpx.URL(url)
    chain: BaseException | None = exc
    is_tls = False
    while chain is not None and not is_tls:
        is_tls = isinstance(chain, ssl.SSLError) or "[SSL" in str(chain)
        chain = chain.__cause__ or chain.__context__
    if not is_tls or parsed.scheme != "https" or is_loopback_host(parsed.host):
        return ""
    return (
        f"; {parsed.host} was spoken to over HTTPS because only loopback hosts (localhost,"
        " 127.*, [::1]) get plain HTTP. For a registry that serves plain HTTP there is no"
        " setting: reach it through a loopback address (e.g. ssh -L 5000:HOST:5000, then"
        " 127.0.0.1:5000/REPO); for a certificate of your own CA, set SSL_CERT_FILE to"
        " that CA's PEM file"
    )


@contextlib.contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    """Raise httpx's errors from the block as ours (see the module docstring), naming
    ``url`` (and so the host); a timeout also names the request method and the
    timeout in seconds."""
    try:
        yield
    except httpx.TimeoutException as exc:
        host = httpx.URL(url).netloc.decode()
        raise RegistryUnavailableError(
            f"registry {host} unavailable: {_timeout_message(exc, url)}", url=url
        ) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise RegistryUnavailableError(
            f"registry unavailable at {url}: {exc or type(exc).__name__}{tls_hint(exc, url)}",
            url=url,
        ) from exc
    except httpx.HTTPError as exc:
        raise RegistryError(f"request to {url} failed: {exc}", url=url, status=None) from exc


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the default port made explicit (RFC 6454)."""
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds asked by ``Retry-After`` (RFC 9110 section 10.2.3: delay-seconds or an
    HTTP-date), ``None`` when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


class RegistrySession:
    """The HTTP side of one registry host (``host[:port]``): an httpx client
    (:attr:`http`), the credentials and tokens it authenticates with, and what the
    registry asked for; arguments as for
    :class:`~pytest_containers.image.registry.RegistryClient`. Thread-safe as
    httpx clients are (a race between two first challenges costs one more token
    request).
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
        self.http = httpx.Client(
            timeout=timeout, transport=transport, headers={"User-Agent": "pytest-containers"}
        )
        self._keychain = keychain or Keychain()
        given = Lookup(credentials, ("credentials given to the client",))
        self._lookup = given if credentials else None
        self._tokens = tokens or TokenCache()
        #: what the registry asked for: None (nothing yet), "basic", or ("bearer", realm, service)
        self._scheme: str | tuple[str, str, str] | None = None

    def close(self) -> None:
        self.http.close()

    def exchange(
        self,
        url: str,
        scope: str | None,
        send: Callable[[str | None], httpx.Response],
        *,
        answerable: Callable[[httpx.Response], bool] | None = None,
    ) -> httpx.Response:
        """Send a request, and once more after answering the registry's 401.

        ``send(authorization)`` sends the request to ``url`` (or starting there)
        with that ``Authorization`` value (``None``: send none) and returns the
        response, streamed or read. ``scope`` (``repository:<name>:pull``...) is
        what a Bearer token is asked for. A 401 is answered once (see the module
        docstring: a token fetched, or Basic credentials found), never when Basic
        credentials were already sent, and only when ``answerable(response)``
        (default: always), e.g. only for the registry's own origin; the answered
        401 is closed. Returns the last response, open: the caller closes it.
        Raises :class:`AuthenticationError` when the challenge cannot be answered,
        and what ``send`` raises.
        """
        response = send(self._authorization(url, scope))
        if (
            response.status_code == 401
            and self._scheme != "basic"
            and (answerable is None or answerable(response))
        ):
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._authenticate(url, challenge, scope)
            response = send(self._authorization(url, scope))
        return response

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
                response = self.http.post(realm, data=form)
            elif credentials is not None:
                headers = {"Authorization": credentials.basic_authorization}
                query["account"] = credentials.username
                response = self.http.get(realm, params=query, headers=headers)
            else:
                response = self.http.get(realm, params=query)
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

    def raise_for_status(self, response: httpx.Response, what: str, reference: str) -> None:
        """Pass a status below 400; else read the body and raise: 404
        :class:`ManifestUnknownError` naming ``what`` and ``reference``; 401 and 403
        :class:`AuthenticationError` saying which credentials were tried (and where
        they were looked for); others :class:`RegistryError`."""
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
