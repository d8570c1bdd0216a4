"""Tests for the agent's HTTP/1.1 client to its coordinators (agent/transport.py), against
raw asyncio servers on loopback that answer exactly as each test needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent.transport import StreamTransport, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server running ``handler`` per connection; counts connections and
    remembers each request head."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes:
    """One request (head and Content-Length body); the head is kept on ``server``."""
    head = await reader.readuntil(b"\r\n\r\n")
    server.heads.append(head)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


def answer(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def call(transport: StreamTransport, url: str, body: bytes | None = None) -> bytes:
    reply = await transport.request(
        "POST" if body is not None else "GET",
        url,
        headers={"Authorization": "Bearer t"},
        body=body,
        deadline=10,
        connect_timeout=5,
    )
    return reply.body


class TestStreamTransport:
    async def test_keep_alive_reuses_one_connection(self, serve: Callable[..., Any]) -> None:
        """Two calls to one coordinator go over one connection, each with its own answer;
        the request carries the method, path, query, Host, JSON type and body."""
        server: Server

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                body = await read_request(reader, server)
                writer.write(answer(b"got:" + body))
                await writer.drain()

        server = await serve(echo)
        async with StreamTransport() as transport:
            assert await call(transport, f"{server.url}/v1/x?index=1", b"{}") == b"got:{}"
            assert await call(transport, f"{server.url}/v1/x", b"[1]") == b"got:[1]"
        assert server.connections == 1
        first = server.heads[0].decode()
        assert first.startswith("POST /v1/x?index=1 HTTP/1.1\r\n")
        assert "Content-Type: application/json\r\n" in first
        assert "Authorization: Bearer t\r\n" in first
        assert f"Host: {server.url.removeprefix('http://')}\r\n" in first

    async def test_a_closed_idle_connection_is_replaced(self, serve: Callable[..., Any]) -> None:
        """A kept connection the server closed meanwhile is dropped and the call is sent
        again on a new one, so a keep-alive timeout never fails a call."""
        server: Server

        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader, server)
            writer.write(answer(b"ok"))  # says keep-alive, then closes anyway
            await writer.drain()

        server = await serve(once)
        async with StreamTransport() as transport:
            assert await call(transport, server.url) == b"ok"
            assert await call(transport, server.url) == b"ok"
        assert server.connections == 2

    async def test_chunked_and_unsized_bodies(self, serve: Callable[..., Any]) -> None:
        """A chunked body is joined; a body without a length runs to the connection's end."""
        server: Server

        async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader, server)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
            await writer.drain()
            await read_request(reader, server)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()

        server = await serve(chunked)
        async with StreamTransport() as transport:
            assert await call(transport, server.url) == b"abcde"
            assert await call(transport, server.url) == b"until the end"
        assert server.connections == 1

    async def test_status_and_headers(self, serve: Callable[..., Any]) -> None:
        """An error status comes back as an answer, headers by lower-case name."""
        server: Server

        async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader, server)
            writer.write(answer(b"{}", "Retry-After: 2", status="503 Service Unavailable"))
            await writer.drain()

        server = await serve(busy)
        async with StreamTransport() as transport:
            reply = await transport.request(
                "GET", server.url, headers={}, deadline=10, connect_timeout=5
            )
        assert (reply.status, reply.headers["retry-after"], reply.text()) == (503, "2", "{}")

    async def test_failures_are_transport_errors(self, serve: Callable[..., Any]) -> None:
        """A refused connection, a connection closed without an answer and an answer that
        is not HTTP are TransportErrors; a cancelled call's connection is not reused."""
        server: Server
        holding = asyncio.Event()

        async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader, server)
            if len(server.heads) == 1:
                return  # closes without an answer
            if len(server.heads) == 2:
                writer.write(b"SMTP ready\r\n\r\n")
                await writer.drain()
                return
            holding.set()
            await asyncio.Event().wait()  # holds the call until it is cancelled

        server = await serve(rude)
        async with StreamTransport() as transport:
            with pytest.raises(TransportError, match="closed without an answer"):
                await call(transport, server.url)
            with pytest.raises(TransportError, match="not an HTTP answer"):
                await call(transport, server.url)
            held = asyncio.ensure_future(call(transport, server.url))
            await asyncio.wait_for(holding.wait(), 10)
            held.cancel()
            with pytest.raises(asyncio.CancelledError):
                await held
            assert transport._take(("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1]))) is None
            port = server.url.rsplit(":", 1)[1]
            assert server.server is not None
            server.server.close()
            await server.server.wait_closed()
            with pytest.raises(TransportError, match="cannot connect"):
                await call(transport, f"http://127.0.0.1:{port}")
