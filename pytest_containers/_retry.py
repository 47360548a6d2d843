"""Named retry policies: the one module that imports tenacity.

- :func:`registry_request`: a registry call that may meet a transient
  failure (connection refused/reset, timeout, HTTP 429 or 5xx): up to
  ``REGISTRY_ATTEMPTS`` attempts, exponential backoff from 0.2 s to 2 s.
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
#: HTTP statuses worth retrying (RFC 9110 / distribution spec "Retry").
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether a registry error is worth retrying: unreachable, 429 or 5xx."""
    if isinstance(exc, RegistryUnavailableError):
        return True
    return isinstance(exc, RegistryError) and getattr(exc, "status", None) in TRANSIENT_STATUSES


def registry_request(fn: Callable[[], T], *, attempts: int = REGISTRY_ATTEMPTS) -> T:
    """Call ``fn()`` under the registry policy; re-raise the last error when attempts run out."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
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
