"""The audit log (DESIGN §11): who did what, and who was refused. Admins only."""

from __future__ import annotations

import re

from aiohttp import web

from coordinator.api.deps import deps, int_query, respond
from coordinator.domain.records import AuditEntry
from shared.errors import FieldError, ValidationFailed
from shared.spec import NAME_PATTERN
from shared.tokens import TOKEN_NAME_PATTERN

routes = web.RouteTableDef()


ORDERS = ("asc", "desc")


@routes.get("/v1/audit")
async def handle_audit(request: web.Request) -> web.Response:
    """``?after=ID&before=ID&limit=N&order=asc|desc&job=NAME&token=NAME_OR_ID``: the oldest
    ``limit`` entries between ``after`` and ``before``, oldest first; with ``order=desc``
    the newest, newest first, ``last_id`` then being the ``before`` of the next, older page."""
    d = deps(request)
    after = int_query(request, "after", default=0, low=0)
    before = int_query(request, "before", default=0, low=0) if "before" in request.query else None
    limit = int_query(request, "limit", default=100, low=1, high=1000)
    order = request.query.get("order", "asc")
    job = request.query.get("job") or None
    token = request.query.get("token") or None
    errors = []
    if order not in ORDERS:
        errors.append(FieldError(field="order", message="must be asc or desc"))
    if job is not None and not _matches(NAME_PATTERN, job):
        errors.append(FieldError(field="job", message="not a job name"))
    if token is not None and not (_matches(TOKEN_NAME_PATTERN, token) or _is_uuid(token)):
        errors.append(FieldError(field="token", message="not a token name or id"))
    if errors:
        raise ValidationFailed(errors)
    newest_first = order == "desc"
    entries = await d.store.list_audit(
        after=after, before=before, limit=limit, job=job, token=token, newest_first=newest_first
    )
    return respond(
        {
            "entries": [e.model_dump(mode="json") for e in entries],
            "last_id": _last_id(entries, after=after, before=before, newest_first=newest_first),
        }
    )


def _last_id(
    entries: list[AuditEntry], *, after: int, before: int | None, newest_first: bool
) -> int:
    """Where the next page starts: the last entry's id, or where this page started when it
    is empty (no ``before``, newest first: 0, below which there is nothing)."""
    if entries:
        return entries[-1].id
    if newest_first:
        return before if before is not None else 0
    return after


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern.strip("^$"), value) is not None


def _is_uuid(value: str) -> bool:
    return (
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value)
        is not None
    )
