"""The OpenAPI 3.1 document, built from the live route table and a per-route description registry.

Pure: ``build_openapi(routes, docs, tags, version)`` returns a dict and does no IO. Every live
route appears in the document (one without a description gets a stub that says so, and a test
fails on it); a description without a live route is left out. Component schemas come from the
pydantic models themselves, so the document cannot drift from the wire models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from shared.durations import format_duration
from shared.errors import ErrorBody

REF_TEMPLATE = "#/components/schemas/{model}"


class Auth(StrEnum):
    """Who may call a route; each maps to an OpenAPI security requirement."""

    OPEN = "open"  # no token
    JOIN = "join"  # the join token, sent in the body: no header
    OPERATOR = "operator"  # an operator token whose role has the route's right
    NODE = "node"  # a node token


@dataclass(frozen=True)
class Access:
    """Who may call what (``coordinator/access.py``), as the document states it."""

    rights: Mapping[RouteKey, str]
    """The right each route needs."""
    roles: Mapping[str, Sequence[str]]
    """Each role's rights, the roles in order (each has the rights of the ones before it)."""
    scoped: frozenset[str] = frozenset()
    """Rights a deployer holds only for the jobs its ``jobs`` globs match."""

    def roles_with(self, right: str) -> list[str]:
        return [role for role, rights in self.roles.items() if right in rights]


NO_ACCESS = Access(rights={}, roles={})

_OPERATOR_SCHEME = (
    "An operator token: `Authorization: Bearer <token>`. The bootstrap admin token "
    "(`--admin-token`, printed by `fleetwave coordinator` on first start; FLEETWAVE_TOKEN "
    "for the CLI) or one made with `POST /v1/tokens`. Each token has a role, and each "
    "operation names the right it needs (`x-fleetwave-right`)."
)


def security_schemes(access: Access) -> dict[str, dict[str, Any]]:
    """``operatorToken`` (its description lists the roles and their rights) and ``nodeToken``."""
    roles = "".join(
        f"\n- `{role}`: " + ", ".join(f"`{right}`" for right in rights)
        for role, rights in access.roles.items()
    )
    scoped = ", ".join(f"`{right}`" for right in sorted(access.scoped))
    return {
        "operatorToken": {
            "type": "http",
            "scheme": "bearer",
            "description": _OPERATOR_SCHEME
            + (f"\n\nRoles and their rights:{roles}" if roles else "")
            + (
                f"\n\nA deployer has {scoped} only for jobs its `jobs` globs match."
                if scoped
                else ""
            )
            + "\n\nA missing, unknown, expired or revoked token gets 401; a valid token "
            "without the operation's right gets 403 naming the right.",
        },
        "nodeToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "A node token, returned once by `POST /v1/agent/register`. "
            "It identifies the node and may only call `/v1/agent/...` (right `agent`); an "
            "operator token there gets 403, a revoked node's or an expired token 401.",
        },
    }


_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    Auth.OPEN: [],
    Auth.JOIN: [],
    Auth.OPERATOR: [{"operatorToken": []}],
    Auth.NODE: [{"nodeToken": []}],
}

# Shared error responses, referenced from operations as #/components/responses/<name>.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed input; `details.errors` lists every `{field, message}`."),
    401: ("Unauthorized", "Missing, unknown, expired or revoked token."),
    403: ("Forbidden", "A valid token without the right this operation needs (named)."),
    404: ("NotFound", "No such job, version, node, token or endpoint."),
    408: ("RequestTimeout", "The body did not arrive in full in time (30 s)."),
    409: ("Conflict", "The request does not apply to the current state (`details` says why)."),
    412: ("PreconditionFailed", "`If-Match` names a stale revision."),
    413: ("PayloadTooLarge", "The body is over the coordinator's `max_body_bytes`."),
    503: (
        "StoreUnavailable",
        "The coordinator cannot reach or write to its database now (disk full, I/O error, "
        "database down); with code `store_unavailable` nothing was changed by the failed "
        "write: retry after `Retry-After` seconds, on this or another coordinator. With code "
        "`outcome_unknown` the connection to the database broke while it committed: the "
        "change may have been applied, so read the state before retrying. Every operator "
        "request that changes something, and every refused one, is first written to the "
        "audit log, so any of them can get it.",
    ),
}


@dataclass(frozen=True)
class Header:
    """A response header: what it carries, its value's schema, whether it is always sent."""

    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = True


REQUEST_ID = Header(
    "This request's id, as the coordinator's log and audit log name it.",
    {"type": "string", "pattern": "^[0-9a-f]{32}$"},
)
RETRY_AFTER = Header("Seconds to wait before retrying.", {"type": "string", "pattern": "^[0-9]+$"})
ERROR_HEADERS: dict[int, Mapping[str, Header]] = {503: {"Retry-After": RETRY_AFTER}}


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter."""

    name: str
    where: Literal["path", "query", "header"]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Media:
    """One representation of a body: a pydantic model, or a literal schema for non-JSON bodies."""

    media_type: str = "application/json"
    model: type[BaseModel] | None = None
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    """A documented response; ``headers`` maps a header name to what it carries (besides
    ``X-Request-Id``, on every answer)."""

    description: str
    content: tuple[Media, ...] = ()
    headers: Mapping[str, Header] = field(default_factory=dict)


def json_reply(
    description: str, model: type[BaseModel], headers: Mapping[str, Header] | None = None
) -> Reply:
    return Reply(description, (Media(model=model),), dict(headers or {}))


@dataclass(frozen=True)
class RouteDoc:
    """What the document says about one route.

    401/403/503 follow from ``auth``, 400 from a body or query or header parameters, 408 and
    413 from a body and 404 from path parameters; ``errors`` adds others (409, 412, ...).
    """

    summary: str
    tag: str
    replies: Mapping[int, Reply]
    auth: Auth = Auth.OPERATOR
    description: str = ""
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()


@dataclass(frozen=True, order=True)
class LiveRoute:
    """A route as the app serves it."""

    method: str
    path: str
    handler: str = ""


RouteKey = tuple[str, str]


class _Schemas(GenerateJsonSchema):
    """Pydantic's generator, but defaults of duration fields read as they are written ("10s")."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def undocumented(routes: Iterable[LiveRoute], docs: Mapping[RouteKey, RouteDoc]) -> list[RouteKey]:
    """Live routes that have no description."""
    return sorted({(r.method, r.path) for r in routes} - docs.keys())


def unrouted(routes: Iterable[LiveRoute], docs: Mapping[RouteKey, RouteDoc]) -> list[RouteKey]:
    """Descriptions whose route the app does not serve."""
    return sorted(docs.keys() - {(r.method, r.path) for r in routes})


def build_openapi(
    routes: Iterable[LiveRoute],
    docs: Mapping[RouteKey, RouteDoc],
    tags: Mapping[str, str],
    version: str,
    access: Access = NO_ACCESS,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for exactly ``routes``, described by ``docs``; ``access``
    names the right each route needs and the roles that have it."""
    live = sorted(set(routes))
    described = [(r, docs[(r.method, r.path)]) for r in live if (r.method, r.path) in docs]
    refs, components = _component_schemas(doc for _, doc in described)
    paths: dict[str, dict[str, Any]] = {}
    used_tags: set[str] = set()
    seen_ids: set[str] = set()
    for route in live:
        doc = docs.get((route.method, route.path))
        operation = _stub(route) if doc is None else _operation(route, doc, refs, access)
        if operation["operationId"] in seen_ids:  # two handlers of one name: fall back to the path
            operation["operationId"] = _operation_id(LiveRoute(route.method, route.path))
        seen_ids.add(operation["operationId"])
        used_tags.update(operation.get("tags", []))
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fleetwave coordinator API",
            "version": version,
            "summary": "Roll out versioned jobs to a fleet of hosts.",
            "description": "JSON over HTTP. Operator endpoints need an operator token whose "
            "role has the right the operation names (`x-fleetwave-right`), agent endpoints a "
            "node token (`Authorization: Bearer <token>`); registration takes the join token "
            "in its body; the monitoring and documentation endpoints are open. Every answer "
            "carries `X-Request-Id`. Every error body is "
            '`{"error": {"code", "message", "details"}}`. A 503 (`store_unavailable`) is '
            "an outage to wait out (retry after `Retry-After` seconds); a 500 is a bug.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": n, "description": d} for n, d in tags.items() if n in used_tags],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "responses": {
                name: _error_response(description, ERROR_HEADERS.get(status, {}))
                for status, (name, description) in ERROR_RESPONSES.items()
            },
            "securitySchemes": security_schemes(access),
        },
    }


def _models(doc: RouteDoc) -> Iterable[tuple[type[BaseModel], JsonSchemaMode]]:
    if doc.body is not None:
        yield doc.body, "validation"
    for reply in doc.replies.values():
        for media in reply.content:
            if media.model is not None:
                yield media.model, "serialization"


def _component_schemas(
    described: Iterable[RouteDoc],
) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Any], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorBody, "serialization"): None
    }
    for doc in described:
        wanted.update(dict.fromkeys(_models(doc)))
    refs, top = models_json_schema(
        list(wanted), ref_template=REF_TEMPLATE, schema_generator=_Schemas
    )
    by_model = {
        (model, mode): ref
        for (model, mode), ref in refs.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    return by_model, dict(sorted(top.get("$defs", {}).items()))


def _error_response(description: str, headers: Mapping[str, Header]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    response["headers"] = _headers(headers)
    response["content"] = {
        "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}
    }
    return response


def _headers(headers: Mapping[str, Header]) -> dict[str, Any]:
    return {
        name: {"description": h.description, "required": h.required, "schema": dict(h.schema)}
        for name, h in {"X-Request-Id": REQUEST_ID, **headers}.items()
    }


_PATH_PARAM = re.compile(r"{([^}]+)}")


def _operation(
    route: LiveRoute,
    doc: RouteDoc,
    refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], Any],
    access: Access,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [doc.tag],
        "summary": doc.summary,
        "operationId": _operation_id(route),
    }
    right = access.rights.get((route.method, route.path))
    description = "\n\n".join(
        text for text in (doc.description, _right_text(doc.auth, right, access)) if text
    )
    if description:
        operation["description"] = description
    if right is not None:
        operation["x-fleetwave-right"] = right
    params = [_param(p) for p in doc.params]
    named = {p.name for p in doc.params if p.where == "path"}
    for name in _PATH_PARAM.findall(route.path):
        if name not in named:  # an undescribed path parameter is still a parameter
            params.append(_param(Param(name, "path", "")))
    params.sort(key=lambda p: ("path", "query", "header").index(p["in"]))
    if params:
        operation["parameters"] = params
    if doc.body is not None:
        operation["requestBody"] = {
            "required": doc.body_required,
            "content": {"application/json": {"schema": refs[(doc.body, "validation")]}},
        }
    responses: dict[str, Any] = {
        str(status): _reply(reply, refs) for status, reply in doc.replies.items()
    }
    for status in _error_statuses(route, doc):
        responses.setdefault(
            str(status), {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
        )
    operation["responses"] = dict(sorted(responses.items()))
    operation["security"] = _SECURITY[doc.auth]
    return operation


def _right_text(auth: Auth, right: str | None, access: Access) -> str:
    """The sentence that names who may call an operation."""
    if right is None or auth == Auth.OPEN:
        return ""
    if auth == Auth.JOIN:
        return f"**Right:** `{right}`: a join token, in the body (no `Authorization` header)."
    if auth == Auth.NODE:
        return f"**Right:** `{right}`: a node token."
    roles = ", ".join(access.roles_with(right)) or "none"
    scope = "; a deployer only for jobs its `jobs` globs match" if right in access.scoped else ""
    return f"**Right:** `{right}` (operator tokens of the roles {roles}{scope})."


def _error_statuses(route: LiveRoute, doc: RouteDoc) -> set[int]:
    statuses = set(doc.errors)
    if doc.auth in (Auth.OPERATOR, Auth.NODE):
        statuses |= {401, 403, 503}  # 503: a refusal is audited before the answer
    if doc.auth == Auth.JOIN:
        statuses |= {401, 503}
    if doc.body is not None:
        statuses |= {400, 408, 413}
    if any(p.where in ("query", "header") for p in doc.params):
        statuses.add(400)
    if _PATH_PARAM.search(route.path):
        statuses.add(404)
    return statuses


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where}
    if p.description:
        out["description"] = p.description
    out["required"] = p.where == "path" or p.required
    out["schema"] = dict(p.schema)
    return out


def _reply(reply: Reply, refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], Any]) -> Any:
    out: dict[str, Any] = {"description": reply.description}
    out["headers"] = _headers(reply.headers)
    if reply.content:
        out["content"] = {
            media.media_type: {
                "schema": refs[(media.model, "serialization")]
                if media.model is not None
                else dict(media.schema or {"type": "string"})
            }
            for media in reply.content
        }
    return out


def _stub(route: LiveRoute) -> dict[str, Any]:
    return {
        "tags": ["undocumented"],
        "summary": f"{route.method} {route.path} (not described yet)",
        "operationId": _operation_id(route),
        "responses": {"default": {"description": "Not described yet."}},
    }


def _operation_id(route: LiveRoute) -> str:
    if route.handler:
        return route.handler.removeprefix("handle_")
    words = re.findall(r"[A-Za-z0-9]+", route.path)
    return "_".join([route.method.lower(), *words])
