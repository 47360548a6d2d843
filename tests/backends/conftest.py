"""Fixtures for tests that need the registry, skopeo and umoci binaries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_containers.plugins.oracle_images import build_busybox_layout

from pytest_containers.image.digest import digest_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pytest_containers import Containers
    from pytest_containers.image.store import Store

_TOOLS = ("docker-registry", "skopeo", "umoci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        skip = pytest.mark.skip(reason=f"needs {', '.join(missing)}")
        for item in items:
            if "backends" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session scope: an OCI layout built by umoci, ref ``latest`` (host arch)."""
    return build_busybox_layout(tmp_path_factory.mktemp("oracle") / "layout")


@pytest.fixture(scope="session")
def multiarch_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session scope: an OCI layout whose ref ``multi`` is an index of
    ``unknown/unknown`` (an attestation-like entry, listed first), ``linux/amd64``
    and ``linux/arm64/v8`` busybox manifests (the arm64 one only relabelled)."""
    layout = tmp_path_factory.mktemp("oracle-multi") / "layout"
    build_busybox_layout(layout, ref_name="amd64", architecture="amd64")
    build_busybox_layout(layout, ref_name="arm64", architecture="arm64")
    index = json.loads((layout / "index.json").read_text())
    by_name = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}

    def entry(name: str, platform: dict[str, str], **annotations: str) -> dict[str, object]:
        desc = {k: by_name[name][k] for k in ("mediaType", "digest", "size")}
        desc["platform"] = platform
        if annotations:
            desc["annotations"] = annotations
        return desc

    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(
                "arm64",
                {"os": "unknown", "architecture": "unknown"},
                **{"vnd.docker.reference.type": "attestation-manifest"},
            ),
            entry("amd64", {"os": "linux", "architecture": "amd64"}),
            entry("arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
    }
    data = json.dumps(doc).encode()
    digest = digest_of(data)
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    index["manifests"].append(
        {
            "mediaType": doc["mediaType"],
            "digest": digest,
            "size": len(data),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return layout


# -- busybox rootfs and the runc backend (tests/backends/test_runc.py) ----------------
# (appended section: its imports stay here so the section is self-contained)

import os  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

from pytest_containers.runtime import ContainerSpec  # noqa: E402
from pytest_containers.runtime.ocicli import OciCliContainer, OciCliRuntime  # noqa: E402


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session scope: a directory with the host's static ``/bin/busybox``, one
    symlink per applet (``busybox --list``), ``etc/passwd`` and ``tmp/``; used as
    the single layer of test containers. Removed with pytest's tmp dirs."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs /bin/busybox")
    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "root").mkdir()
    return root


def ocicli_leftovers(runtime: OciCliRuntime, container_id: str) -> list[str]:
    """Everything of ``container_id`` still on the host: state dir, cgroup dirs in
    any hierarchy, mounts, and the runtime's own state."""
    found: list[str] = []
    if (runtime.state_root / container_id).exists():
        found.append(f"state dir {runtime.state_root / container_id}")
    cgroup_root = Path("/sys/fs/cgroup")
    found += [
        f"cgroup {p}"
        for p in (
            *cgroup_root.glob(f"ptc/{container_id}"),
            *cgroup_root.glob(f"*/ptc/{container_id}"),
        )
    ]
    found += [
        f"mount {line}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if container_id in line
    ]
    runtime_root = runtime.state_root / container_id / f"{runtime.name}-root"
    if runtime_root.is_dir():  # (``list`` would create it)
        listed = subprocess.run(
            runtime.argv(runtime_root, "list", "--quiet"), capture_output=True, text=True
        )
        if container_id in listed.stdout.split():
            found.append(f"{runtime.name} state of {container_id}")
    return found


@pytest.fixture
def runc_runtime(tmp_path: Path) -> Iterator[OciCliRuntime]:
    """Function scope: ``OciCliRuntime("runc")`` with its state root in ``tmp_path``;
    at teardown it is closed and nothing may remain in its state root."""
    rt = OciCliRuntime("runc", state_root=tmp_path / "ptc")
    yield rt
    rt.close()
    assert not any(rt.state_root.glob("*")), list(rt.state_root.rglob("*"))


@pytest.fixture
def start_runc(
    runc_runtime: OciCliRuntime, busybox_rootfs: Path
) -> Iterator[Callable[..., OciCliContainer]]:
    """Function scope: ``start_runc(args, **spec_fields)`` runs a busybox container and
    returns its handle; every container started is deleted at teardown and the
    test fails if anything of it is left."""
    started: list[OciCliContainer] = []

    def _start(args: list[str], **fields: object) -> OciCliContainer:
        spec = ContainerSpec(args=tuple(args), layers=(busybox_rootfs,), **fields)
        container = runc_runtime.start(spec, container_id=f"ptc-{uuid.uuid4().hex[:12]}")
        started.append(container)
        return container

    yield _start
    for container in started:
        container.delete()
    for container in started:
        assert ocicli_leftovers(runc_runtime, container.id) == []


def waiter_pids(owner: int) -> list[int]:
    """Live waiting processes of the OCI command line backend (``python -I -S -c
    _WAITER OWNER``) whose owner is ``owner``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[1:4] == [b"-I", b"-S", b"-c"] and argv[-1] == str(owner).encode():
            if state != "Z":
                found.append(int(proc.name))
    return found


def load_tags(store: Store, layout: Path, repository: str, tags: Iterable[str],
              work: Path) -> None:
    """Load each ``tag`` of the OCI layout into ``store`` as ``repository:tag``,
    through an OCI archive that skopeo writes (the way users get images in)."""
    from pytest_containers import Images

    for tag in tags:
        archive = work / f"{tag}.tar"
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}",
                        f"oci-archive:{archive}:{repository}:{tag}"], check=True)  # fmt: skip
        Images(store).load(archive)


def backend_containers(backend: str, store: Store) -> Iterator[Containers]:
    """A ``Containers`` factory on ``backend`` over ``store`` (pull policy never);
    everything it started, and the backend, closed after the yield."""
    from pytest_containers import Containers, Images
    from pytest_containers._pluginmanager import make_runtime

    factory = Containers(Images(store, policy="never"), make_runtime(backend))
    yield factory
    factory.close()
    factory.runtime.close()
