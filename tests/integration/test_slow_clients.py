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


async def _trickle(port: int, silent: bool, closed: list[float]) -> None:
    """Open a connection and send a request head a byte every second, never finishing it
    (or send nothing); note when the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
                closed.append(time.monotonic())
                return
    except (ConnectionError, OSError):
        closed.append(time.monotonic())
    finally:
        writer.close()


def test_trickling_connections_are_closed_and_heartbeats_go_on(fleet: LocalFleet) -> None:
    _raise_fd_limit(CONNECTIONS * 2 + 256)
    fleet.start_coordinator()
    fleet.start_agent("n1")
    (node,) = fleet.wait_nodes_ready(1)

    closed: list[float] = []
    started = time.monotonic()

    async def attack() -> None:
        tasks = [
            asyncio.ensure_future(_trickle(fleet.port, silent=i % 2 == 0, closed=closed))
            for i in range(CONNECTIONS)
        ]
        await asyncio.wait(tasks, timeout=HEADER_TIMEOUT + 60)
        for task in tasks:
            task.cancel()

    heartbeats: list[str] = []

    def watch() -> Any:
        node_now = next(n for n in fleet.nodes() if n["id"] == node["id"])
        heartbeats.append(node_now["last_heartbeat"])
        assert node_now["status"] == "ready", node_now
        return len(closed) >= CONNECTIONS

    async def main() -> None:
        attacker = asyncio.ensure_future(attack())
        # Watch from a thread: the test's own loop is busy with the connections.
        await asyncio.to_thread(
            wait_for, "every slow connection to be closed", watch, HEADER_TIMEOUT + 50, 0.5
        )
        await attacker

    asyncio.run(main())
    elapsed = [t - started for t in closed]
    print(
        f"{len(closed)} slow connections closed; the last after {max(elapsed):.1f}s"
        f" (header deadline {HEADER_TIMEOUT:.0f}s)"
    )
    assert len(closed) == CONNECTIONS
    assert max(elapsed) < HEADER_TIMEOUT + 30  # closed by the deadline, not by giving up
    assert len(set(heartbeats)) >= 3  # heartbeats kept being accepted meanwhile
    events = fleet.api.request("GET", "/v1/events", query={"limit": "1000"}).body["events"]
    assert not [e for e in events if e["kind"] == "node_status" and e["new"] == "down"]
