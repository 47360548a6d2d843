"""A small HTTP file server for tests: the blob storage behind a redirecting registry.

:class:`FileServer` serves the files under ``root`` for ``GET`` and ``HEAD`` on a
free ``127.0.0.1`` port (stdlib ``http.server`` in a thread, one request per
connection), with single byte ranges (RFC 9110 section 14): ``Range:
bytes=FIRST-`` or ``bytes=FIRST-LAST`` gets ``206`` with ``Content-Range: bytes
FIRST-LAST/SIZE``; a FIRST at or past the end gets ``416`` with ``Content-Range:
bytes */SIZE``. Serving a registry's storage root makes the registry's
``redirect`` storage middleware work: it redirects blob reads to
``baseurl`` + ``/docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data``.

Every request is recorded in :attr:`FileServer.requests` (method, path, headers
with lower-case names, status, body bytes to send), in arrival order, before
it is answered.

Faults for resilience tests, consumed in this order by each ``GET`` whose path
contains ``fault_path`` (default ``""``: every ``GET``):

- ``statuses``: ``(status, headers)`` pairs answered first, one per request
  (e.g. ``(429, {"Retry-After": "1"})``, ``(503, {})``), with a short text body;
- ``cuts``: byte counts; the next ``GET``s that serve a file send their headers
  (the full ``Content-Length``) and only that many body bytes, then close the
  connection, one count per request;
- ``ignore_range``: answer ``200`` with the whole file even when asked for a range.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pytest_containers.plugins._httpd import ThreadedServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
#: Bytes written per ``write`` call when serving a file.
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileRequest:
    """One request the server answered: ``method``, URL ``path`` (unquoted, no
    query), ``headers`` (lower-case names), the ``status`` sent and the body
    bytes ``sent`` (as planned: fewer than the ``Content-Length`` when cut)."""

    method: str
    path: str
    headers: Mapping[str, str]
    status: int
    sent: int = 0


@dataclass
class FileServer:
    """Serve ``root`` on ``127.0.0.1:PORT``; :meth:`start` it, :meth:`stop` it.

    ``url``: ``http://127.0.0.1:PORT``. ``statuses``, ``cuts``, ``ignore_range``
    and ``fault_path``: the faults of the module docstring; change them between
    requests as needed (lists are consumed from the front).
    """

    root: Path
    statuses: list[tuple[int, Mapping[str, str]]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    ignore_range: bool = False
    fault_path: str = ""
    requests: list[FileRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._lock = threading.Lock()
        self._server = ThreadedServer()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gets(self, path_part: str = "") -> list[FileRequest]:
        """The ``GET`` requests whose path contains ``path_part``, in order."""
        return [r for r in self.requests if r.method == "GET" and path_part in r.path]

    # -- answers --------------------------------------------------------------

    def _file(self, path: str) -> Path | None:
        target = (self.root / unquote(path).lstrip("/")).resolve()
        root = self.root.resolve()
        if (target != root and root not in target.parents) or not target.is_file():
            return None
        return target

    def _fault(
        self, method: str, path: str
    ) -> tuple[tuple[int, Mapping[str, str]] | None, int | None]:
        """The status to answer instead, or the byte count to cut after."""
        if method != "GET" or self.fault_path not in path:
            return None, None
        with self._lock:
            if self.statuses:
                return self.statuses.pop(0), None
            return None, self.cuts.pop(0) if self.cuts else None

    def _record(self, request: FileRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FileServer:
        """Listen on a free ``127.0.0.1`` port and serve in a thread; return self."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: threads end

            def _answer(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()

            def _serve(self, body: bool) -> None:
                path = urlsplit(self.path).path
                seen = {k.lower(): v for k, v in self.headers.items()}
                status_fault, cut = server._fault(self.command, path)
                if status_fault is not None:
                    status, extra = status_fault
                    text = f"fault injected: HTTP {status}\n".encode() if body else b""
                    server._record(FileRequest(self.command, path, seen, status, len(text)))
                    self._answer(status, [*extra.items(), ("Content-Length", str(len(text)))])
                    self.wfile.write(text)
                    return
                target = server._file(path)
                if target is None:
                    server._record(FileRequest(self.command, path, seen, 404))
                    self._answer(404, [("Content-Length", "0")])
                    return
                size = target.stat().st_size
                first, last, status = 0, size - 1, 200
                headers = [("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
                wanted = _RANGE.match(seen.get("range", "").strip())
                if wanted and not (server.ignore_range and server.fault_path in path):
                    first = int(wanted.group(1))
                    last = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
                    if first >= size or last < first:
                        server._record(FileRequest(self.command, path, seen, 416))
                        self._answer(416, [("Content-Range", f"bytes */{size}"), *headers[:1]])
                        return
                    status = 206
                    headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
                length = last - first + 1
                limit = 0 if not body else length if cut is None else min(cut, length)
                # recorded first: a client may act on the answer before this thread goes on
                server._record(FileRequest(self.command, path, seen, status, limit))
                self._answer(status, [*headers, ("Content-Length", str(length))])
                sent = 0
                if body:
                    with target.open("rb") as file:
                        file.seek(first)
                        while sent < limit:
                            chunk = file.read(min(_CHUNK_BYTES, limit - sent))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    self.wfile.flush()
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._serve(body=True)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._serve(body=False)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.port = self._server.start(Handler, "ptc-file-server")
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the threads. Safe to call twice."""
        self._server.stop()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
