"""Slow clients against a real coordinator process: 1,000 connections that trickle a request
head one byte at a time (or say nothing) are closed by the header deadline, and a real
agent's heartbeats are accepted throughout, so its node never goes down."""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import pytest

from coordinator.demo.fleet import LocalFleet, wait_for
from coordinator.httpguard import HEADER_TIMEOUT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CONNECTIONS = 1000


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class Conn:
    """One slow client: when it connected, when the server closed it, or why it never could."""

    def __init__(self) -> None:
        self.opened: float | None = None
        self.closed: float | None = None
        self.error = ""

    @property
    def held(self) -> float | None:
        if self.opened is None or self.closed is None:
            return None
        return self.closed - self.opened


async def _trickle(port: int, silent: bool, conn: Conn, connecting: asyncio.Semaphore) -> None:
    """Open a connection and send a request head a byte every second, never finishing it
    (or send nothing); note when the server closes it."""
    async with connecting:  # at most so many connects in flight: a storm of SYNs is not the test
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            conn.error = f"{type(exc).__name__}: {exc}"
            return
    conn.opened = time.monotonic()
    head = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    try:
        for byte in head:
            if not silent:
                writer.write(bytes([byte]))
            try:
                # EOF (b"") or an answer: the server gave up on this connection.
                data = await asyncio.wait_for(reader.read(1024), timeout=1.0)
            except TimeoutError:
                continue
            if not data or b"HTTP/1.1" in data:
                conn.closed = time.monotonic()
                return
        conn.error = "never closed by the server"
    except (ConnectionError, OSError):
        conn.closed = time.monotonic()
    finally:
        writer.close()


def test_trickling_connections_are_closed_and_heartbeats_go_on(fleet: LocalFleet) -> None:
    _raise_fd_limit(CONNECTIONS * 2 + 256)
    fleet.start_coordinator()
    fleet.start_agent("n1")
    (node,) = fleet.wait_nodes_ready(1)
    conns = [Conn() for _ in range(CONNECTIONS)]
    heartbeats: list[str] = []

    def watch() -> Any:
        node_now = next(n for n in fleet.nodes() if n["id"] == node["id"])
        heartbeats.append(node_now["last_heartbeat"])
        assert node_now["status"] == "ready", node_now
        return all(c.closed is not None or c.error for c in conns)

    async def main() -> None:
        connecting = asyncio.Semaphore(100)
        tasks = [
            asyncio.ensure_future(_trickle(fleet.port, i % 2 == 0, conn, connecting))
            for i, conn in enumerate(conns)
        ]
        try:
            # Watch from a thread: this loop is busy with the connections.
            await asyncio.to_thread(
                wait_for, "every slow connection to be closed", watch, HEADER_TIMEOUT + 110, 0.5
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    held = [c.held for c in conns if c.held is not None]
    errors = sorted({c.error for c in conns if c.error})
    print(
        f"{len(held)} slow connections closed by the server, held {min(held):.1f}-{max(held):.1f}s"
        f" (header deadline {HEADER_TIMEOUT:.0f}s); {CONNECTIONS - len(held)} not: {errors}"
    )
    assert len(held) >= CONNECTIONS * 0.95, errors  # (a refused connect is not a held one)
    assert not [c for c in conns if c.error == "never closed by the server"]
    assert max(held) < HEADER_TIMEOUT + 20  # closed by the deadline, not by giving up
    assert len(set(heartbeats)) >= 3  # heartbeats kept being accepted meanwhile
    events = fleet.api.request("GET", "/v1/events", query={"limit": "1000"}).body["events"]
    assert not [e for e in events if e["kind"] == "node_status" and e["new"] == "down"]
