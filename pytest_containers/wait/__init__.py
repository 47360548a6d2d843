"""Wait strategies: when a started container counts as ready.

::

    from pytest_containers import wait

    web = containers.start(image, ["httpd", "-f", "-p", "8080", "-h", "/www"],
                           wait=wait.for_http("/", port=8080))
    db = containers.start(image).wait_for(
        wait.all_of(wait.for_log(r"ready to accept"), wait.for_port(5432)), timeout=30)

A strategy is a frozen value whose ``repr`` reads like the call that made it
(``for_port(8080)``); its arguments are checked when it is made, raising
``InvalidOptionError`` naming the argument. :func:`wait_until_ready` (behind
``ContainerHandle.wait_for`` and ``Containers.start(..., wait=...)``) runs the
strategy's check every ``interval`` seconds, through the retry policy
:func:`pytest_containers._retry.wait_until`, until it succeeds. It raises
:class:`~pytest_containers.exceptions.ContainerWaitError`:

- at once when the container's process has exited, whatever the strategy
  (``reason="exited"``, with its exit code);
- at once when the strategy can never succeed now: the image's HEALTHCHECK
  failed ``Retries`` times in a row (``reason="failed"``);
- after ``timeout`` seconds otherwise (``reason="timeout"``), with the last
  error a check met.

Network checks (:func:`for_port`, :func:`for_http`) run in a thread of ours
that joined the container's network namespace (``setns(2)`` of
``/proc/<pid>/ns/net`` with ``CLONE_NEWNET``; a network namespace belongs to a
thread, not a process), so a container with network ``"none"`` is reached on
its own loopback with no port forwarding, and a port open on the host never
counts. The thread ends with the wait.

Modules, by concept (import from this package; it only re-exports):
:mod:`.strategies` (:class:`WaitStrategy`, the ``for_*`` functions,
``all_of``/``any_of``, their argument checks), :mod:`.netns` (the network
namespace thread and its socket/httpx checks), :mod:`.healthcheck`
(:class:`Healthcheck` and its checks), :mod:`.loop` (:func:`wait_until_ready`,
:func:`check_wait`, :func:`last_log_lines`) and :mod:`.probe` (what a check
returns or raises).
"""

from .healthcheck import Healthcheck
from .loop import (
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    check_wait,
    last_log_lines,
    wait_until_ready,
)
from .loop import LAST_LINES as LAST_LINES
from .netns import NETWORK_CHECK_MAX as NETWORK_CHECK_MAX
from .probe import CHECK_MIN as CHECK_MIN
from .strategies import (
    LogStream,
    WaitStrategy,
    all_of,
    any_of,
    for_callable,
    for_command,
    for_healthcheck,
    for_http,
    for_log,
    for_port,
)
from .strategies import _LogFollower as _LogFollower  # for tests

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "Healthcheck",
    "LogStream",
    "WaitStrategy",
    "all_of",
    "any_of",
    "check_wait",
    "for_callable",
    "for_command",
    "for_healthcheck",
    "for_http",
    "for_log",
    "for_port",
    "last_log_lines",
    "wait_until_ready",
]
