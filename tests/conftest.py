"""Shared test fixtures: a busybox image in a real local registry, built and
pushed by independent tools (umoci, skopeo)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate()`` every ``interval`` seconds until it returns something true;
    that value, or the last false one after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def needs(*binaries: str) -> pytest.MarkDecorator:
    """Skip unless running as root with every binary on PATH."""
    missing = [b for b in binaries if shutil.which(b) is None]
    reason = f"needs {', '.join(missing)}" if missing else "needs root"
    return pytest.mark.skipif(bool(missing) or os.geteuid() != 0, reason=reason)


@pytest.fixture(scope="session")
def busybox_ref(registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Session scope: ``<registry.host>/test/busybox:latest``, an image built from
    Debian's busybox-static with umoci and pushed with skopeo."""
    from pytest_containers.plugins.oracle_images import build_busybox_layout

    layout = build_busybox_layout(tmp_path_factory.mktemp("ptc-busybox") / "layout")
    registry.push_oci(Path(layout), "latest", "test/busybox", "latest")
    return f"{registry.host}/test/busybox:latest"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A fresh image store directory for one test."""
    return tmp_path / "store"
