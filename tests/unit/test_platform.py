"""Platforms: parsing and normalization, index selection (containerd
``platforms`` semantics), store names per platform, and the can-it-run-here check."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from pytest_containers.exceptions import InvalidOptionError, PlatformNotFoundError
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.manifest import (
    Descriptor,
    Index,
    Platform,
    as_platform,
    host_can_run,
    is_attestation,
)
from pytest_containers.image.pull import store_reference
from pytest_containers.image.reference import Reference

# -- parse and normalize ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("aarch64", "linux/arm64/v8"),
        ("x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/amd64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("amd64", "linux/amd64"),
        ("armhf", "linux/arm/v7"),
        ("armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("arm/v5", "linux/arm/v5"),
        ("linux/armv7l", "linux/arm/v7"),
        ("i686", "linux/386"),
        ("linux/s390x", "linux/s390x"),
        ("LINUX/AMD64", "linux/amd64"),
        (" linux/ppc64le ", "linux/ppc64le"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse_normalizes(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected
    assert str(as_platform(text)) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "an empty part"),
        ("linux/", "an empty part"),
        ("/amd64", "an empty part"),
        ("linux/arm64/v8/x", "more than three"),
        ("linux", "is an operating system"),
        ("linux/amd46", "unknown architecture 'amd46'"),
        ("linxu/amd64", "unknown operating system 'linxu'"),
        ("linux/arm 64", "bad characters in 'arm 64'"),
        ("sparkle", "unknown architecture 'sparkle'"),
    ],
)
def test_parse_rejects_with_a_clear_error(text: str, why: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        Platform.parse(text)
    assert isinstance(info.value, ValueError)
    assert why in str(info.value)
    assert repr(text) in str(info.value)
    assert (info.value.option, info.value.value) == ("platform", text)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_normalized_constructed_platforms() -> None:
    assert Platform("Linux", "aarch64").normalized() == Platform("linux", "arm64", "v8")
    assert Platform("linux", "i386", "v6").normalized() == Platform("linux", "386")
    assert Platform("linux", "armhf", "v5").normalized() == Platform("linux", "arm", "v7")
    assert Platform("macos", "arm64").normalized().os == "darwin"
    assert as_platform(None) is None
    assert as_platform(Platform("linux", "x86_64")) == Platform("linux", "amd64")


def test_compatible_vectors_best_first() -> None:
    def vector(text: str) -> list[str]:
        return [str(p) for p in Platform.parse(text).compatible()]

    assert vector("linux/amd64") == ["linux/amd64", "linux/386"]
    assert vector("linux/amd64/v3") == [
        "linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"
    ]
    assert vector("linux/arm/v7") == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    assert vector("linux/arm/v6") == ["linux/arm/v6", "linux/arm/v5"]
    assert vector("linux/arm64") == [
        "linux/arm64/v8", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"
    ]
    assert vector("linux/arm64/v8.2")[:3] == ["linux/arm64/v8.2", "linux/arm64/v8.1",
                                              "linux/arm64/v8"]
    assert vector("linux/arm64/v9.1")[:4] == ["linux/arm64/v9.1", "linux/arm64/v9",
                                              "linux/arm64/v8.6", "linux/arm64/v8.5"]
    assert vector("linux/s390x") == ["linux/s390x"]


def test_matching_ignores_os_version_and_features() -> None:
    entry = Platform("linux", "amd64", os_version="5.15", os_features=("sse4",))
    assert Platform.parse("linux/amd64").matches(entry)
    assert Platform.parse("linux/amd64").accepts(entry)
    assert not Platform.parse("windows/amd64").matches(entry)
    assert Platform.from_dict(entry.to_dict()) == entry


# -- index selection --------------------------------------------------------------

ATTESTATION = {"os": "unknown", "architecture": "unknown"}
ENTRIES = [
    # (name, platform, annotations); the attestation comes first, as buildx writes it
    ("attestation", ATTESTATION, {"vnd.docker.reference.type": "attestation-manifest"}),
    ("amd64", {"os": "linux", "architecture": "amd64"}, {}),
    ("arm64", {"os": "linux", "architecture": "arm64"}, {}),
    ("arm/v7", {"os": "linux", "architecture": "arm", "variant": "v7"}, {}),
    ("arm/v6", {"os": "linux", "architecture": "arm", "variant": "v6"}, {}),
]


def make_index(entries: list[tuple[str, dict, dict]]) -> tuple[Index, dict[str, str]]:
    """An in-memory index; returns it and each entry's digest by name."""
    manifests, digests = [], {}
    for i, (name, platform, notes) in enumerate(entries):
        digest = "sha256:" + f"{i + 1:x}" * 64
        digests[name] = digest
        desc = {"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": 500 + i,
                "platform": platform}
        if notes:
            desc["annotations"] = notes
        manifests.append(desc)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    return Index.from_json(json.dumps(doc).encode()), digests


@pytest.mark.parametrize(
    ("request_", "chosen"),
    [
        ("linux/amd64", "amd64"),
        ("x86_64", "amd64"),
        ("linux/amd64/v3", "amd64"),  # v3 falls back to v2, then v1 (plain amd64)
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),  # the entry has no variant: v8 is arm64's default
        ("aarch64", "arm64"),
        ("linux/arm/v7", "arm/v7"),
        ("armhf", "arm/v7"),
        ("linux/arm", "arm/v7"),
        ("linux/arm/v6", "arm/v6"),
        ("armel", "arm/v6"),
    ],
)
def test_select(request_: str, chosen: str) -> None:
    index, digests = make_index(ENTRIES)
    assert index.select(Platform.parse(request_)).digest == digests[chosen]


def test_select_falls_back_to_the_highest_lower_variant() -> None:
    without_v7 = [e for e in ENTRIES if e[0] != "arm/v7"]
    index, digests = make_index(without_v7)
    assert index.select(Platform.parse("linux/arm/v7")).digest == digests["arm/v6"]
    v5_and_v6 = [*without_v7, ("arm/v5", {"os": "linux", "architecture": "arm",
                                          "variant": "v5"}, {})]
    index, digests = make_index(v5_and_v6[::-1])  # order of the index does not matter
    assert index.select(Platform.parse("linux/arm/v7")).digest == digests["arm/v6"]
    only_v5 = [("arm/v5", {"os": "linux", "architecture": "arm", "variant": "v5"}, {})]
    index, digests = make_index(only_v5)
    assert index.select(Platform.parse("linux/arm/v7")).digest == digests["arm/v5"]


def test_arm_v6_never_gets_v7() -> None:
    index, _ = make_index([e for e in ENTRIES if e[0] != "arm/v6"])
    with pytest.raises(PlatformNotFoundError) as info:
        index.select(Platform.parse("linux/arm/v6"))
    assert info.value.platform == "linux/arm/v6"
    assert "linux/arm/v7" in info.value.available


def test_arm64_v8_entry_matches_a_plain_arm64_request() -> None:
    entries = [("arm64/v8", {"os": "linux", "architecture": "arm64", "variant": "v8"}, {})]
    index, digests = make_index(entries)
    assert index.select(Platform.parse("linux/arm64")).digest == digests["arm64/v8"]
    assert index.select(Platform("linux", "arm64")).digest == digests["arm64/v8"]


def test_amd64_variants() -> None:
    v2 = ("amd64/v2", {"os": "linux", "architecture": "amd64", "variant": "v2"}, {})
    v3 = ("amd64/v3", {"os": "linux", "architecture": "amd64", "variant": "v3"}, {})
    v1 = ("amd64/v1", {"os": "linux", "architecture": "amd64", "variant": "v1"}, {})
    index, digests = make_index([v3, v2, v1])
    assert index.select(Platform.parse("linux/amd64/v3")).digest == digests["amd64/v3"]
    assert index.select(Platform.parse("linux/amd64/v2")).digest == digests["amd64/v2"]
    assert index.select(Platform.parse("linux/amd64/v4")).digest == digests["amd64/v3"]
    assert index.select(Platform.parse("linux/amd64")).digest == digests["amd64/v1"]
    only_v3, _ = make_index([v3])
    with pytest.raises(PlatformNotFoundError) as info:
        only_v3.select(Platform.parse("linux/amd64"))
    assert info.value.available == ["linux/amd64/v3"]
    with pytest.raises(PlatformNotFoundError):
        only_v3.select(Platform.parse("linux/amd64/v2"))


def test_exact_variant_beats_an_earlier_compatible_entry() -> None:
    index, digests = make_index(list(reversed(ENTRIES)))  # v6 listed before v7
    assert index.select(Platform.parse("linux/arm/v7")).digest == digests["arm/v7"]


def test_attestations_are_never_chosen() -> None:
    index, digests = make_index(ENTRIES)
    assert is_attestation(index.manifests[0])
    assert not any(is_attestation(d) for d in index.manifests[1:])
    annotated_amd64 = [("att", {"os": "linux", "architecture": "amd64"},
                        {"vnd.docker.reference.type": "attestation-manifest"})]
    only_attestation, _ = make_index(annotated_amd64)
    with pytest.raises(PlatformNotFoundError) as info:
        only_attestation.select(Platform.parse("linux/amd64"))
    assert info.value.available == []
    unknown, _ = make_index([ENTRIES[0]])
    with pytest.raises(PlatformNotFoundError):
        unknown.select(Platform("unknown", "unknown"))


def test_os_version_and_features_are_ignored_for_linux() -> None:
    entries = [("amd64", {"os": "linux", "architecture": "amd64", "os.version": "6.1",
                          "os.features": ["whatever"]}, {})]
    index, digests = make_index(entries)
    assert index.select(Platform.parse("linux/amd64")).digest == digests["amd64"]
    assert index.manifests[0].platform == Platform("linux", "amd64", "", "6.1", ("whatever",))


def test_no_match_lists_what_is_there() -> None:
    index, _ = make_index(ENTRIES)
    with pytest.raises(PlatformNotFoundError) as info:
        index.select(Platform.parse("linux/s390x"))
    assert info.value.platform == "linux/s390x"
    assert info.value.available == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7",
                                     "linux/arm/v6"]
    message = str(info.value)
    assert "linux/s390x" in message
    assert "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6" in message
    assert "unknown" not in message
    assert pickle.loads(pickle.dumps(info.value)).available == info.value.available


def test_descriptor_platform_round_trip() -> None:
    raw = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 3,
           "platform": {"os": "linux", "architecture": "arm", "variant": "v7",
                        "os.features": ["x"]}}
    assert Descriptor.from_dict(raw).to_dict() == raw


# -- store names --------------------------------------------------------------------

AMD64 = Platform("linux", "amd64")


def test_store_reference_for_the_host_is_the_reference() -> None:
    ref = Reference.parse("127.0.0.1:5000/team/app:1.2")
    assert store_reference(ref, None, host=AMD64) == ref
    assert store_reference(ref, Platform.parse("x86_64"), host=AMD64) == ref
    assert store_reference(ref, Platform.parse("linux/amd64/v1"), host=AMD64) == ref


def test_store_reference_for_other_platforms() -> None:
    ref = Reference.parse("127.0.0.1:5000/team/app:1.2")
    arm64 = store_reference(ref, Platform.parse("linux/arm64"), host=AMD64)
    assert str(arm64) == "127.0.0.1:5000/team/app:1.2--ptc-linux-arm64-v8"
    v7 = store_reference(ref, Platform.parse("armhf"), host=AMD64)
    assert str(v7) == "127.0.0.1:5000/team/app:1.2--ptc-linux-arm-v7"
    assert str(store_reference(ref, Platform.parse("linux/amd64/v3"), host=AMD64)) == (
        "127.0.0.1:5000/team/app:1.2--ptc-linux-amd64-v3"
    )
    # the host of one machine is a foreign platform of another
    assert store_reference(ref, AMD64, host=Platform.parse("linux/arm64")).tag == (
        "1.2--ptc-linux-amd64"
    )
    for name in (arm64, v7):
        assert Reference.parse(str(name)) == name  # a valid reference, found again


def test_store_reference_of_a_digest_and_of_a_long_tag() -> None:
    pinned = Reference.parse("127.0.0.1:5000/app@sha256:" + "a" * 64)
    name = store_reference(pinned, Platform.parse("linux/arm/v6"), host=AMD64)
    assert str(name) == "127.0.0.1:5000/app:ptc-linux-arm-v6@sha256:" + "a" * 64
    assert Reference.parse(str(name)) == name
    both = Reference.parse("127.0.0.1:5000/app:1@sha256:" + "a" * 64)
    assert str(store_reference(both, Platform.parse("arm64"), host=AMD64)) == (
        "127.0.0.1:5000/app:1--ptc-linux-arm64-v8@sha256:" + "a" * 64
    )
    long_a = Reference.parse("r.io/app:" + "a" * 120 + "x")
    long_b = Reference.parse("r.io/app:" + "a" * 120 + "y")
    names = {str(store_reference(r, Platform.parse("arm64"), host=AMD64)) for r in (long_a, long_b)}
    assert len(names) == 2
    for text in names:
        parsed = Reference.parse(text)
        assert parsed.tag is not None and len(parsed.tag) <= 128
        assert parsed.tag.endswith("--ptc-linux-arm64-v8")


# -- can this machine run it ----------------------------------------------------------

CPUINFO_V3 = "processor\t: 0\nflags\t\t: fpu cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 " \
             "avx avx2 bmi1 bmi2 f16c fma abm movbe xsave\n"


def test_host_can_run_native_and_compatible(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_V3)
    no_binfmt = tmp_path / "no-binfmt"

    def runs(image: str, host: str) -> bool:
        return host_can_run(Platform.parse(image), host=Platform.parse(host),
                            binfmt_misc=no_binfmt, cpuinfo=cpuinfo)

    assert runs("linux/amd64", "linux/amd64")
    assert runs("linux/386", "linux/amd64")
    assert runs("linux/amd64/v3", "linux/amd64")  # the CPU has the v3 flags
    assert not runs("linux/amd64/v4", "linux/amd64")
    assert not runs("linux/arm64", "linux/amd64")
    assert not runs("linux/arm/v7", "linux/amd64")
    assert runs("linux/arm/v7", "linux/arm64")
    assert not runs("linux/arm/v7", "linux/arm/v6")
    assert not runs("windows/amd64", "linux/amd64")
    assert host_can_run(Platform("", ""), binfmt_misc=no_binfmt)  # config says nothing


def test_host_can_run_through_binfmt_misc(tmp_path: Path) -> None:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    (binfmt / "qemu-aarch64").write_text(
        "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\noffset 0\n"
    )
    (binfmt / "qemu-arm").write_text(  # without F: its interpreter is not in the rootfs
        "enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: OC\noffset 0\n"
    )
    (binfmt / "qemu-s390x").write_text("disabled\ninterpreter /x\nflags: F\n")
    amd64 = Platform.parse("linux/amd64")
    assert host_can_run(Platform.parse("linux/arm64"), host=amd64, binfmt_misc=binfmt)
    assert not host_can_run(Platform.parse("linux/arm/v7"), host=amd64, binfmt_misc=binfmt)
    assert not host_can_run(Platform.parse("linux/s390x"), host=amd64, binfmt_misc=binfmt)
    (binfmt / "status").write_text("disabled\n")
    assert not host_can_run(Platform.parse("linux/arm64"), host=amd64, binfmt_misc=binfmt)
