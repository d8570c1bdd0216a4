"""Local endpoints on the node (default 127.0.0.1:7401): /healthz, /readyz, /metrics.

Served by a few lines over ``asyncio.start_server`` rather than ``aiohttp.web``: three GETs on
loopback, one answer per connection (``Connection: close``), so an idle agent does not keep
aiohttp's server side in memory (about 2 MB; docs/agent.md, "Memory").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Protocol

import structlog

from agent.metrics import CONTENT_TYPE, AgentMetrics, AgentSnapshot

__all__ = ["AgentSnapshot", "LocalEndpoints", "SnapshotSource", "answer"]

log = structlog.get_logger("agent.local")

REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request head; a stalled one is dropped."""
MAX_HEAD = 8192
"""Bytes of request line plus headers accepted; longer heads get 431."""
JSON = "application/json; charset=utf-8"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class SnapshotSource(Protocol):
    """The agent as the endpoints see it: its state now, and its metrics registry."""

    def snapshot(self) -> AgentSnapshot: ...

    def connected_recently(self) -> bool:
        """Whether a coordinator answered within the last few heartbeat intervals."""
        ...

    @property
    def metrics(self) -> AgentMetrics: ...


def readyz(source: SnapshotSource) -> tuple[int, dict[str, object]]:
    """Ready: state loaded and a coordinator answered recently (within 3 heartbeats).

    An agent that lost its coordinators keeps running its workloads, but is not ready:
    it cannot take new assignments. /healthz stays 200 (the process is alive).
    """
    snap = source.snapshot()
    connected = snap.ready and source.connected_recently()
    body: dict[str, object] = {
        "ready": snap.ready and connected,
        "loaded": snap.ready,
        "connected": connected,
        "registered": snap.registered,
        "synced": snap.synced,
        "node_id": snap.node_id,
    }
    return (200 if body["ready"] else 503), body


def answer(source: SnapshotSource, method: str, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body for one request (HEAD is answered like GET)."""
    route = path.split("?", 1)[0]
    if route not in ("/healthz", "/readyz", "/metrics"):
        return 404, JSON, b'{"error": "not found"}'
    if method not in ("GET", "HEAD"):
        return 405, JSON, b'{"error": "method not allowed"}'
    if route == "/metrics":
        return 200, CONTENT_TYPE, source.metrics.render(source.snapshot())
    status, body = (200, {"status": "ok"}) if route == "/healthz" else readyz(source)
    return status, JSON, json.dumps(body).encode()


class LocalEndpoints:
    """The local HTTP listener: ``await start(host, port)``, then ``await close()``."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, head_only = await self._respond(reader)
            reason = REASONS.get(status, "")
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if head_only else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 431, JSON, b'{"error": "request head too large"}', False
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, JSON, b'{"error": "bad request"}', False
        method, path = parts[0], parts[1]
        try:
            status, ctype, body = answer(self._source, method, path)
        except Exception:  # a bug here must not kill the listener; answer 500 and log it
            log.exception("local_endpoint_failed", path=path)
            return 500, JSON, b'{"error": "internal error"}', False
        return status, ctype, body, method == "HEAD"
