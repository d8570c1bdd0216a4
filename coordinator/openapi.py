"""The OpenAPI 3.1 document, built from the live route table and a per-route description registry.

Pure: ``build_openapi(routes, docs, tags, version)`` returns a dict and does no IO. Every live
route appears in the document (one without a description gets a stub that says so, and a test
fails on it); a description without a live route is left out. Component schemas come from the
pydantic models themselves, so the document cannot drift from the wire models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    ADMIN = "admin"  # the operator token
    NODE = "node"  # a node token


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator (admin) token: `Authorization: Bearer <token>`. "
        "Printed by `fleetwave coordinator` on first start; also FLEETWAVE_TOKEN for the CLI.",
    },
    "nodeToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A node token, returned once by `POST /v1/agent/register`. "
        "It identifies the node and may only call `/v1/agent/...`.",
    },
}

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    Auth.OPEN: [],
    Auth.JOIN: [],
    Auth.ADMIN: [{"adminToken": []}],
    Auth.NODE: [{"nodeToken": []}],
}

# Shared error responses, referenced from operations as #/components/responses/<name>.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed input; `details.errors` lists every `{field, message}`."),
    401: ("Unauthorized", "Missing or unknown token."),
    403: ("Forbidden", "A valid token that may not call this endpoint."),
    404: ("NotFound", "No such job, version, node or endpoint."),
    409: ("Conflict", "The request does not apply to the current state (`details` says why)."),
    412: ("PreconditionFailed", "`If-Match` names a stale revision."),
    413: ("PayloadTooLarge", "The body is over the coordinator's `max_body_bytes`."),
    503: (
        "StoreUnavailable",
        "The coordinator cannot write to its database now (disk full, I/O error); nothing "
        "was changed by the failed write. Retry after `Retry-After` seconds.",
    ),
}
ERROR_HEADERS: dict[int, Mapping[str, str]] = {
    503: {"Retry-After": "Seconds to wait before retrying."},
}


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
    """A documented response; ``headers`` maps a header name to what it carries."""

    description: str
    content: tuple[Media, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(
    description: str, model: type[BaseModel], headers: Mapping[str, str] | None = None
) -> Reply:
    return Reply(description, (Media(model=model),), dict(headers or {}))


@dataclass(frozen=True)
class RouteDoc:
    """What the document says about one route.

    401/403 follow from ``auth``, 400 from a body or query parameters, 413 from a body and 404
    from path parameters; ``errors`` adds others (409, 412, ...).
    """

    summary: str
    tag: str
    replies: Mapping[int, Reply]
    auth: Auth = Auth.ADMIN
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
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for exactly ``routes``, described by ``docs``."""
    live = sorted(set(routes))
    described = [(r, docs[(r.method, r.path)]) for r in live if (r.method, r.path) in docs]
    refs, components = _component_schemas(doc for _, doc in described)
    paths: dict[str, dict[str, Any]] = {}
    used_tags: set[str] = set()
    seen_ids: set[str] = set()
    for route in live:
        doc = docs.get((route.method, route.path))
        operation = _stub(route) if doc is None else _operation(route, doc, refs)
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
            "description": "JSON over HTTP. Operator endpoints need the admin token, agent "
            "endpoints a node token (`Authorization: Bearer <token>`); the monitoring and "
            "documentation endpoints are open. Every error body is "
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
            "securitySchemes": SECURITY_SCHEMES,
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


def _error_response(description: str, headers: Mapping[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = _headers(headers)
    response["content"] = {
        "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}
    }
    return response


def _headers(headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
    }


_PATH_PARAM = re.compile(r"{([^}]+)}")


def _operation(
    route: LiveRoute, doc: RouteDoc, refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [doc.tag],
        "summary": doc.summary,
        "operationId": _operation_id(route),
    }
    if doc.description:
        operation["description"] = doc.description
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


def _error_statuses(route: LiveRoute, doc: RouteDoc) -> set[int]:
    statuses = set(doc.errors)
    if doc.auth in (Auth.ADMIN, Auth.NODE):
        statuses |= {401, 403}
    if doc.body is not None:
        statuses |= {400, 413}
    if any(p.where == "query" for p in doc.params):
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
    if reply.headers:
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
