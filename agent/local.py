"""Local endpoints on the node (default 127.0.0.1:7401): /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from agent.metrics import CONTENT_TYPE, AgentMetrics, AgentSnapshot

__all__ = ["AgentSnapshot", "SnapshotSource", "create_local_app"]


class SnapshotSource(Protocol):
    """The agent as the endpoints see it: its state now, and its metrics registry."""

    def snapshot(self) -> AgentSnapshot: ...

    def connected_recently(self) -> bool:
        """Whether a coordinator answered within the last few heartbeat intervals."""
        ...

    @property
    def metrics(self) -> AgentMetrics: ...


SOURCE_KEY = web.AppKey("snapshot_source", SnapshotSource)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready: state loaded and a coordinator answered recently (within 3 heartbeats).

    An agent that lost its coordinators keeps running its workloads, but is not ready:
    it cannot take new assignments. /healthz stays 200 (the process is alive).
    """
    source = request.app[SOURCE_KEY]
    snap = source.snapshot()
    connected = snap.ready and source.connected_recently()
    body = {
        "ready": snap.ready and connected,
        "loaded": snap.ready,
        "connected": connected,
        "registered": snap.registered,
        "synced": snap.synced,
        "node_id": snap.node_id,
    }
    return web.json_response(body, status=200 if body["ready"] else 503)


async def handle_metrics(request: web.Request) -> web.Response:
    source = request.app[SOURCE_KEY]
    body = source.metrics.render(source.snapshot())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_local_app(source: SnapshotSource) -> web.Application:
    """The local endpoints' app, reading state from ``source``."""
    app = web.Application()
    app[SOURCE_KEY] = source
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    return app
