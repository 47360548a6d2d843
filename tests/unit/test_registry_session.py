"""The one 401 answer (:meth:`RegistrySession.exchange`) behind every kind of
registry request: manifest reads, blob reads (redirects followed by us) and
pushes, against an in-memory registry (``httpx.MockTransport``)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import httpx
import pytest

from pytest_containers.exceptions import AuthenticationError, RegistryError
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.auth import Credentials
from pytest_containers.image.digest import digest_of
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient

HOST = "127.0.0.1:5999"
CREDENTIALS = Credentials("user", "pass")
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode()
BLOB = b"blob bytes\n"
BLOB_DIGEST = digest_of(BLOB)


class Streamed(httpx.SyncByteStream):
    """A body that is streamed, as from the network (``iter_raw`` reads it)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield BLOB


class Registry:
    """Answers 401 (Basic) to requests without the right credentials; records
    ``(method, url, Authorization)`` of every request."""

    def __init__(self, *, accept: bool = True, storage_challenges: bool = False) -> None:
        self.accept = accept
        self.storage_challenges = storage_challenges
        self.seen: list[tuple[str, str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        authorization = request.headers.get("Authorization")
        self.seen.append((request.method, str(request.url), authorization))
        if request.url.host == "storage.example":
            if self.storage_challenges:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="s"'})
            return httpx.Response(200, stream=Streamed())
        if not (self.accept and authorization == CREDENTIALS.basic_authorization):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if "/manifests/" in request.url.path and request.method == "GET":
            headers = {"Content-Type": mt.OCI_MANIFEST}
            return httpx.Response(200, content=MANIFEST, headers=headers)
        if "/manifests/" in request.url.path:
            return httpx.Response(201, headers={"Docker-Content-Digest": digest_of(MANIFEST)})
        location = f"https://storage.example/data/{BLOB_DIGEST[7:]}"
        return httpx.Response(307, headers={"Location": location})


def client(registry: Registry) -> RegistryClient:
    return RegistryClient(HOST, transport=httpx.MockTransport(registry), credentials=CREDENTIALS)


def get_manifest(c: RegistryClient) -> object:
    return c.get_manifest(Reference.parse(f"{HOST}/team/app:1"))


def fetch_blob(c: RegistryClient) -> object:
    out = io.BytesIO()
    c.fetch_blob("team/app", Descriptor("application/octet-stream", BLOB_DIGEST, len(BLOB)), out)
    return out.getvalue()


def put_manifest(c: RegistryClient) -> object:
    return c.put_manifest(Reference.parse(f"{HOST}/team/app:1"), MANIFEST, mt.OCI_MANIFEST)


CALLS: dict[str, Callable[[RegistryClient], object]] = {
    "manifest": get_manifest,
    "blob": fetch_blob,
    "push": put_manifest,
}


@pytest.mark.parametrize("call", CALLS)
def test_a_401_is_answered_once_then_credentials_go_first(call: str) -> None:
    registry = Registry()
    with client(registry) as c:
        CALLS[call](c)
        first = len(registry.seen)
        CALLS[call](c)
    at_registry = [s for s in registry.seen if HOST in s[1]]
    assert [a for _, _, a in at_registry[:2]] == [None, CREDENTIALS.basic_authorization]
    assert all(a == CREDENTIALS.basic_authorization for _, _, a in at_registry[2:])
    assert len(registry.seen) == 2 * first - 1  # the second call: no 401 first


@pytest.mark.parametrize("call", CALLS)
def test_rejected_credentials_are_not_retried_again(call: str) -> None:
    registry = Registry(accept=False)
    with client(registry) as c, pytest.raises(AuthenticationError) as info:
        CALLS[call](c)
    assert "rejected the credentials" in str(info.value)
    assert [a for _, _, a in registry.seen] == [None, CREDENTIALS.basic_authorization]


def test_a_storage_401_is_not_answered_and_gets_no_credentials() -> None:
    registry = Registry(storage_challenges=True)
    with client(registry) as c, pytest.raises(RegistryError, match="storage.example"):
        fetch_blob(c)
    storage = [a for _, url, a in registry.seen if "storage.example" in url]
    assert storage and all(a is None for a in storage)
    assert [a for _, url, a in registry.seen if HOST in url] == [
        None,
        CREDENTIALS.basic_authorization,
    ]
