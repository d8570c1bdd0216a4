"""Operator endpoints for nodes."""

from __future__ import annotations

from aiohttp import web

from coordinator.api.deps import deps, respond
from shared.errors import NotFound

routes = web.RouteTableDef()


@routes.get("/v1/nodes")
async def handle_list_nodes(request: web.Request) -> web.Response:
    nodes = await deps(request).store.list_nodes()
    return respond({"nodes": [n.to_api().model_dump(mode="json") for n in nodes]})


@routes.get("/v1/nodes/{node}")
async def handle_get_node(request: web.Request) -> web.Response:
    d = deps(request)
    key = request.match_info["node"]
    node = await d.store.find_node(key)
    if node is None:
        raise NotFound(f"node {key!r} not found (give its id or name)", {"node": key})
    _, assignments = await d.store.node_assignments(node.id)
    body = node.to_api().model_dump(mode="json") | {
        "assignments": [a.model_dump(mode="json", exclude={"node_id"}) for a in assignments]
    }
    return respond(body)
