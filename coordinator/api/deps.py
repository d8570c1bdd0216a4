"""What handlers need, wired once in ``main`` and reachable through typed app keys."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from coordinator.access import Principal
from coordinator.admission import AgentAdmission
from coordinator.audit import AuditLog
from coordinator.cluster import Cluster
from coordinator.domain.records import NodeRecord
from coordinator.engine.driver import JobLocks, RolloutDriver
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import Store
from coordinator.tokens import hash_token
from coordinator.watch import Watches
from shared.clock import Clock
from shared.errors import (
    BadRequest,
    FieldError,
    Forbidden,
    PayloadTooLarge,
    RequestTimeout,
    ValidationFailed,
)
from shared.spec import field_errors


@dataclass
class Deps:
    store: Store
    clock: Clock
    driver: RolloutDriver
    watches: Watches
    locks: JobLocks
    admin_token: str
    join_token: str
    heartbeats: Heartbeats
    """The interval each agent answer carries; it follows the fleet's size."""
    node_token_ttl: float | None = 30 * 24 * 3600.0
    """Seconds a node token lives (None: forever); agents rotate it after two thirds."""
    max_body_bytes: int = 1024 * 1024
    started: bool = field(default=False)
    metrics: CoordinatorMetrics = field(default_factory=CoordinatorMetrics)
    closing: bool = field(default=False)  # set at shutdown: long-lived streams end
    require_client_cert: bool = False
    """mTLS: the agent endpoints need a verified client certificate (``--tls-client-ca``)."""
    spec_json_cache: dict[tuple[str, int], str] = field(default_factory=dict)
    """(job, version) -> the spec's JSON, for the assignments every agent polls."""
    audit: AuditLog | None = None
    """Built from the store and clock when not given."""
    admission: AgentAdmission | None = None
    """Caps the agent requests worked on at once (None: no cap, as in most tests)."""
    cluster: Cluster | None = None
    """This coordinator's part among those sharing the database (None: tests that drive the
    engine themselves; the coordinator is then the only one, and leads)."""
    admin_token_hash: str = field(init=False)
    join_token_hash: str = field(init=False)

    def __post_init__(self) -> None:
        if self.audit is None:
            self.audit = AuditLog(self.store, self.clock)
        # Hashed once: every request's token is hashed once and compared with these.
        self.admin_token_hash = hash_token(self.admin_token)
        self.join_token_hash = hash_token(self.join_token)


DEPS = web.AppKey("deps", Deps)


PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass
class AuditNote:
    """What the audit entry of a request says beyond the request itself; handlers may fill
    in what only they learn (registration: the join token's name and the node)."""

    token_id: str = ""
    token_name: str = ""
    node: str = ""


AUDIT_NOTE = web.RequestKey("audit_note", AuditNote)


def caller_node(request: web.Request) -> NodeRecord:
    """The node behind a node token; the operator token cannot act as a node."""
    principal = request[PRINCIPAL]
    if principal.node is None:
        raise Forbidden("agent endpoints need a node token, not the operator token")
    return principal.node


PLAIN_INT = re.compile(r"[0-9]{1,18}")
"""A plain non-negative integer in ASCII digits: no sign, no spaces, no other scripts' digits
(Python's int() takes '²' and '٣'), at most 18 digits (within 64 bits)."""
MAX_PLAIN_INT = 10**18 - 1
"""The largest plain integer: the OpenAPI document gives it as each such parameter's maximum."""
IF_MATCH_PATTERN = r'^(?:(?:W/)?"[0-9]{1,18}"|[0-9]{1,18})$'
"""A job revision as ``If-Match`` may give it: ``"3"``, weak ``W/"3"`` or a bare ``3``."""


def plain_int(text: str) -> int | None:
    """``text`` as a plain non-negative integer, or None when it is not one."""
    return int(text) if PLAIN_INT.fullmatch(text) else None


def int_query(
    request: web.Request, name: str, *, default: int, low: int = 0, high: int = MAX_PLAIN_INT
) -> int:
    """The query parameter ``name`` as an integer in [low, high]; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = plain_int(raw)
    if value is None or not low <= value <= high:
        raise ValidationFailed(
            [FieldError(field=name, message=f"must be an integer from {low} to {high}")]
        )
    return value


def acting_token(request: web.Request) -> str:
    """The name of the token a request was made with: events' ``by``."""
    principal = request.get(PRINCIPAL)
    return principal.name if principal is not None else ""


async def principal_valid(d: Deps, principal: Principal) -> bool:
    """Whether the token behind ``principal`` is still good (long-lived streams ask again,
    so that a revoked or expired token's stream ends)."""
    if principal.node is not None:
        node = await d.store.get_node(principal.node.id)
        return node is not None and node.revoked_at is None
    record = await d.store.get_token(principal.token_id)
    if record is None:
        return True  # the configured admin token: not revocable here
    now = d.clock.now()
    return record.revoked_at is None and (record.expires_at is None or record.expires_at > now)


def deps(request: web.Request) -> Deps:
    return request.app[DEPS]


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 413 when too large, 400 naming the problem when malformed."""
    return decode_json(await read_body(request))


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The raw request body; 413 when too large, 400 when empty."""
    limit = min(limit or deps(request).max_body_bytes, deps(request).max_body_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes"
        )
    # read(n) returns what has arrived so far (up to n): read until the end of the body,
    # or until it is past the limit, within BODY_TIMEOUT (a body trickled in must not hold
    # the connection and its buffer for ever).
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {BODY_TIMEOUT:g} seconds"
        ) from None
    except (ConnectionError, RequestPayloadError, aiohttp.ClientPayloadError) as exc:
        # A body that is cut off, or whose encoding does not decode: the client's fault.
        raise BadRequest(f"request body could not be read: {exc}") from None
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    return body


BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive in full (1 MiB in 30 s is 35 KB/s)."""

MAX_JSON_DEPTH = 64
"""Nesting deeper than this is refused (a spec needs about 6 levels)."""


def decode_json(body: bytes) -> Any:
    """``body`` parsed as JSON; 400 naming the problem (line and column) when malformed,
    or when nested deeper than MAX_JSON_DEPTH levels."""
    try:
        value = json.loads(body, parse_float=_json_float)
    except RecursionError:
        raise _too_deep() from None
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            {"line": exc.lineno, "column": exc.colno},
        ) from None
    except ValueError:  # int(): more than sys.get_int_max_str_digits() digits
        raise BadRequest("request body has a number with too many digits") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()
    return value


def _json_float(text: str) -> int | float:
    """A JSON number with a fraction or exponent; an int when it is a whole one, since JSON
    (and JSON Schema: ``5.0`` is an ``integer``) does not tell 5.0 from 5, and the models do."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _too_deep() -> BadRequest:
    return BadRequest(
        f"request body is nested deeper than {MAX_JSON_DEPTH} levels",
        {"max_depth": MAX_JSON_DEPTH},
    )


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def respond(
    model: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response from a model or a plain dict of JSON values."""
    text = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


async def optional_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError(field="(body)", message="must be a JSON object")])
    return body


Model = TypeVar("Model", bound=BaseModel)


async def optional_model(request: web.Request, model: type[Model]) -> Model:
    """The body (none: ``{}``) as ``model``, the one the OpenAPI document shows; 400 naming
    every bad field otherwise."""
    try:
        return model.model_validate(await optional_body(request))
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None
