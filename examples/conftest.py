"""The example suite's session: a busybox image built from Debian's
busybox-static with umoci, pushed with skopeo (independent tools) into a real
local distribution registry (the ``registry`` fixture), then pulled by the
tests through the ``containers`` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_containers.plugins.oracle_images import build_busybox_layout


@pytest.fixture(scope="session")
def busybox(registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Session scope: the reference of a busybox image in the local registry,
    e.g. ``127.0.0.1:41234/examples/busybox:1.35``."""
    layout = build_busybox_layout(tmp_path_factory.mktemp("ptc-busybox") / "layout")
    registry.push_oci(Path(layout), "latest", "examples/busybox", "1.35")
    return f"{registry.host}/examples/busybox:1.35"
