"""Multi-platform images from a real registry: the index is built from umoci
images and pushed with skopeo; each platform request pulls the right manifest,
the store names each under its own name, and skopeo reads every one back."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_containers.plugins.registry import RegistryServer
from pytest_containers.runtime import Runtime

from pytest_containers.containers import Containers
from pytest_containers.exceptions import (
    ContainerStartError,
    ImageNotFoundError,
    InvalidOptionError,
    PlatformNotFoundError,
)
from pytest_containers.image.digest import digest_of
from pytest_containers.image.manifest import Platform, host_can_run
from pytest_containers.image.pull import pull, store_reference
from pytest_containers.image.reference import Reference
from pytest_containers.image.store import Store
from pytest_containers.images import Images
from tests.conftest import needs

pytest_plugins = ["pytester"]

HOST = Platform.host()
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def skopeo_local(store: Store, name: Reference | str) -> dict:
    return json.loads(run("skopeo", "inspect", f"oci:{store.layout}:{name}"))


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = digest_of(data)
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _relabel(layout: Path, manifest: dict, platform: dict[str, str], **annotations: str) -> dict:
    """A copy of ``manifest`` (same layers) whose config says ``platform``: a
    distinct manifest digest per platform. Returns the index entry for it."""
    blobs = layout / "blobs" / "sha256"
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["architecture"] = platform["architecture"]
    config["os"] = platform["os"]
    config.pop("variant", None)
    if platform.get("variant"):
        config["variant"] = platform["variant"]
    new = dict(manifest)
    new["config"] = {**manifest["config"], **_blob(layout, json.dumps(config).encode())}
    if annotations:
        new["annotations"] = {"vnd.docker.reference.digest": manifest["config"]["digest"]}
    entry: dict[str, object] = {"mediaType": OCI_MANIFEST}
    entry.update(_blob(layout, json.dumps(new).encode()), platform=platform)
    if annotations:
        entry["annotations"] = annotations
    return entry


@pytest.fixture(scope="session")
def platforms_layout(multiarch_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session scope: ``multiarch_layout`` copied and given two more refs.

    ``all``: an index of an attestation entry (``unknown/unknown``, annotated,
    listed first), ``linux/amd64``, ``linux/arm64`` (no variant), ``linux/arm/v7``
    and ``linux/arm/v6``; ``nov7``: the attestation, ``linux/amd64``,
    ``linux/arm/v6`` and ``linux/arm/v5``. Each entry is its own manifest (the
    busybox layer, a config relabelled with the entry's platform)."""
    layout = tmp_path_factory.mktemp("oracle-platforms") / "layout"
    shutil.copytree(multiarch_layout, layout)
    index = json.loads((layout / "index.json").read_text())
    by_name = {m["annotations"][REF_NAME]: m for m in index["manifests"]}
    amd64 = json.loads((layout / "blobs" / "sha256" / by_name["amd64"]["digest"][7:]).read_bytes())

    def plat(arch: str, variant: str = "") -> dict[str, str]:
        return {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}

    attestation = _relabel(
        layout, amd64, {"os": "unknown", "architecture": "unknown"},
        **{"vnd.docker.reference.type": "attestation-manifest"},
    )
    entries = {
        "amd64": _relabel(layout, amd64, plat("amd64")),
        "arm64": _relabel(layout, amd64, plat("arm64")),
        "arm/v7": _relabel(layout, amd64, plat("arm", "v7")),
        "arm/v6": _relabel(layout, amd64, plat("arm", "v6")),
        "arm/v5": _relabel(layout, amd64, plat("arm", "v5")),
    }
    for name, members in (
        ("all", ["amd64", "arm64", "arm/v7", "arm/v6"]),
        ("nov7", ["amd64", "arm/v6", "arm/v5"]),
    ):
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [attestation, *(entries[m] for m in members)],
        }
        index["manifests"].append(
            {"mediaType": OCI_INDEX, **_blob(layout, json.dumps(doc).encode()),
             "annotations": {REF_NAME: name}}
        )
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@pytest.fixture(scope="session")
def pushed(registry: RegistryServer, platforms_layout: Path) -> dict[str, str]:
    """Session scope: ``oracle/platforms:all`` and ``:nov7`` in the registry."""
    return {
        name: registry.push_oci(platforms_layout, name, "oracle/platforms", name)
        for name in ("all", "nov7")
    }


def remote_entries(ref: str) -> dict[str, str]:
    """``os/arch[/variant]`` -> manifest digest, of the index as the registry serves it."""
    raw = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    return {str(Platform.from_dict(m["platform"])): m["digest"] for m in raw["manifests"]}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def index_entries(store: Store) -> dict[str, str]:
    """Store name -> manifest digest, from ``index.json``."""
    doc = json.loads((store.layout / "index.json").read_text())
    return {m["annotations"][REF_NAME]: m["digest"] for m in doc["manifests"]}


REQUESTS = [
    ("linux/amd64", "linux/amd64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm64", "linux/arm64"),
    ("aarch64", "linux/arm64"),
    ("linux/arm/v7", "linux/arm/v7"),
    ("armhf", "linux/arm/v7"),
    ("linux/arm/v6", "linux/arm/v6"),
    ("armel", "linux/arm/v6"),
]


def test_each_platform_gets_its_manifest_in_one_store(pushed: dict, store: Store) -> None:
    remote = remote_entries(pushed["all"])
    assert list(remote) == [
        "unknown/unknown", "linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"
    ]
    pulled = {}
    for request, entry in REQUESTS:
        image = pull(pushed["all"], store, platform=request)
        wanted = Platform.parse(request)
        assert image.digest == remote[entry], request
        assert image.digest != remote["unknown/unknown"]
        assert wanted.matches(image.config.platform)
        # the config, the layers and the store name all belong to the chosen manifest
        assert image.manifest.config.digest == json.loads(store.read_blob(image.digest))[
            "config"]["digest"]
        assert image.reference == store_reference(Reference.parse(pushed["all"]), wanted)
        pulled[str(image.reference)] = image.digest
    names = index_entries(store)
    # one name per distinct platform; aliases of a platform share it
    assert names == pulled
    assert len(names) == len({str(Platform.parse(r)) for r, _ in REQUESTS})
    assert sorted(set(names.values())) == sorted(
        remote[e] for e in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6")
    )
    for name, digest in names.items():
        local = skopeo_local(store, name)
        assert local["Digest"] == digest
        assert local["Architecture"] == store.resolve(name).config.architecture  # type: ignore[union-attr]
    if HOST.architecture == "amd64":
        assert names[pushed["all"]] == remote["linux/amd64"]
        assert names[pushed["all"] + "--ptc-linux-arm64-v8"] == remote["linux/arm64"]
        assert names[pushed["all"] + "--ptc-linux-arm-v7"] == remote["linux/arm/v7"]
        assert skopeo_local(store, pushed["all"] + "--ptc-linux-arm-v6")["Architecture"] == "arm"


def test_arm_v7_falls_back_to_v6_and_v6_never_gets_v7(pushed: dict, store: Store) -> None:
    nov7 = remote_entries(pushed["nov7"])
    image = pull(pushed["nov7"], store, platform="linux/arm/v7")
    assert image.digest == nov7["linux/arm/v6"]
    assert image.config.variant == "v6"
    assert pull(pushed["nov7"], store, platform="linux/arm/v5").digest == nov7["linux/arm/v5"]
    only_v7_and_up = remote_entries(pushed["all"])
    image = pull(pushed["all"], store, platform="linux/arm/v6")
    assert image.digest == only_v7_and_up["linux/arm/v6"] != only_v7_and_up["linux/arm/v7"]
    # arm64 CPUs also run 32-bit arm (containerd's rule): the best one left is v6
    assert pull(pushed["nov7"], store, platform="linux/arm64").digest == nov7["linux/arm/v6"]


def test_no_match_lists_what_the_index_has(pushed: dict, store: Store) -> None:
    with pytest.raises(PlatformNotFoundError) as info:
        pull(pushed["all"], store, platform="linux/s390x")
    assert info.value.platform == "linux/s390x"
    assert info.value.available == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7",
                                    "linux/arm/v6"]
    assert "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6" in str(info.value)
    assert index_entries(store) == {}
    assert list((store.root / "tmp").iterdir()) == []


def test_bad_platform_string(pushed: dict, store: Store) -> None:
    with pytest.raises(InvalidOptionError, match="invalid platform 'linux/amd46'"):
        pull(pushed["all"], store, platform="linux/amd46")


def test_policies_find_each_platform_offline(pushed: dict, store: Store) -> None:
    arm64 = pull(pushed["all"], store, platform="linux/arm64")
    assert pull(pushed["all"], store, platform="arm64", policy="never") == arm64
    assert pull(pushed["all"], store, platform=Platform("linux", "aarch64")) == arm64
    with pytest.raises(ImageNotFoundError, match="for platform linux/arm/v6"):
        pull(pushed["all"], store, platform="linux/arm/v6", policy="never")
    host = pull(pushed["all"], store)
    assert host.reference == Reference.parse(pushed["all"])
    assert pull(pushed["all"], store, platform=HOST, policy="never") == host


def test_index_pinned_by_digest(pushed: dict, store: Store) -> None:
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{pushed['all']}")
    pinned = Reference.parse(pushed["all"]).with_digest(digest_of(raw.encode()))
    pinned = Reference(pinned.registry, pinned.repository, None, pinned.digest)
    image = pull(pinned, store, platform="linux/arm/v6")
    assert image.reference.tag == "ptc-linux-arm-v6"
    assert image.reference.digest == pinned.digest
    assert image.digest == remote_entries(pushed["all"])["linux/arm/v6"]
    assert skopeo_local(store, image.reference)["Digest"] == image.digest


def test_single_platform_manifest_checked_against_an_explicit_platform(
    registry: RegistryServer, multiarch_layout: Path, store: Store
) -> None:
    ref = registry.push_oci(multiarch_layout, "arm64", "oracle/arm64only", "1")
    assert pull(ref, store, platform="linux/arm64").config.architecture == "arm64"
    with pytest.raises(PlatformNotFoundError) as info:
        pull(ref, store, platform="linux/s390x")
    assert info.value.available == ["linux/arm64/v8"]
    assert "single-platform image for linux/arm64/v8" in str(info.value)


def test_images_factory_keeps_one_image_per_platform(pushed: dict, store: Store) -> None:
    remote = remote_entries(pushed["all"])
    images = Images(store, platform="linux/arm/v7")
    assert images.platform == Platform("linux", "arm", "v7")
    assert images.get(pushed["all"]).digest == remote["linux/arm/v7"]
    assert images.get(pushed["all"], platform="linux/arm/v6").digest == remote["linux/arm/v6"]
    assert images.pull(pushed["all"], platform="arm64").digest == remote["linux/arm64"]
    assert images.get(pushed["all"]).digest == remote["linux/arm/v7"]
    with pytest.raises(InvalidOptionError):
        Images(store, platform="linux")


# -- running: the host's platform or a clear error --------------------------------------

FOREIGN = {"amd64": "linux/arm64", "arm64": "linux/amd64"}.get(HOST.architecture)


@pytest.fixture
def factory(store: Store, container_runtime: Runtime) -> Iterator[Containers]:
    """Function scope: a :class:`Containers` factory on ``store``; closed at teardown."""
    made = Containers(Images(store), container_runtime)
    yield made
    made.close()


@needs("docker-registry", "skopeo", "umoci")
@pytest.mark.skipif(FOREIGN is None, reason="relabelled images need an amd64 or arm64 host")
def test_start_refuses_a_platform_this_machine_cannot_run(
    pushed: dict, factory: Containers, store: Store
) -> None:
    assert FOREIGN is not None
    if host_can_run(Platform.parse(FOREIGN)):
        pytest.skip(f"this machine runs {FOREIGN} (binfmt_misc)")
    with pytest.raises(ContainerStartError) as info:
        factory.run(pushed["all"], ["true"], platform=FOREIGN)
    message = str(info.value)
    assert str(Platform.parse(FOREIGN)) in message and str(HOST) in message
    assert "allow_foreign_platform=True" in message
    assert info.value.platform == str(Platform.parse(FOREIGN))
    assert list(store.snapshots_dir.iterdir()) == []  # refused before unpacking
    assert factory.started == []
    # the busybox inside is really the host's: opting in runs it
    result = factory.run(
        pushed["all"], ["echo", "hi"], platform=FOREIGN, allow_foreign_platform=True
    )
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    host = factory.run(pushed["all"], ["echo", "host"], platform=str(HOST))
    assert host.stdout == "host\n"


@needs("docker-registry", "skopeo", "umoci")
@pytest.mark.skipif(FOREIGN is None, reason="relabelled images need an amd64 or arm64 host")
def test_container_platform_option(
    pytester: pytest.Pytester, pushed: dict, tmp_path: Path
) -> None:
    assert FOREIGN is not None
    if host_can_run(Platform.parse(FOREIGN)):
        pytest.skip(f"this machine runs {FOREIGN} (binfmt_misc)")
    pytester.makepyfile(
        f"""
        import pytest
        from pytest_containers.exceptions import ContainerStartError
        IMAGE = {pushed["all"]!r}

        def test_foreign(images, containers):
            assert str(images.platform) == {str(Platform.parse(FOREIGN))!r}
            with pytest.raises(ContainerStartError, match="cannot run"):
                containers.run(IMAGE, ["true"])
            assert containers.run(IMAGE, ["true"], platform={str(HOST)!r}).exit_code == 0
        """
    )
    store = f"--container-store={tmp_path / 'store'}"
    result = pytester.runpytest_subprocess(f"--container-platform={FOREIGN}", store,
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pytester.makeini(f"[pytest]\ncontainer_platform = {FOREIGN}\n")
    result = pytester.runpytest_subprocess(store, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--container-platform=linux/amd46", store)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--container-platform: invalid platform 'linux/amd46'*"])
