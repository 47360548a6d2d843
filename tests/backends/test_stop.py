"""``ContainerHandle.stop``: the image's STOPSIGNAL first, SIGKILL after the
timeout, exit codes 128+N; on every backend that runs here."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from pytest_containers.plugins.oracle_images import build_busybox_layout

from pytest_containers import Containers
from pytest_containers.exceptions import InvalidOptionError
from pytest_containers.image.store import Store
from tests.backends.conftest import backend_containers, load_tags

#: a PID 1 that exits 7 on SIGUSR1 and 8 on SIGTERM, and says when it is ready
TRAPS = "trap 'exit 7' USR1; trap 'exit 8' TERM; echo ready; while :; do sleep 0.05; done"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """busybox images: ``test/stop:usr1`` (STOPSIGNAL SIGUSR1), ``test/stop:plain``
    (none) and ``test/stop:bad`` (STOPSIGNAL SIGNOPE), loaded from skopeo archives."""
    work = tmp_path_factory.mktemp("stop")
    layout = build_busybox_layout(work / "layout")
    store = Store(work / "store")
    for tag, stop in (("usr1", "SIGUSR1"), ("plain", None), ("bad", "SIGNOPE")):
        subprocess.run(["umoci", "config", "--image", f"{layout}:latest", "--tag", tag]
                       + ([f"--config.stopsignal={stop}"] if stop else []), check=True)  # fmt: skip
    load_tags(store, layout, "test/stop", ("usr1", "plain", "bad"), work)
    return store


@pytest.fixture(params=["native", "runc"])
def containers(request: pytest.FixtureRequest, store: Store) -> Iterator[Containers]:
    yield from backend_containers(request.param, store)


def start_ready(containers: Containers, image: str, script: str = TRAPS):
    handle = containers.start(image, ["sh", "-c", script])
    deadline = time.monotonic() + 10
    while "ready" not in handle.logs("stdout"):
        assert time.monotonic() < deadline, handle.logs()
        time.sleep(0.01)
    return handle


def test_stop_sends_the_images_stopsignal_first(containers: Containers) -> None:
    handle = start_ready(containers, "test/stop:usr1")
    assert handle.stop_signal == signal.SIGUSR1
    t0 = time.monotonic()
    status = handle.stop(timeout=10)
    assert status.exit_code == 7 and time.monotonic() - t0 < 5


def test_stop_without_stopsignal_sends_sigterm(containers: Containers) -> None:
    handle = start_ready(containers, "test/stop:plain")
    assert handle.stop_signal == signal.SIGTERM
    assert handle.stop(timeout=10).exit_code == 8
    handle = start_ready(containers, "test/stop:plain")
    assert handle.stop(timeout=10, signal="USR1").exit_code == 7  # given signal wins


def test_stop_kills_after_the_timeout_a_process_that_ignores_the_signal(
    containers: Containers,
) -> None:
    """PID 1 of a pid namespace without a handler never gets SIGTERM (kernel rule)."""
    handle = start_ready(containers, "test/stop:plain", "echo ready; while :; do sleep 0.05; done")
    t0 = time.monotonic()
    status = handle.stop(timeout=0.5)
    took = time.monotonic() - t0
    assert (status.exit_code, status.signal) == (137, signal.SIGKILL)
    assert 0.5 <= took < 5
    handle = start_ready(containers, "test/stop:plain", "echo ready; while :; do sleep 0.05; done")
    t0 = time.monotonic()
    assert handle.stop(timeout=0).exit_code == 137 and time.monotonic() - t0 < 2


def test_a_bad_stopsignal_is_refused_before_anything_runs(containers: Containers) -> None:
    with pytest.raises(InvalidOptionError, match="STOPSIGNAL 'SIGNOPE'") as info:
        containers.start("test/stop:bad", ["true"])
    assert info.value.option == "StopSignal"
    assert containers.started == []

