"""Checks in the container's network namespace: :func:`for_port` and
:func:`for_http` run their socket and httpx calls in a thread of ours that joined
it (``setns(2)`` of ``/proc/<pid>/ns/net`` with ``CLONE_NEWNET``; a network
namespace belongs to a thread, not a process), so a container with network
``"none"`` is reached on its own loopback with no port forwarding, and a port
open on the host never counts. The thread ends with the wait.

The only module of the package that imports httpx; its errors become "not yet".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from ..runtime.linux.syscalls import CLONE_NEWNET, setns
from .probe import _describe, _NotReady, _Probe

if TYPE_CHECKING:
    import httpx

    from ..containers import ContainerHandle
    from .strategies import _ForHttp, _ForPort

T = TypeVar("T")

#: Longest one network check may take, in seconds (a connect, or a request and its response).
NETWORK_CHECK_MAX = 5.0


class _NetnsThread:
    """A thread of ours in the network namespace of process ``pid`` (host pid), for
    calls whose sockets must be created there. Started at the first call."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pool: ThreadPoolExecutor | None = None
        self._join_error: OSError | None = None

    def _join(self) -> None:
        """First thing in the thread: ``setns(open("/proc/<pid>/ns/net"), CLONE_NEWNET)``."""
        try:
            fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
        except OSError as exc:
            self._join_error = exc

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` in the thread; raises what it raises, ``TimeoutError`` after
        ``timeout`` seconds, ``_NotReady`` when the thread could not join."""
        if self._pool is None:
            self._join_error = None
            self._pool = ThreadPoolExecutor(
                1, thread_name_prefix=f"ptc-netns-{self.pid}", initializer=self._join
            )
        pool = self._pool

        def in_namespace() -> T:
            if self._join_error is not None:  # never run fn in our own namespace
                raise _NotReady(
                    f"cannot join the network namespace of pid {self.pid}: {self._join_error}"
                )
            return fn()

        try:
            return pool.submit(in_namespace).result(timeout)
        except _NotReady:
            self._pool = None  # a fresh thread tries again
            pool.shutdown(wait=False)
            raise

    def close(self, last: Callable[[], object] | None = None) -> None:
        """End the thread once it is done, after running ``last()`` in it."""
        pool, self._pool = self._pool, None
        if pool is not None:
            if last is not None and self._join_error is None:
                pool.submit(last)
            pool.shutdown(wait=False)


class _PortProbe(_Probe):
    strategy: _ForPort

    def __init__(self, strategy: _ForPort, handle: ContainerHandle) -> None:
        super().__init__(strategy, handle)
        self.netns = _NetnsThread(handle.pid)

    def check(self, timeout: float) -> bool:
        limit = min(timeout, NETWORK_CHECK_MAX)
        address = (self.strategy.host, self.strategy.port)

        def connect() -> None:
            with socket.create_connection(address, timeout=limit):
                pass

        self.netns.call(connect, limit + 1.0)
        return True

    def close(self) -> None:
        self.netns.close()


class _HttpProbe(_Probe):
    strategy: _ForHttp

    def __init__(self, strategy: _ForHttp, handle: ContainerHandle) -> None:
        super().__init__(strategy, handle)
        self.netns = _NetnsThread(handle.pid)
        self._client: httpx.Client | None = None  # made and used in the thread only

    def check(self, timeout: float) -> bool:
        s = self.strategy
        limit = min(timeout, NETWORK_CHECK_MAX)

        def request() -> tuple[int, str]:
            import httpx  # here: the CLI's ps/stop/rm import this package without needing it

            if self._client is None:
                self._client = httpx.Client(trust_env=False, follow_redirects=False)
            try:
                response = self._client.request(s.method, s.url, timeout=limit)
            except httpx.HTTPError as exc:  # httpx's errors become "not yet"
                raise _NotReady(f"{s.method} {s.url}: {_describe(exc)}") from None
            return response.status_code, response.reason_phrase

        code, reason = self.netns.call(request, limit + 1.0)
        ok = s.status(code) if callable(s.status) else code == s.status
        if ok:
            return True
        raise _NotReady(f"{s.method} {s.url}: HTTP {code} {reason}, wanted {s.wanted}")

    def close(self) -> None:
        client = self._client
        self.netns.close(client.close if client is not None else None)
