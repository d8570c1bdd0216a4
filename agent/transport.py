"""A small HTTP/1.1 client for the agent's calls to its coordinators, over asyncio streams.

aiohttp's client costs an idle agent 13.9 MB of imports (docs/agent.md, "Memory"), and the
coordinator calls need little of it: a JSON body, keep-alive, TLS with the agent's own
context, a connect and a total timeout. aiohttp stays for what talks to other servers (HTTP
health checks, artifact downloads) and is loaded when one of those first runs.

A connection kept alive is taken again for the next call to the same origin; if it turns out
to be closed (the coordinator's keep-alive ran out) before any answer arrived, the call is
sent again on a new connection, once. That is safe for every agent call (agent/client.py).
A call that is cancelled or times out closes its connection: it is never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
"""Bytes of status line plus headers accepted in an answer."""
MAX_BODY = 256 * 1024 * 1024
"""Largest answer body accepted (an assignments answer of a very busy node is a few MB)."""


class TransportError(Exception):
    """No answer: the connection failed, was closed, or the answer was not HTTP."""


class ConnectTimeout(TransportError):
    """No connection within the connect timeout."""


@dataclass(frozen=True)
class Reply:
    """One answer: its status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


Origin = tuple[str, str, int]


class _Stale(Exception):
    """A reused connection was found closed before any answer: send again on a new one."""


class StreamTransport:
    """Sends requests to coordinators; ``ssl_context`` verifies https ones (None: the
    system's CAs) and carries the client certificate. ``close()`` ends idle connections."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._default_ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[_Connection]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        deadline: float,
        connect_timeout: float,
        body: bytes | None = None,
    ) -> Reply:
        """Send one request and read its answer within ``deadline`` seconds (TimeoutError)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin: Origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        head += ["User-Agent: fleetwave-agent", "Accept: application/json"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        async with asyncio.timeout(deadline):
            while True:
                conn, reused = self._take(origin), True
                if conn is None:
                    conn, reused = await self._connect(origin, connect_timeout), False
                try:
                    reply, keep = await _exchange(conn, message, head_only=method == "HEAD")
                except _Stale:
                    conn.close()
                    if reused:
                        continue
                    raise TransportError("connection closed without an answer") from None
                except (
                    OSError,
                    ValueError,  # a malformed length or chunk size
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    conn.close()
                    raise TransportError(str(exc) or type(exc).__name__) from None
                except BaseException:  # cancelled or timed out mid-answer: never reuse it
                    conn.close()
                    raise
                if keep:
                    self._idle.setdefault(origin, []).append(conn)
                else:
                    conn.close()
                return reply

    async def __aenter__(self) -> StreamTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _take(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get(origin, [])
        while conns:
            conn = conns.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, within: float) -> _Connection:
        scheme, host, port = origin
        context = self._context() if scheme == "https" else None
        try:
            async with asyncio.timeout(within):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                    limit=MAX_HEAD,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {host}:{port} within {within:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Connection(reader, writer)

    def _context(self) -> ssl.SSLContext:
        if self._ssl is not None:
            return self._ssl
        if self._default_ssl is None:
            self._default_ssl = ssl.create_default_context()
        return self._default_ssl


async def _exchange(conn: _Connection, message: bytes, *, head_only: bool) -> tuple[Reply, bool]:
    """Write ``message``, read the answer; (reply, whether the connection may be reused)."""
    try:
        conn.writer.write(message)
        await conn.writer.drain()
        status_line = await conn.reader.readuntil(b"\r\n")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
            raise
        raise _Stale from None
    version, _, rest = status_line.decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise TransportError(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(code)
    headers: dict[str, str] = {}
    while (line := await conn.reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if head_only or status in (204, 304) or 100 <= status < 200:
        return Reply(status, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Reply(status, headers, await _read_chunked(conn.reader)), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY:
            raise TransportError(f"answer body of {length} bytes")
        return Reply(status, headers, await conn.reader.readexactly(length)), keep
    body = bytearray()  # no length given: the body ends with the connection
    while chunk := await conn.reader.read(65536):
        body += chunk
        if len(body) > MAX_BODY:
            raise TransportError("answer body too large")
    return Reply(status, headers, bytes(body)), False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise TransportError("answer body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
