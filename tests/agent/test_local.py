"""Tests for the local endpoints' listener (agent/local.py) over a real loopback socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent.local import LocalEndpoints
from agent.metrics import AgentMetrics, AgentSnapshot


class FakeSource:
    """The agent as the endpoints see it, with state a test sets."""

    def __init__(self) -> None:
        self.metrics = AgentMetrics()
        self.ready = True
        self.connected = True

    def snapshot(self) -> AgentSnapshot:
        return AgentSnapshot(
            ready=self.ready,
            registered=True,
            synced=True,
            node_id="n1",
            assignment_index=3,
            reports_sent=2,
            sync_failures=0,
            report_failures=0,
        )

    def connected_recently(self) -> bool:
        return self.connected


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeSource, int]]:
    source = FakeSource()
    endpoints = LocalEndpoints(source)
    await endpoints.start("127.0.0.1", 0)
    assert endpoints.port is not None
    try:
        yield source, endpoints.port
    finally:
        await endpoints.close()


async def exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw ``request``; the status line, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()  # the listener closes after one answer
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


class TestLocalEndpoints:
    async def test_healthz(self, served: tuple[FakeSource, int]) -> None:
        """/healthz answers 200 with a JSON body, its length, and closes the connection."""
        _, port = served
        status, headers, body = await exchange(port, get("/healthz"))
        assert status == "HTTP/1.1 200 OK"
        assert json.loads(body) == {"status": "ok"}
        assert headers["Content-Length"] == str(len(body))
        assert headers["Connection"] == "close"

    async def test_readyz_follows_the_coordinator(self, served: tuple[FakeSource, int]) -> None:
        """/readyz is 200 while a coordinator answered recently, else 503 with the reason."""
        source, port = served
        status, _, body = await exchange(port, get("/readyz"))
        assert status == "HTTP/1.1 200 OK"
        assert json.loads(body)["node_id"] == "n1"
        source.connected = False
        status, _, body = await exchange(port, get("/readyz"))
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert json.loads(body)["connected"] is False

    async def test_metrics_and_head(self, served: tuple[FakeSource, int]) -> None:
        """/metrics is the exposition text; HEAD gets the headers without the body."""
        _, port = served
        status, headers, body = await exchange(port, get("/metrics"))
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"].startswith("text/plain")
        assert b"fleetwave_agent_assignment_index 3.0" in body
        status, headers, body = await exchange(port, get("/metrics", "HEAD"))
        assert (status, body) == ("HTTP/1.1 200 OK", b"")
        assert int(headers["Content-Length"]) > 0

    @pytest.mark.parametrize(
        ("request_bytes", "status"),
        [
            (get("/nowhere"), "HTTP/1.1 404 Not Found"),
            (get("/healthz", "POST"), "HTTP/1.1 405 Method Not Allowed"),
            (b"nonsense\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            # Just over MAX_HEAD: all of it is read, so closing sends no RST before the answer.
            (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 8200 + b"\r\n\r\n", "HTTP/1.1 431 "),
        ],
    )
    async def test_refusals(
        self, served: tuple[FakeSource, int], request_bytes: bytes, status: str
    ) -> None:
        """Unknown paths, other methods, garbage and oversized heads get their error status."""
        _, port = served
        answered, _, _ = await exchange(port, request_bytes)
        assert answered.startswith(status)
