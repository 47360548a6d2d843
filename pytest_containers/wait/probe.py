"""A strategy's checks during one wait: the :class:`_Probe` each strategy makes
for one wait (:meth:`WaitStrategy._probe <pytest_containers.wait.WaitStrategy._probe>`),
how a check says "not yet" (:class:`_NotReady`, or any other ``Exception``) or
"never" (:class:`_NeverReady`), and :func:`_attempt`, one check as the wait loop
and ``all_of``/``any_of`` run it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..containers import ContainerHandle
    from ..runtime import ExecResult

#: Least time a check is given, in seconds, even when the wait's deadline is nearer.
CHECK_MIN = 0.05


class _NotReady(Exception):
    """A check found the container not ready yet; the message says why."""


class _NeverReady(Exception):
    """The strategy cannot succeed any more (an unhealthy HEALTHCHECK): stop waiting."""


class _Probe:
    """The state of one strategy during one wait (log offsets, a thread, a count)."""

    def __init__(self, strategy: Any, handle: ContainerHandle) -> None:
        self.strategy = strategy
        self.handle = handle

    def check(self, timeout: float) -> bool:
        """Whether the container is ready, found out within about ``timeout`` seconds.

        ``False``, :class:`_NotReady` or any other ``Exception``: not yet (the
        message is the last error); :class:`_NeverReady`: stop waiting."""
        raise NotImplementedError

    def pending(self) -> str | None:
        """Why not ready, after :meth:`check` returned ``False`` (``None``: unknown)."""
        return None

    def close(self) -> None:
        """Release what the checks hold (a thread, connections). Idempotent."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _NotReady):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _attempt(probe: _Probe, timeout: float) -> tuple[bool, str | None]:
    """``(ready, why not)`` of one check; :class:`_NeverReady` passes through."""
    try:
        ready = probe.check(timeout)
    except _NeverReady:
        raise
    except Exception as exc:  # a check failing is the normal "not yet"
        return False, _describe(exc)
    return (True, None) if ready else (False, probe.pending())


def _output(result: ExecResult) -> str:
    """``": <last 200 characters of stdout and stderr>"``, or ``""`` when both are empty."""
    text = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
    return f": {text[-200:]!r}" if text else ""
