"""The image's HEALTHCHECK: :class:`Healthcheck` parsed from the image config,
and the checks :func:`for_healthcheck` runs with it through
``ContainerHandle.exec`` on its own schedule (interval, timeout, start period,
retries), until the container is healthy or, after ``retries`` failures in a
row, never will be.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import CommandNotFoundError, InvalidOptionError
from .probe import _NeverReady, _NotReady, _output, _Probe

if TYPE_CHECKING:
    from ..containers import ContainerHandle

_NS_PER_S = 1e9


@dataclass(frozen=True)
class Healthcheck:
    """An image's HEALTHCHECK: the image config's ``config.Healthcheck`` object as
    Docker writes it (``Test``, ``Interval``, ``Timeout``, ``StartPeriod``,
    ``StartInterval`` in nanoseconds, ``Retries``).

    ``argv``: the command; ``Test`` ``["CMD", arg...]`` gives the args,
    ``["CMD-SHELL", text]`` the config's ``Shell`` (default ``/bin/sh -c``) and
    the text. Seconds (a duration 0 or absent is Docker's default, shown):
    ``interval`` (30) between checks, ``timeout`` (30) of one check,
    ``start_period`` (0) during which failures do not count and checks come
    every ``start_interval`` (5). ``retries`` (3): failures in a row, after the
    start period, that make the container unhealthy."""

    argv: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    start_interval: float = 5.0
    retries: int = 3

    @classmethod
    def from_image_config(cls, doc: Mapping[str, Any]) -> Healthcheck | None:
        """From an image config document (``ImageConfig.raw``): ``None`` when it has
        no HEALTHCHECK, an empty ``Test`` or ``Test`` ``["NONE"]`` (disabled).
        Raises ``InvalidOptionError`` (``option="Healthcheck"``) for a malformed one."""
        config = doc.get("config") or {}
        check = config.get("Healthcheck") if isinstance(config, Mapping) else None
        if not check:
            return None

        def bad(why: str) -> InvalidOptionError:
            return InvalidOptionError(
                f"image config Healthcheck {check!r}: {why}", option="Healthcheck", value=check
            )

        if not isinstance(check, Mapping):
            raise bad("not an object")
        test = check.get("Test") or []
        if not isinstance(test, list) or not all(isinstance(arg, str) for arg in test):
            raise bad("Test must be a list of strings")
        if not test or test == ["NONE"]:
            return None
        kind, args = test[0], test[1:]
        if kind == "CMD":
            argv = tuple(args)
        elif kind == "CMD-SHELL":
            shell = config.get("Shell") or ["/bin/sh", "-c"]
            if not isinstance(shell, list) or not all(isinstance(a, str) for a in shell):
                raise bad("Shell must be a list of strings")
            argv = (*shell, *args)
        else:
            raise bad(f"Test must start with CMD, CMD-SHELL or NONE, not {kind!r}")
        if not args or not argv[0]:
            raise bad(f"Test {kind} has no command")

        def seconds(key: str, default: float) -> float:
            value = check.get(key) or 0
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(f"{key} must be a number of nanoseconds >= 0")
            return value / _NS_PER_S if value else default

        retries = check.get("Retries") or 0
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise bad("Retries must be an integer >= 0")
        return cls(
            argv=argv,
            interval=seconds("Interval", cls.interval),
            timeout=seconds("Timeout", cls.timeout),
            start_period=seconds("StartPeriod", cls.start_period),
            start_interval=seconds("StartInterval", cls.start_interval),
            retries=retries or cls.retries,
        )


class _HealthProbe(_Probe):
    strategy: Healthcheck

    def __init__(self, healthcheck: Healthcheck, handle: ContainerHandle) -> None:
        super().__init__(healthcheck, handle)
        self.hc = healthcheck
        self.started = self.due = time.monotonic()
        self.failures = 0  # in a row, after the start period
        self.last: str | None = None

    def check(self, timeout: float) -> bool:
        now = time.monotonic()
        if now < self.due:
            return False
        hc = self.hc
        starting = now - self.started < hc.start_period
        limit = min(hc.timeout, timeout)
        try:
            result = self.handle.exec(list(hc.argv), timeout=limit)
        except TimeoutError:
            ok, detail = False, f"still running after {limit:g} s; killed"
        except CommandNotFoundError as exc:
            ok, detail = False, str(exc)
        else:
            ok, detail = result.exit_code == 0, f"exit code {result.exit_code}{_output(result)}"
        self.due = time.monotonic() + (hc.start_interval if starting else hc.interval)
        if ok:
            return True
        if not starting:
            self.failures += 1
            if self.failures >= hc.retries:
                raise _NeverReady(
                    f"unhealthy: {self.failures} failed health checks in a row"
                    f" ({list(hc.argv)!r}), the last: {detail}"
                )
        when = "in the start period" if starting else f"{self.failures} of {hc.retries}"
        self.last = f"health check {list(hc.argv)!r} failed ({when}): {detail}"
        raise _NotReady(self.last)

    def pending(self) -> str | None:
        return self.last
