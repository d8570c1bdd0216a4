"""Slow clients cannot hold the coordinator's connections (DESIGN §11, HTTP hardening).

aiohttp closes a keep-alive connection that stays idle for ``keepalive_timeout``, but has no
deadline for the request head: a client that opens a connection and trickles a header byte
now and then holds it (and its memory) for as long as the idle timeout keeps being reset, and
a thousand of them hold a thousand. Here every request head (request line and headers) must
be complete within ``HEADER_TIMEOUT`` of its first byte, and a new connection must send its
first request head within the same time; otherwise the connection is closed. An idle
keep-alive connection between requests is closed after ``KEEPALIVE_TIMEOUT``.

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


class GuardedRequestHandler(RequestHandler):
    """A RequestHandler whose request heads have a deadline."""

    header_timeout = HEADER_TIMEOUT
    _head_deadline: asyncio.TimerHandle | None = None
    _heads_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # a new connection owes its first request head

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a whole head arrived
        elif data and self._head_deadline is None and not self._in_request():
            self._arm()  # the first bytes of the next head

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
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
