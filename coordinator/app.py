"""The aiohttp application: its one middleware (auth, errors, timing) and routes."""

from __future__ import annotations

import hmac
import itertools
import secrets
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from coordinator.access import BOOTSTRAP_ADMIN_ID, Principal, Right, check_rules, rule_for
from coordinator.admission import AgentAdmission
from coordinator.api import agent, docs, events, jobs, nodes, rollouts, system, ui
from coordinator.api import audit as audit_routes
from coordinator.api import tokens as token_routes
from coordinator.api.deps import AUDIT_NOTE, DEPS, PRINCIPAL, AuditNote, Deps, respond
from coordinator.domain.records import AuditEntry, AuditOutcome
from coordinator.metrics import UNMATCHED_ROUTE
from coordinator.tokens import hash_token
from coordinator.watch import FEED
from shared.clock import format_time
from shared.errors import (
    ClientCertificateRequired,
    FleetwaveError,
    Forbidden,
    MethodNotAllowed,
    NodeRevoked,
    NodeTokenExpired,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
)
from shared.tokens import Role, TokenKind

log = structlog.get_logger("fleetwave.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _has_client_cert(request: web.Request) -> bool:
    """Whether the connection presented a certificate the TLS layer verified: with
    ``CERT_OPTIONAL`` an unverifiable one fails the handshake, and none gives no peercert."""
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


async def _authenticate(request: web.Request, d: Deps) -> None:
    """Find who calls (``PRINCIPAL``) and check the route's rule (``coordinator.access``)."""
    path = request.path
    if d.require_client_cert and path.startswith("/v1/agent/") and not _has_client_cert(request):
        raise ClientCertificateRequired(
            "agent endpoints require a client certificate signed by the coordinator's"
            " --tls-client-ca; this connection presented none"
        )
    resource = request.match_info.route.resource
    rule = rule_for(request.method, resource.canonical) if resource is not None else None
    if rule is not None and rule.right in (Right.OPEN, Right.REGISTER):
        return
    if rule is None and resource is not None and request.match_info.http_exception is None:
        # A route that matched but has no rule (create_app refuses those at start): deny.
        raise Forbidden(f"no access rule for {request.method} {resource.canonical}")
    if rule is None and not path.startswith("/v1/"):
        return  # no such page: the router answers 404 (or 405)
    if rule is None and _is_open_resource(request):
        return  # a method an open resource does not have: the router answers 405 to anyone
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    principal = await _principal(d, token)
    request[PRINCIPAL] = principal
    if rule is None:
        return  # an unknown /v1 path: a 404 (or 405) for anyone who holds a valid token
    job = request.match_info.get(rule.job_param) if rule.job_param else None
    refusal = principal.missing(rule, job)
    if refusal is not None:
        raise Forbidden(refusal, {"right": rule.right.value})


def _is_open_resource(request: web.Request) -> bool:
    """Whether the path names a resource anyone may call (registration), by another method."""
    error = request.match_info.http_exception
    if not isinstance(error, web.HTTPMethodNotAllowed):
        return False
    rules = (rule_for(method, request.path) for method in error.allowed_methods)
    return any(r is not None and r.right in (Right.OPEN, Right.REGISTER) for r in rules)


async def _principal(d: Deps, token: str) -> Principal:
    """The principal behind a bearer token; 401 naming why when there is none."""
    digest = hash_token(token)  # once: compared with the bootstrap token's, else looked up
    if hmac.compare_digest(digest, d.admin_token_hash):
        return Principal(token_id=BOOTSTRAP_ADMIN_ID, name=BOOTSTRAP_ADMIN_ID, role=Role.ADMIN)
    now = d.clock.now()
    managed = await d.store.token_by_hash(digest)
    if managed is not None:
        if managed.revoked_at is not None:
            raise Unauthorized(f"token {managed.name!r} was revoked", {"token_id": managed.id})
        if managed.expires_at is not None and managed.expires_at <= now:
            raise Unauthorized(
                f"token {managed.name!r} expired at {format_time(managed.expires_at)}",
                {"token_id": managed.id},
            )
        if managed.kind == TokenKind.JOIN:
            raise Forbidden(
                f"token {managed.name!r} is a join token: it can only register nodes"
                " (POST /v1/agent/register)",
                {"right": Right.REGISTER.value},
            )
        return Principal(
            token_id=managed.id, name=managed.name, role=managed.role, jobs=tuple(managed.jobs)
        )
    node = await d.store.node_by_token_hash(digest)
    if node is None:
        raise Unauthorized("invalid token")
    if node.revoked_at is not None:
        raise NodeRevoked(f"node {node.name!r} ({node.id}) was revoked", {"node_id": node.id})
    if digest == node.next_token_hash:
        if node.next_token_expires_at is not None and node.next_token_expires_at <= now:
            # Offered, never used, and past its life: it cannot be exchanged any more.
            raise NodeTokenExpired(
                f"the rotated token of node {node.name!r} expired unused;"
                " the agent registers again with its join token",
                {"node_id": node.id},
            )
        # The agent saved its rotated token and uses it: the old one stops working now.
        node = await d.store.promote_node_token(node.id, digest, now)
    elif node.token_expires_at is not None and node.token_expires_at <= now:
        raise NodeTokenExpired(
            f"the token of node {node.name!r} expired at {format_time(node.token_expires_at)};"
            " the agent registers again with its join token",
            {"node_id": node.id},
        )
    return Principal(token_id=node.id, name=node.name, node=node)


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    """The ``{"error": ...}`` body for an error a handler (or authentication) raised."""
    match exc:
        case FleetwaveError():
            if exc.status >= 500:
                log.error("request_failed", path=request.path, error=exc.message)
            # A 503 is an outage the caller should wait out, not a bug: say for how long.
            headers = {"Retry-After": str(exc.retry_after)} if exc.status == 503 else None
            return respond(exc.body(), status=exc.status, headers=headers)
        case web.HTTPRequestEntityTooLarge():
            return respond(PayloadTooLarge(exc.text or "request body too large").body(), 413)
        case web.HTTPNotFound():
            missing = NotFound(f"no such endpoint: {request.method} {request.path}")
            return respond(missing.body(), 404)
        case web.HTTPMethodNotAllowed():
            allowed = sorted(exc.allowed_methods)
            err = MethodNotAllowed(
                f"method {request.method} is not allowed on {request.path}", {"allowed": allowed}
            )
            return respond(err.body(), status=405, headers={"Allow": ",".join(allowed)})
    log.exception("unhandled_error", method=request.method, path=request.path)
    internal = FleetwaveError("internal error; see the coordinator's log")
    return respond(internal.body(), status=500)


_MAPPED_HTTP_ERRORS = (web.HTTPRequestEntityTooLarge, web.HTTPNotFound, web.HTTPMethodNotAllowed)


AGENT_TRAFFIC = frozenset({"/v1/agent/assignments", "/v1/agent/report", "/v1/agent/token"})
"""Agents' own calls: not operator requests, and far too many to audit (refusals are)."""

CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _audited(request: web.Request) -> bool:
    """Requests recorded before they run: every changing /v1 request but agent traffic."""
    path = request.path
    return request.method in CHANGING and path.startswith("/v1/") and path not in AGENT_TRAFFIC


def _audit_entry(request: web.Request, d: Deps, status: int, request_id: str) -> AuditEntry:
    principal = request.get(PRINCIPAL)
    note = request.get(AUDIT_NOTE) or AuditNote()
    info = request.match_info
    resource = info.route.resource
    job = info.get("name", "") if request.path.startswith("/v1/jobs/") else ""
    return AuditEntry(
        time=d.clock.now(),
        token_id=note.token_id or (principal.token_id if principal is not None else ""),
        token_name=note.token_name or (principal.name if principal is not None else ""),
        role=principal.role.value if principal is not None and principal.role else "",
        remote=request.remote or "",
        method=request.method,
        # An unknown path is the caller's text: keep only its start (and it may be long).
        path=request.path[:512] if resource is not None else request.path[:80],
        job=job[:63],
        node=(
            note.node
            or info.get("node", "")
            or (principal.node.id if principal is not None and principal.node is not None else "")
        )[:63],
        status=status,
        request_id=request_id,
    )


class RequestIds:
    """Request ids unique across restarts and coordinators: a random 64-bit prefix drawn at
    start and a counter (32 hex characters, like the uuid4 they replace, which took 3 % of
    the event loop of a coordinator under 10,000 agents)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


next_request_id = RequestIds()


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request in one layer (each layer costs on the agents' hot path): admit it (an
    agent request over the limits is answered 503 at once, ``coordinator.admission``),
    authenticate, audit, map errors to ``{"error": ...}`` bodies, and time it by method,
    route template (never the raw path) and final status."""
    d = request.app[DEPS]
    admission = d.admission
    if admission is not None and not admission.admit(request):
        return _shed(request, d, admission)
    try:
        return await _serve(request, handler, d)
    finally:
        if admission is not None:
            admission.release(request)


def _shed(request: web.Request, d: Deps, admission: AgentAdmission) -> web.Response:
    """The cheap answer to an agent request over the admission limits: before any work."""
    started = d.clock.monotonic()
    seconds = admission.retry_after()
    refusal = Overloaded(
        f"the coordinator is at its limit of agent requests; retry after {seconds}s",
        {"retry_after": seconds},
    )
    response = respond(refusal.body(), status=503, headers={"Retry-After": str(seconds)})
    _observe(request, d, 503, started)
    return response


async def _serve(request: web.Request, handler: Handler, d: Deps) -> web.StreamResponse:
    audit = d.audit
    assert audit is not None
    started = d.clock.monotonic()
    request_id = next_request_id()
    entry_id: int | None = None
    try:
        await _authenticate(request, d)
        if _audited(request):
            request[AUDIT_NOTE] = AuditNote()
            # Before the handler: a request that cannot be recorded changes nothing.
            entry_id = await audit.record(_audit_entry(request, d, 0, request_id))
        response = await handler(request)
    except (FleetwaveError, *_MAPPED_HTTP_ERRORS) as exc:
        response = _error_response(request, exc)
    except web.HTTPException as exc:  # redirects and the like: aiohttp answers them
        exc.headers["X-Request-Id"] = request_id
        _observe(request, d, exc.status, started)
        raise
    except Exception as exc:
        response = _error_response(request, exc)
    if entry_id is not None:
        note = request[AUDIT_NOTE]
        audit.finish(
            AuditOutcome(
                entry_id=entry_id,
                status=response.status,
                token_id=note.token_id,
                token_name=note.token_name,
                node=note.node,
            )
        )
    elif response.status in (401, 403):
        try:
            await audit.refused(_audit_entry(request, d, response.status, request_id))
        except FleetwaveError as exc:
            response = _error_response(request, exc)
    response.headers["X-Request-Id"] = request_id
    _observe(request, d, response.status, started)
    return response


def _observe(request: web.Request, d: Deps, status: int, started: float) -> None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED_ROUTE
    method = request.method if request.method in HTTP_METHODS else "other"
    d.metrics.observe_request(method, route, status, d.clock.monotonic() - started)


def create_app(deps: Deps) -> web.Application:
    """The coordinator's HTTP app; background loops are started by ``main``, not here."""
    app = web.Application(
        middlewares=[api_middleware],
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
    app.router.add_routes(token_routes.routes)
    app.router.add_routes(audit_routes.routes)
    check_rules(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    )
    return app
