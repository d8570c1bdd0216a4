"""The audit log (DESIGN §11): who did what, and who was refused. Admins only."""

from __future__ import annotations

import re

from aiohttp import web

from coordinator.api.deps import deps, int_query, respond
from shared.errors import FieldError, ValidationFailed
from shared.spec import NAME_PATTERN
from shared.tokens import TOKEN_NAME_PATTERN

routes = web.RouteTableDef()


@routes.get("/v1/audit")
async def handle_audit(request: web.Request) -> web.Response:
    """``?after=ID&limit=N&job=NAME&token=NAME_OR_ID``: entries after ``after``, oldest first."""
    d = deps(request)
    after = int_query(request, "after", default=0, low=0)
    limit = int_query(request, "limit", default=100, low=1, high=1000)
    job = request.query.get("job") or None
    token = request.query.get("token") or None
    errors = []
    if job is not None and not _matches(NAME_PATTERN, job):
        errors.append(FieldError(field="job", message="not a job name"))
    if token is not None and not (_matches(TOKEN_NAME_PATTERN, token) or _is_uuid(token)):
        errors.append(FieldError(field="token", message="not a token name or id"))
    if errors:
        raise ValidationFailed(errors)
    entries = await d.store.list_audit(after=after, limit=limit, job=job, token=token)
    return respond(
        {
            "entries": [e.model_dump(mode="json") for e in entries],
            "last_id": entries[-1].id if entries else after,
        }
    )


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern.strip("^$"), value) is not None


def _is_uuid(value: str) -> bool:
    return (
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value)
        is not None
    )
