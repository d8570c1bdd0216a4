"""Open endpoints for monitoring: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from coordinator.api.deps import deps, respond

routes = web.RouteTableDef()


@routes.get("/healthz")
async def handle_healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


@routes.get("/readyz")
async def handle_readyz(request: web.Request) -> web.Response:
    d = deps(request)
    if not d.started:
        return respond({"status": "starting"}, status=503)
    await d.store.list_jobs()  # the store answers
    return respond({"status": "ready"})


@routes.get("/metrics")
async def handle_metrics(request: web.Request) -> web.Response:
    d = deps(request)
    jobs = Counter(j.status.state.state_type.value for j in await d.store.list_jobs())
    nodes = Counter(n.status.value for n in await d.store.list_nodes())
    lines = [
        "# HELP fleetwave_jobs Jobs by state.",
        "# TYPE fleetwave_jobs gauge",
        *(f'fleetwave_jobs{{state="{s}"}} {c}' for s, c in sorted(jobs.items())),
        "# HELP fleetwave_nodes Nodes by status.",
        "# TYPE fleetwave_nodes gauge",
        *(f'fleetwave_nodes{{status="{s}"}} {c}' for s, c in sorted(nodes.items())),
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
