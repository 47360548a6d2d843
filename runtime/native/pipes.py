"""Reading the engine's pipes with timeouts: status lines, error reports, exec output."""

from __future__ import annotations

import os
import select
import signal
import time

__all__ = ["LinePipe", "collect", "read_all"]


class LinePipe:
    """Lines from a pipe's read end, with timeouts (``select``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def read_line(self, timeout: float | None) -> bytes | None:
        """The next line (without ``\\n``); ``None`` at EOF; ``TimeoutError`` after
        ``timeout`` seconds (``None``: forever, ``0``: do not block)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError("no report yet")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_all(fd: int, timeout: float | None) -> bytes:
    """Everything until EOF (``TimeoutError`` after ``timeout`` seconds)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError("no EOF yet")
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk


def _drain(fd: int, chunks: list[bytes], open_fds: list[int]) -> None:
    data = os.read(fd, 65536)
    if data:
        chunks.append(data)
    else:
        open_fds.remove(fd)


def collect(out_r: int, err_r: int, status_pipe: LinePipe, timeout: float | None
            ) -> tuple[bytes, bytes, int]:
    """Read both pipes until the command's ``S<status>`` report, then what is already
    buffered (a background child holding the pipes open does not block us).
    Returns ``(stdout, stderr, raw wait status)``; ``TimeoutError`` after ``timeout``
    seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    open_fds = [out_r, err_r]
    status: int | None = None
    while status is None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        watched = open_fds + ([status_pipe.fd] if status_pipe.fd >= 0 else [])
        ready, _, _ = select.select(watched, [], [], remaining)
        if not ready:
            raise TimeoutError("exec still running")
        for fd in ready:
            if fd != status_pipe.fd:
                _drain(fd, chunks[fd], open_fds)
                continue
            try:
                line = status_pipe.read_line(0)
            except TimeoutError:
                continue  # a partial line
            if line is None:
                status = signal.SIGKILL  # the helper died without a report
            elif line.startswith(b"S"):
                status = int(line[1:])
    while open_fds:  # what the exited command left in the pipes
        ready, _, _ = select.select(open_fds, [], [], 0)
        if not ready:
            break
        for fd in ready:
            _drain(fd, chunks[fd], open_fds)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r]), status
