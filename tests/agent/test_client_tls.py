"""The coordinator client under mTLS: a refused client certificate is not a refused token."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from agent.client import CLIENT_CERTIFICATE_REQUIRED, CoordinatorClient, coordinator_session
from agent.errors import RequestRejected, TokenRejected
from shared.errors import ClientCertificateRequired, Unauthorized


def refusing(error: Unauthorized) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response(error.body().model_dump(mode="json"), status=401)

    app = web.Application()
    app.router.add_get("/v1/agent/assignments", handle)
    return app


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (
            ClientCertificateRequired("agent endpoints require a client certificate"),
            RequestRejected,
        ),
        (Unauthorized("invalid token"), TokenRejected),
    ],
)
async def test_a_missing_certificate_keeps_the_identity(
    aiohttp_server: Any, error: Unauthorized, raised: type[Exception]
) -> None:
    """A 401 for a missing client certificate is a plain rejection (retry, keep the node
    token); only a 401 about the token itself asks the agent to register again."""
    server = await aiohttp_server(refusing(error), host="127.0.0.1")
    session = coordinator_session(None)
    try:
        client = CoordinatorClient([str(server.make_url(""))], session)
        with pytest.raises(raised) as caught:
            await client.assignments("fwn_token", 0, 0)
    finally:
        await session.close()
    if isinstance(caught.value, RequestRejected):
        assert caught.value.code == CLIENT_CERTIFICATE_REQUIRED
        assert "client certificate" in str(caught.value)
