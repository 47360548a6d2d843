"""Pulling with credentials from the real registry: htpasswd (Basic) and token mode.

Credentials come the ways users keep them: a Docker ``config.json``
(``auths``/``auth`` base64) in ``$DOCKER_CONFIG``, podman's ``$REGISTRY_AUTH_FILE``,
and a ``docker-credential-ptctest`` helper on ``$PATH`` (``credHelpers`` and
``credsStore``). skopeo pushes with ``--dest-creds`` and is the digest oracle.
The htpasswd file is made with the ``bcrypt`` package (distribution reads bcrypt only).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.exceptions import AuthenticationError
from pytest_containers.image.auth import TokenCache
from pytest_containers.image.pull import pull
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store

bcrypt = pytest.importorskip("bcrypt", reason="the htpasswd file needs bcrypt hashes")

USER, PASSWORD = "pusher", "s3cret:with colon"
REPOSITORY = "basic/busybox"


class Recorder(httpx.HTTPTransport):
    """The real transport, noting (url, Authorization, status, WWW-Authenticate)."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[str, str | None, int, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.exchanges.append(
            (
                str(request.url),
                request.headers.get("Authorization"),
                response.status_code,
                response.headers.get("WWW-Authenticate"),
            )
        )
        return response


def skopeo_digest(ref: str, creds: str) -> str:
    argv = ["skopeo", "inspect", "--tls-verify=false", "--creds", creds, f"docker://{ref}"]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)[
        "Digest"
    ]


def config(host: str, user: str = USER, password: str = PASSWORD) -> dict:
    """A Docker ``config.json`` with an ``auths`` entry (``auth`` = base64 user:password)."""
    return {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


def store_is_empty(store: Store) -> bool:
    blobs = store.layout / "blobs"
    return not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Module scope: the registry in htpasswd mode with one user."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    htpasswd = tmp_path_factory.mktemp("htpasswd") / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    with RegistryServer(htpasswd=htpasswd) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(basic_registry: RegistryServer, busybox_layout: Path) -> str:
    return basic_registry.push_oci(
        busybox_layout, "latest", REPOSITORY, "1", creds=f"{USER}:{PASSWORD}"
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$HOME``; no auth file variables; ``tmp_path/bin`` first on ``$PATH``."""
    (tmp_path / "home").mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "home"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def test_push_and_anonymous_pull_need_credentials(
    basic_registry: RegistryServer, pushed: str, busybox_layout: Path, home: Path, store: Store
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as push:
        basic_registry.push_oci(busybox_layout, "latest", REPOSITORY, "anonymous")
    assert "unauthorized" in push.value.stderr.lower()
    with pytest.raises(AuthenticationError) as info:
        pull(pushed, store)
    message = str(info.value)
    assert f"registry {basic_registry.host} requires Basic authentication" in message
    assert "no credentials were found" in message
    assert f"{home / '.docker/config.json'} (no such file)" in message
    assert f"{home / '.config/containers/auth.json'} (no such file)" in message
    assert info.value.status == 401
    assert store_is_empty(store)


def test_pull_with_docker_config(
    basic_registry: RegistryServer,
    pushed: str,
    home: Path,
    tmp_path: Path,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_json(tmp_path / "dc/config.json", config(basic_registry.host))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    recorder = Recorder()
    with RegistryClient(basic_registry.host, transport=recorder) as client:
        image = pull(pushed, store, client=client)
    assert image.digest == skopeo_digest(pushed, f"{USER}:{PASSWORD}")
    repo_calls = [e for e in recorder.exchanges if f"/v2/{REPOSITORY}/" in e[0]]
    url, authorization, status, challenge = repo_calls[0]
    assert "/manifests/1" in url and authorization is None and status == 401
    assert challenge == 'Basic realm="ptc-registry"'
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    # retried with the credentials, then sent up front: no second challenge
    assert [(e[1], e[2]) for e in repo_calls[1:]] == [(basic, 200)] * (len(repo_calls) - 1)
    assert any("/blobs/" in e[0] for e in repo_calls)


def test_registry_auth_file_comes_before_docker_config(
    basic_registry: RegistryServer,
    pushed: str,
    home: Path,
    tmp_path: Path,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_json(home / ".docker/config.json", config(basic_registry.host, password="stale"))
    auth_file = write_json(tmp_path / "auth.json", config(f"https://{basic_registry.host}"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    image = pull(pushed, store)
    assert image.digest == skopeo_digest(pushed, f"{USER}:{PASSWORD}")


HELPER = f"""#!{sys.executable}
import json, sys
server = sys.stdin.read()
with open(sys.argv[0] + ".log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
if server == HOST:
    print(json.dumps({{"ServerURL": server, "Username": {USER!r}, "Secret": {PASSWORD!r}}}))
else:
    print("credentials not found in native keychain")
    sys.exit(1)
"""


@pytest.mark.parametrize("how", ["credHelpers", "credsStore"])
def test_pull_with_credential_helper(
    basic_registry: RegistryServer, pushed: str, home: Path, tmp_path: Path, store: Store, how: str
) -> None:
    helper = tmp_path / "bin/docker-credential-ptctest"
    helper.write_text(HELPER.replace("HOST", repr(basic_registry.host)))
    helper.chmod(0o755)
    if how == "credHelpers":
        content: dict = {"credHelpers": {basic_registry.host: "ptctest"}}
    else:
        content = {"auths": {basic_registry.host: {}}, "credsStore": "ptctest"}
    write_json(home / ".docker/config.json", content)
    image = pull(pushed, store)
    assert image.digest == skopeo_digest(pushed, f"{USER}:{PASSWORD}")
    assert Path(f"{helper}.log").read_text() == f"get {basic_registry.host}\n"


def test_wrong_password_names_the_registry(
    basic_registry: RegistryServer, pushed: str, home: Path, store: Store
) -> None:
    path = write_json(home / ".docker/config.json", config(basic_registry.host, password="bad"))
    with pytest.raises(AuthenticationError) as info:
        pull(pushed, store)
    message = str(info.value)
    assert f"registry {basic_registry.host} rejected the credentials {USER!r}" in message
    assert str(path) in message and "bad" not in message.replace(str(path), "")
    assert info.value.status == 401
    assert store_is_empty(store)


# -- token mode with credentials ------------------------------------------------

pytest.importorskip("cryptography", reason="the token server signs with cryptography")
from pytest_containers.plugins.token_server import TokenServer  # noqa: E402


@pytest.fixture(scope="module")
def private(busybox_layout: Path) -> Iterator[tuple[TokenServer, RegistryServer, str]]:
    """Module scope: a token server with one user (pull and push) and no anonymous
    rights, its registry, and busybox pushed there as that user."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    with (
        TokenServer(
            users={USER: PASSWORD}, anonymous_actions=(), refresh_tokens={"refresh-1": USER}
        ) as tokens,
        RegistryServer(token_server=tokens) as server,
    ):
        ref = server.push_oci(
            busybox_layout, "latest", "private/app", "1", creds=f"{USER}:{PASSWORD}"
        )
        yield tokens, server, ref


def test_token_mode_with_credentials(
    private: tuple[TokenServer, RegistryServer, str], home: Path, store: Store
) -> None:
    tokens, server, ref = private
    with pytest.raises(AuthenticationError) as anonymous:
        pull(ref, store)
    assert "error=insufficient_scope" in str(anonymous.value)
    assert "no credentials were found" in str(anonymous.value)

    write_json(home / ".docker/config.json", config(server.host))
    seen = len(tokens.requests)
    image = pull(ref, store)
    asked = tokens.requests[seen:]
    assert image.digest == skopeo_digest(ref, f"{USER}:{PASSWORD}")
    assert [(r.user, r.status) for r in asked] == [(USER, 200)]
    assert asked[0].query["account"] == [USER]
    assert asked[0].access == ({"type": "repository", "name": "private/app", "actions": ["pull"]},)


def test_token_mode_wrong_password(
    private: tuple[TokenServer, RegistryServer, str], home: Path, store: Store
) -> None:
    tokens, server, ref = private
    write_json(home / ".docker/config.json", config(server.host, password="bad"))
    with pytest.raises(AuthenticationError) as info:
        pull(ref, store)
    message = str(info.value)
    assert f"registry {server.host}" in message and tokens.realm in message
    assert f"as {USER!r}" in message and "refused with HTTP 401" in message
    assert info.value.status == 401 and info.value.url == tokens.realm
    assert store_is_empty(store)


def test_expired_token_is_refreshed_before_the_request(
    private: tuple[TokenServer, RegistryServer, str], home: Path, store: Store
) -> None:
    """Past ``expires_in`` the client asks the realm again first, not after a 401."""
    tokens, server, ref = private
    write_json(home / ".docker/config.json", config(server.host))
    now = [0.0]
    recorder = Recorder()
    client = RegistryClient(server.host, transport=recorder, tokens=TokenCache(lambda: now[0]))
    with client:
        pull(ref, store, client=client)
        first = len(recorder.exchanges)
        seen = len(tokens.requests)
        now[0] += tokens.ttl  # 300 s later: the token's expires_in has passed
        pull(ref, store, policy="always", client=client)
    second = [e for e in recorder.exchanges[first:] if not e[0].endswith("/v2/")]  # no ping
    assert [r.status for r in tokens.requests[seen:]] == [200]
    assert second[0][0].startswith(tokens.realm)  # the token first ...
    repo_calls = [e for e in second if "/v2/private/app/" in e[0]]
    assert repo_calls and {e[2] for e in repo_calls} == {200}  # ... and never a 401
    assert {e[1] for e in repo_calls} != {recorder.exchanges[first - 1][1]}


@pytest.mark.parametrize(("refresh_token", "status"), [("refresh-1", 200), ("revoked", 401)])
def test_token_mode_identity_token(
    private: tuple[TokenServer, RegistryServer, str],
    home: Path,
    store: Store,
    refresh_token: str,
    status: int,
) -> None:
    """An ``identitytoken`` is POSTed as an OAuth2 refresh_token grant (oauth.md)."""
    tokens, server, ref = private
    write_json(
        home / ".docker/config.json", {"auths": {server.host: {"identitytoken": refresh_token}}}
    )
    seen = len(tokens.requests)
    if status == 200:
        pull(ref, store)
    else:
        with pytest.raises(AuthenticationError, match="refused with HTTP 401"):
            pull(ref, store)
    asked = tokens.requests[seen:]
    assert [(r.status, r.query["grant_type"], r.query["refresh_token"]) for r in asked] == [
        (status, ["refresh_token"], [refresh_token])
    ]
    assert asked[0].scopes == ["repository:private/app:pull"]
    assert asked[0].query["service"] == [tokens.service]
