"""Operator endpoints for nodes."""

from __future__ import annotations

from aiohttp import web

from coordinator.api.deps import bool_field, deps, only_fields, optional_body, respond
from coordinator.store.records import Event, NodeRecord
from shared.errors import FieldError, NotFound, ValidationFailed
from shared.nodes import Eligibility

routes = web.RouteTableDef()


@routes.get("/v1/nodes")
async def handle_list_nodes(request: web.Request) -> web.Response:
    nodes = await deps(request).store.list_nodes()
    return respond({"nodes": [n.to_api().model_dump(mode="json") for n in nodes]})


@routes.get("/v1/nodes/{node}")
async def handle_get_node(request: web.Request) -> web.Response:
    d = deps(request)
    node = await _find(request)
    _, assignments = await d.store.node_assignments(node.id)
    body = node.to_api().model_dump(mode="json") | {
        "assignments": [a.model_dump(mode="json", exclude={"node_id"}) for a in assignments]
    }
    return respond(body)


async def _find(request: web.Request) -> NodeRecord:
    key = request.match_info["node"]
    node = await deps(request).store.find_node(key)
    if node is None:
        raise NotFound(f"node {key!r} not found (give its id or name)", {"node": key})
    return node


@routes.post("/v1/nodes/{node}/drain")
async def handle_drain(request: web.Request) -> web.Response:
    """Drain a node (``{"enable": true}``, the default): its jobs stop and it gets no new ones."""
    d = deps(request)
    node = await _find(request)
    body = await optional_body(request)
    only_fields(body, "enable")
    enable = bool_field(body, "enable", True)
    await d.store.set_node_scheduling(node.id, drain=enable)
    d.driver.kick()  # committed: the engine reacts even if the event below cannot be written
    await d.store.append_events(
        [
            Event(
                time=d.clock.now(),
                node=node.id,
                kind="node_drain",
                old=str(node.drain).lower(),
                new=str(enable).lower(),
                reason="operator",
            )
        ]
    )
    updated = await d.store.get_node(node.id)
    assert updated is not None
    return respond(updated.to_api())


@routes.post("/v1/nodes/{node}/eligibility")
async def handle_eligibility(request: web.Request) -> web.Response:
    """Mark a node ``eligible`` or ``ineligible`` (keeps running what it has, gets nothing new)."""
    d = deps(request)
    node = await _find(request)
    body = await optional_body(request)
    only_fields(body, "eligibility")
    raw = body.get("eligibility")
    if raw not in {e.value for e in Eligibility}:
        raise ValidationFailed(
            [FieldError(field="eligibility", message="must be 'eligible' or 'ineligible'")]
        )
    eligibility = Eligibility(raw)
    await d.store.set_node_scheduling(node.id, eligibility=eligibility)
    d.driver.kick()  # committed: the engine reacts even if the event below cannot be written
    await d.store.append_events(
        [
            Event(
                time=d.clock.now(),
                node=node.id,
                kind="node_eligibility",
                old=node.eligibility.value,
                new=eligibility.value,
                reason="operator",
            )
        ]
    )
    updated = await d.store.get_node(node.id)
    assert updated is not None
    return respond(updated.to_api())
