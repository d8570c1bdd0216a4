"""Endpoints for monitoring: liveness, readiness, Prometheus metrics and the cluster."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from coordinator.api.deps import deps, respond
from coordinator.cluster import solo_view
from coordinator.metrics import CONTENT_TYPE, read_state
from shared.clock import format_time
from shared.errors import StoreUnavailable

routes = web.RouteTableDef()


@routes.get("/healthz")
async def handle_healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


@routes.get("/readyz")
async def handle_readyz(request: web.Request) -> web.Response:
    d = deps(request)
    if not d.started:
        return respond({"status": "starting"}, status=503)
    failing = await d.store.check_writable(d.clock.monotonic())
    if failing is None and d.cluster is not None:
        # A shared database that stopped answering (no error, just silence) fails no write
        # until someone writes; the lease is tried every second or so and says it first.
        failing = d.cluster.database_problem()
    if failing is not None:
        # Reads still work, but every write fails: send the traffic elsewhere until a
        # probe write (at most one a second, from these calls) commits again.
        return respond(
            {"status": "storage_failing", "error": failing},
            status=503,
            headers={"Retry-After": str(StoreUnavailable.retry_after)},
        )
    role = d.cluster.role if d.cluster is not None else "leader"
    return respond({"status": "ready", "role": role})


@routes.get("/v1/cluster")
async def handle_cluster(request: web.Request) -> web.Response:
    d = deps(request)
    if d.cluster is None:
        # Tests that drive the engine themselves: one coordinator, which leads.
        view = solo_view("coordinator", "", d.clock.now(), d.clock.now())
    else:
        view = await d.cluster.view()
    members = list(view.members)
    return respond(
        {
            "leader": {"id": view.leader_id, "address": view.leader_address},
            "epoch": view.epoch,
            "members": [
                {
                    "id": m.id,
                    "address": m.address,
                    "role": "leader" if m.leader else "follower",
                    "last_seen": format_time(m.last_seen),
                }
                for m in members
            ],
            "member": view.member_id,
        }
    )


@routes.get("/metrics")
async def handle_metrics(request: web.Request) -> web.Response:
    d = deps(request)
    try:
        snapshot = await read_state(d.store)
    except StoreUnavailable:
        # The database is down (PostgreSQL: reads need it too). The scrape still answers:
        # the store's and the lease's own metrics are what describe the outage, and a 503
        # would hide them. The stored-state gauges keep their last reading.
        snapshot = replace(d.metrics.state.snapshot, writes=d.store.write_health())
    body = d.metrics.render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
