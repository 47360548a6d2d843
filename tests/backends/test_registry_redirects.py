"""Blob reads redirected to other storage, with the real registry's ``redirect`` middleware.

The registry (``middleware.storage: redirect``) answers blob GETs with a 307 to
``baseurl`` + the blob data's path in its storage tree; a :class:`FileServer`
serving that storage tree at ``baseurl`` is the "other storage" and records the
headers it saw. The registry runs in token mode (Bearer) and in htpasswd mode
(Basic: the user's password itself in every request): neither ``Authorization``
may reach the storage host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pytest_containers.plugins.file_server import FileServer
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.exceptions import RegistryError
from pytest_containers.image.auth import Credentials
from pytest_containers.image.pull import pull
from pytest_containers.image.registry import MAX_REDIRECTS, RegistryClient
from pytest_containers.image.store import Store

pytest.importorskip("cryptography", reason="the token server signs with cryptography")
from pytest_containers.plugins.token_server import TokenServer  # noqa: E402

USER, PASSWORD = "puller", "s3cret:redirected"
REPOSITORY = "redirect/busybox"


@dataclass
class Setup:
    registry: RegistryServer
    files: FileServer
    ref: str
    credentials: Credentials | None  # None: anonymous (token mode grants pull)
    blobs: list[str]  # config then layers, ``sha256:<hex>``


class Recorder(httpx.HTTPTransport):
    """The real transport, noting (url, Authorization, status) of each exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[str, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.exchanges.append(
            (str(request.url), request.headers.get("Authorization"), response.status_code)
        )
        return response


def layout_blobs(layout: Path, ref_name: str = "latest") -> list[str]:
    """Config then layer digests of ``ref_name`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    entry = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == ref_name
    )
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_text())
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


@pytest.fixture(scope="module", params=["token", "htpasswd"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, busybox_layout: Path
) -> Iterator[Setup]:
    """Module scope, per auth mode: a redirecting registry, its storage served by a
    file server, busybox pushed with the user's credentials."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    with FileServer(Path("/nonexistent")) as files:
        if request.param == "token":
            with TokenServer(users={USER: PASSWORD}) as tokens:
                registry = RegistryServer(token_server=tokens, redirect_baseurl=files.url)
                yield from _started(registry, files, busybox_layout, None)
        else:
            bcrypt = pytest.importorskip("bcrypt", reason="htpasswd needs bcrypt hashes")
            htpasswd = tmp_path_factory.mktemp("htpasswd") / "htpasswd"
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd.write_text(f"{USER}:{hashed}\n")
            registry = RegistryServer(htpasswd=htpasswd, redirect_baseurl=files.url)
            yield from _started(registry, files, busybox_layout, Credentials(USER, PASSWORD))


def _started(
    registry: RegistryServer, files: FileServer, layout: Path, credentials: Credentials | None
) -> Iterator[Setup]:
    files.root = registry.storage
    with registry:
        ref = registry.push_oci(layout, "latest", REPOSITORY, "1", creds=f"{USER}:{PASSWORD}")
        yield Setup(registry, files, ref, credentials, layout_blobs(layout))


@pytest.fixture
def files(setup: Setup) -> Iterator[FileServer]:
    """The setup's file server, its record and faults cleared before and after the test."""
    setup.files.requests.clear()
    yield setup.files
    setup.files.statuses.clear()
    setup.files.cuts.clear()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_blobs_come_from_storage_without_authorization(
    setup: Setup, files: FileServer, store: Store
) -> None:
    recorder = Recorder()
    client = RegistryClient(setup.registry.host, transport=recorder, credentials=setup.credentials)
    with client:
        image = pull(setup.ref, store, client=client)
    assert [image.manifest.config.digest, *(d.digest for d in image.layers)] == setup.blobs

    registry_url = setup.registry.url
    for digest in setup.blobs:
        hex_ = digest.split(":")[1]
        # the registry redirected the blob read, with our Authorization...
        asked = [e for e in recorder.exchanges if e[0].endswith(f"/blobs/{digest}")]
        assert [(e[0].startswith(registry_url), e[2]) for e in asked] == [(True, 307)]
        assert asked[0][1] is not None
        assert asked[0][1].startswith("Bearer " if setup.credentials is None else "Basic ")
        # ...and the bytes came from the storage, which saw no Authorization at all
        served = files.gets(f"/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data")
        assert [r.status for r in served] == [200]
        assert store.blob_path(digest).stat().st_size == served[0].sent
    assert files.requests, "nothing reached the file server"
    assert all("authorization" not in r.headers for r in files.requests)
    followed = [e for e in recorder.exchanges if e[0].startswith(files.url)]
    assert len(followed) == len(setup.blobs)
    assert all(e[1] is None for e in followed)
    assert list((store.root / "tmp").iterdir()) == []


def test_a_storage_challenge_is_not_answered(setup: Setup, files: FileServer, store: Store) -> None:
    """A 401 from the storage host is an error: no credentials go there, ever."""
    files.statuses.append((401, {"WWW-Authenticate": 'Basic realm="storage"'}))
    with RegistryClient(setup.registry.host, credentials=setup.credentials) as client:
        with pytest.raises(RegistryError) as info:
            pull(setup.ref, store, client=client)
    assert info.value.status == 401
    assert info.value.url.startswith(files.url)
    assert f"storage that registry {setup.registry.host} redirected to" in str(info.value)
    assert len(files.gets()) == 1
    assert all("authorization" not in r.headers for r in files.requests)
    assert list((store.root / "tmp").iterdir()) == []


def test_redirects_are_bounded(setup: Setup, files: FileServer, store: Store) -> None:
    files.statuses.extend([(307, {"Location": "/again"})] * (MAX_REDIRECTS + 3))
    with RegistryClient(setup.registry.host, credentials=setup.credentials) as client:
        with pytest.raises(RegistryError) as info:
            pull(setup.ref, store, client=client)
    assert f"more than {MAX_REDIRECTS} redirects" in str(info.value)
    assert len(files.gets()) == MAX_REDIRECTS  # the registry's 307 was the first hop
    assert all("authorization" not in r.headers for r in files.requests)
    assert list((store.root / "tmp").iterdir()) == []
