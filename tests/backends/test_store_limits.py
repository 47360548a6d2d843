"""The image side against a real registry where the store or the network stands
in the way: a store mounted read-only, a store on a full file system (both in a
private mount namespace, ``unshare -m``, so nothing stays mounted), multi-platform
images pushed back, Docker v2s2 digests, a TLS failure with a host that is not
loopback."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_containers.plugins.registry import RegistryServer

from pytest_containers.image.store import Store, chain_ids
from tests.conftest import needs

CLI = f"{shlex.quote(sys.executable)} -m pytest_containers.cli"


def cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_containers.cli", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def in_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) in a private mount namespace: its mounts die with it."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    [line] = stderr.splitlines()
    assert line.startswith("pytest-containers: error: "), line
    return line.removeprefix("pytest-containers: error: ")


@pytest.fixture(scope="module")
def pushed(registry: RegistryServer, busybox_layout: Path, multiarch_layout: Path) -> dict:
    return {
        "oci": registry.push_oci(busybox_layout, "latest", "limits/busybox", "oci"),
        "v2s2": registry.push_oci(busybox_layout, "latest", "limits/busybox", "v2s2", fmt="v2s2"),
        "multi": registry.push_oci(multiarch_layout, "multi", "limits/multi", "1"),
    }


def skopeo_digest(ref: str) -> str:
    return subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


# -- a read-only store -----------------------------------------------------------------

_READ_ONLY_API = """
import sys
from pytest_containers import Images
from pytest_containers.image.store import Store
store, ref = Store(sys.argv[1]), sys.argv[2]
assert store.read_only, store
for policy in ("never", "missing"):
    print(policy, Images(store, policy=policy).get(ref).digest)
"""


@needs("unshare", "mount")
def test_a_read_only_store_reads_and_refuses_writes(
    pushed: dict, tmp_path: Path, registry: RegistryServer
) -> None:
    rw, ro = tmp_path / "store", tmp_path / "ro"
    ref = pushed["oci"]
    assert cli(rw, "image", "pull", ref).returncode == 0
    store = Store(rw)
    image = store.require(ref)
    with store.lease(chain_ids(image.config.diff_ids)):
        store.snapshots(image)  # unpacked while it could be
    ro.mkdir()
    (tmp_path / "api.py").write_text(_READ_ONLY_API)
    steps = [
        f"{CLI} --store {ro} image ls",
        f"{CLI} --store {ro} image inspect {ref}",
        f"{CLI} --store {ro} image save {ref} -o {tmp_path / 'saved.tar'}",
        f"{CLI} --store {ro} image pull --pull missing {ref}",
        f"{CLI} --store {ro} run --pull never {ref} -- echo ran-read-only",
        f"{shlex.quote(sys.executable)} {tmp_path / 'api.py'} {ro} {ref}",
        f"{CLI} --store {ro} image tag {ref} x/y:1",
        f"{CLI} --store {ro} image rm {ref}",
        f"{CLI} --store {ro} image prune",
        f"{CLI} --store {ro} image pull {ref}",
        f"{CLI} --store {ro} image load -i {tmp_path / 'saved.tar'}",
    ]
    script = f"mount --bind {rw} {ro} && mount -o remount,ro,bind {ro} || exit 99\n"
    script += "".join(f"{step} >>{tmp_path}/out 2>>{tmp_path}/err; echo $? >>{tmp_path}/rc\n"
                      for step in steps)  # fmt: skip
    proc = in_mount_namespace(script)
    assert proc.returncode == 0, proc.stderr
    codes = [int(c) for c in (tmp_path / "rc").read_text().split()]
    errors = (tmp_path / "err").read_text()
    assert codes == [0] * 6 + [125] * 5, errors
    out = (tmp_path / "out").read_text()
    assert ref in out and image.digest in out and "ran-read-only" in out
    assert f"never {image.digest}" in out and f"missing {image.digest}" in out
    assert "Traceback" not in errors
    lines = errors.splitlines()
    assert len(lines) == 5
    for line, what in zip(lines, ["name", "remove", "prune", "pull", "load"], strict=True):
        assert line.startswith(f"pytest-containers: error: store {ro} is read-only (read-only")
        assert f": cannot {what}" in line
    assert (tmp_path / "saved.tar").stat().st_size > 0
    assert [str(i.reference) for i in Store(rw).images()] == [ref]


# -- a full file system ------------------------------------------------------------------


@needs("unshare", "mount")
def test_a_full_store_names_the_store_and_the_blob(pushed: dict, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    store = mnt / "store"
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {mnt} || exit 99\n"
        f"{CLI} --store {store} image pull {pushed['oci']}; echo rc=$?\n"
        f"ls -A {store}/tmp; {CLI} --store {store} image ls\n"
    )
    proc = in_mount_namespace(script)
    assert "rc=125" in proc.stdout, (proc.stdout, proc.stderr)
    line = error_line(proc.stderr)
    assert line.startswith(f"store {store}: cannot write blob sha256:")
    assert line.endswith("bytes): No space left on device")
    listing = proc.stdout.split("rc=125\n", 1)[1]
    assert listing.splitlines() == ["REFERENCE  DIGEST  REGISTRY DIGEST  SIZE"]  # tmp/ empty


# -- pushing back, and the registry's digests ---------------------------------------------


def test_a_multi_platform_pull_is_not_pushed_over_its_index(
    pushed: dict, tmp_path: Path, registry: RegistryServer
) -> None:
    store = tmp_path / "store"
    multi = pushed["multi"]
    index_digest = skopeo_digest(multi)
    assert cli(store, "image", "pull", multi).returncode == 0
    for args in ((multi,), (multi, multi)):
        line = error_line(cli(store, "image", "push", *args).stderr)
        assert f"refusing to push {multi} to {multi}" in line
        assert f"multi-platform index {index_digest}" in line and "Give another destination" in line
    assert skopeo_digest(multi) == index_digest  # untouched
    arm = cli(store, "image", "pull", "--platform", "linux/arm64", multi)
    assert arm.returncode == 0, arm.stderr
    arm_name = arm.stdout.split(": ")[0]
    assert arm_name == f"{multi}--ptc-linux-arm64-v8"
    line = error_line(cli(store, "image", "push", arm_name).stderr)
    assert f"refusing to push {arm_name} without a destination" in line
    line = error_line(cli(store, "image", "push", arm_name, multi).stderr)
    assert "would replace that index" in line
    dest = f"{registry.host}/limits/arm64:1"
    done = cli(store, "image", "push", arm_name, dest)
    assert done.returncode == 0, done.stderr
    assert skopeo_digest(multi) == index_digest
    # the index digest is recorded: shown, and found again offline
    info = json.loads(cli(store, "image", "inspect", multi).stdout)
    assert (info["registry_digest"], info["index_digest"]) == (index_digest, index_digest)
    repo = multi.rsplit(":", 1)[0]
    again = cli(store, "image", "pull", "--pull", "never", f"{repo}@{index_digest}")
    assert (again.returncode, again.stdout.split(": ")[0]) == (0, multi), again.stderr


def test_a_docker_v2s2_image_is_found_by_the_registrys_digest(pushed: dict, tmp_path: Path) -> None:
    store = tmp_path / "store"
    v2s2 = pushed["v2s2"]
    remote = skopeo_digest(v2s2)
    assert cli(store, "image", "pull", v2s2).returncode == 0
    image = Store(store).require(v2s2)
    assert image.digest != remote and image.registry_digest == remote
    [row] = cli(store, "image", "ls").stdout.splitlines()[1:]
    assert row.split()[:3] == [v2s2, image.digest[:19], remote[:19]]
    repo = v2s2.rsplit(":", 1)[0]
    for policy in ("never", "missing"):
        found = cli(store, "image", "pull", "--pull", policy, f"{repo}@{remote}")
        assert found.stdout == f"{v2s2}: {image.digest}\n", found.stderr
    info = json.loads(cli(store, "image", "inspect", v2s2).stdout)
    assert (info["digest"], info["source_digest"], info["registry_digest"]) == (
        image.digest,
        remote,
        remote,
    )
    # and the registry has it by that digest: a pull by it works too
    assert cli(tmp_path / "fresh", "image", "pull", f"{repo}@{remote}").returncode == 0


# -- TLS with a host that is not loopback ------------------------------------------------


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: just the route's source
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def test_tls_to_a_plain_http_registry_says_why_https(
    registry: RegistryServer, tmp_path: Path
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address")
    with socket.socket() as server:  # a plain HTTP (non-TLS) server on that address
        server.bind((address, 0))
        server.listen(4)
        host = f"{address}:{server.getsockname()[1]}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_containers.cli", "--store", str(tmp_path / "s"),
             "image", "pull", f"{host}/app:1"],
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        for _ in range(4):  # every attempt of the retry policy: answer plain HTTP
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 125
    line = error_line(stderr)
    assert f"https://{host}/v2/" in line and "SSL" in line
    assert f"{address} was spoken to over HTTPS because only loopback hosts" in line
