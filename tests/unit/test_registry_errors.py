"""Registry errors that say enough, and pushes that are refused before any harm,
against in-memory registries (``httpx.MockTransport``) and a listening socket
that never answers. No binary needed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    InvalidReferenceError,
    RegistryUnavailableError,
)
from pytest_containers.image.pull import pull
from pytest_containers.image.push import push
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.session import default_scheme
from pytest_containers.image.store import Store
from tests.unit.test_store_commands import make_image

INDEX = "sha256:" + "1d" * 32


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def client(
    host: str, handler: Callable[[httpx.Request], httpx.Response], **kw: object
) -> RegistryClient:
    return RegistryClient(host, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


def refuse(message: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(message, request=request)

    return handler


# -- references and schemes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "scheme"),
    [
        ("LOCALHOST:5000", "http"),
        ("LocalHost", "http"),
        ("localhost:5000", "http"),
        ("127.0.0.1:5000", "http"),
        ("[::1]:5000", "http"),
        ("registry.example:5000", "https"),
        ("localhost.example.com", "https"),
    ],
)
def test_loopback_hosts_in_any_case_get_plain_http(host: str, scheme: str) -> None:
    assert default_scheme(host) == scheme
    assert Reference.parse(f"{host}/app").is_loopback == (scheme == "http")


@pytest.mark.parametrize("port", ["65536", "99999", "0"])
def test_a_port_out_of_range_is_refused(port: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(f"localhost:{port}/app:1")
    assert f"port {port} of registry 'localhost:{port}' is not in 1-65535" in str(info.value)
    assert str(Reference.parse("localhost:65535/app:1")) == "localhost:65535/app:1"


# -- registry failures ----------------------------------------------------------------------


def test_docker_hub_unavailable_suggests_a_local_registry(store: Store) -> None:
    hub = client("registry-1.docker.io", refuse("[Errno -3] Temporary failure in name resolution"))
    with pytest.raises(RegistryUnavailableError) as info:
        pull("busybox", store, client=hub)
    message = str(info.value)
    assert message.startswith("registry-1.docker.io (Docker Hub) unavailable for")
    assert "Temporary failure in name resolution" in message
    assert message.endswith("did you mean HOST:PORT/busybox:latest?")
    make_image(store, "127.0.0.1:5000/busybox:latest", b"local")
    with pytest.raises(RegistryUnavailableError, match=r"did you mean 127\.0\.0\.1:5000/busybox"):
        pull("busybox", store, client=hub, policy="always")
    with pytest.raises(RegistryUnavailableError) as info:  # not a Docker Hub name: as it was
        pull("registry.example/busybox", store, client=client("registry.example", refuse("x")))
    assert "Docker Hub" not in str(info.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_a_stalled_registry_names_host_request_and_timeout(silent_port: int) -> None:
    host = f"127.0.0.1:{silent_port}"
    start = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as info:
        RegistryClient(host, timeout=0.2).ping()
    assert time.monotonic() - start < 10
    assert str(info.value) == (
        f"registry {host} unavailable: GET http://{host}/v2/ timed out:"
        " no data received for 0.2 s (read timeout)"
    )


def test_a_tls_failure_with_another_host_says_why_https(store: Store) -> None:
    wrong = "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
    with pytest.raises(RegistryUnavailableError) as info:
        client("registry.example:5000", refuse(wrong)).ping()
    message = str(info.value)
    assert wrong in message
    assert "registry.example was spoken to over HTTPS because only loopback hosts" in message
    assert "there is no setting" in message and "SSL_CERT_FILE" in message
    with pytest.raises(RegistryUnavailableError) as info:  # https asked for a loopback host
        client("127.0.0.1:5000", refuse(wrong), scheme="https").ping()
    assert "loopback" not in str(info.value)


def test_a_digest_mismatch_names_reference_and_registry(store: Store) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "ab" * 32,  # not the config's
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()

    def registry(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            ctype = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            return httpx.Response(200, content=manifest, headers=ctype)
        if "/blobs/" in request.url.path:
            return httpx.Response(200, stream=httpx.ByteStream(config))
        return httpx.Response(200)

    with pytest.raises(DigestMismatchError) as info:
        pull(
            "registry.example:5000/team/app:1",
            store,
            client=client("registry.example:5000", registry),
        )
    assert str(info.value).startswith(
        "pulling registry.example:5000/team/app:1 from registry registry.example:5000: "
    )
    assert info.value.digest == "sha256:" + "ab" * 32
    assert (info.value.reference, info.value.registry) == (
        "registry.example:5000/team/app:1",
        "registry.example:5000",
    )


# -- push refusals and checks ------------------------------------------------------------


class Recorder:
    """A registry that has nothing and records every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        if request.method == "HEAD":
            return httpx.Response(404)
        return httpx.Response(200)


def test_push_refuses_to_replace_the_index_it_was_pulled_from(store: Store) -> None:
    image = make_image(store, "127.0.0.1:5000/multi/app:1", b"amd64")
    store.tag(
        "127.0.0.1:5000/multi/app:1",
        image.digest,
        index_digest=INDEX,
        source_reference="127.0.0.1:5000/multi/app:1",
    )
    recorder = Recorder()
    for destination in (None, "127.0.0.1:5000/multi/app:1", f"127.0.0.1:5000/multi/app@{INDEX}"):
        with pytest.raises(ImageError) as info:
            push("127.0.0.1:5000/multi/app:1", store, destination, client=client("x", recorder))
        message = str(info.value)
        assert f"names the multi-platform index {INDEX}" in message
        assert "would replace that index. Give another destination" in message
    assert recorder.seen == []


def test_push_refuses_to_publish_a_platform_tag(store: Store) -> None:
    name = "127.0.0.1:5000/multi/app:1--ptc-linux-arm64-v8"
    image = make_image(store, name, b"arm64")
    store.tag(name, image.digest, index_digest=INDEX, source_reference="127.0.0.1:5000/multi/app:1")
    recorder = Recorder()
    with pytest.raises(ImageError) as info:
        push(name, store, client=client("x", recorder))
    assert f"refusing to push {name} without a destination" in str(info.value)
    assert "'1--ptc-linux-arm64-v8' is internal to the store. Give a destination" in str(info.value)
    assert recorder.seen == []


def test_push_verifies_a_blob_before_sending_it(store: Store) -> None:
    image = make_image(store, "127.0.0.1:5000/a/app:1", b"content" * 100)
    layer = image.layers[0].digest
    path = store.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    recorder = Recorder()
    with pytest.raises(DigestMismatchError) as info:
        push(
            "127.0.0.1:5000/a/app:1", store, "127.0.0.1:5000/b/app:1", client=client("x", recorder)
        )
    assert str(info.value).startswith(
        f"local blob {layer} of 127.0.0.1:5000/a/app:1 is corrupt: {path} has"
    )
    assert info.value.path == str(path)
    assert not [seen for seen in recorder.seen if seen[0] in ("POST", "PUT", "PATCH")]
