"""The aiohttp application: middlewares (errors, auth), routes and background tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from coordinator.api import agent, docs, events, jobs, nodes, rollouts, system, ui
from coordinator.api.deps import DEPS, PRINCIPAL, Deps, Principal, respond
from coordinator.metrics import UNMATCHED_ROUTE
from coordinator.tokens import hash_token, same_token
from coordinator.watch import FEED
from shared.errors import (
    FleetwaveError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)

log = structlog.get_logger("fleetwave.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/ui")

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time each request by method, route template (never the raw path) and final status."""
    d = request.app[DEPS]
    started = d.clock.monotonic()

    def observe(status: int) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        method = request.method if request.method in HTTP_METHODS else "other"
        d.metrics.http_request_duration.labels(method, route, str(status)).observe(
            d.clock.monotonic() - started
        )

    try:
        response = await handler(request)
    except web.HTTPException as exc:
        observe(exc.status)
        raise
    observe(response.status)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the error tree (and aiohttp's own HTTP errors) to ``{"error": ...}`` bodies."""
    try:
        return await handler(request)
    except FleetwaveError as exc:
        if exc.status >= 500:
            log.error("request_failed", path=request.path, error=exc.message)
        return respond(exc.body(), status=exc.status)
    except web.HTTPRequestEntityTooLarge as exc:
        return respond(PayloadTooLarge(exc.text or "request body too large").body(), status=413)
    except web.HTTPNotFound:
        return respond(NotFound(f"no such endpoint: {request.method} {request.path}").body(), 404)
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        err = MethodNotAllowed(
            f"method {request.method} is not allowed on {request.path}", {"allowed": allowed}
        )
        return respond(err.body(), status=405, headers={"Allow": ",".join(allowed)})
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        internal = FleetwaveError("internal error; see the coordinator's log")
        return respond(internal.body(), status=500)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Operator endpoints need the admin token; agent endpoints a node token."""
    path = request.path
    if path.startswith(OPEN_PATHS) or not path.startswith("/v1/") or path == "/v1/agent/register":
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    d = request.app[DEPS]
    if same_token(token, d.admin_token):
        request[PRINCIPAL] = Principal(admin=True)
    else:
        node = await d.store.node_by_token_hash(hash_token(token))
        if node is None:
            raise Unauthorized("invalid token")
        request[PRINCIPAL] = Principal(admin=False, node=node)
        if not path.startswith("/v1/agent/"):
            raise Forbidden("node tokens may only call the agent endpoints (/v1/agent/...)")
    return await handler(request)


def create_app(deps: Deps) -> web.Application:
    """The coordinator's HTTP app; background loops are started by ``main``, not here."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=deps.max_body_bytes,
    )
    app[DEPS] = deps
    app.router.add_routes(system.routes)
    app.router.add_routes(docs.routes)
    app.router.add_routes(jobs.routes)
    app.router.add_routes(rollouts.routes)
    app.router.add_routes(nodes.routes)
    app.router.add_routes(agent.routes)
    app.router.add_routes(events.routes)
    deps.store.on_events(lambda: deps.watches.bump(FEED))
    app.router.add_routes(ui.routes)
    return app
