"""Waiting: :func:`wait_until_ready` runs a strategy's checks every ``interval``
seconds, through the retry policy :func:`pytest_containers._retry.wait_until`,
until the container is ready, its process exits, the strategy can never succeed,
or ``timeout`` seconds pass; then the :class:`ContainerWaitError` shows the
last lines of the container's log (:func:`last_log_lines`).
:func:`check_wait` checks a wait's arguments before anything waits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._retry import wait_until
from ..exceptions import ContainerWaitError
from .probe import CHECK_MIN, _attempt, _NeverReady
from .strategies import WaitStrategy, _invalid, _seconds

if TYPE_CHECKING:
    from ..containers import ContainerHandle
    from ..runtime import ExitStatus

#: Seconds a wait lasts by default.
DEFAULT_TIMEOUT = 60.0
#: Seconds between two checks by default.
DEFAULT_INTERVAL = 0.1
#: Log lines of each stream a ``ContainerWaitError`` shows.
LAST_LINES = 20
_TAIL_BYTES = 1 << 16  # bytes from the end of a log file read for its last lines
_LINE_MAX = 500  # characters of one log line shown in an error


def check_wait(
    strategy: object,
    *,
    timeout: object = DEFAULT_TIMEOUT,
    interval: object = DEFAULT_INTERVAL,
    timeout_option: str = "timeout",
) -> None:
    """Check the arguments of a wait before anything waits (or starts).

    Raises ``InvalidOptionError`` (``option``: ``"wait"``, ``timeout_option`` or
    ``"interval"``) unless ``strategy`` is a :class:`WaitStrategy` and ``timeout``
    and ``interval`` are finite seconds > 0."""
    if not isinstance(strategy, WaitStrategy):
        raise _invalid("wait", strategy, "must be a wait strategy (pytest_containers.wait.for_*)")
    _seconds(timeout_option, timeout)
    _seconds("interval", interval)


# -- waiting --------------------------------------------------------------------------------


def _tail(path: Path, count: int) -> list[str] | None:
    """The last ``count`` lines of the file at ``path``; ``None`` when it is gone."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            data = file.read()
    except FileNotFoundError:
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    if size > _TAIL_BYTES:
        lines = lines[1:]  # cut in the middle
    return lines[-count:]


def last_log_lines(handle: ContainerHandle, count: int = LAST_LINES) -> str:
    """The last ``count`` lines of the container's stdout, then of its stderr, each
    line indented with ``"  | "`` under a heading (``"no output"`` when empty)."""
    sections = []
    paths = {"stdout": handle.stdout_path, "stderr": handle.stderr_path}
    for stream, path in paths.items():
        if stream == "stderr" and path == paths["stdout"]:
            break
        lines = _tail(path, count)
        if lines is None:  # removed: the handle kept its logs
            lines = handle.logs(stream).splitlines()[-count:]  # type: ignore[arg-type]
        if lines:
            shown = "\n".join(f"  | {line[:_LINE_MAX]}" for line in lines)
            count_text = f"{len(lines)} line{'s' if len(lines) != 1 else ''}"
            sections.append(f"last {count_text} of {stream}:\n{shown}")
    return "\n".join(sections) or "no output on stdout or stderr"


def _exit_text(status: ExitStatus) -> str:
    text = f"exit code {status.exit_code}"
    if status.signal:
        text += f" (signal {status.signal})"
    return text + (", OOM-killed" if status.oom_killed else "")


def wait_until_ready(
    handle: ContainerHandle,
    strategy: WaitStrategy,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
) -> float:
    """Wait until ``strategy`` finds ``handle``'s container ready; returns the seconds
    it took.

    Every ``interval`` seconds: if the container's process has exited, fail at
    once; else run the strategy's check (given the time left, at least
    ``CHECK_MIN``). Raises ``InvalidOptionError`` for a bad argument, or a
    strategy that cannot apply to this container (``for_healthcheck`` of an
    image without one), before anything waits; ``ContainerWaitError`` (fields:
    ``reason`` ``"exited"``, ``"failed"`` or ``"timeout"``, ``last_error``,
    ``logs``...) when the container does not become ready."""
    check_wait(strategy, timeout=timeout, interval=interval)
    started = time.monotonic()
    deadline = started + timeout
    probe = strategy._probe(handle)
    last_error: str | None = None
    exited: ExitStatus | None = None
    never: str | None = None

    def ready() -> bool:
        nonlocal last_error, exited, never
        exited = handle.poll()
        if exited is not None:
            return True
        try:
            ok, why = _attempt(probe, max(deadline - time.monotonic(), CHECK_MIN))
        except _NeverReady as exc:
            never = str(exc)
            return True
        last_error = why or last_error
        return ok

    reason = ""
    try:
        wait_until(ready, timeout=timeout, interval=interval, what=repr(strategy))
    except TimeoutError:
        reason = "timeout"
    finally:
        probe.close()
    if exited is not None:
        reason = "exited"
    elif never is not None:
        reason, last_error = "failed", never
    if not reason:
        return time.monotonic() - started
    elapsed = time.monotonic() - started
    name = f"container {handle.id} ({handle.image} {list(handle.args)!r})"
    if exited is not None:
        head = f"{name} exited with {_exit_text(exited)} before {strategy!r} was satisfied"
    elif reason == "failed":
        head = f"{name}: {strategy!r} cannot succeed"
    else:
        head = f"{name} not ready within {timeout:g} s: {strategy!r} not satisfied"
    logs = last_log_lines(handle)
    raise ContainerWaitError(
        f"{head} (waited {elapsed:.2f} s of {timeout:g} s); last error: {last_error or 'none'}\n"
        f"{logs}",
        container_id=handle.id,
        image=handle.image,
        strategy=repr(strategy),
        reason=reason,
        timeout=timeout,
        elapsed=elapsed,
        last_error=last_error,
        exit_code=None if exited is None else exited.exit_code,
        logs=logs,
    )
