"""Open endpoints for monitoring: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from coordinator.api.deps import deps, respond
from coordinator.metrics import CONTENT_TYPE, read_state
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
    if failing is not None:
        # Reads still work, but every write fails: send the traffic elsewhere until a
        # probe write (at most one a second, from these calls) commits again.
        return respond(
            {"status": "storage_failing", "error": failing},
            status=503,
            headers={"Retry-After": str(StoreUnavailable.retry_after)},
        )
    return respond({"status": "ready"})


@routes.get("/metrics")
async def handle_metrics(request: web.Request) -> web.Response:
    d = deps(request)
    snapshot = await read_state(d.store)
    body = d.metrics.render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
