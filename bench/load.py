"""A minimal keep-alive HTTP/1.1 load generator on raw asyncio streams.

Much cheaper per request than an HTTP client library, so on a 2-core machine the
server, not the load generator, is what a throughput run measures. Only for our own
loopback servers: requests are pre-built bytes, responses must carry Content-Length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

RequestFactory = Callable[[int, int], bytes]
"""(connection number, request number on that connection) -> raw request bytes."""


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def closed_loop(
    host: str, port: int, factory: RequestFactory, connections: int, seconds: float
) -> LoadResult:
    """Each connection sends its next request as soon as the last answer arrived."""
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    deadline = start + seconds

    async def worker(conn: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            n = 0
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                writer.write(factory(conn, n))
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if status >= 300:
                    errors += 1
                n += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(c) for c in range(connections)))
    return LoadResult(len(latencies), errors, time.monotonic() - start, latencies)


async def open_loop(
    host: str, port: int, factory: RequestFactory, rate: float, seconds: float, pool: int = 64
) -> LoadResult:
    """Send ``rate`` requests per second (independent of answers) over a pool of connections."""
    idle: asyncio.Queue[tuple[int, asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for c in range(pool):
        reader, writer = await asyncio.open_connection(host, port)
        idle.put_nowait((c, reader, writer))
    latencies: list[float] = []
    errors = 0
    counts = [0] * pool

    async def one(sent: float) -> None:
        nonlocal errors
        c, reader, writer = await idle.get()
        try:
            writer.write(factory(c, counts[c]))
            counts[c] += 1
            status, _ = await read_response(reader)
            latencies.append(time.perf_counter() - sent)
            if status >= 300:
                errors += 1
        finally:
            idle.put_nowait((c, reader, writer))

    start = time.monotonic()
    tasks = []
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(time.perf_counter())))
    await asyncio.gather(*tasks)
    seconds_taken = time.monotonic() - start
    while not idle.empty():
        idle.get_nowait()[2].close()
    return LoadResult(len(latencies), errors, seconds_taken, latencies)
