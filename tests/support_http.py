"""A loopback HTTP server in a daemon thread: what the fake Twilio and fake Nominatim servers are built on."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalServer:
    """Subclasses give :meth:`handler`; :meth:`start` listens on 127.0.0.1 (the same port after a
    :meth:`stop`), :meth:`stop` refuses connections again and cuts every held-back answer short."""

    name = "fake-server"

    def __init__(self) -> None:
        self._release = threading.Event()  # set: held-back answers may go
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._release.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
