"""``ptc-runtime``: ``spec`` writes a config.json runc accepts; ``run`` runs a
bundle in the foreground with the container's output and exit code; bad ids
and bundles are refused with a clear message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.linux.conftest import issue_id


def ptc_runtime(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_containers.runtime.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """A bundle whose rootfs is a copy of the busybox test rootfs."""
    shutil.copytree(busybox_rootfs, tmp_path / "rootfs", symlinks=True)
    proc = ptc_runtime("spec", "--bundle", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def test_spec_writes_a_runtime_spec_config(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] == ["sh"]
    again = ptc_runtime("spec", "--bundle", str(bundle))
    assert again.returncode == 1 and "exists" in again.stderr


def test_run_passes_output_and_exit_code(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["sh", "-c",
                                 "touch /written; echo $$ $(hostname); echo err >&2; exit 5"]
    config["hostname"] = "bundled"
    (bundle / "config.json").write_text(json.dumps(config))
    proc = ptc_runtime("run", "--bundle", str(bundle), issue_id())
    assert (proc.returncode, proc.stdout, proc.stderr) == (5, "1 bundled\n", "err\n")
    assert not (bundle / "rootfs" / "written").exists()  # writes go to the overlay upper


@pytest.mark.parametrize(("container_id", "message"), [("x y", "invalid container id"),
                                                       ("..", "invalid container id")])
def test_bad_id_is_refused(bundle: Path, container_id: str, message: str) -> None:
    proc = ptc_runtime("run", "--bundle", str(bundle), container_id)
    assert proc.returncode == 1 and message in proc.stderr


def test_bundle_without_rootfs_names_it(tmp_path: Path) -> None:
    ptc_runtime("spec", "--bundle", str(tmp_path))
    proc = ptc_runtime("run", "--bundle", str(tmp_path), issue_id())
    assert proc.returncode == 1
    assert f"{tmp_path}/rootfs is not a directory" in proc.stderr
