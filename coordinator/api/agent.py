"""The agent protocol: register, blocking assignments query, report."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator.access import DEFAULT_JOIN_ID, looks_like_an_id
from coordinator.api.deps import (
    AUDIT_NOTE,
    Deps,
    caller_node,
    decode_json,
    deps,
    read_body,
    respond,
)
from coordinator.api.jobs import blocking_params
from coordinator.domain.nodes import NameTaken
from coordinator.domain.records import AssignmentRecord, Event, NodeRecord
from coordinator.engine.driver import node_key
from coordinator.tokens import hash_token, new_token, token_matches
from shared.clock import format_time
from shared.errors import FieldError, NodeRevoked, Unauthorized, ValidationFailed
from shared.nodes import NodeCondition, NodeStatus
from shared.protocol import (
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    TokenRotation,
)
from shared.spec import field_errors
from shared.tokens import Approval, TokenKind

routes = web.RouteTableDef()

SPEC_CACHE_SIZE = 1024

REGISTER_BODY_LIMIT = 64 * 1024

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M], limit: int | None = None) -> M:
    """The body as ``model``, parsed straight from the bytes (the hot path of every report);
    ``limit`` lowers the body size limit."""
    body = await read_body(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError:
        pass
    # Malformed or too deeply nested: the 400 that says so (line and column, depth). Else
    # the JSON as the document reads it (5.0 is an integer, which strict JSON parsing refuses).
    data = decode_json(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None


@dataclass(frozen=True)
class JoinGrant:
    """What a valid join token grants: its id (None for the configured one), the labels it
    binds and whether its nodes need approval."""

    token_id: str | None
    name: str
    labels: dict[str, str]
    approval: Approval


async def join_grant(d: Deps, secret: str) -> JoinGrant:
    """The grant of a join token; 401 saying why when it grants nothing (expired, revoked
    or unknown)."""
    if token_matches(secret, d.join_token_hash):
        return JoinGrant(None, DEFAULT_JOIN_ID, {}, Approval.AUTO)
    token = await d.store.token_by_hash(hash_token(secret))
    if token is None or token.kind != TokenKind.JOIN:
        raise Unauthorized("invalid join token")
    if token.revoked_at is not None:
        raise Unauthorized(f"join token {token.name!r} was revoked")
    if token.expires_at is not None and token.expires_at <= d.clock.now():
        raise Unauthorized(f"join token {token.name!r} expired at {format_time(token.expires_at)}")
    # Uses are counted (and a used-up token refused) where a new node is inserted, in the
    # same transaction; renewing a node's own registration is no new enrollment.
    return JoinGrant(token.id, token.name, dict(token.labels), token.approval or Approval.AUTO)


def token_expiry(d: Deps, now: datetime) -> datetime | None:
    return now + timedelta(seconds=d.node_token_ttl) if d.node_token_ttl else None


def _registered(now: datetime, node: NodeRecord, reason: str, by: str) -> Event:
    return Event(
        time=now, node=node.id, kind="node_registered", new=node.name, reason=reason, by=by
    )


@routes.post("/v1/agent/register")
async def handle_register(request: web.Request) -> web.Response:
    d = deps(request)
    # Anyone may call it: its body is small (64 labels of at most 318 bytes), so a client
    # without a join token cannot make the coordinator buffer megabytes.
    body = await parse_body(request, RegisterRequest, limit=REGISTER_BODY_LIMIT)
    if looks_like_an_id(body.name):
        # Operators name nodes by id or name: a name shaped like an id could stand for
        # another node in `node revoke` or `node purge`.
        raise ValidationFailed(
            [FieldError(field="name", message="must not look like a node id (a UUID)")]
        )
    grant = await join_grant(d, body.join_token)
    labels = body.labels | grant.labels  # bound labels win over what the agent declares
    token = new_token("fwn")
    now = d.clock.now()
    expires = token_expiry(d, now)
    holder = await d.store.find_node(body.name)
    if holder is not None and holder.name == body.name:
        # The name belongs to its node: only that node's agent (its node key) renews it,
        # e.g. after its token expired or the answer to its first registration was lost.
        owned = (
            body.node_key is not None
            and bool(holder.key_hash)
            and token_matches(body.node_key, holder.key_hash)
        )
        if not owned or holder.revoked_at is not None:
            raise NameTaken(body.name, holder)
        renewed = await d.store.renew_registration(
            holder.id,
            token_hash=hash_token(token),
            # What its enrolling token bound stays bound, whichever join token it shows now.
            labels=labels | holder.bound_labels,
            resources=body.resources,
            agent_version=body.agent_version,
            issued_at=now,
            expires_at=expires,
        )
        if renewed is None:
            raise NameTaken(body.name, holder)
        node = renewed
        await d.store.append_events(
            [_registered(now, node, "registered again with its node key", grant.name)]
        )
    else:
        node = NodeRecord(
            id=str(uuid.uuid4()),
            name=body.name,
            token_hash=hash_token(token),
            key_hash=hash_token(body.node_key) if body.node_key else "",
            approved=grant.approval == Approval.AUTO,
            join_token=grant.token_id or DEFAULT_JOIN_ID,
            bound_labels=grant.labels,
            token_issued_at=now,
            token_expires_at=expires,
            labels=labels,
            resources=body.resources,
            agent_version=body.agent_version,
            registered_at=now,
        )
        reason = f"with join token {grant.name!r}" + (
            "; pending approval (fleetwave node approve)" if not node.approved else ""
        )
        # The node and its event in one transaction (the store commits registrations that
        # arrive together in one).
        await d.store.insert_node(
            node, join_token=grant.token_id, events=[_registered(now, node, reason, grant.name)]
        )
    note = request.get(AUDIT_NOTE)
    if note is not None:
        note.token_id = grant.token_id or DEFAULT_JOIN_ID
        note.token_name, note.node = grant.name, node.id
    d.driver.kick()
    response = RegisterResponse(
        node_id=node.id,
        node_token=token,
        heartbeat_interval=d.heartbeats.hand_out(node.id),
        node_token_expires_at=expires,
        status=node.api_status.value,
    )
    return respond(response, status=201)


@routes.post("/v1/agent/token")
async def handle_rotate_token(request: web.Request) -> web.Response:
    """A new token for the calling node. The current one keeps working until the new one
    is first used, so an answer lost on the way cannot lock the node out."""
    d = deps(request)
    node = caller_node(request)
    token = new_token("fwn")
    expires = token_expiry(d, d.clock.now())
    await d.store.offer_node_token(node.id, token_hash=hash_token(token), expires_at=expires)
    return respond(TokenRotation(node_token=token, node_token_expires_at=expires))


def should_rotate(d: Deps, node: NodeRecord, now: datetime) -> bool:
    """Whether the node's token is past two thirds of its life, or never expires while node
    tokens should (issued before ``node_token_ttl`` was set, or by an older coordinator)."""
    if node.token_expires_at is None or node.token_issued_at is None:
        return d.node_token_ttl is not None
    life = node.token_expires_at - node.token_issued_at
    return now >= node.token_issued_at + life * 2 / 3


async def _node_view(d: Deps, node_id: str) -> tuple[int, list[AssignmentRecord], bool]:
    """The node's assignment index and assignments, and whether it was revoked."""
    current, records = await d.store.node_assignments(node_id)
    node = await d.store.get_node(node_id)
    if node is None or not node.in_fleet:
        # Pending, revoked or purged: it runs nothing (the engine never targets it; this
        # is the second lock on that door).
        records = []
    return current, records, node is None or node.revoked_at is not None


@routes.get("/v1/agent/assignments")
async def handle_assignments(request: web.Request) -> web.Response:
    d = deps(request)
    node = caller_node(request)
    index, wait = blocking_params(request)
    key = node_key(node.id)
    current, records, revoked = await _node_view(d, node.id)
    if index is not None and current <= index and not revoked:
        after = index
        if d.admission is not None:
            d.admission.release(request)  # a held poll waits outside the admission limit
        with d.metrics.long_polls.labels("assignments").track_inprogress():
            current, records, revoked = await d.watches.block(
                key, lambda: _node_view(d, node.id), lambda r: r[0] > after or r[2], wait
            )
    if revoked:
        # Revoked while it waited: the open long-poll ends with the refusal, at once.
        raise NodeRevoked(f"node {node.name!r} ({node.id}) was revoked", {"node_id": node.id})
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
        f'"heartbeat_interval":{json.dumps(d.heartbeats.hand_out(node.id))},'
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
        # A pending node runs nothing of ours: only its liveness counts until approval.
        executions=body.executions if node.in_fleet else (),
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
    rotate = should_rotate(d, node, now)
    return web.Response(
        text=report_answer(outcome.accepted, outcome.last_seq, outcome.assign_index, rotate),
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


def report_answer(accepted: bool, last_seq: int, index: int, rotate: bool = False) -> str:
    """The JSON of ``ReportResponse(accepted, last_seq, index, rotate_token)``."""
    return (
        f'{{"accepted":{"true" if accepted else "false"},"last_seq":{last_seq},"index":{index},'
        f'"rotate_token":{"true" if rotate else "false"}}}'
    )
