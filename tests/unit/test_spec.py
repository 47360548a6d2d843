"""ContainerSpec -> runtime-spec config.json (runtime-spec ``config.md``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pytest_containers.runtime import ContainerSpec, Resources
from pytest_containers.runtime.spec import cgroups_path, to_config


def make(**kw) -> dict:
    spec = ContainerSpec(args=("sh", "-c", "true"), layers=(Path("/l"),), hostname="box", **kw)
    return to_config(spec, container_id="ptc-0123456789ab")


def test_process_and_root():
    cfg = make(env=("A=1",), cwd="/srv", uid=33, gid=44)
    assert cfg["ociVersion"].startswith("1.")
    assert cfg["process"]["args"] == ["sh", "-c", "true"]
    assert cfg["process"]["env"] == ["A=1"]
    assert cfg["process"]["cwd"] == "/srv"
    assert cfg["process"]["user"] == {"uid": 33, "gid": 44}
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    assert cfg["hostname"] == "box"


def test_namespaces_network_none_and_host():
    types = [n["type"] for n in make()["linux"]["namespaces"]]
    assert sorted(types) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    types = [n["type"] for n in make(network="host")["linux"]["namespaces"]]
    assert "network" not in types


def test_resources_and_cgroups_path():
    cfg = make(resources=Resources(memory_max_bytes=64 << 20, cpu_quota_us=50_000, pids_max=16))
    res = cfg["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["cpu"] == {"quota": 50_000, "period": 100_000}
    assert res["pids"] == {"limit": 16}
    assert (
        cfg["linux"]["cgroupsPath"] == cgroups_path("ptc-0123456789ab") == "/ptc/ptc-0123456789ab"
    )
    assert "memory" not in make()["linux"]["resources"]


@pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc")
def test_runc_spec_has_the_same_shape(tmp_path: Path):
    """Every top-level and process key runc's own ``spec`` writes, we write too."""
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = make()
    assert set(theirs) - {"linux"} <= set(ours)
    assert set(theirs["process"]) - {"consoleSize"} <= set(ours["process"])
    assert set(ours["linux"]["maskedPaths"]) >= set(theirs["linux"]["maskedPaths"])
    assert set(ours["linux"]["readonlyPaths"]) >= set(theirs["linux"]["readonlyPaths"])
