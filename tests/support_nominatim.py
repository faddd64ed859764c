"""A fake Nominatim server for tests: http.server on 127.0.0.1 in a thread, answering ``GET /search``.

It answers the way Nominatim's ``format=json`` does (a list of places, ``lat``/``lon`` as strings; ``[]`` for
a miss), records every request, and can be told to fail with an HTTP status, to hang past the client's
timeout, or to go down and come back on the same port.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support_http import LocalServer


@dataclass(frozen=True)
class SeenRequest:
    path: str
    params: dict[str, str]
    user_agent: str | None

    @property
    def q(self) -> str | None:
        return self.params.get("q")


class FakeNominatim(LocalServer):
    """Start with :meth:`start`; ``url`` is the base URL to give as ``NOMINATIM_URL``."""

    name = "fake-nominatim"

    def __init__(self) -> None:
        super().__init__()
        self.places: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[SeenRequest] = []
        self.status: int | None = None  # answer every request with this HTTP status
        self.hanging = False  # hold every request until released (past any client timeout)
        self.on_request: Callable[[SeenRequest], None] | None = None

    # --- what it answers ---

    def add_place(self, query: str, lat: float, lng: float, display_name: str | None = None) -> None:
        """``q=query`` finds one place at (lat, lng)."""
        self.places[query] = [
            {
                "place_id": 100000 + len(self.places),
                "licence": "Data © OpenStreetMap contributors, ODbL 1.0. https://osm.org/copyright",
                "osm_type": "way",
                "osm_id": 200000 + len(self.places),
                "lat": f"{lat:.7f}",
                "lon": f"{lng:.7f}",
                "class": "building",
                "type": "yes",
                "place_rank": 30,
                "importance": 0.0001,
                "addresstype": "building",
                "name": "",
                "display_name": display_name or f"{query}, 中国",
                "boundingbox": [
                    f"{lat - 0.0005:.7f}",
                    f"{lat + 0.0005:.7f}",
                    f"{lng - 0.0005:.7f}",
                    f"{lng + 0.0005:.7f}",
                ],
            }
        ]

    def fail_with(self, status: int) -> None:
        self.status = status

    def hang(self) -> None:
        self._release.clear()
        self.hanging = True

    def recover(self) -> None:
        """Answer normally again (after :meth:`fail_with` or :meth:`hang`)."""
        self.status = None
        self.hanging = False
        self._release.set()

    @property
    def queries(self) -> list[str | None]:
        with self._lock:
            return [seen.q for seen in self.requests]

    # --- lifecycle ---

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = SeenRequest(
                    path=parts.path,
                    params={key: values[-1] for key, values in parse_qs(parts.query).items()},
                    user_agent=self.headers.get("User-Agent"),
                )
                with fake._lock:
                    fake.requests.append(seen)
                if fake.on_request is not None:
                    fake.on_request(seen)
                if fake.hanging:
                    fake._release.wait(timeout=10)
                    return  # the client gave up long ago: close without an answer
                if fake.status is not None:
                    self._send(fake.status, {"error": "fake failure"})
                elif not parts.path.endswith("/search"):
                    self._send(404, {"error": "unknown path"})
                else:
                    self._send(200, fake.places.get(seen.q or "", []))

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and closed the connection

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
