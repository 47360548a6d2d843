"""The anonymous Bearer token flow against the real registry in token-auth mode.

A :class:`TokenServer` (ES256 JWTs with an ``x5c`` header) is the registry's
``auth.token`` issuer; skopeo pushes through it with Basic credentials, and
our client pulls with none. The wire is observed with a recording httpx
transport around the real one (nothing is mocked).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.exceptions import AuthenticationError, RegistryUnavailableError
from pytest_containers.image.pull import pull
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store

pytest.importorskip("cryptography", reason="the token server signs with cryptography")
from pytest_containers.plugins.token_server import TokenServer  # noqa: E402

USER, PASSWORD = "pusher", "s3cret"
REPOSITORY = "auth/busybox"


@dataclass(frozen=True)
class Exchange:
    method: str
    url: str
    authorization: str | None
    status: int
    challenge: str | None


class Recorder(httpx.HTTPTransport):
    """The real httpx transport, noting each request and its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.exchanges.append(
            Exchange(
                request.method,
                str(request.url),
                request.headers.get("Authorization"),
                response.status_code,
                response.headers.get("WWW-Authenticate"),
            )
        )
        return response


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("Bearer", {...})`` (RFC 7235, quoted values)."""
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def skopeo_digest(ref: str) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["Digest"]


def assert_store_empty(store: Store) -> None:
    """No name, no blob and no temp file entered the store."""
    if not store.root.exists():
        return
    index = store.layout / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    assert [p for p in (store.layout / "blobs").rglob("*") if p.is_file()] == []
    assert list((store.root / "tmp").glob("*")) == []


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    """Module scope: a token server granting anonymous pull and ``pusher`` push."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    with TokenServer(users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def auth_registry(token_server: TokenServer) -> Iterator[RegistryServer]:
    with RegistryServer(token_server=token_server) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(auth_registry: RegistryServer, token_server: TokenServer, busybox_layout: Path) -> str:
    """Module scope: busybox pushed by skopeo with Basic credentials through the token server."""
    return auth_registry.push_oci(
        busybox_layout, "latest", REPOSITORY, "1", creds=f"{USER}:{PASSWORD}"
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_push_needs_credentials(
    auth_registry: RegistryServer, token_server: TokenServer, pushed: str, busybox_layout: Path
) -> None:
    pushes = [r for r in token_server.requests if r.user == USER]
    assert pushes and all(r.status == 200 for r in pushes)
    assert {"type": "repository", "name": REPOSITORY, "actions": ["pull", "push"]} in [
        a for r in pushes for a in r.access
    ]
    with pytest.raises(subprocess.CalledProcessError) as info:  # anonymous: pull only
        auth_registry.push_oci(busybox_layout, "latest", REPOSITORY, "anonymous")
    assert "denied" in info.value.stderr or "unauthorized" in info.value.stderr.lower()


def test_anonymous_pull_follows_the_bearer_challenge(
    auth_registry: RegistryServer, token_server: TokenServer, pushed: str, store: Store
) -> None:
    expected_digest = skopeo_digest(pushed)  # skopeo, anonymously, as the oracle
    seen = len(token_server.requests)
    recorder = Recorder()
    with RegistryClient(auth_registry.host, transport=recorder) as client:
        image = pull(pushed, store, client=client)
        first = list(recorder.exchanges)
        tokens_first = token_server.requests[seen:]
        again = pull(pushed, store, policy="always", client=client)
        second = recorder.exchanges[len(first) :]
        tokens_second = token_server.requests[seen + len(tokens_first) :]

    assert image.digest == again.digest == expected_digest
    assert store.resolve(Reference.parse(pushed)) == image

    # the registry challenged the unauthenticated manifest request
    repo_calls = [e for e in first if f"/v2/{REPOSITORY}/" in e.url]
    challenged = repo_calls[0]
    assert "/manifests/1" in challenged.url
    assert challenged.authorization is None and challenged.status == 401
    scheme, params = parse_challenge(challenged.challenge or "")
    assert scheme == "Bearer"
    assert params["realm"] == token_server.realm
    assert params["service"] == token_server.service
    assert params["scope"] == f"repository:{REPOSITORY}:pull"

    # our client asked the realm anonymously, for that service and scope
    assert len(tokens_first) == 1
    asked = tokens_first[0]
    assert asked.path == "/token" and asked.user is None and asked.status == 200
    assert asked.query["service"] == [token_server.service]
    assert asked.scopes == [f"repository:{REPOSITORY}:pull"]
    realm_calls = [e for e in first if e.url.startswith(token_server.realm)]
    assert len(realm_calls) == 1 and realm_calls[0].authorization is None

    # then retried with the token, and the blobs reused it without a new challenge
    after = repo_calls[1:]
    assert after[0].url == challenged.url and after[0].status == 200
    assert {e.status for e in after} == {200}
    assert len({e.authorization for e in after}) == 1
    bearer = after[0].authorization or ""
    assert bearer.startswith("Bearer ")
    claims = jwt_claims(bearer.removeprefix("Bearer "))
    assert claims["aud"] == token_server.service and claims["sub"] == ""
    assert claims["access"] == [{"type": "repository", "name": REPOSITORY, "actions": ["pull"]}]
    assert any("/blobs/" in e.url for e in after)

    # a second pull on the same client: the token is reused, nothing is challenged
    assert tokens_second == []
    assert [e for e in second if f"/v2/{REPOSITORY}/" in e.url and e.status == 401] == []
    assert all(e.authorization == bearer for e in second if f"/v2/{REPOSITORY}/" in e.url)


def test_expired_token_is_replaced(
    auth_registry: RegistryServer, token_server: TokenServer, pushed: str, store: Store
) -> None:
    """A cached token the registry no longer accepts is exchanged for a new one."""
    recorder = Recorder()
    with RegistryClient(auth_registry.host, transport=recorder) as client:
        token_server.ttl = -120.0  # beyond the registry's 60 s leeway: expired on arrival
        try:
            with pytest.raises(AuthenticationError) as info:
                pull(pushed, store, client=client)
        finally:
            token_server.ttl = 300.0
        assert "error=invalid_token" in str(info.value)
        stale = recorder.exchanges[-1].authorization
        seen = len(token_server.requests)
        image = pull(pushed, store, policy="always", client=client)
        renewed = token_server.requests[seen:]
    assert [r.status for r in renewed] == [200]
    assert image.digest == skopeo_digest(pushed)
    manifest_calls = [e for e in recorder.exchanges if "/manifests/" in e.url][2:]
    assert [e.status for e in manifest_calls] == [401, 200]
    assert manifest_calls[0].authorization == stale
    assert 'error="invalid_token"' in (manifest_calls[0].challenge or "")
    assert manifest_calls[1].authorization not in (None, stale)


def test_token_without_pull_access_is_denied(busybox_layout: Path, store: Store) -> None:
    with (
        TokenServer(users={USER: PASSWORD}, anonymous_actions=()) as tokens,
        RegistryServer(token_server=tokens) as server,
    ):
        ref = server.push_oci(
            busybox_layout, "latest", "private/busybox", "1", creds=f"{USER}:{PASSWORD}"
        )
        with pytest.raises(AuthenticationError) as info:
            pull(ref, store)
    assert info.value.status == 401
    assert ref in str(info.value)
    assert "error=insufficient_scope" in str(info.value)
    assert "repository:private/busybox:pull" in str(info.value)
    assert [r.access for r in tokens.requests if r.user is None] == [
        ({"type": "repository", "name": "private/busybox", "actions": []},)
    ]
    assert_store_empty(store)


@dataclass(frozen=True)
class Authority:
    """An ``auth.token`` section assembled by hand (see ``TokenAuthority``)."""

    realm: str
    service: str
    issuer: str
    root_cert_path: Path


def test_registry_rejects_a_token_it_cannot_verify(busybox_layout: Path, store: Store) -> None:
    """Negative control: the registry really checks the ES256 signature against its bundle."""
    with TokenServer() as tokens, TokenServer() as stranger:
        trusting_stranger = Authority(
            tokens.realm, tokens.service, tokens.issuer, stranger.root_cert_path
        )
        with RegistryServer(token_server=trusting_stranger) as server:
            with pytest.raises(AuthenticationError) as info:
                pull(f"{server.host}/{REPOSITORY}:1", store)
            log = (server.workdir / "registry.log").read_text(errors="replace")
    assert info.value.status == 401
    assert "error=invalid_token" in str(info.value) and tokens.realm in str(info.value)
    assert "invalid token" in log
    assert [r.status for r in tokens.requests] == [200]  # one token, then no second try
    assert_store_empty(store)


def test_token_server_refuses(store: Store) -> None:
    with (
        TokenServer(refuse_status=403) as tokens,
        RegistryServer(token_server=tokens) as server,
    ):
        with pytest.raises(AuthenticationError) as info:
            pull(f"{server.host}/{REPOSITORY}:1", store)
    assert info.value.status == 403
    assert info.value.url == tokens.realm
    assert tokens.realm in str(info.value) and "403" in str(info.value)
    assert f"repository:{REPOSITORY}:pull" in str(info.value)
    assert [r.status for r in tokens.requests] == [403]
    assert_store_empty(store)


def test_token_realm_unreachable(store: Store) -> None:
    tokens = TokenServer().start()
    try:
        with RegistryServer(token_server=tokens) as server:
            tokens.stop()  # the registry keeps announcing its realm; nothing listens there
            with pytest.raises(RegistryUnavailableError) as info:
                pull(f"{server.host}/{REPOSITORY}:1", store)
    finally:
        tokens.stop()
    assert info.value.url == tokens.realm
    assert f"token server unavailable at {tokens.realm}" in str(info.value)
    assert tokens.requests == []
    assert_store_empty(store)


def test_token_server_leaves_nothing_running() -> None:
    import threading

    before = set(threading.enumerate())
    server = TokenServer().start()
    with httpx.Client() as http:
        answer = http.get(server.realm, params={"service": server.service, "scope": "x"})
        assert answer.status_code == 400  # malformed scope
        answer = http.get(server.realm, params={"service": "other"})
        assert answer.status_code == 400
        answer = http.get(server.realm, auth=(USER, "wrong"), params={"service": server.service})
        assert answer.status_code == 401
    workdir, port = server.workdir, server.port
    server.stop()
    server.stop()
    assert set(threading.enumerate()) <= before
    assert not workdir.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/token")
