"""The event feed: ``GET /v1/events`` as server-sent events, or as a JSON page.

The stream carries every stored transition (``id:`` is the event id, so a client resumes with
``Last-Event-ID``) and an unnumbered ``status`` message whenever a job's status revision changes,
which tells a live view to refetch that job. It wakes on the store's commit of new events and on
job bumps, never by polling the database on a timer.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from aiohttp import web

from coordinator.api.deps import (
    MAX_PLAIN_INT,
    PRINCIPAL,
    Deps,
    deps,
    plain_int,
    principal_valid,
    respond,
)
from coordinator.domain.records import Event
from coordinator.watch import FEED
from shared.errors import FieldError, StoreError, ValidationFailed

log = structlog.get_logger("fleetwave.coordinator")

routes = web.RouteTableDef()

MAX_EVENT_ID = MAX_PLAIN_INT  # within SQLite's integer range
KEEPALIVE_SECONDS = 15.0
BATCH = 500  # events read per wake-up; a long backlog is streamed in batches


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


def _event_id(request: web.Request) -> int | None:
    """Where to resume: ``Last-Event-ID`` wins over ``?after``; None means "from now".
    Both are checked when both are given: a bad one is a 400 even where the other wins."""
    given = {
        "Last-Event-ID": request.headers.get("Last-Event-ID"),
        "after": request.query.get("after"),
    }
    values = {field: _event_id_value(raw) for field, raw in given.items() if raw is not None}
    bad = [
        FieldError(field=field, message=EVENT_ID_RULE) for field, v in values.items() if v is None
    ]
    if bad:
        raise ValidationFailed(bad)
    return next(iter(values.values()), None)


EVENT_ID_RULE = f"must be an integer from 0 to {MAX_EVENT_ID}"


def _event_id_value(raw: str) -> int | None:
    value = plain_int(raw)
    return value if value is not None and value <= MAX_EVENT_ID else None


def _sse(event: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _job_revisions(d: Deps, job: str | None) -> dict[str, int]:
    jobs = await d.store.list_jobs()
    return {j.name: j.status.revision for j in jobs if job is None or j.name == job}


@routes.get("/v1/events")
async def handle_events(request: web.Request) -> web.StreamResponse:
    if _wants_json(request):
        return await _events_page(request)
    d = deps(request)
    job = request.query.get("job") or None
    after = _event_id(request)
    # Read before the 200 even when resuming: an unavailable store is then answered 503 with
    # Retry-After, not with a stream that ends at once.
    latest = await d.store.last_event_id()
    last = latest if after is None else after
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        }
    )
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n\n")
    revisions: dict[str, int] = {}
    try:
        while not d.closing and await principal_valid(d, request[PRINCIPAL]):
            # (A revoked or expired token's stream ends: revoking bumps the feed.)
            woken = d.watches.event(FEED)  # taken before reading, so no bump is missed
            events = await d.store.list_events(job=job, after=last, limit=BATCH)
            for event in events:
                await resp.write(_sse(event.kind, _dump(event), event.id))
                last = event.id
            if len(events) == BATCH:
                continue
            current = await _job_revisions(d, job)
            for name, revision in current.items():
                if revisions.get(name) != revision:
                    await resp.write(_sse("status", {"job": name, "revision": revision}))
            revisions = current
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    await woken.wait()
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    except StoreError as exc:
        # The stream's headers are sent, so no 503 can be answered any more: end it. The
        # client reconnects after ``retry`` and is answered 503 until the store is back
        # (left open, the stream would only be silent: no event, no keepalive).
        log.warning("event_stream_ended", error=exc.message)
    return resp


def _dump(event: Event) -> object:
    return event.model_dump(mode="json")


async def _events_page(request: web.Request) -> web.Response:
    d = deps(request)
    errors = []
    try:
        after = _event_id(request) or 0  # Last-Event-ID, as for a stream, else ?after=
    except ValidationFailed as exc:
        errors.extend(exc.errors)
        after = 0
    limit = plain_int(request.query.get("limit", "100"))
    if limit is None or not 1 <= limit <= 1000:
        errors.append(FieldError(field="limit", message="must be an integer from 1 to 1000"))
    if errors or limit is None:
        raise ValidationFailed(errors)
    job = request.query.get("job") or None
    events = await d.store.list_events(job=job, after=after, limit=limit)
    return respond(
        {
            "events": [_dump(e) for e in events],
            "last_id": events[-1].id if events else after,
        }
    )
