"""``pytest_containers.wait``: readiness strategies against real busybox
containers (network "none": only loopback), on every backend that runs here."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_containers.plugins.oracle_images import build_busybox_layout

from pytest_containers import Containers, ContainerWaitError, InvalidOptionError, wait
from pytest_containers.image.store import Store
from tests.backends.conftest import backend_containers, load_tags

S = 1_000_000_000  # nanoseconds
#: an httpd on 8080 serving /www/index.html ("hello")
HTTPD = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"


def add_healthcheck(layout: Path, src: str, dst: str, healthcheck: dict[str, Any]) -> None:
    """Tag ``dst`` in the OCI layout: image ``src`` with ``config.Healthcheck`` set
    (umoci config has no flag for it), written as new config and manifest blobs."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == src
    ]

    def blob(digest: str) -> dict[str, Any]:
        return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())

    def put(doc: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(doc).encode()
        hexdigest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / hexdigest).write_bytes(data)
        return "sha256:" + hexdigest, len(data)

    manifest = blob(desc["digest"])
    config = blob(manifest["config"]["digest"])
    config.setdefault("config", {})["Healthcheck"] = healthcheck
    manifest["config"]["digest"], manifest["config"]["size"] = put(config)
    digest, size = put(manifest)
    annotations = {"org.opencontainers.image.ref.name": dst}
    index["manifests"].append({**desc, "digest": digest, "size": size, "annotations": annotations})
    (layout / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """busybox images ``test/wait:plain`` (no HEALTHCHECK), ``:health`` (``test -f
    /tmp/healthy``, every 0.1 s in a start period of 5 s), ``:sick`` (``false``, 2
    retries) and ``:none`` (HEALTHCHECK NONE), loaded from skopeo archives."""
    work = tmp_path_factory.mktemp("wait")
    layout = build_busybox_layout(work / "layout", ref_name="plain")
    add_healthcheck(layout, "plain", "health", {
        "Test": ["CMD-SHELL", "test -f /tmp/healthy"], "Interval": 30 * S, "Timeout": 2 * S,
        "StartPeriod": 5 * S, "StartInterval": S // 10,
    })  # fmt: skip
    add_healthcheck(layout, "plain", "sick", {
        "Test": ["CMD", "false"], "Interval": S // 10, "Retries": 2,
    })  # fmt: skip
    add_healthcheck(layout, "plain", "none", {"Test": ["NONE"]})
    store = Store(work / "store")
    load_tags(store, layout, "test/wait", ("plain", "health", "sick", "none"), work)
    return store


@pytest.fixture(params=["native", "runc"])
def containers(request: pytest.FixtureRequest, store: Store) -> Iterator[Containers]:
    yield from backend_containers(request.param, store)
    for thread in threading.enumerate():  # the threads in containers' netns end with each wait
        if thread.name.startswith("ptc-netns-"):
            thread.join(5)
            assert not thread.is_alive(), thread


def test_for_log_waits_for_a_line_of_either_stream(containers: Containers) -> None:
    script = "echo starting; sleep 0.3; echo 'server ready' >&2; for i in 1 2 3; do echo tick; done"
    handle = containers.start(
        "test/wait:plain", ["sh", "-c", script + "; sleep 30"], wait=wait.for_log(r"^server ready$")
    )
    assert "server ready" in handle.logs("stderr")
    handle.wait_for(wait.for_log("tick", stream="stdout", times=3), timeout=5)


def test_a_log_line_that_never_comes_fails_as_soon_as_the_container_exits(
    containers: Containers,
) -> None:
    script = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; sleep 1; exit 3"
    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        containers.start(
            "test/wait:plain", ["sh", "-c", script], wait=wait.for_log("ready"), wait_timeout=30
        )
    took = time.monotonic() - t0
    assert 1 <= took < 3
    err = info.value
    assert (err.reason, err.exit_code, err.strategy, err.timeout) == (
        "exited",
        3,
        "for_log('ready')",
        30,
    )
    message = str(err)
    assert err.container_id in message and "for_log('ready')" in message
    assert "exited with exit code 3" in message and "0 of 1 lines matching 'ready'" in message
    assert "  | line 30" in message and "  | line 11" in message and "line 10\n" not in message
    assert "  | oops" in message
    (handle,) = containers.started
    assert not handle.stdout_path.exists()  # removed at once


def test_a_port_opened_after_2_s_is_ready_then_and_not_before(containers: Containers) -> None:
    t0 = time.monotonic()
    handle = containers.start(
        "test/wait:plain", ["sh", "-c", "sleep 2; exec nc -ll -p 8080 -e true"]
    )
    started = time.monotonic()
    handle.wait_for(wait.for_port(8080), timeout=10)
    ready = time.monotonic()
    assert ready - t0 >= 2.0
    assert ready - started < 3.0  # ~2 s after the start, plus the 0.1 s interval
    assert handle.poll() is None


def test_a_port_open_on_the_host_does_not_count(containers: Containers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        handle = containers.start("test/wait:plain", ["sleep", "30"])
        t0 = time.monotonic()
        with pytest.raises(ContainerWaitError) as info:
            handle.wait_for(wait.for_port(port), timeout=1)
    assert 1 <= time.monotonic() - t0 < 3
    err = info.value
    assert (err.reason, err.exit_code, err.strategy) == ("timeout", None, f"for_port({port})")
    assert "ConnectionRefusedError" in err.last_error
    assert f"not ready within 1 s: for_port({port}) not satisfied" in str(err)


def test_for_http_inside_the_containers_network_namespace(containers: Containers) -> None:
    handle = containers.start(
        "test/wait:plain", ["sh", "-c", HTTPD], wait=wait.for_http("/index.html", port=8080)
    )
    handle.wait_for(wait.for_http("/missing", port=8080, status=lambda s: s == 404), timeout=5)
    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        handle.wait_for(wait.for_http("/missing", port=8080), timeout=1)
    assert 1 <= time.monotonic() - t0 < 3
    assert info.value.reason == "timeout"
    assert info.value.last_error == (
        "GET http://127.0.0.1:8080/missing: HTTP 404 Not Found, wanted 200"
    )


def test_for_command_runs_until_it_succeeds(containers: Containers) -> None:
    handle = containers.start(
        "test/wait:plain", ["sh", "-c", "sleep 0.5; touch /tmp/ready; sleep 30"]
    )
    t0 = time.monotonic()
    handle.wait_for(wait.for_command("test -f /tmp/ready"), timeout=10)
    assert time.monotonic() - t0 < 3
    handle.wait_for(wait.for_command(["test", "-f", "/nope"], exit_code=1), timeout=5)
    with pytest.raises(ContainerWaitError) as info:
        handle.wait_for(wait.for_command(["sh", "-c", "echo no >&2; exit 4"]), timeout=0.5)
    assert info.value.last_error == "exit code 4, wanted 0: 'no'"


def test_for_healthcheck_runs_the_images_healthcheck(containers: Containers) -> None:
    script = ["sh", "-c", "sleep 0.5; touch /tmp/healthy; sleep 30"]
    t0 = time.monotonic()
    handle = containers.start("test/wait:health", script, wait=wait.for_healthcheck())
    assert 0.5 <= time.monotonic() - t0 < 3
    assert handle.exec(["test", "-f", "/tmp/healthy"]).exit_code == 0

    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        containers.start("test/wait:sick", ["sleep", "30"], wait=wait.for_healthcheck(),
                         wait_timeout=30)  # fmt: skip
    assert time.monotonic() - t0 < 3  # unhealthy after 2 failures: at once, not at the timeout
    assert info.value.reason == "failed"
    assert info.value.last_error == (
        "unhealthy: 2 failed health checks in a row (['false']), the last: exit code 1"
    )


@pytest.mark.parametrize(("tag", "how"), [("plain", "has none"), ("none", "disables it")])
def test_for_healthcheck_without_one_is_refused(containers: Containers, tag: str, how: str) -> None:
    handle = containers.start(f"test/wait:{tag}", ["sleep", "30"])
    with pytest.raises(InvalidOptionError, match=f"HEALTHCHECK of image test/wait:{tag} {how}"):
        handle.wait_for(wait.for_healthcheck())


def test_all_of_and_any_of(containers: Containers) -> None:
    handle = containers.start("test/wait:plain", ["sh", "-c", "echo ready; " + HTTPD])
    handle.wait_for(
        wait.all_of(wait.for_log("ready"), wait.for_port(8080), wait.for_command("true")),
        timeout=10,
    )
    handle.wait_for(
        wait.any_of(wait.for_port(9), wait.for_http("/missing", port=8080, status=404)), timeout=5
    )
    with pytest.raises(ContainerWaitError) as info:
        handle.wait_for(wait.all_of(wait.for_log("ready"), wait.for_port(9)), timeout=0.5)
    assert info.value.strategy == "all_of(for_log('ready'), for_port(9))"
    assert info.value.last_error.startswith("for_port(9): ConnectionRefusedError")


def test_any_strategy_fails_at_once_when_the_container_exits(containers: Containers) -> None:
    handle = containers.start("test/wait:plain", ["sh", "-c", "sleep 0.5; exit 2"])
    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        handle.wait_for(
            wait.any_of(wait.for_http(port=8080), wait.for_command("false")), timeout=30
        )
    assert time.monotonic() - t0 < 2.5
    assert (info.value.reason, info.value.exit_code) == ("exited", 2)
    assert "no output on stdout or stderr" in str(info.value)


def test_bad_wait_arguments_are_refused_before_anything_starts(containers: Containers) -> None:
    with pytest.raises(InvalidOptionError) as info:
        containers.start("test/wait:plain", ["sleep", "30"], wait=wait.for_port(1), wait_timeout=0)
    assert info.value.option == "wait_timeout"
    with pytest.raises(InvalidOptionError) as info:
        containers.start("test/wait:plain", ["sleep", "30"], wait="for_port(1)")  # type: ignore[arg-type]
    assert info.value.option == "wait"
    assert containers.started == []
    handle = containers.start("test/wait:plain", ["sleep", "30"])
    with pytest.raises(InvalidOptionError) as info:
        handle.wait_for(wait.for_port(1), timeout=-1)
    assert info.value.option == "timeout"
