"""A distribution-spec registry client (OCI distribution spec v1.0, "Pull" and "Push").

:class:`RegistryClient` is the API of one registry host; its parts:

- :mod:`~pytest_containers.image.session`: the HTTP client, authentication
  (Basic, Bearer tokens), the one place that answers a 401, and the mapping of
  httpx errors to ours (read its docstring for both);
- this module: ``ping`` and manifests;
- :mod:`~pytest_containers.image.blobs`: blob reads (redirects, ``Range``
  resume, 416);
- :mod:`~pytest_containers.image.upload`: blob and manifest writes.

Errors: :class:`RegistryUnavailableError` (down, refused, timed out),
:class:`AuthenticationError` (401/403 after the token flow),
:class:`ManifestUnknownError` (404), :class:`RegistryError` (other 4xx/5xx; 429
and 5xx are retried by :func:`pytest_containers._retry.registry_request`).

Scheme is plain ``http`` for loopback hosts (Docker's default insecure
loopback), ``https`` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import httpx

from pytest_containers import _retry
from pytest_containers.exceptions import (
    DigestMismatchError,
    RegistryError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import blobs, upload
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.auth import Credentials, Keychain, TokenCache
from pytest_containers.image.blobs import MAX_REDIRECTS
from pytest_containers.image.digest import digest_of
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference
from pytest_containers.image.session import RegistrySession, default_scheme, map_httpx_errors
from pytest_containers.image.upload import CHUNK_BYTES

__all__ = [
    "CHUNK_BYTES",
    "MANIFEST_MAX_BYTES",
    "MAX_REDIRECTS",
    "FetchedManifest",
    "RegistryClient",
    "default_scheme",
]

#: Largest manifest accepted, in bytes (distribution's own limit is 4 MiB).
MANIFEST_MAX_BYTES = 4 * 1024 * 1024


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


class RegistryClient:
    """A client for one registry host (``host[:port]``, the API host, not ``docker.io``).

    Use as a context manager or call :meth:`close`. ``timeout`` is in seconds
    per network operation. ``credentials``: use these instead of searching
    ``keychain`` (default: a :class:`Keychain` of the process environment),
    which is read once, when the registry first asks for authentication.
    ``tokens``: the Bearer token cache (default: one of its own; share one to
    share tokens between clients). Threads may share a client.
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
        self._session = RegistrySession(
            host,
            scheme=scheme,
            timeout=timeout,
            transport=transport,
            credentials=credentials,
            keychain=keychain,
            tokens=tokens,
        )
        self.host = host
        self.base_url = self._session.base_url

    @classmethod
    def for_reference(cls, reference: Reference, **kwargs: object) -> RegistryClient:
        """A client for the API host of ``reference`` (``registry-1.docker.io`` for Docker Hub)."""
        return cls(reference.api_host, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _request(
        self, path: str, *, scope: str | None, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """GET ``path`` (streamed, redirects followed by httpx), authenticated by
        :meth:`RegistrySession.exchange`; the response is closed on exit."""
        url = self.base_url + path
        client = self._session.http

        def send(authorization: str | None) -> httpx.Response:
            sent = {**(headers or {}), "Authorization": authorization} if authorization else headers
            with map_httpx_errors(url):
                request = client.build_request("GET", url, headers=sent)
                return client.send(request, stream=True, follow_redirects=True)

        with contextlib.closing(self._session.exchange(url, scope, send)) as response:
            yield response

    # -- pull -----------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/`` (spec "API version check"); 200 or 401 means a registry is there.

        Raises :class:`RegistryUnavailableError` naming the URL when it is not.
        """

        def once() -> None:
            url = f"{self.base_url}/v2/"
            with map_httpx_errors(url):
                response = self._session.http.get(url)
            if response.status_code not in (200, 401):
                self._session.raise_for_status(response, "registry API", url)

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
                self._session.raise_for_status(resp, "manifest", str(reference))
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
        """Stream ``GET /v2/<repository>/blobs/<digest>`` into ``dest`` from byte
        ``offset`` (``dest`` holds those already), following redirects (the
        registry's ``Authorization`` to its own origin only) and resuming with
        ``Range`` after transient failures; return the bytes of the blob ``dest``
        holds in the end. Raises :class:`DigestMismatchError` when more than
        ``descriptor.size`` bytes arrive. See :func:`pytest_containers.image.blobs.fetch_blob`.
        """
        return blobs.fetch_blob(self._session, repository, descriptor, dest, offset=offset)

    def fetch_url(self, url: str, dest: BinaryIO) -> int:
        """``GET url`` (a descriptor's ``urls`` entry) into ``dest`` without the
        registry's credentials; see :func:`pytest_containers.image.blobs.fetch_url`."""
        return blobs.fetch_url(self._session, url, dest)

    # -- push -----------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """``HEAD /v2/<repository>/blobs/<digest>``: whether the repository has the
        blob; see :func:`pytest_containers.image.upload.blob_exists`."""
        return upload.blob_exists(self._session, repository, digest)

    def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        open_blob: Callable[[], BinaryIO],
        *,
        chunk_bytes: int | None = None,
        mount_from: str | None = None,
    ) -> Literal["mounted", "uploaded"]:
        """Push one blob (``open_blob()`` returns it as a fresh binary file),
        mounted from the repository ``mount_from`` when the registry can, else
        uploaded in one ``PUT`` or in ``PATCH`` chunks of ``chunk_bytes`` bytes;
        return which. See :func:`pytest_containers.image.upload.upload_blob`."""
        return upload.upload_blob(
            self._session,
            repository,
            descriptor,
            open_blob,
            chunk_bytes=chunk_bytes,
            mount_from=mount_from,
        )

    def put_manifest(self, reference: Reference, data: bytes, media_type: str) -> str:
        """``PUT /v2/<repository>/manifests/<tag or digest>``; return the digest of
        ``data`` (``sha256:<hex>``). See :func:`pytest_containers.image.upload.put_manifest`."""
        return upload.put_manifest(self._session, reference, data, media_type)
