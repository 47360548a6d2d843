"""``pytest_containers.wait`` without containers: HEALTHCHECK parsing, argument
checks, readable reprs, the incremental log reader, and the waiting loop
against a stand-in handle."""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_containers import ContainerWaitError, ExecResult, ExitStatus, InvalidOptionError, wait
from pytest_containers.image.manifest import ImageConfig
from pytest_containers.wait import Healthcheck

S = 1_000_000_000  # nanoseconds


def config(healthcheck: object = None, **conf: Any) -> dict[str, Any]:
    if healthcheck is not None:
        conf["Healthcheck"] = healthcheck
    return {"architecture": "amd64", "os": "linux", "config": conf}


# -- Healthcheck.from_image_config ----------------------------------------------------------


def test_healthcheck_cmd_with_durations_in_nanoseconds() -> None:
    hc = Healthcheck.from_image_config(
        config(
            {
                "Test": ["CMD", "pg_isready", "-U", "postgres"],
                "Interval": 2 * S,
                "Timeout": S // 2,
                "StartPeriod": 10 * S,
                "StartInterval": S,
                "Retries": 5,
            }
        )
    )
    assert hc == Healthcheck(
        argv=("pg_isready", "-U", "postgres"),
        interval=2.0,
        timeout=0.5,
        start_period=10.0,
        start_interval=1.0,
        retries=5,
    )


def test_healthcheck_cmd_shell_runs_in_the_configs_shell_with_docker_defaults() -> None:
    hc = Healthcheck.from_image_config(config({"Test": ["CMD-SHELL", "curl -f localhost"]}))
    assert hc == Healthcheck(argv=("/bin/sh", "-c", "curl -f localhost"))
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (
        30.0,
        30.0,
        0.0,
        5.0,
        3,
    )
    hc = Healthcheck.from_image_config(
        config({"Test": ["CMD-SHELL", "exit 0"], "Retries": 0}, Shell=["/bin/ash", "-ec"])
    )
    assert hc is not None and hc.argv == ("/bin/ash", "-ec", "exit 0") and hc.retries == 3


@pytest.mark.parametrize(
    "doc",
    [
        {"architecture": "amd64", "os": "linux"},
        config(),
        config({}),
        config({"Test": []}),
        config({"Test": ["NONE"]}),
    ],
    ids=["no-config", "no-healthcheck", "empty", "inherit", "NONE"],
)
def test_no_healthcheck(doc: dict[str, Any]) -> None:
    assert Healthcheck.from_image_config(doc) is None


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"Test": ["HTTP", "/"]}, "must start with CMD, CMD-SHELL or NONE"),
        ({"Test": ["CMD"]}, "has no command"),
        ({"Test": ["CMD-SHELL"]}, "has no command"),
        ({"Test": "CMD true"}, "list of strings"),
        ({"Test": ["CMD", "true"], "Interval": -1}, "Interval must be"),
        ({"Test": ["CMD", "true"], "Timeout": "30s"}, "Timeout must be"),
        ({"Test": ["CMD", "true"], "Retries": -2}, "Retries must be"),
        (["CMD", "true"], "not an object"),
    ],
)
def test_malformed_healthchecks_are_refused(check: object, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message) as info:
        Healthcheck.from_image_config(config(check))
    assert info.value.option == "Healthcheck"


def test_healthcheck_is_read_from_an_image_config_document() -> None:
    raw = ImageConfig.from_json(
        b'{"architecture":"amd64","os":"linux","config":{"Healthcheck":'
        b'{"Test":["CMD","true"],"Interval":1000000000}},'
        b'"rootfs":{"type":"layers","diff_ids":[]}}'
    ).raw
    assert Healthcheck.from_image_config(raw) == Healthcheck(argv=("true",), interval=1.0)


# -- arguments and reprs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "text"),
    [
        (wait.for_log(r"ready\b"), r"for_log('ready\\b')"),
        (wait.for_log("x", stream="stderr", times=2), "for_log('x', stream='stderr', times=2)"),
        (wait.for_port(8080), "for_port(8080)"),
        (wait.for_port(53, host="::1"), "for_port(53, host='::1')"),
        (wait.for_http(port=80), "for_http('/', port=80)"),
        (
            wait.for_http("/h", port=80, status=204, method="head"),
            "for_http('/h', port=80, status=204, method='HEAD')",
        ),
        (wait.for_command("test -f /ready"), "for_command('test -f /ready')"),
        (wait.for_command(["pg_isready"], exit_code=2), "for_command(['pg_isready'], exit_code=2)"),
        (wait.for_healthcheck(), "for_healthcheck()"),
        (wait.for_healthcheck(interval=0.5, retries=2), "for_healthcheck(interval=0.5, retries=2)"),
        (wait.for_callable(len), "for_callable(len)"),
        (
            wait.all_of(wait.for_port(1), wait.any_of(wait.for_log("a"), wait.for_port(2))),
            "all_of(for_port(1), any_of(for_log('a'), for_port(2)))",
        ),
    ],
)
def test_strategies_read_like_their_call(strategy: wait.WaitStrategy, text: str) -> None:
    assert repr(strategy) == text


def test_a_predicate_status_is_named_in_the_repr() -> None:
    def server_up(status: int) -> bool:
        return status < 500

    assert (
        repr(wait.for_http(port=80, status=server_up)) == "for_http('/', port=80, status=server_up)"
    )


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: wait.for_port(0), "port"),
        (lambda: wait.for_port(65536), "port"),
        (lambda: wait.for_port(True), "port"),
        (lambda: wait.for_port("80"), "port"),
        (lambda: wait.for_port(80, host=""), "host"),
        (lambda: wait.for_http(port=0), "port"),
        (lambda: wait.for_http("index.html", port=80), "path"),
        (lambda: wait.for_http(port=80, status=99), "status"),
        (lambda: wait.for_http(port=80, status=600), "status"),
        (lambda: wait.for_http(port=80, method="GET /"), "method"),
        (lambda: wait.for_log(""), "pattern"),
        (lambda: wait.for_log("("), "pattern"),
        (lambda: wait.for_log("x", stream="all"), "stream"),
        (lambda: wait.for_log("x", times=0), "times"),
        (lambda: wait.for_command(""), "command"),
        (lambda: wait.for_command([]), "command"),
        (lambda: wait.for_command("true", exit_code=256), "exit_code"),
        (lambda: wait.for_healthcheck(interval=0), "interval"),
        (lambda: wait.for_healthcheck(timeout=-1), "timeout"),
        (lambda: wait.for_healthcheck(retries=0), "retries"),
        (lambda: wait.for_callable("ready"), "fn"),
        (lambda: wait.all_of(), "strategies"),
        (lambda: wait.any_of(wait.for_port(1), "for_port(2)"), "strategies"),
        (lambda: wait.check_wait(wait.for_port(1), timeout=0), "timeout"),
        (lambda: wait.check_wait(wait.for_port(1), timeout=-5), "timeout"),
        (lambda: wait.check_wait(wait.for_port(1), timeout=float("nan")), "timeout"),
        (lambda: wait.check_wait(wait.for_port(1), timeout=float("inf")), "timeout"),
        (lambda: wait.check_wait(wait.for_port(1), interval=0), "interval"),
        (lambda: wait.check_wait("for_port(1)"), "wait"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(make: Any, option: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        make()
    assert info.value.option == option
    assert str(info.value).startswith(f"{option}=")


def test_invalid_regex_says_why() -> None:
    with pytest.raises(InvalidOptionError, match="invalid regular expression: missing \\)"):
        wait.for_log("(ready")


# -- the incremental log reader -------------------------------------------------------------


def test_log_reader_reads_only_what_was_added(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    reader = wait._LogFollower(path)
    assert list(reader.read()) == []  # not created yet
    path.write_bytes(b"one\r\ntw")
    assert list(reader.read()) == ["one"] and reader.partial == "tw"
    with path.open("ab") as f:
        f.write(b"o\n\xc3")  # half of an "é"
    assert list(reader.read()) == ["two"] and reader.offset == len(b"one\r\ntwo\n\xc3")
    with path.open("ab") as f:
        f.write(b"\xa9t\xff\n")
    assert list(reader.read()) == ["\u00e9t\ufffd"]
    assert list(reader.read()) == []


# -- the waiting loop, against a stand-in handle -------------------------------------------


@dataclass
class FakeHandle:
    tmp: Path
    exit_after: float | None = None  # seconds from creation
    exec_codes: list[int] = field(default_factory=list)
    image_config: ImageConfig | None = None
    id: str = "ptc-000000000000"
    image: str = "test/fake"
    args: tuple[str, ...] = ("sh",)
    pid: int = 0
    execs: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.born = time.monotonic()
        self.stdout_path = self.tmp / "stdout"
        self.stderr_path = self.tmp / "stderr"
        self.stdout_path.write_text("".join(f"line {i}\n" for i in range(30)))
        self.stderr_path.write_text("oops\n")

    def poll(self) -> ExitStatus | None:
        if self.exit_after is not None and time.monotonic() - self.born >= self.exit_after:
            return ExitStatus(exit_code=3)
        return None

    def exec(self, command: list[str], *, timeout: float | None = None) -> ExecResult:
        self.execs.append(command)
        code = self.exec_codes.pop(0) if self.exec_codes else 1
        return ExecResult(exit_code=code, stdout=b"", stderr=b"not yet\n")

    def logs(self, stream: str = "both") -> str:
        return ""


def until_ready(handle: FakeHandle, strategy: wait.WaitStrategy, **options: Any) -> float:
    return wait.wait_until_ready(handle, strategy, **options)  # type: ignore[arg-type]


def test_an_exited_container_fails_any_strategy_at_once(tmp_path: Path) -> None:
    handle = FakeHandle(tmp_path, exit_after=0.3)
    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        until_ready(handle, wait.for_log("never"), timeout=30)
    assert time.monotonic() - t0 < 2
    err = info.value
    assert (err.reason, err.exit_code, err.strategy, err.timeout) == (
        "exited",
        3,
        "for_log('never')",
        30,
    )
    assert err.last_error == "0 of 1 lines matching 'never' seen"
    assert "line 29" in err.logs and "line 9\n" not in err.logs and "oops" in err.logs
    assert "last 20 lines of stdout" in str(err) and "exited with exit code 3" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.reason, back.logs, str(back)) == (
        ContainerWaitError,
        "exited",
        err.logs,
        str(err),
    )


def test_a_callable_is_retried_until_true_and_its_errors_are_kept(tmp_path: Path) -> None:
    calls = []

    def ready(handle: object) -> bool:
        calls.append(handle)
        if len(calls) < 3:
            raise ConnectionError("not listening")
        return True

    handle = FakeHandle(tmp_path)
    until_ready(handle, wait.for_callable(ready), timeout=5, interval=0.01)
    assert calls == [handle] * 3

    with pytest.raises(ContainerWaitError) as info:
        until_ready(
            handle,
            wait.any_of(wait.for_callable(lambda h: False), wait.for_log("never")),
            timeout=0.3,
            interval=0.05,
        )
    assert info.value.reason == "timeout" and info.value.exit_code is None
    assert "for_log('never'): 0 of 1 lines" in info.value.last_error


def test_log_lines_are_counted(tmp_path: Path) -> None:
    handle = FakeHandle(tmp_path)
    until_ready(handle, wait.for_log(r"^line \d$", times=10), timeout=1)
    with pytest.raises(ContainerWaitError, match="10 of 11 lines"):
        until_ready(handle, wait.for_log(r"^line \d$", times=11), timeout=0.2)
    with pytest.raises(ContainerWaitError):
        until_ready(handle, wait.for_log("oops", stream="stdout"), timeout=0.2)
    until_ready(handle, wait.for_log("oops", stream="stderr"), timeout=1)


def health_image(**check: Any) -> ImageConfig:
    return ImageConfig("amd64", "linux", raw=config(check))


def test_healthcheck_retries_after_the_start_period_then_fails_at_once(tmp_path: Path) -> None:
    handle = FakeHandle(
        tmp_path, exec_codes=[1, 1, 0], image_config=health_image(Test=["CMD", "ok"], Interval=1)
    )
    until_ready(handle, wait.for_healthcheck(interval=0.01), timeout=5, interval=0.01)
    assert handle.execs == [["ok"]] * 3

    handle = FakeHandle(
        tmp_path,
        image_config=health_image(Test=["CMD-SHELL", "ok"], Interval=S // 20, Retries=2),
    )
    t0 = time.monotonic()
    with pytest.raises(ContainerWaitError) as info:
        until_ready(handle, wait.for_healthcheck(), timeout=30, interval=0.01)
    assert time.monotonic() - t0 < 2 and len(handle.execs) == 2
    assert info.value.reason == "failed"
    assert "unhealthy: 2 failed health checks in a row" in info.value.last_error
    assert "exit code 1: 'not yet'" in info.value.last_error

    # failures in the start period do not count
    handle = FakeHandle(
        tmp_path,
        image_config=health_image(
            Test=["CMD", "ok"], Interval=S // 100, StartInterval=S // 100, Retries=1,
            StartPeriod=S // 4,
        ),
    )  # fmt: skip
    with pytest.raises(ContainerWaitError) as info:
        until_ready(handle, wait.for_healthcheck(), timeout=30, interval=0.01)
    assert info.value.reason == "failed" and len(handle.execs) > 3


@pytest.mark.parametrize(
    ("image_config", "message"),
    [
        (None, "is unknown to this handle"),
        (health_image(), "has none"),
        (health_image(Test=["NONE"]), r"disables it \(HEALTHCHECK NONE\)"),
    ],
)
def test_healthcheck_of_an_image_without_one_is_refused_before_waiting(
    tmp_path: Path, image_config: ImageConfig | None, message: str
) -> None:
    handle = FakeHandle(tmp_path, image_config=image_config)
    with pytest.raises(InvalidOptionError, match=message) as info:
        until_ready(handle, wait.for_healthcheck(), timeout=30)
    assert info.value.option == "wait" and handle.execs == []
