"""A stdlib HTTP server on a free 127.0.0.1 port, served from a thread: the
shared part of the test servers (``token_server``, ``file_server``)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ThreadedServer:
    """``start(handler, name)`` serves ``handler`` on a free loopback port
    (``.port``); ``stop()`` shuts down, closes the socket and joins every
    request thread. Safe to call twice."""

    def __init__(self) -> None:
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, handler: type[BaseHTTPRequestHandler], name: str) -> int:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = False  # so server_close() joins every request thread
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.port

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        thread, self._thread = self._thread, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join()
