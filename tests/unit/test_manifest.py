"""Manifests, indexes, configs, platforms, digests and media types (pure)."""

from __future__ import annotations

import io
import json

import pytest

from pytest_containers.exceptions import (
    DigestMismatchError,
    ImageError,
    PlatformNotFoundError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import (
    Hasher,
    digest_hex,
    digest_of,
    digest_of_file,
    is_digest,
    validate_digest,
)
from pytest_containers.image.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    docker_to_oci,
    parse_manifest,
)

A, B, C = ("sha256:" + ch * 64 for ch in "abc")


def desc(media_type: str, digest: str = A, size: int = 10, **extra: object) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest_json(media_type: str = mt.OCI_MANIFEST) -> bytes:
    docker = media_type == mt.DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": desc(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, A, 3),
        "layers": [
            desc(mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, B, 100),
            desc(mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, C, 200),
        ],
    }
    return json.dumps(doc).encode()


def index_json(*platforms: dict | None, annotations: list[dict] | None = None) -> bytes:
    manifests = []
    for i, plat in enumerate(platforms):
        entry = desc(mt.OCI_MANIFEST, "sha256:" + f"{i:x}" * 64, 500)
        if plat is not None:
            entry["platform"] = plat
        if annotations and annotations[i]:
            entry["annotations"] = annotations[i]
        manifests.append(entry)
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    ).encode()


# -- digests ------------------------------------------------------------------


def test_digest_helpers() -> None:
    assert (
        digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert is_digest(A) and not is_digest("sha256:" + "A" * 64) and not is_digest("sha256:ab")
    assert digest_hex(A) == "a" * 64
    assert digest_of_file(io.BytesIO(b"hello")) == (digest_of(b"hello"), 5)
    with pytest.raises(ImageError, match="unsupported digest algorithm 'sha512'"):
        validate_digest("sha512:" + "a" * 128)
    with pytest.raises(ImageError, match="64 lowercase hex"):
        validate_digest("nope")


def test_hasher_checks_size_then_digest() -> None:
    hasher = Hasher()
    for chunk in (b"hel", b"lo"):
        hasher.update(chunk)
    hasher.verify(digest_of(b"hello"), 5)
    with pytest.raises(DigestMismatchError, match="size mismatch") as info:
        hasher.verify(digest_of(b"hello"), 6)
    assert info.value.size == 5
    with pytest.raises(DigestMismatchError, match="digest mismatch") as info:
        hasher.verify(A, 5)
    assert (info.value.digest, info.value.actual) == (A, digest_of(b"hello"))


def test_accept_header_names_all_four_types() -> None:
    for media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST):
        assert media_type in mt.MANIFEST_ACCEPT.split(", ")
    assert not any(s1 in mt.MANIFEST_ACCEPT for s1 in mt.SCHEMA1_TYPES)


# -- manifests ----------------------------------------------------------------


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])
def test_manifest(media_type: str) -> None:
    manifest = Manifest.from_json(manifest_json(media_type))
    assert manifest.media_type == media_type
    assert manifest.config.digest == A and manifest.config.size == 3
    assert [layer.digest for layer in manifest.layers] == [B, C]  # base first
    assert parse_manifest(manifest_json(media_type), "text/plain") == manifest


def test_docker_to_oci_keeps_blobs() -> None:
    converted = Manifest.from_json(docker_to_oci(manifest_json(mt.DOCKER_MANIFEST)))
    original = Manifest.from_json(manifest_json(mt.DOCKER_MANIFEST))
    assert converted.media_type == mt.OCI_MANIFEST
    assert converted.config.media_type == mt.OCI_CONFIG
    assert {layer.media_type for layer in converted.layers} == {mt.OCI_LAYER_GZIP}
    assert [(d.digest, d.size) for d in converted.layers] == [
        (d.digest, d.size) for d in original.layers
    ]
    assert docker_to_oci(manifest_json()) == manifest_json()


@pytest.mark.parametrize(
    "doc",
    [
        {"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []},
        {"schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA1_SIGNED_MANIFEST},
        {"schemaVersion": 2, "mediaType": "application/vnd.example+json", "config": {}},
    ],
)
def test_unsupported_manifests(doc: dict) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        parse_manifest(json.dumps(doc).encode())
    assert info.value.media_type


def test_schema1_content_type() -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="schema 1"):
        parse_manifest(b'{"schemaVersion": 1}', mt.DOCKER_SCHEMA1_SIGNED_MANIFEST)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode(),
        json.dumps(
            {"mediaType": mt.OCI_MANIFEST, "config": desc(mt.OCI_CONFIG, "sha256:bad")}
        ).encode(),
        json.dumps({"mediaType": mt.OCI_MANIFEST, "config": {"digest": A, "size": -1}}).encode(),
    ],
)
def test_malformed_manifests(data: bytes) -> None:
    with pytest.raises(ImageError):
        Manifest.from_json(data)


def test_descriptor_round_trip() -> None:
    raw = desc(
        mt.OCI_MANIFEST,
        A,
        7,
        annotations={"k": "v"},
        platform={"os": "linux", "architecture": "arm64", "variant": "v8"},
    )
    assert Descriptor.from_dict(raw).to_dict() == raw


# -- platforms and index selection ---------------------------------------------


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("i686", "linux/386"),
        ("s390x", "linux/s390x"),
    ],
)
def test_platform_host(monkeypatch: pytest.MonkeyPatch, machine: str, expected: str) -> None:
    import platform as stdlib_platform

    monkeypatch.setattr(stdlib_platform, "machine", lambda: machine)
    monkeypatch.setattr(stdlib_platform, "system", lambda: "Linux")
    assert str(Platform.host()) == expected


def test_platform_parse_and_match() -> None:
    assert Platform.parse("linux/arm64").matches(Platform("linux", "arm64", "v8"))
    assert Platform.parse("linux/aarch64") == Platform("linux", "arm64", "v8")
    assert not Platform.parse("linux/arm/v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform("unknown", "unknown").matches(Platform("unknown", "unknown"))
    with pytest.raises(ValueError):
        Platform.parse("linux")


AMD = {"os": "linux", "architecture": "amd64"}
ARM = {"os": "linux", "architecture": "arm64"}
ARM_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
UNKNOWN = {"os": "unknown", "architecture": "unknown"}


def test_index_select() -> None:
    index = Index.from_json(index_json(UNKNOWN, AMD, ARM_V8))
    assert index.select(Platform("linux", "amd64")).platform == Platform("linux", "amd64")
    assert index.select(Platform("linux", "arm64")) is index.manifests[2]  # no variant = v8
    plain_arm = Index.from_json(index_json(ARM))
    assert plain_arm.select(Platform.parse("linux/arm64/v8")) is plain_arm.manifests[0]


def test_index_never_selects_attestations() -> None:
    attestation = {"vnd.docker.reference.type": "attestation-manifest"}
    index = Index.from_json(index_json(AMD, AMD, annotations=[attestation, {}]))
    assert index.select(Platform("linux", "amd64")) is index.manifests[1]
    with pytest.raises(PlatformNotFoundError):
        Index.from_json(index_json(UNKNOWN)).select(Platform("unknown", "unknown"))


def test_index_platform_not_found_lists_available() -> None:
    index = Index.from_json(index_json(UNKNOWN, AMD, ARM_V8))
    with pytest.raises(PlatformNotFoundError) as info:
        index.select(Platform("linux", "s390x"))
    assert info.value.platform == "linux/s390x"
    assert info.value.available == ["linux/amd64", "linux/arm64/v8"]  # attestations left out
    assert "linux/amd64, linux/arm64/v8" in str(info.value)


def test_index_single_entry_without_platform() -> None:
    index = Index.from_json(index_json(None))
    assert index.select(Platform("linux", "amd64")) is index.manifests[0]


def test_parse_manifest_dispatch() -> None:
    assert isinstance(parse_manifest(index_json(AMD)), Index)
    assert isinstance(parse_manifest(manifest_json()), Manifest)
    doc = json.loads(index_json(AMD))
    doc["mediaType"] = mt.DOCKER_MANIFEST_LIST
    assert parse_manifest(json.dumps(doc).encode()).media_type == mt.DOCKER_MANIFEST_LIST


# -- config ---------------------------------------------------------------------


def test_image_config() -> None:
    doc = {
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "config": {
            "Entrypoint": ["/entry"],
            "Cmd": ["sh", "-c", "x"],
            "Env": ["PATH=/bin", "A=b=c"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "Labels": {"k": "v"},
        },
        "rootfs": {"type": "layers", "diff_ids": [A, B]},
    }
    config = ImageConfig.from_json(json.dumps(doc).encode())
    assert config.entrypoint == ("/entry",)
    assert config.cmd == ("sh", "-c", "x")
    assert config.env == ("PATH=/bin", "A=b=c")
    assert (config.working_dir, config.user) == ("/srv", "1000:1000")
    assert config.diff_ids == (A, B)
    assert config.labels == {"k": "v"}
    assert config.raw == doc
    assert str(config.platform) == "linux/arm64/v8"
    empty = ImageConfig.from_json(b'{"architecture": "amd64", "os": "linux"}')
    assert empty.cmd == () and empty.env == () and empty.diff_ids == ()
    with pytest.raises(ImageError):
        ImageConfig.from_json(json.dumps({"rootfs": {"diff_ids": ["sha256:x"]}}).encode())
