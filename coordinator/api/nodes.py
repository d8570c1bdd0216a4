"""Operator endpoints for nodes."""

from __future__ import annotations

from aiohttp import web

from coordinator.api.deps import Deps, acting_token, deps, optional_model, respond
from coordinator.api.schemas import DrainRequest, EligibilityRequest
from coordinator.domain.records import Event, NodeRecord
from coordinator.engine.driver import node_key
from shared.errors import Conflict, NotFound
from shared.nodes import Node, NodeStatus

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
    enable = (await optional_model(request, DrainRequest)).enable
    event = node_event(
        request, node.id, kind="node_drain", old=str(node.drain).lower(), new=str(enable).lower()
    )
    await d.store.set_node_scheduling(node.id, drain=enable, events=[event])
    d.driver.kick()
    return respond(await _current(d, node.id))


@routes.post("/v1/nodes/{node}/eligibility")
async def handle_eligibility(request: web.Request) -> web.Response:
    """Mark a node ``eligible`` or ``ineligible`` (keeps running what it has, gets nothing new)."""
    d = deps(request)
    node = await _find(request)
    eligibility = (await optional_model(request, EligibilityRequest)).eligibility
    event = node_event(
        request, node.id, kind="node_eligibility", old=node.eligibility.value, new=eligibility.value
    )
    await d.store.set_node_scheduling(node.id, eligibility=eligibility, events=[event])
    d.driver.kick()
    return respond(await _current(d, node.id))


@routes.post("/v1/nodes/{node}/approve")
async def handle_approve(request: web.Request) -> web.Response:
    """Let a ``pending`` node (manual-approval join token) into the fleet."""
    d = deps(request)
    node = await _find(request)
    if node.revoked_at is not None:
        raise Conflict(
            f"node {node.name!r} ({node.id}) was revoked; a revoked node never returns"
            " (purge it and enroll the host again)",
            {"node": node.id, "status": node.api_status.value},
        )
    if not node.approved:
        event = node_event(
            request,
            node.id,
            kind="node_approved",
            old=NodeStatus.PENDING.value,
            new=node.status.value,
        )
        await d.store.approve_node(node.id, events=[event])
        d.driver.kick()  # the engine may target it now
    return respond(await _current(d, node.id))


@routes.post("/v1/nodes/{node}/revoke")
async def handle_revoke(request: web.Request) -> web.Response:
    """Refuse the node's token from now on, end its open long-poll, never target it again."""
    d = deps(request)
    node = await _find(request)
    if node.revoked_at is None:
        event = node_event(
            request,
            node.id,
            kind="node_revoked",
            old=node.api_status.value,
            new=NodeStatus.REVOKED.value,
        )
        await d.store.revoke_node(node.id, d.clock.now(), events=[event])
        d.watches.bump(node_key(node.id))  # its blocking query returns the refusal now
        d.driver.kick()  # its jobs' rollouts treat it as gone
    return respond(await _current(d, node.id))


@routes.delete("/v1/nodes/{node}")
async def handle_purge(request: web.Request) -> web.Response:
    """Forget a ``down`` or ``revoked`` node: its name may be registered again."""
    d = deps(request)
    node = await _find(request)
    status = node.api_status
    if status not in (NodeStatus.DOWN, NodeStatus.REVOKED):
        raise Conflict(
            f"node {node.name!r} ({node.id}) is {status.value}: only a down or revoked node can"
            " be purged (revoke it first: fleetwave node revoke)",
            {"node": node.id, "status": status.value},
        )
    event = node_event(request, node.id, kind="node_purged", old=status.value, new=node.name)
    await d.store.purge_node(node.id, events=[event])
    d.watches.bump(node_key(node.id))
    d.driver.kick()
    return web.Response(status=204)


def node_event(request: web.Request, node_id: str, *, kind: str, old: str, new: str) -> Event:
    """The event of an operator's change of a node, naming the acting token (``by``); the
    store writes it with the change, in one transaction."""
    return Event(
        time=deps(request).clock.now(),
        node=node_id,
        kind=kind,
        old=old,
        new=new,
        reason="operator",
        by=acting_token(request),
    )


async def _current(d: Deps, node_id: str) -> Node:
    updated = await d.store.get_node(node_id)
    if updated is None:
        raise NotFound(f"node {node_id!r} not found", {"node": node_id})
    return updated.to_api()
