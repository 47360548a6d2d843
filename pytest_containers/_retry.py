"""Named retry policies: the one module that imports tenacity.

- :func:`registry_request`: a registry call that may meet a transient
  failure (connection refused/reset, timeout, HTTP 408, 429 or 5xx): up to
  ``REGISTRY_ATTEMPTS`` attempts, exponential backoff from 0.2 s to 2 s, or
  the error's ``retry_after`` (seconds, from a ``Retry-After`` header, RFC 9110
  section 10.2.3) when it has one, at most ``RETRY_AFTER_MAX`` seconds.
- :func:`resumable_download`: the same for a download that resumes where the
  last attempt stopped: the count of failed attempts restarts whenever an
  attempt made progress, so it gives up after ``REGISTRY_ATTEMPTS`` attempts
  in a row without progress, or ``DOWNLOAD_ATTEMPTS_MAX`` attempts in all.
- :func:`wait_until`: poll a probe until it returns true, every
  ``interval`` seconds, for at most ``timeout`` seconds (a server starting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity

from pytest_containers.exceptions import RegistryError, RegistryUnavailableError

T = TypeVar("T")

REGISTRY_ATTEMPTS = 4
#: Attempts of one resumed download in all, however much each one progressed.
DOWNLOAD_ATTEMPTS_MAX = 16
#: Backoff between attempts, in seconds: ``BACKOFF_INITIAL * 2**n``, at most ``BACKOFF_MAX``.
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 2.0
#: Longest wait asked by a ``Retry-After`` that is honoured, in seconds (longer ones are cut).
RETRY_AFTER_MAX = 10.0
#: HTTP statuses worth retrying (RFC 9110 / distribution spec "Retry").
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether a registry error is worth retrying: unreachable, 429 or 5xx."""
    if isinstance(exc, RegistryUnavailableError):
        return True
    return isinstance(exc, RegistryError) and getattr(exc, "status", None) in TRANSIENT_STATUSES


def _delay(exc: BaseException | None, failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, (int, float)):
        return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX)
    return min(BACKOFF_INITIAL * 2 ** (failures - 1), BACKOFF_MAX)


def registry_request(fn: Callable[[], T], *, attempts: int = REGISTRY_ATTEMPTS) -> T:
    """Call ``fn()`` under the registry policy; re-raise the last error when attempts run out."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return _delay(exc, state.attempt_number)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        reraise=True,
    )
    return retrying(fn)


def resumable_download(
    fn: Callable[[], T],
    progress: Callable[[], int],
    *,
    attempts: int = REGISTRY_ATTEMPTS,
    max_attempts: int = DOWNLOAD_ATTEMPTS_MAX,
) -> T:
    """Call ``fn()`` until it returns, retrying transient errors; ``fn`` resumes by itself.

    ``progress()``: bytes obtained so far, read after each failed attempt. Gives up
    (re-raising the last error) after ``attempts`` failed attempts in a row that
    added nothing, or after ``max_attempts`` attempts in all. Waits as
    :func:`registry_request`, the backoff counting failures in a row.
    """
    mark = progress()
    stalled = 0  # failed attempts in a row that added nothing
    seen = 0  # the attempt last counted

    def observe(state: tenacity.RetryCallState) -> int:
        """Count the failed attempt once (tenacity asks wait and stop, in either order)."""
        nonlocal mark, stalled, seen
        if state.attempt_number != seen:
            seen = state.attempt_number
            now = progress()
            stalled = 0 if now > mark else stalled + 1
            mark = max(mark, now)
        return stalled

    def stop(state: tenacity.RetryCallState) -> bool:
        return observe(state) >= attempts or state.attempt_number >= max_attempts

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return _delay(exc, max(observe(state), 1))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=stop,
        wait=wait,
        reraise=True,
    )
    return retrying(fn)


def wait_until(
    probe: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    """Call ``probe()`` every ``interval`` seconds until it returns true.

    Exceptions from ``probe`` count as "not yet". Raises :class:`TimeoutError`
    naming ``what`` after ``timeout`` seconds.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda ok: not ok)
        | tenacity.retry_if_exception_type(Exception),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        reraise=False,
    )
    try:
        retrying(probe)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        detail = f": {last.exception()!r}" if last.failed else ""
        raise TimeoutError(f"{what} not reached within {timeout} s{detail}") from None
