"""Tests for the lazily made aiohttp session of HTTP checks and downloads (agent/outbound.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.outbound import LazySession


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


async def test_session_is_made_by_the_first_get(aiohttp_server: Any) -> None:
    """No session before the first GET; the GET is aiohttp's; close ends the session."""
    app = web.Application()
    app.router.add_get("/", hello)
    server = await aiohttp_server(app)
    http = LazySession()
    assert not http.started
    async with http.get(str(server.make_url("/"))) as response:
        assert (response.status, await response.text()) == (200, "hi")
    assert http.started
    await http.close()
    assert not http.started
