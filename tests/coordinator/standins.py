"""Stand-ins for coordinators that fail, for the CLI's failover tests: tiny HTTP servers on
loopback threads that answer 503 or break the connection, and the event stream of a
coordinator that goes away after a few events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from coordinator.demo.fleet import free_port


@dataclass
class Seen:
    """One request a stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Standin:
    """A stand-in's address and every request it received."""

    url: str
    seen: list[Seen] = field(default_factory=list)

    def methods(self) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.seen]


class _Handler(BaseHTTPRequestHandler):
    standin: ClassVar[Standin]
    mode: ClassVar[str]
    events: ClassVar[list[int]]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows stderr of failing tests only, and these lines are noise."""

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.standin.seen.append(Seen(self.command, self.path, dict(self.headers), body))

    def _answer(self) -> None:
        self._record()
        if self.mode == "break":
            # Read the whole request, then close without a word: the caller cannot know
            # whether it was applied.
            self.close_connection = True
            return
        if self.mode == "events" and self.path.startswith("/v1/events"):
            self._stream()
            return
        if self.mode == "ok":
            self._json(200, {"jobs": [], "method": self.command})
            return
        if self.mode == "proxy503":
            self._send(503, b"<html>503 Service Unavailable</html>", "text/html")
            return
        error = {
            "code": "store_unavailable",
            "message": "could not record the request: database is locked",
            "details": {},
        }
        self._json(503, {"error": error})

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if status == 503:
            self.send_header("Retry-After", "2")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """A few events, then the connection ends, as when the coordinator dies."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event_id in self.events:
            data = json.dumps({"id": event_id, "kind": "job_state"})
            self.wfile.write(f"id: {event_id}\nevent: job\ndata: {data}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    # http.server dispatches on these names.
    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815


@contextmanager
def standin(mode: str, *, events: tuple[int, ...] = ()) -> Iterator[Standin]:
    """A stand-in coordinator on a loopback port: ``503`` (a coordinator whose database is
    down), ``proxy503`` (a 503 that is not a coordinator's), ``break`` (closes every
    connection after reading the request), ``ok`` (answers 200 ``{"jobs": [], "method"}``)
    or ``events`` (an event stream of ``events`` that then ends; 503 to anything else)."""
    found = Standin("")
    handler = type("Handler", (_Handler,), {"standin": found, "mode": mode, "events": list(events)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name=f"standin-{mode}", daemon=True
    )
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refusing() -> str:
    """An address where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"
