"""Unpacking without the privileges a layer asks for: device nodes without
``CAP_MKNOD`` and ``security.capability`` without ``CAP_SETFCAP`` are skipped
with a warning naming the layer and the entry; the rest of the layer lands.

The unpack runs in a subprocess whose bounding set lacks those capabilities
(``setpriv``: a root process exec'd with a smaller bounding set gets only those
capabilities), as in a CI container started without them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_unpack import TAR, f, make_tar, member

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drops capabilities from it)"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

CAP = "\x01\x00\x00\x02" + "\x00" * 16  # vfs_cap_data v2 with no capabilities

UNPACK = """
import json, sys, warnings
from pathlib import Path
from pytest_containers.image.unpack import unpack_layer
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with open(sys.argv[1], "rb") as src:
        diff_id = unpack_layer(src, Path(sys.argv[2]), sys.argv[3], digest="sha256:layer")
print(json.dumps({"diff_id": diff_id, "warnings": [str(w.message) for w in caught]}))
"""


def unpack_without(caps: list[str], layer: Path, dest: Path) -> dict:
    drop = ",".join(f"-{cap}" for cap in caps)
    argv = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", "--",
            sys.executable, "-c", UNPACK, str(layer), str(dest), TAR]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.tar"
    path.write_bytes(
        make_tar(
            f(
                "bin/ping",
                b"elf",
                mode=0o755,
                pax={"SCHILY.xattr.security.capability": CAP, "SCHILY.xattr.user.note": "hi"},
            ),
            member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
            member("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
            f("etc/motd", b"hello\n"),
        )  # fmt: skip
    )
    return path


def test_devices_skipped_without_cap_mknod(layer: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    result = unpack_without(["mknod"], layer, dest)
    assert not (dest / "dev/null").exists()
    assert [w for w in result["warnings"] if "dev/null" in w] == [
        "layer sha256:layer: device entry 'dev/null' skipped: Operation not permitted"
    ]
    assert stat.S_ISFIFO(os.lstat(dest / "dev/fifo").st_mode)  # a fifo needs no privilege
    assert (dest / "etc/motd").read_bytes() == b"hello\n"
    assert os.getxattr(dest / "bin/ping", "security.capability")[:4] == b"\x01\x00\x00\x02"


def test_file_capabilities_skipped_without_cap_setfcap(layer: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    result = unpack_without(["setfcap"], layer, dest)
    assert result["warnings"] == [
        "layer sha256:layer: xattr security.capability of 'bin/ping' skipped: not privileged"
    ]
    ping = dest / "bin/ping"
    assert os.listxattr(ping) == ["user.note"]  # user.* always kept
    assert ping.read_bytes() == b"elf" and stat.S_IMODE(os.lstat(ping).st_mode) == 0o755
    assert stat.S_ISCHR(os.lstat(dest / "dev/null").st_mode)
