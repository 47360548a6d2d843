"""The strategies: :class:`WaitStrategy` and the functions that make them
(:func:`for_log`, :func:`for_port`, :func:`for_http`, :func:`for_command`,
:func:`for_healthcheck`, :func:`for_callable`, :func:`all_of`, :func:`any_of`).

A strategy is a frozen value whose ``repr`` reads like the call that made it
(``for_port(8080)``); its arguments are checked when it is made, raising
``InvalidOptionError`` naming the argument. Each makes a fresh probe
(:mod:`.probe`) for each wait; the network probes live in :mod:`.netns`, the
HEALTHCHECK's in :mod:`.healthcheck`, the others here.
"""

from __future__ import annotations

import codecs
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..exceptions import InvalidOptionError
from .healthcheck import Healthcheck, _HealthProbe
from .netns import _HttpProbe, _PortProbe
from .probe import CHECK_MIN, _attempt, _NeverReady, _NotReady, _output, _Probe

if TYPE_CHECKING:
    from ..containers import ContainerHandle

LogStream = Literal["stdout", "stderr", "both"]

_READ_CHUNK = 1 << 20  # bytes of log read at a time
_PARTIAL_MAX = 1 << 16  # characters of an unfinished log line kept before it counts as a line


# -- checking arguments -----------------------------------------------------------------


def _invalid(option: str, value: object, why: str) -> InvalidOptionError:
    return InvalidOptionError(f"{option}={value!r}: {why}", option=option, value=value)


def _seconds(option: str, value: object, *, zero_ok: bool = False) -> float:
    """``value`` as float seconds: finite and > 0 (>= 0 when ``zero_ok``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise _invalid(
            option, value, f"must be a finite number of seconds {'>=' if zero_ok else '>'} 0"
        )
    return float(value)


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _invalid("port", value, "must be a TCP port number from 1 to 65535")
    return value


def _host(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("host", value, "must be a host name or IP address")
    return value


def _retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid("retries", value, "must be an integer >= 1")
    return value


def _name(fn: object) -> str:
    """A function's ``__name__`` (``<lambda>`` for a lambda), else its repr."""
    return str(getattr(fn, "__name__", None) or repr(fn))


class WaitStrategy:
    """When a started container counts as ready; made by :func:`for_log`,
    :func:`for_port`, :func:`for_http`, :func:`for_command`,
    :func:`for_healthcheck`, :func:`for_callable`, :func:`all_of` and
    :func:`any_of` (write a custom one as a :func:`for_callable`)."""

    def _probe(self, handle: ContainerHandle) -> _Probe:
        """The state of this strategy for one wait on ``handle``; raises
        ``InvalidOptionError`` when it cannot apply to this container."""
        raise NotImplementedError


# -- for_log ----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _ForLog(WaitStrategy):
    pattern: re.Pattern[str]
    stream: LogStream
    times: int

    def __repr__(self) -> str:
        extra = "" if self.stream == "both" else f", stream={self.stream!r}"
        extra += "" if self.times == 1 else f", times={self.times}"
        return f"for_log({self.pattern.pattern!r}{extra})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _LogProbe(self, handle)


def for_log(
    pattern: str | re.Pattern[str], *, stream: LogStream = "both", times: int = 1
) -> WaitStrategy:
    """Ready once ``times`` lines of the container's log match ``pattern``.

    ``pattern``: a regular expression (``re`` syntax, or compiled), searched
    (``re.search``) in each line of ``stream`` (``"stdout"``, ``"stderr"`` or
    ``"both"``) without its line end; lines are decoded as UTF-8 (invalid bytes
    replaced), and a last line not yet ended also counts. The log is read from
    the container's start, incrementally: each check reads only what was added.
    Raises ``InvalidOptionError`` for an empty or invalid ``pattern``, an unknown
    ``stream`` or ``times`` < 1."""
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    elif not isinstance(pattern, str) or not pattern:
        raise _invalid("pattern", pattern, "must be a non-empty regular expression")
    else:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise _invalid("pattern", pattern, f"invalid regular expression: {exc}") from None
    if not isinstance(compiled.pattern, str) or not compiled.pattern:
        raise _invalid("pattern", pattern, "must be a non-empty regular expression of str")
    if stream not in ("stdout", "stderr", "both"):
        raise _invalid("stream", stream, "must be 'stdout', 'stderr' or 'both'")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise _invalid("times", times, "must be an integer >= 1")
    return _ForLog(compiled, stream, times)


class _LogFollower:
    """The lines a log file gained since the last read, decoded incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""  # the last line, not ended yet
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def read(self) -> Iterator[str]:
        """New complete lines, without their ``\\n`` (or ``\\r\\n``)."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                while chunk := file.read(_READ_CHUNK):
                    self.offset += len(chunk)
                    lines = (self.partial + self._decoder.decode(chunk)).split("\n")
                    self.partial = lines.pop()
                    if len(self.partial) > _PARTIAL_MAX:
                        lines.append(self.partial)
                        self.partial = ""
                    yield from (line.removesuffix("\r") for line in lines)
        except FileNotFoundError:  # not created yet, or removed with the container
            return


class _LogProbe(_Probe):
    strategy: _ForLog

    def __init__(self, strategy: _ForLog, handle: ContainerHandle) -> None:
        super().__init__(strategy, handle)
        paths = {
            "stdout": [handle.stdout_path],
            "stderr": [handle.stderr_path],
            "both": [handle.stdout_path, handle.stderr_path],
        }[strategy.stream]
        self.followers = [_LogFollower(path) for path in dict.fromkeys(paths)]
        self.matched = 0

    def check(self, timeout: float) -> bool:
        search = self.strategy.pattern.search
        for follower in self.followers:
            self.matched += sum(1 for line in follower.read() if search(line))
        unended = sum(1 for f in self.followers if f.partial and search(f.partial))
        return self.matched + unended >= self.strategy.times

    def pending(self) -> str:
        s = self.strategy
        return f"{self.matched} of {s.times} lines matching {s.pattern.pattern!r} seen"


# -- for_port and for_http: checks in the container's network namespace -------------------


@dataclass(frozen=True, repr=False)
class _ForPort(WaitStrategy):
    port: int
    host: str

    def __repr__(self) -> str:
        extra = "" if self.host == "127.0.0.1" else f", host={self.host!r}"
        return f"for_port({self.port}{extra})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _PortProbe(self, handle)


def for_port(port: int, *, host: str = "127.0.0.1") -> WaitStrategy:
    """Ready once a TCP connection to ``host``:``port`` succeeds from inside the
    container's network namespace (see :mod:`.netns`); each connect
    is given at most ``NETWORK_CHECK_MAX`` seconds. Raises ``InvalidOptionError``
    for a port outside 1-65535 or an empty host."""
    return _ForPort(_port(port), _host(host))


@dataclass(frozen=True, repr=False)
class _ForHttp(WaitStrategy):
    path: str
    port: int
    status: int | Callable[[int], bool]
    method: str
    host: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    @property
    def wanted(self) -> str:
        if callable(self.status):
            return f"a status accepted by {_name(self.status)}"
        return str(self.status)

    def __repr__(self) -> str:
        extra = ""
        if self.status != 200:
            status = self.status
            shown = _name(status) if callable(status) else status
            extra += f", status={shown}"
        extra += "" if self.method == "GET" else f", method={self.method!r}"
        extra += "" if self.host == "127.0.0.1" else f", host={self.host!r}"
        return f"for_http({self.path!r}, port={self.port}{extra})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _HttpProbe(self, handle)


def for_http(
    path: str = "/",
    *,
    port: int,
    status: int | Callable[[int], bool] = 200,
    method: str = "GET",
    host: str = "127.0.0.1",
) -> WaitStrategy:
    """Ready once ``method`` ``http://host:port/path`` answers with ``status`` (an
    HTTP status, or a predicate of it: ``lambda s: s < 500``).

    The request is made with httpx from inside the container's network namespace
    (see :mod:`.netns`): no proxy, redirects not followed, at most
    ``NETWORK_CHECK_MAX`` seconds each. A status that never comes makes the wait
    time out naming the last status received. Raises ``InvalidOptionError`` for
    a ``path`` not starting with ``/``, a port outside 1-65535, a status outside
    100-599, an empty method or host."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise _invalid("path", path, "must start with '/'")
    if not callable(status) and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise _invalid("status", status, "must be an HTTP status (100-599) or a predicate")
    if not isinstance(method, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", method):
        raise _invalid("method", method, "must be an HTTP method such as 'GET'")
    return _ForHttp(path, _port(port), status, method.upper(), _host(host))


# -- for_command and for_healthcheck: checks run with exec --------------------------------


@dataclass(frozen=True, repr=False)
class _ForCommand(WaitStrategy):
    command: str | tuple[str, ...]
    exit_code: int

    @property
    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)

    def __repr__(self) -> str:
        shown = self.command if isinstance(self.command, str) else list(self.command)
        extra = "" if self.exit_code == 0 else f", exit_code={self.exit_code}"
        return f"for_command({shown!r}{extra})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _CommandProbe(self, handle)


def for_command(command: str | Sequence[str], *, exit_code: int = 0) -> WaitStrategy:
    """Ready once ``command`` run in the container (``ContainerHandle.exec``, the
    container's env, user and working directory) exits with ``exit_code``.

    ``command``: an argv list, or a string run as ``/bin/sh -c STRING`` (like
    HEALTHCHECK's CMD-SHELL). Each run is killed when the wait's time is up.
    Raises ``InvalidOptionError`` for an empty command or an exit code outside
    0-255."""
    if isinstance(command, str):
        if not command.strip():
            raise _invalid("command", command, "must not be empty")
        kept: str | tuple[str, ...] = command
    else:
        kept = tuple(str(arg) for arg in command)
        if not kept or not kept[0]:
            raise _invalid("command", command, "must not be empty")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
        raise _invalid("exit_code", exit_code, "must be an integer from 0 to 255")
    return _ForCommand(kept, exit_code)


class _CommandProbe(_Probe):
    strategy: _ForCommand

    def check(self, timeout: float) -> bool:
        result = self.handle.exec(self.strategy.argv, timeout=timeout)
        if result.exit_code == self.strategy.exit_code:
            return True
        raise _NotReady(
            f"exit code {result.exit_code}, wanted {self.strategy.exit_code}{_output(result)}"
        )


@dataclass(frozen=True, repr=False)
class _ForHealthcheck(WaitStrategy):
    interval: float | None
    timeout: float | None
    start_period: float | None
    retries: int | None

    def __repr__(self) -> str:
        given = {k: v for k, v in vars(self).items() if v is not None}
        return "for_healthcheck(" + ", ".join(f"{k}={v!r}" for k, v in given.items()) + ")"

    def healthcheck(self, handle: ContainerHandle) -> Healthcheck:
        """The image's HEALTHCHECK with this strategy's overrides; raises
        ``InvalidOptionError`` (``option="wait"``) when the image has none."""
        image_config = getattr(handle, "image_config", None)
        doc = image_config.raw if image_config is not None else {}
        found = Healthcheck.from_image_config(doc)
        if found is None:
            config = doc.get("config")
            check = config.get("Healthcheck") if isinstance(config, Mapping) else None
            test = check.get("Test") if isinstance(check, Mapping) else None
            how = "disables it (HEALTHCHECK NONE)" if test == ["NONE"] else "has none"
            if image_config is None:
                how = "is unknown to this handle"
            raise InvalidOptionError(
                f"{self!r}: container {handle.id}: the HEALTHCHECK of image {handle.image} {how};"
                " wait with another strategy (for_command, for_port, for_log...)",
                option="wait",
                value=repr(self),
            )
        changes: dict[str, Any] = {}
        if self.interval is not None:
            changes.update(interval=self.interval, start_interval=self.interval)
        if self.timeout is not None:
            changes["timeout"] = self.timeout
        if self.start_period is not None:
            changes["start_period"] = self.start_period
        if self.retries is not None:
            changes["retries"] = self.retries
        return replace(found, **changes)

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _HealthProbe(self.healthcheck(handle), handle)


def for_healthcheck(
    *,
    interval: float | None = None,
    timeout: float | None = None,
    start_period: float | None = None,
    retries: int | None = None,
) -> WaitStrategy:
    """Ready once the image's HEALTHCHECK (:class:`Healthcheck`) succeeds, run
    through ``ContainerHandle.exec`` on its own schedule: the first check at
    once, then every ``interval`` seconds (``start_interval`` during the start
    period) after the previous one ended, each killed after its ``timeout``.
    ``retries`` failures in a row after the start period (measured from the
    start of the wait) make the container unhealthy: the wait fails at once.

    Arguments given replace the image's values (``interval`` also its
    ``start_interval``). Raises ``InvalidOptionError`` for bad values here, and
    when the wait begins if the image has no HEALTHCHECK (or ``NONE``)."""
    return _ForHealthcheck(
        None if interval is None else _seconds("interval", interval),
        None if timeout is None else _seconds("timeout", timeout),
        None if start_period is None else _seconds("start_period", start_period, zero_ok=True),
        None if retries is None else _retries(retries),
    )


# -- for_callable, all_of, any_of ---------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _ForCallable(WaitStrategy):
    fn: Callable[[ContainerHandle], bool]

    def __repr__(self) -> str:
        return f"for_callable({_name(self.fn)})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _CallableProbe(self, handle)


def for_callable(fn: Callable[[ContainerHandle], bool]) -> WaitStrategy:
    """Ready once ``fn(handle)`` returns true; an exception it raises counts as
    "not yet" (shown as the last error). ``fn`` should return within the
    interval. Raises ``InvalidOptionError`` when ``fn`` is not callable."""
    if not callable(fn):
        raise _invalid("fn", fn, "must be callable as fn(handle) -> bool")
    return _ForCallable(fn)


class _CallableProbe(_Probe):
    strategy: _ForCallable

    def check(self, timeout: float) -> bool:
        return bool(self.strategy.fn(self.handle))

    def pending(self) -> str:
        return f"{self.strategy!r} returned false"


def _strategies(strategies: tuple[object, ...], name: str) -> tuple[WaitStrategy, ...]:
    if not strategies:
        raise _invalid("strategies", strategies, f"{name}() needs at least one strategy")
    for strategy in strategies:
        if not isinstance(strategy, WaitStrategy):
            raise _invalid("strategies", strategy, "must be a wait strategy (wait.for_*)")
    return strategies  # type: ignore[return-value]


@dataclass(frozen=True, repr=False)
class _Combined(WaitStrategy):
    strategies: tuple[WaitStrategy, ...]
    every: bool  # all_of, else any_of

    def __repr__(self) -> str:
        name = "all_of" if self.every else "any_of"
        return f"{name}({', '.join(repr(s) for s in self.strategies)})"

    def _probe(self, handle: ContainerHandle) -> _Probe:
        return _CombinedProbe(self, handle)


def all_of(*strategies: WaitStrategy) -> WaitStrategy:
    """Ready once each of ``strategies`` has succeeded (each stops being checked
    once it has; the others go on). Fails at once when one can never succeed.
    Raises ``InvalidOptionError`` when none is given or one is not a strategy."""
    return _Combined(_strategies(strategies, "all_of"), every=True)


def any_of(*strategies: WaitStrategy) -> WaitStrategy:
    """Ready as soon as one of ``strategies`` succeeds. Fails at once when none can
    succeed any more. Raises ``InvalidOptionError`` when none is given or one is
    not a strategy."""
    return _Combined(_strategies(strategies, "any_of"), every=False)


class _CombinedProbe(_Probe):
    strategy: _Combined

    def __init__(self, strategy: _Combined, handle: ContainerHandle) -> None:
        super().__init__(strategy, handle)
        self.parts: list[tuple[WaitStrategy, _Probe]] = []
        try:
            for part in strategy.strategies:
                self.parts.append((part, part._probe(handle)))
        except BaseException:
            self.close()
            raise
        self.done: set[int] = set()
        self.failed: dict[int, str] = {}  # parts that can never succeed (any_of)
        self.errors: dict[int, str] = {}

    def check(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for i, (part, probe) in enumerate(self.parts):
            if i in self.done or i in self.failed:
                continue
            try:
                ready, why = _attempt(probe, max(deadline - time.monotonic(), CHECK_MIN))
            except _NeverReady as exc:
                if self.strategy.every:
                    raise _NeverReady(f"{part!r}: {exc}") from None
                self.failed[i] = str(exc)
                continue
            if ready:
                if not self.strategy.every:
                    return True
                self.done.add(i)
            elif why:
                self.errors[i] = why
        if len(self.failed) == len(self.parts):
            raise _NeverReady(self._why())
        return len(self.done) == len(self.parts)

    def _why(self) -> str:
        return "; ".join(
            f"{part!r}: {self.failed.get(i) or self.errors.get(i) or 'not ready'}"
            for i, (part, _) in enumerate(self.parts)
            if i not in self.done
        )

    def pending(self) -> str:
        return self._why()

    def close(self) -> None:
        for _, probe in self.parts:
            probe.close()
