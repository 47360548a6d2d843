"""Reference parsing: Docker's defaulting rules and distribution's grammar."""

from __future__ import annotations

import pickle

import pytest

from pytest_containers.exceptions import InvalidReferenceError
from pytest_containers.image.reference import Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
        ("quay.io/org/app", "quay.io/org/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"r.io/app:1@{D}", f"r.io/app:1@{D}"),
        ("a-b_c__d/e.f--g:T_1.x-y", "docker.io/a-b_c__d/e.f--g:T_1.x-y"),
    ],
)
def test_canonical(text: str, canonical: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == canonical
    assert Reference.parse(canonical) == ref


def test_fields_and_properties() -> None:
    ref = Reference.parse(f"127.0.0.1:5000/team/app:1.2@{D}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "team/app",
        "1.2",
        D,
    )
    assert ref.identifier == D  # the digest wins for fetching
    assert ref.name == "127.0.0.1:5000/team/app"
    assert ref.api_host == "127.0.0.1:5000"
    assert ref.is_loopback
    hub = Reference.parse("busybox")
    assert hub.identifier == "latest"
    assert hub.api_host == "registry-1.docker.io"
    assert not hub.is_loopback
    assert Reference.parse(f"busybox@{D}").tag is None


def test_with_tag_and_digest_return_new_values() -> None:
    ref = Reference.parse("r.io/app:1")
    assert str(ref.with_digest(D)) == f"r.io/app:1@{D}"
    assert str(ref.with_digest(D).with_tag("2")) == "r.io/app:2"
    assert str(ref) == "r.io/app:1"
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:abc")
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("-bad")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("user/App", "lowercase"),
        ("a//b", "path component"),
        ("-a/b", "path component"),
        ("a_/b", "path component"),
        ("app:", "tag"),
        ("app:-x", "tag"),
        ("app:" + "t" * 129, "tag"),
        ("app@sha256:abc", "digest"),
        ("app@sha256:" + "A" * 64, "digest"),
        ("app@md5:" + "a" * 32, "digest"),
        (":tag", "empty"),
        ("r.io:port/app", "registry"),
        ("-r.io/app", "registry"),
        (" busybox", "whitespace"),
        ("a" * 64, "image id"),
        ("r.io/" + "a" * 260, "longer"),
    ],
)
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert why in str(info.value)
    assert repr(text) in str(info.value)
    assert info.value.reference == text
    again = pickle.loads(pickle.dumps(info.value))
    assert again.reference == text and str(again) == str(info.value)
