"""The image format matrix, pulled from a real distribution registry.

Each image is made by an independent tool (umoci builds it; skopeo recompresses
and pushes it; podman makes the multi-arch list) or, where no tool writes the
format, PUT by hand with httpx over blobs skopeo pushed. Each pull goes through
:func:`pull` into a fresh store and is checked against an oracle: the manifest
and config as ``skopeo inspect`` reads them from the registry, the blob bytes in
the registry's storage, and the rootfs ``umoci unpack`` makes of the original
(gzip) image.

Formats: layers uncompressed, gzip and zstd; layers whose media type and bytes
disagree; Docker v2 schema 2 (by digest, converted as skopeo converts it);
OCI index and Docker manifest list by ``podman manifest push``; an OCI manifest
without ``mediaType``; Docker schema 1 (refused, whatever its ``Content-Type``);
non-distributable (OCI) and foreign (Docker) layers fetched from their ``urls``,
with the registry as fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pytest_containers.plugins._httpd import ThreadedServer
from pytest_containers.plugins.file_server import FileServer
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.exceptions import (
    DigestMismatchError,
    ManifestUnknownError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.auth import Credentials
from pytest_containers.image.digest import digest_of
from pytest_containers.image.pull import pull
from pytest_containers.image.reference import Reference
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store

REPOSITORY = "formats/busybox"
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def skopeo_raw(ref: str, *extra: str) -> dict[str, Any]:
    """The manifest (or with ``--config``, the config) as the registry serves it."""
    return json.loads(
        run("skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}")
    )


def skopeo_digest(ref: str) -> str:
    """The digest of the manifest the registry serves for ``ref``."""
    return run(
        "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}"
    ).strip()


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Relative path -> (type, permission bits, uid, gid, sha256 of the content or the
    link target), for everything below ``root`` (``root`` itself left out)."""
    found: dict[str, tuple[object, ...]] = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as file:
                    what = hashlib.file_digest(file, "sha256").hexdigest()
            else:
                what = ""
            found[os.path.relpath(path, root)] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                what,
            )
    return found


def assert_store_clean(store: Store, *, names: int = 0) -> None:
    """No temp files, no snapshot temp dirs, and only ``names`` index entries."""
    assert list((store.root / "tmp").iterdir()) == []
    assert [p for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp")] == []
    index = json.loads((store.layout / "index.json").read_text())
    assert len(index["manifests"]) == names


def put_manifest(
    server: RegistryServer,
    repository: str,
    tag: str,
    doc: dict[str, Any] | bytes,
    media_type: str,
    auth: tuple[str, str] | None = None,
) -> str:
    """``PUT /v2/<repository>/manifests/<tag>`` of ``doc`` (a dict is dumped as JSON)
    with ``Content-Type: <media_type>``; returns the reference ``HOST/REPO:TAG``."""
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    response = httpx.put(
        f"{server.url}/v2/{repository}/manifests/{tag}",
        content=data,
        headers={"Content-Type": media_type},
        auth=auth,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest_of(data)
    return f"{server.host}/{repository}:{tag}"


def upload_blob(
    server: RegistryServer, repository: str, data: bytes, auth: tuple[str, str] | None = None
) -> str:
    """A monolithic blob upload (``POST`` then ``PUT ?digest=``); returns the digest."""
    digest = digest_of(data)
    started = httpx.post(f"{server.url}/v2/{repository}/blobs/uploads/", auth=auth)
    assert started.status_code == 202, started.text
    location = started.request.url.join(started.headers["Location"])  # keeps its _state
    done = httpx.put(
        location.copy_merge_params({"digest": digest}),
        content=data,
        auth=auth,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    return digest


def blob_in_registry(
    server: RegistryServer, repository: str, digest: str, auth: tuple[str, str] | None = None
) -> bool:
    response = httpx.head(f"{server.url}/v2/{repository}/blobs/{digest}", auth=auth)
    assert response.status_code in (200, 404), response.status_code
    return response.status_code == 200


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="module")
def oracle_rootfs(busybox_layout: Path, work: Path) -> dict[str, tuple[object, ...]]:
    """Module scope: :func:`tree` of ``umoci unpack`` of the (gzip) busybox image."""
    bundle = work / "umoci-bundle"
    run("umoci", "unpack", "--image", f"{busybox_layout}:latest", bundle)
    return tree(bundle / "rootfs")


@pytest.fixture(scope="module")
def layouts(busybox_layout: Path, work: Path) -> dict[str, Path]:
    """Module scope: the busybox image as OCI layouts (ref ``latest``) by layer format:
    ``gzip`` (umoci's), ``plain`` (uncompressed by skopeo: ``--dest-decompress`` only
    works for ``dir:``, so through ``dir:`` and back) and ``zstd`` (skopeo
    ``--dest-compress-format zstd``)."""
    plain_dir, plain, zstd = work / "plain-dir", work / "plain", work / "zstd"
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--dest-decompress",
        f"oci:{busybox_layout}:latest",
        f"dir:{plain_dir}",
    )
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--dest-oci-accept-uncompressed-layers",
        f"dir:{plain_dir}",
        f"oci:{plain}:latest",
    )
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd",
        f"oci:{busybox_layout}:latest",
        f"oci:{zstd}:latest",
    )
    return {"gzip": busybox_layout, "plain": plain, "zstd": zstd}


@pytest.fixture(scope="module")
def pushed(registry: RegistryServer, layouts: dict[str, Path]) -> dict[str, str]:
    """Module scope: ``formats/busybox`` tags ``gzip``, ``plain``, ``zstd`` (OCI, the
    layers as in the layouts) and ``v2s2`` (Docker v2 schema 2, gzip), all in one
    repository so that hand-made manifests can reuse every blob.

    skopeo always compresses what it pushes to a registry and swaps a layer for a
    variant its blob info cache knows (the gzip one, even when asked for zstd):
    ``--preserve-digests`` forbids both, so the layers arrive as they are."""
    refs = {
        name: registry.push_oci(
            layout, "latest", REPOSITORY, name, skopeo_args=["--preserve-digests"]
        )
        for name, layout in layouts.items()
    }
    refs["v2s2"] = registry.push_oci(layouts["gzip"], "latest", REPOSITORY, "v2s2", fmt="v2s2")
    return refs


# -- layers uncompressed, gzip, zstd ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type", "magic"),
    [
        ("plain", mt.OCI_LAYER_TAR, b""),
        ("gzip", mt.OCI_LAYER_GZIP, GZIP_MAGIC),
        ("zstd", mt.OCI_LAYER_ZSTD, ZSTD_MAGIC),
    ],
    ids=["plain", "gzip", "zstd"],
)
def test_layer_compression(
    name: str,
    media_type: str,
    magic: bytes,
    pushed: dict[str, str],
    registry: RegistryServer,
    store: Store,
    oracle_rootfs: dict[str, tuple[object, ...]],
) -> None:
    remote = skopeo_raw(pushed[name])
    config = skopeo_raw(pushed[name], "--config")
    (layer,) = remote["layers"]
    stored = registry.blob_data_path(layer["digest"]).read_bytes()
    # the oracle: the registry really holds this format
    assert layer["mediaType"] == media_type
    if magic:
        assert stored.startswith(magic)
    else:
        assert stored[257:262] == b"ustar" and layer["digest"] == config["rootfs"]["diff_ids"][0]
    image = pull(pushed[name], store)
    assert image.digest == skopeo_digest(pushed[name])
    assert [(d.media_type, d.digest, d.size) for d in image.layers] == [
        (layer["mediaType"], layer["digest"], layer["size"])
    ]
    assert store.read_blob(layer["digest"]) == stored
    assert list(image.config.diff_ids) == config["rootfs"]["diff_ids"]
    (snapshot,) = store.snapshots(image)  # unpacked, its diffID checked against the config
    assert snapshot.name == config["rootfs"]["diff_ids"][0].split(":")[1]
    assert tree(snapshot) == oracle_rootfs
    assert_store_clean(store, names=1)


# -- layer media type and bytes disagree ------------------------------------------------------


@pytest.mark.parametrize(
    ("bytes_of", "manifest_type", "label"),
    [
        ("gzip", mt.OCI_MANIFEST, mt.OCI_LAYER_TAR),
        ("zstd", mt.OCI_MANIFEST, mt.OCI_LAYER_GZIP),
        ("plain", mt.OCI_MANIFEST, mt.OCI_LAYER_ZSTD),
        ("zstd", mt.DOCKER_MANIFEST, mt.DOCKER_LAYER_GZIP),
    ],
    ids=["gzip-as-tar", "zstd-as-gzip", "tar-as-zstd", "zstd-as-docker-gzip"],
)
def test_layer_bytes_win_over_media_type(
    bytes_of: str,
    manifest_type: str,
    label: str,
    pushed: dict[str, str],
    registry: RegistryServer,
    store: Store,
    oracle_rootfs: dict[str, tuple[object, ...]],
) -> None:
    doc = skopeo_raw(pushed[bytes_of])
    doc["layers"][0]["mediaType"] = label
    if manifest_type == mt.DOCKER_MANIFEST:
        doc["mediaType"] = mt.DOCKER_MANIFEST
        doc["config"]["mediaType"] = mt.DOCKER_CONFIG
    tag = f"{bytes_of}-as-{label.rsplit('.', 1)[-1].replace('+', '-')}"
    ref = put_manifest(registry, REPOSITORY, tag, doc, manifest_type)
    image = pull(ref, store)
    assert skopeo_raw(ref)["layers"][0]["mediaType"] == label  # the registry keeps the label
    assert image.layers[0].digest == doc["layers"][0]["digest"]
    (snapshot,) = store.snapshots(image)  # sniffed; the diffID still checked
    assert tree(snapshot) == oracle_rootfs
    assert_store_clean(store, names=1)


# -- Docker v2 schema 2 (what test_registry_pull.py does not cover) ---------------------------


def test_docker_v2s2_by_digest_converted_as_skopeo_converts(
    pushed: dict[str, str], store: Store, work: Path, oracle_rootfs: dict[str, tuple[object, ...]]
) -> None:
    docker = skopeo_raw(pushed["v2s2"])
    assert docker["mediaType"] == mt.DOCKER_MANIFEST
    source = skopeo_digest(pushed["v2s2"])
    pinned = Reference.parse(f"{pushed['v2s2'].rsplit(':', 1)[0]}@{source}")
    assert pinned.tag is None
    image = pull(pinned, store)
    assert image.source_digest == source != image.digest
    assert image.reference == pinned
    # the stored manifest is what skopeo makes of the image for an OCI destination,
    # except that skopeo re-serializes the config (here: drops a final newline) and
    # we keep the registry's bytes: same layers, same config document
    (oci_dir := work / "skopeo-oci").mkdir()
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--format",
        "oci",
        f"docker://{pinned}",
        f"oci:{oci_dir}:converted",
    )
    blobs = oci_dir / "blobs" / "sha256"
    index = json.loads((oci_dir / "index.json").read_text())
    theirs = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    ours = json.loads(store.read_blob(image.digest))
    assert ours["mediaType"] == mt.OCI_MANIFEST
    assert ours["layers"] == theirs["layers"]
    assert ours["config"]["mediaType"] == theirs["config"]["mediaType"] == mt.OCI_CONFIG
    assert ours["config"]["digest"] == docker["config"]["digest"]
    assert json.loads(store.read_blob(ours["config"]["digest"])) == json.loads(
        (blobs / theirs["config"]["digest"][7:]).read_bytes()
    )
    # pulled again by the same digest: found under its name, no second entry
    assert pull(pinned, store, policy="never") == image
    # umoci reads the converted manifest from our store into the same rootfs
    bundle = work / "umoci-from-store"
    run("umoci", "unpack", "--image", f"{store.layout}:{image.reference}", bundle)
    assert tree(bundle / "rootfs") == oracle_rootfs
    assert tree(store.snapshots(image)[0]) == oracle_rootfs
    assert_store_clean(store, names=1)


# -- a multi-arch index or manifest list made by podman ---------------------------------------


#: podman 4.3 refuses a ``--runroot`` longer than this (it holds sockets' paths).
PODMAN_RUNROOT_MAX = 50


@pytest.fixture
def podman(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., str]]:
    """Function scope: ``podman(*args)`` runs podman with all its state (storage,
    libpod tmpdir and blob info cache, ``TMPDIR``) in ``tmp_path`` and its run root
    in a numbered pytest temp dir (a short path: see ``PODMAN_RUNROOT_MAX``, else a
    ``ptc-podman-*`` dir of the system temp dir); vfs driver, no events, cgroupfs.
    Both are removed at teardown. Manifest commands start no process that stays."""
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    top = tmp_path / "podman"
    for sub in ("root", "tmp"):
        (top / sub).mkdir(parents=True)
    runroot = tmp_path_factory.mktemp("podrun")
    if len(str(runroot)) > PODMAN_RUNROOT_MAX:
        runroot.rmdir()
        runroot = Path(tempfile.mkdtemp(prefix="ptc-podman-"))
    argv = [
        "podman",
        "--root",
        str(top / "root"),
        "--runroot",
        str(runroot),
        "--tmpdir",
        str(top / "tmp"),
        "--storage-driver",
        "vfs",
        "--events-backend",
        "none",
        "--cgroup-manager",
        "cgroupfs",
    ]
    env = {**os.environ, "TMPDIR": str(top / "tmp")}

    def podman(*args: str) -> str:
        return run(*argv, *args, env=env)

    try:
        yield podman
    finally:
        shutil.rmtree(top)
        shutil.rmtree(runroot)


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_podman_manifest_list(
    fmt: str,
    podman: Callable[..., str],
    registry: RegistryServer,
    multiarch_layout: Path,
    store: Store,
) -> None:
    repository = f"formats/podman-{fmt}"
    for arch in ("amd64", "arm64"):  # umoci images whose configs say amd64 and arm64
        registry.push_oci(multiarch_layout, arch, repository, arch)
    podman("manifest", "create", "ptc-list")
    for arch in ("amd64", "arm64"):
        podman(
            "manifest",
            "add",
            "--tls-verify=false",
            "ptc-list",
            f"docker://{registry.host}/{repository}:{arch}",
        )
    ref = f"{registry.host}/{repository}:multi"
    podman(
        "manifest",
        "push",
        "--quiet",
        "--all",
        "--tls-verify=false",
        "--format",
        fmt,
        "ptc-list",
        f"docker://{ref}",
    )
    remote = skopeo_raw(ref)
    assert remote["mediaType"] == {"oci": mt.OCI_INDEX, "v2s2": mt.DOCKER_MANIFEST_LIST}[fmt]
    entries = {m["platform"]["architecture"]: m for m in remote["manifests"]}
    assert sorted(entries) == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        image = pull(ref, store, platform=f"linux/{arch}")
        entry = entries[arch]
        assert (image.source_digest or image.digest) == entry["digest"]
        assert image.manifest.media_type == mt.OCI_MANIFEST
        chosen = skopeo_raw(f"{registry.host}/{repository}@{entry['digest']}")
        assert chosen.get("mediaType", mt.OCI_MANIFEST) == entry["mediaType"]
        assert image.manifest.config.digest == chosen["config"]["digest"]
        assert image.config.architecture == arch
        local = json.loads(run("skopeo", "inspect", f"oci:{store.layout}:{image.reference}"))
        assert (local["Digest"], local["Architecture"]) == (image.digest, arch)
    assert_store_clean(store, names=2)


# -- an OCI manifest without mediaType --------------------------------------------------------


def test_oci_manifest_without_media_type(
    pushed: dict[str, str], registry: RegistryServer, store: Store
) -> None:
    doc = skopeo_raw(pushed["gzip"])
    doc.pop("mediaType", None)  # optional in OCI (manifest.md); umoci leaves it out anyway
    data = json.dumps(doc, indent=1).encode()  # spacing no tool writes: must be kept as is
    ref = put_manifest(registry, REPOSITORY, "no-media-type", data, mt.OCI_MANIFEST)
    assert b'"mediaType": "application/vnd.oci.image.manifest' not in data
    image = pull(ref, store)
    assert image.digest == digest_of(data)
    assert store.read_blob(image.digest) == data
    assert image.manifest.media_type == mt.OCI_MANIFEST
    assert image.layers[0].digest == doc["layers"][0]["digest"]
    local = json.loads(run("skopeo", "inspect", f"oci:{store.layout}:{image.reference}"))
    assert local["Digest"] == image.digest
    assert_store_clean(store, names=1)


# -- Docker schema 1 --------------------------------------------------------------------------


class ManifestServer:
    """A registry stand-in: ``GET /v2/`` answers 200, ``GET`` of a path in
    ``routes`` answers its ``(content type, body)``, anything else 404."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self._server = ThreadedServer()

    def start(self) -> ManifestServer:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                content_type, body = routes.get(self.path, ("", b""))
                if self.path == "/v2/":
                    content_type, body = "application/json", b"{}"
                self.send_response(200 if content_type else 404)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server.start(Handler, "ptc-manifest-server")
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.port}"

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def schema1_signed(busybox_layout: Path, work: Path) -> bytes:
    """Module scope: the busybox image as a signed Docker schema 1 manifest (skopeo
    ``--format v2s1`` signs it with a key of its own)."""
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--format",
        "v2s1",
        f"oci:{busybox_layout}:latest",
        f"dir:{work / 'schema1'}",
    )
    return (work / "schema1" / "manifest.json").read_bytes()


@pytest.mark.parametrize(
    ("signed", "content_type"),
    [
        (True, mt.DOCKER_SCHEMA1_SIGNED_MANIFEST),
        (False, mt.DOCKER_SCHEMA1_MANIFEST),
        (True, "application/json"),
        (False, "application/octet-stream"),
    ],
)
def test_schema1_refused_naming_reference_and_type(
    signed: bool, content_type: str, schema1_signed: bytes, store: Store
) -> None:
    """distribution 2.8 stores only *signed* schema 1 (and only with
    ``compatibility.schema1.enabled``; test_registry_pull.py pulls that one), and
    always serves it as ``...v1+prettyjws``: other ways registries send schema 1
    come from a stand-in."""
    doc = json.loads(schema1_signed)
    assert doc["schemaVersion"] == 1 and doc["signatures"]
    if not signed:
        del doc["signatures"]
    server = ManifestServer()
    server.routes["/v2/old/busybox/manifests/s1"] = (content_type, json.dumps(doc).encode())
    server.start()
    try:
        ref = f"{server.host}/old/busybox:s1"
        with pytest.raises(UnsupportedMediaTypeError) as info:
            pull(ref, store)
    finally:
        server.stop()
    assert info.value.reference == ref
    assert ref in str(info.value)
    assert info.value.media_type == content_type
    assert content_type in str(info.value)
    assert "schema 1" in str(info.value)
    assert_store_clean(store)


# -- non-distributable and foreign layers, fetched from their urls ----------------------------

USER, PASSWORD = "puller", "s3cret"
AUTH = (USER, PASSWORD)
FOREIGN_PRESENT = "formats/foreign-present"  # the layer blob is in the registry too
FOREIGN_ABSENT = "formats/foreign-absent"  # only the config is


@pytest.fixture(scope="module")
def foreign_registry(work: Path) -> Iterator[RegistryServer]:
    """Module scope: a registry of its own, Basic auth (one user; so that the layer
    URLs are seen never to get its ``Authorization``), that accepts manifests with
    ``urls`` on ``http://127.0.0.1:PORT/``."""
    bcrypt = pytest.importorskip("bcrypt", reason="the htpasswd file needs bcrypt hashes")
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    htpasswd = work / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    server = RegistryServer(
        htpasswd=htpasswd, manifest_urls_allow=[r"^http://127\.0\.0\.1:[0-9]+/"]
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def foreign(
    foreign_registry: RegistryServer, busybox_layout: Path, work: Path
) -> Iterator[dict[str, Any]]:
    """Module scope: the busybox image in ``FOREIGN_PRESENT`` (pushed by skopeo) and
    its config alone in ``FOREIGN_ABSENT``; a :class:`FileServer` serving, under
    ``/layers/``, ``good`` (the layer), ``wrong`` (as many other bytes) and ``long``
    (the layer and one byte more)."""
    base = foreign_registry.push_oci(
        busybox_layout, "latest", FOREIGN_PRESENT, "base", creds=f"{USER}:{PASSWORD}"
    )
    raw = json.loads(
        run(
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{USER}:{PASSWORD}",
            f"docker://{base}",
        )
    )
    layer = raw["layers"][0]
    data = foreign_registry.blob_data_path(layer["digest"]).read_bytes()
    config = foreign_registry.blob_data_path(raw["config"]["digest"]).read_bytes()
    upload_blob(foreign_registry, FOREIGN_ABSENT, config, AUTH)
    files = work / "files"
    (files / "layers").mkdir(parents=True)
    (files / "layers" / "good").write_bytes(data)
    (files / "layers" / "wrong").write_bytes(bytes(b ^ 0x5A for b in data))
    (files / "layers" / "long").write_bytes(data + b"\0")
    with FileServer(files) as server:
        yield {"config": raw["config"], "layer": layer, "files": server}


def foreign_manifest(
    foreign: dict[str, Any], urls: list[str], *, docker: bool = False
) -> tuple[dict[str, Any], str]:
    """A manifest of the busybox config and its one layer, given ``urls``: OCI with a
    non-distributable layer, or Docker v2s2 with a foreign layer. Returns it and
    its media type."""
    layer = {k: foreign["layer"][k] for k in ("digest", "size")}
    config = {k: foreign["config"][k] for k in ("digest", "size")}
    if docker:
        kinds = (mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_FOREIGN_GZIP)
    else:
        kinds = (mt.OCI_MANIFEST, mt.OCI_CONFIG, mt.OCI_LAYER_NONDIST_GZIP)
    doc = {
        "schemaVersion": 2,
        "mediaType": kinds[0],
        "config": {"mediaType": kinds[1], **config},
        "layers": [{"mediaType": kinds[2], **layer, "urls": urls}],
    }
    return doc, kinds[0]


@pytest.fixture
def credentials_client(foreign_registry: RegistryServer) -> Iterator[RegistryClient]:
    client = RegistryClient(foreign_registry.host, credentials=Credentials(USER, PASSWORD, "test"))
    yield client
    client.close()


@pytest.mark.parametrize("docker", [False, True], ids=["oci-nondistributable", "docker-foreign"])
def test_foreign_layer_fetched_from_its_url(
    docker: bool,
    files: FileServer,
    foreign: dict[str, Any],
    foreign_registry: RegistryServer,
    credentials_client: RegistryClient,
    store: Store,
    oracle_rootfs: dict[str, tuple[object, ...]],
) -> None:
    digest = foreign["layer"]["digest"]
    assert not blob_in_registry(foreign_registry, FOREIGN_ABSENT, digest, AUTH)
    refused = f"http://127.0.0.1:{closed_port()}/layers/good"
    missing = f"{files.url}/layers/missing"
    good = f"{files.url}/layers/good?docker={docker}"  # a query string is kept
    doc, kind = foreign_manifest(foreign, [refused, missing, good], docker=docker)
    ref = put_manifest(foreign_registry, FOREIGN_ABSENT, f"url-{docker}", doc, kind, AUTH)
    before = len(files.requests)
    image = pull(ref, store, client=credentials_client)
    seen = files.requests[before:]
    assert [(r.path, r.status) for r in seen] == [("/layers/missing", 404), ("/layers/good", 200)]
    assert all("authorization" not in r.headers for r in seen)
    assert store.read_blob(digest) == (files.root / "layers" / "good").read_bytes()
    (layer,) = image.layers
    assert layer.urls == (refused, missing, good)
    assert layer.media_type == mt.OCI_LAYER_NONDIST_GZIP  # Docker's foreign type converted
    assert (image.source_digest or image.digest) == digest_of(json.dumps(doc).encode())
    (snapshot,) = store.snapshots(image)
    assert tree(snapshot) == oracle_rootfs
    assert_store_clean(store, names=1)


def serve(files: FileServer, served: str) -> str:
    """The URL under which ``files`` serves what ``served`` names: ``good``, ``wrong``
    or ``long`` bytes, ``404``, a redirect to ``good`` (``redirect-http``) or to an
    ``ftp://`` URL (``redirect-ftp``)."""
    if served.startswith("redirect-"):
        target = f"{files.url}/layers/good"
        if served == "redirect-ftp":
            target = f"ftp://127.0.0.1:{closed_port()}/layers/good"
        files.statuses.append((302, {"Location": target}))
        return f"{files.url}/layers/redirect"
    return f"{files.url}/layers/{ {'404': 'missing'}.get(served, served) }"


@pytest.fixture
def files(foreign: dict[str, Any]) -> Iterator[FileServer]:
    """Function scope: the layer URLs' :class:`FileServer`; faults cleared after."""
    server: FileServer = foreign["files"]
    yield server
    server.statuses.clear()


def test_foreign_layer_url_redirected(
    files: FileServer,
    foreign: dict[str, Any],
    foreign_registry: RegistryServer,
    credentials_client: RegistryClient,
    store: Store,
) -> None:
    url = serve(files, "redirect-http")
    doc, kind = foreign_manifest(foreign, [url])
    ref = put_manifest(foreign_registry, FOREIGN_ABSENT, "redirected", doc, kind, AUTH)
    before = len(files.requests)
    image = pull(ref, store, client=credentials_client)
    seen = [(r.path, r.status) for r in files.requests[before:]]
    assert seen == [("/layers/redirect", 302), ("/layers/good", 200)]
    assert store.has_blob(image.layers[0].digest)
    assert_store_clean(store, names=1)


@pytest.mark.parametrize("served", ["wrong", "long", "404", "redirect-ftp"])
def test_foreign_layer_falls_back_to_the_registry(
    served: str,
    files: FileServer,
    foreign: dict[str, Any],
    foreign_registry: RegistryServer,
    credentials_client: RegistryClient,
    store: Store,
) -> None:
    url = serve(files, served)
    refused = f"http://127.0.0.1:{closed_port()}/layers/good"
    doc, kind = foreign_manifest(foreign, [refused, url])
    ref = put_manifest(foreign_registry, FOREIGN_PRESENT, f"fallback-{served}", doc, kind, AUTH)
    before = len(files.requests)
    image = pull(ref, store, client=credentials_client)
    assert [r.path for r in files.requests[before:]] == [urlsplit(url).path]
    digest = foreign["layer"]["digest"]
    assert store.read_blob(digest) == foreign_registry.blob_data_path(digest).read_bytes()
    assert image.layers[0].digest == digest
    assert_store_clean(store, names=1)


@pytest.mark.parametrize("served", ["wrong", "404", "redirect-ftp"])
def test_foreign_layer_nowhere(
    served: str,
    files: FileServer,
    foreign: dict[str, Any],
    foreign_registry: RegistryServer,
    credentials_client: RegistryClient,
    store: Store,
) -> None:
    url = serve(files, served)
    digest = foreign["layer"]["digest"]
    doc, kind = foreign_manifest(foreign, [url])
    ref = put_manifest(foreign_registry, FOREIGN_ABSENT, f"nowhere-{served}", doc, kind, AUTH)
    expected = DigestMismatchError if served == "wrong" else ManifestUnknownError
    with pytest.raises(expected) as info:
        pull(ref, store, client=credentials_client)
    message = str(info.value)
    assert digest in message and url in message
    assert info.value.urls == [url]
    assert "HTTP 404" in message  # the registry's answer
    if served == "wrong":
        assert info.value.digest == digest
        assert info.value.url == url
        wrong = (files.root / "layers" / "wrong").read_bytes()
        assert info.value.actual == digest_of(wrong)
    elif served == "404":
        assert f"GET {url}: HTTP 404" in message  # the URL's
    else:
        assert "unsupported protocol 'ftp://'" in message
    assert not store.has_blob(digest)
    assert store.resolve(ref) is None
    assert_store_clean(store)
