"""Slow clients cannot hold the coordinator's connections (DESIGN §11, HTTP hardening).

aiohttp closes a keep-alive connection that stays idle for ``keepalive_timeout``, but has no
deadline for the request head: a client that opens a connection and trickles a header byte
now and then holds it (and its memory) for as long as the idle timeout keeps being reset, and
a thousand of them hold a thousand. Likewise a client that never reads its answer holds the
answer's buffer. Here every request head (request line and headers) must
be complete within ``HEADER_TIMEOUT`` of its first byte, and a new connection must send its
first request head within the same time; otherwise the connection is closed. An idle
keep-alive connection between requests is closed after ``KEEPALIVE_TIMEOUT``, and one whose
answer does not drain for ``WRITE_STALL_TIMEOUT`` is aborted. A body must arrive within
``deps.BODY_TIMEOUT`` (checked where it is read).

This relies on aiohttp's ``RequestHandler`` internals (its loop, the queue of parsed
messages and the waiter of an idle handler); ``tests/coordinator/test_slow_clients.py``
holds it to account on every aiohttp upgrade.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head, from its first byte (or from the
connection's start for the first request)."""

KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle keep-alive connection is kept between requests."""

WRITE_STALL_TIMEOUT = 30.0
"""Seconds an answer may sit unsent because the client does not read it; then the
connection is aborted (a client that never reads would hold its buffer forever)."""

_WRITE_CHECK = WRITE_STALL_TIMEOUT / 2


class GuardedRequestHandler(RequestHandler):
    """A RequestHandler whose request heads have a deadline."""

    header_timeout = HEADER_TIMEOUT
    write_stall_timeout = WRITE_STALL_TIMEOUT
    _head_deadline: asyncio.TimerHandle | None = None
    _heads_seen = 0
    _write_check: asyncio.TimerHandle | None = None
    _unsent = 0
    _stalled_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # a new connection owes its first request head
        self._write_check = self._loop.call_later(_WRITE_CHECK, self._check_writes)

    def _check_writes(self) -> None:
        """Abort a connection whose unsent answer has not shrunk for write_stall_timeout."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        unsent = transport.get_write_buffer_size()
        now = self._loop.time()
        if unsent == 0 or unsent < self._unsent:
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since >= self.write_stall_timeout:
            transport.abort()
            return
        self._unsent = unsent
        self._write_check = self._loop.call_later(_WRITE_CHECK, self._check_writes)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a whole head arrived
        elif data and self._head_deadline is None and not self._in_request():
            self._arm()  # the first bytes of the next head

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._write_check is not None:
            self._write_check.cancel()
            self._write_check = None
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        """Whether a request is being handled (its body may arrive slowly: not a head)."""
        return bool(self._messages) or self._request_in_progress

    def _arm(self) -> None:
        self._heads_seen = self._request_count
        self._head_deadline = self._loop.call_later(self.header_timeout, self._overdue)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _overdue(self) -> None:
        self._head_deadline = None
        if self._request_count == self._heads_seen and not self._in_request():
            self.force_close()


class _GuardedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedRequestHandlers, with the idle timeout."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        return server
