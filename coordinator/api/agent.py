"""The agent protocol: register, blocking assignments query, report."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator.api.deps import Deps, caller_node, decode_json, deps, read_body, respond
from coordinator.api.jobs import blocking_params
from coordinator.engine.driver import node_key
from coordinator.store.records import Event, NodeRecord
from coordinator.tokens import hash_token, new_token, token_matches
from shared.errors import Conflict, Unauthorized, ValidationFailed
from shared.nodes import NodeCondition, NodeStatus
from shared.protocol import (
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
)
from shared.spec import field_errors

routes = web.RouteTableDef()

SPEC_CACHE_SIZE = 1024

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The body as ``model``, parsed straight from the bytes (the hot path of every report)."""
    body = await read_body(request)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            decode_json(body)  # raises the 400 that names line and column
        raise ValidationFailed(field_errors(exc)) from None


@routes.post("/v1/agent/register")
async def handle_register(request: web.Request) -> web.Response:
    d = deps(request)
    body = await parse_body(request, RegisterRequest)
    if not token_matches(body.join_token, d.join_token_hash):
        raise Unauthorized("invalid join token")
    token = new_token("fwn")
    now = d.clock.now()
    reason = ""
    other = await d.store.find_node(body.name)  # the live holder of the name, if any
    if other is not None and other.name == body.name and other.status != NodeStatus.DOWN:
        # A node that never reported is most likely this same agent asking again after
        # the answer to its first registration was lost (a timeout): nothing can hold
        # that node's token, so it keeps its id and gets a new one.
        renewed = await d.store.renew_registration(
            other.id,
            token_hash=hash_token(token),
            labels=body.labels,
            resources=body.resources,
            agent_version=body.agent_version,
        )
        if renewed is None:
            raise Conflict(
                f"node name {body.name!r} is held by live node {other.id}; pick another name"
                " or stop that agent first",
                {"name": body.name, "node_id": other.id},
            )
        node, reason = renewed, "registered again before its first report (a lost answer)"
    else:
        node = NodeRecord(
            id=str(uuid.uuid4()),
            name=body.name,
            token_hash=hash_token(token),
            labels=body.labels,
            resources=body.resources,
            agent_version=body.agent_version,
            registered_at=now,
        )
        await d.store.insert_node(node)
    await d.store.append_events(
        [Event(time=now, node=node.id, kind="node_registered", new=node.name, reason=reason)]
    )
    d.driver.kick()
    response = RegisterResponse(
        node_id=node.id, node_token=token, heartbeat_interval=d.heartbeat_interval
    )
    return respond(response, status=201)


@routes.get("/v1/agent/assignments")
async def handle_assignments(request: web.Request) -> web.Response:
    d = deps(request)
    node = caller_node(request)
    index, wait = blocking_params(request)
    key = node_key(node.id)
    current, records = await d.store.node_assignments(node.id)
    if index is not None and current <= index:
        after = index
        with d.metrics.long_polls.labels("assignments").track_inprogress():
            current, records = await d.watches.block(
                key, lambda: d.store.node_assignments(node.id), lambda r: r[0] > after, wait
            )
    parts = []
    for record in records:
        spec = await spec_json(d, record.job, record.version)
        if spec is not None:
            parts.append(
                f'{{"job":{json.dumps(record.job)},"version":{record.version},'
                f'"generation":{record.generation},"spec":{spec}}}'
            )
    # Built from cached, pre-serialized specs: every agent polls this, and encoding each
    # spec again per poll was the endpoint's main cost. A test checks it against the model.
    body = (
        f'{{"node_id":{json.dumps(node.id)},"index":{current},'
        f'"heartbeat_interval":{json.dumps(d.heartbeat_interval)},'
        f'"assignments":[{",".join(parts)}]}}'
    )
    return web.Response(
        text=body,
        content_type="application/json",
        headers={"X-Fleetwave-Index": str(current)},
    )


async def spec_json(d: Deps, job: str, version: int) -> str | None:
    """The JSON of a job version's spec, encoded once (versions never change)."""
    key = (job, version)
    cached = d.spec_json_cache.get(key)
    if cached is None:
        stored = await d.store.get_version(job, version)
        if stored is None:
            return None
        if len(d.spec_json_cache) >= SPEC_CACHE_SIZE:
            d.spec_json_cache.clear()  # old versions are rarely polled; start over
        cached = stored.spec.model_dump_json()
        d.spec_json_cache[key] = cached
    return cached


@routes.post("/v1/agent/report")
async def handle_report(request: web.Request) -> web.Response:
    d = deps(request)
    node = caller_node(request)
    body = await parse_body(request, ReportRequest)
    now = d.clock.now()
    outcome = await d.store.record_report(
        node.id,
        seq=body.seq,
        load=body.load,
        resources=body.resources,
        executions=body.executions,
        now=now,
        conditions=body.conditions,
    )
    d.metrics.count_report(accepted=outcome.accepted)
    try:
        if outcome.accepted and body.agent_version and body.agent_version != node.agent_version:
            # Registration recorded the version; an upgraded agent keeps its identity.
            await d.store.set_node_agent_version(node.id, body.agent_version)
            await d.store.append_events(
                [
                    Event(
                        time=now,
                        node=node.id,
                        kind="node_agent_version",
                        old=node.agent_version,
                        new=body.agent_version,
                        reason="reported by the agent",
                    )
                ]
            )
        if outcome.status_changed:
            await d.store.append_events(
                [
                    Event(
                        time=now,
                        node=node.id,
                        kind="node_status",
                        old=node.status.value,
                        new=NodeStatus.READY.value,
                        reason="heartbeat received",
                    )
                ]
            )
    finally:
        # The report is committed: the engine must hear of it even when a write above
        # fails (the agent then gets a 503, and its next report changes nothing).
        if outcome.status_changed:
            d.driver.kick()
        for job in outcome.changed_jobs:
            d.driver.kick(job)
    if outcome.accepted:
        # The report replaced the node's conditions: record what appeared and what cleared.
        events = condition_events(node.id, node.conditions, body.conditions, now)
        await d.store.append_events(events)
    # Encoded by hand: every heartbeat of every node ends here. A test checks it against
    # the ReportResponse model.
    return web.Response(
        text=report_answer(outcome.accepted, outcome.last_seq, outcome.assign_index),
        content_type="application/json",
    )


def condition_events(
    node_id: str, old: Sequence[NodeCondition], new: Sequence[NodeCondition], now: datetime
) -> list[Event]:
    """A ``node_condition`` event for each condition type that appeared (``new`` is the
    type, ``reason`` its message) or cleared (``old`` is the type); a changed message of a
    condition that stays is no event."""
    before = {condition.type for condition in old}
    after = {condition.type: condition for condition in new}
    events = [
        Event(time=now, node=node_id, kind="node_condition", new=kind, reason=after[kind].message)
        for kind in sorted(after.keys() - before)
    ]
    events += [
        Event(time=now, node=node_id, kind="node_condition", old=kind, reason="cleared")
        for kind in sorted(before - after.keys())
    ]
    return events


def report_answer(accepted: bool, last_seq: int, index: int) -> str:
    """The JSON of ``ReportResponse(accepted, last_seq, index)``."""
    return f'{{"accepted":{"true" if accepted else "false"},"last_seq":{last_seq},"index":{index}}}'
