"""Managed tokens (DESIGN §11): create (the secret is shown once), list, who am I, revoke."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from coordinator.access import BOOTSTRAP_ADMIN_ID, DEFAULT_JOIN_ID, looks_like_an_id
from coordinator.api.deps import PRINCIPAL, Deps, deps, read_json, respond
from coordinator.domain.records import TokenRecord
from coordinator.tokens import hash_token, new_token
from coordinator.watch import FEED
from shared.clock import ZERO_TIME
from shared.errors import Conflict, FieldError, NotFound, ValidationFailed
from shared.spec import field_errors
from shared.tokens import Approval, CreatedToken, Role, Token, TokenKind, TokenRequest

routes = web.RouteTableDef()

SECRET_PREFIX = {TokenKind.OPERATOR: "fwo", TokenKind.JOIN: "fwj"}


def bootstrap_tokens(d: Deps) -> list[Token]:
    """The configured tokens (``--admin-token``, ``--join-token``): listed, never stored."""
    return [
        Token(
            id=BOOTSTRAP_ADMIN_ID,
            name=BOOTSTRAP_ADMIN_ID,
            kind=TokenKind.OPERATOR,
            role=Role.ADMIN,
            jobs=["*"],
            created_at=ZERO_TIME,
            bootstrap=True,
        ),
        Token(
            id=DEFAULT_JOIN_ID,
            name=DEFAULT_JOIN_ID,
            kind=TokenKind.JOIN,
            approval=Approval.AUTO,
            created_at=ZERO_TIME,
            bootstrap=True,
        ),
    ]


@routes.post("/v1/tokens")
async def handle_create_token(request: web.Request) -> web.Response:
    d = deps(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError(field="(body)", message="must be a JSON object")])
    try:
        wanted = TokenRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None
    problems = wanted.problems()
    if wanted.name in (BOOTSTRAP_ADMIN_ID, DEFAULT_JOIN_ID) or looks_like_an_id(wanted.name):
        # Audit entries and events name tokens: a name must not pass for another token.
        problems["name"] = "reserved: bootstrap-admin, default-join and id-shaped names"
    if problems:
        raise ValidationFailed([FieldError(field=k, message=v) for k, v in problems.items()])
    now = d.clock.now()
    secret = new_token(SECRET_PREFIX[wanted.kind])
    record = TokenRecord(
        id=str(uuid.uuid4()),
        secret_hash=hash_token(secret),
        name=wanted.name,
        kind=wanted.kind,
        role=wanted.role,
        jobs=wanted.jobs or (["*"] if wanted.kind == TokenKind.OPERATOR else []),
        labels=wanted.labels or {},
        approval=(wanted.approval or Approval.AUTO) if wanted.kind == TokenKind.JOIN else None,
        max_uses=wanted.max_uses,
        created_at=now,
        created_by=request[PRINCIPAL].name,
        expires_at=now + wanted.ttl if wanted.ttl is not None else None,
    )
    await d.store.insert_token(record)
    created = CreatedToken(**record.to_api().model_dump(), secret=secret)
    return respond(created, status=201)


@routes.get("/v1/tokens")
async def handle_list_tokens(request: web.Request) -> web.Response:
    d = deps(request)
    stored = [t.to_api() for t in await d.store.list_tokens()]
    listed = [*bootstrap_tokens(d), *stored]
    return respond({"tokens": [t.model_dump(mode="json") for t in listed]})


@routes.get("/v1/tokens/self")
async def handle_token_self(request: web.Request) -> web.Response:
    d = deps(request)
    principal = request[PRINCIPAL]
    if principal.token_id == BOOTSTRAP_ADMIN_ID:
        return respond(bootstrap_tokens(d)[0])
    record = await d.store.get_token(principal.token_id)
    if record is None:  # revoked and gone between authentication and now
        raise NotFound(f"token {principal.token_id} not found", {"token": principal.token_id})
    return respond(record.to_api())


# Never "self": that is the calling token's resource, GET only (so a DELETE there is a 405,
# and its Allow header names GET alone). No token may be named "self" (TokenRequest).
@routes.delete("/v1/tokens/{id:(?!self$)[^{}/]+}")
async def handle_revoke_token(request: web.Request) -> web.Response:
    d = deps(request)
    key = request.match_info["id"]
    if key in (BOOTSTRAP_ADMIN_ID, DEFAULT_JOIN_ID):
        raise Conflict(
            f"{key} is configured, not managed: change --admin-token/--join-token (or the"
            " token files) and restart the coordinator; see docs/operations.md",
            {"token": key},
        )
    record = await d.store.get_token(key)
    if record is None:
        # By name too, when one usable token has it (names are unique among those).
        now = d.clock.now()
        named = [
            t
            for t in await d.store.list_tokens()
            if t.name == key
            and t.revoked_at is None
            and (t.expires_at is None or t.expires_at > now)
        ]
        record = named[0] if len(named) == 1 else None
    if record is None:
        raise NotFound(f"token {key!r} not found (give its id or name)", {"token": key})
    revoked = await d.store.revoke_token(record.id, d.clock.now())
    assert revoked is not None
    d.watches.bump(FEED)  # open event streams of the token end now
    return respond(revoked.to_api())
