"""Operator endpoints for jobs: submit, read, status with blocking queries, versions, nodes."""

from __future__ import annotations

import functools
import re
from typing import Any

from aiohttp import web

from coordinator.api.deps import (
    IF_MATCH_PATTERN,
    PRINCIPAL,
    acting_token,
    deps,
    plain_int,
    principal_valid,
    read_json,
    respond,
)
from coordinator.domain.records import JobRecord, JobVersion
from coordinator.engine.driver import job_key
from coordinator.submit import submit_job
from shared.durations import parse_duration
from shared.errors import BadRequest, FieldError, NotFound, Unauthorized, ValidationFailed
from shared.spec import JobSpec, parse_job_spec
from shared.tokens import Role

routes = web.RouteTableDef()

MAX_WAIT = 300.0


async def load_job(request: web.Request) -> JobRecord:
    name = request.match_info["name"]
    job = await deps(request).store.get_job(name)
    if job is None:
        raise NotFound(f"job {name!r} not found", {"job": name})
    return job


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    if re.fullmatch(IF_MATCH_PATTERN, raw) is None:
        raise BadRequest(
            f"If-Match must be a job revision in quotes, e.g. '\"3\"', not {raw[:40]!r}",
            {"header": "If-Match"},
        )
    return int(raw.removeprefix("W/").strip('"'))


@functools.lru_cache(maxsize=64)
def _seconds(raw: str) -> float:
    """A ``wait`` value in seconds; agents send the same few values on every poll."""
    return parse_duration(raw).total_seconds()


def blocking_params(request: web.Request) -> tuple[int | None, float]:
    """``?index=N&wait=30s``: the index to wait past and for how long (capped at 5m)."""
    raw_index = request.query.get("index")
    raw_wait = request.query.get("wait", "30s")
    errors = []
    index: int | None = None
    if raw_index is not None:
        index = plain_int(raw_index)
        if index is None:
            errors.append(
                FieldError(field="index", message="must be an integer from 0 to 10^18 - 1")
            )
    wait = 30.0
    try:
        wait = min(_seconds(raw_wait), MAX_WAIT)
    except ValueError as exc:
        errors.append(FieldError(field="wait", message=str(exc)))
    if errors:
        raise ValidationFailed(errors)
    return index, wait


def job_summary(job: JobRecord) -> dict[str, Any]:
    return {
        "name": job.name,
        "type": job.spec.type.value,
        "stable_version": job.stable_version,
        "status": job.status.model_dump(mode="json"),
    }


@routes.put("/v1/jobs/{name}")
async def handle_put_job(request: web.Request) -> web.Response:
    d = deps(request)
    name = request.match_info["name"]
    if_match = _if_match(request)
    spec = parse_job_spec(await read_json(request))
    if spec.name != name:
        raise ValidationFailed(
            [FieldError(field="name", message=f"{spec.name!r} does not match the path's {name!r}")]
        )
    result = await submit_job(
        d.store, d.locks, spec, if_match, d.clock.now(), by=acting_token(request)
    )
    if result.changed:
        d.watches.bump(job_key(name))
        d.driver.kick(name)
    body = {
        "name": name,
        "version": result.job.status.version,
        "revision": result.job.status.revision,
        "changed": result.changed,
        "status": result.job.status.model_dump(mode="json"),
    }
    return respond(body, status=201 if result.created else 200)


REDACTED = "<redacted>"


def spec_for(request: web.Request, spec: JobSpec) -> dict[str, Any]:
    """The spec as the caller may see it: a viewer sees ``task.env`` names, not values
    (they hold database passwords and the like)."""
    body = spec.model_dump(mode="json")
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.role == Role.VIEWER:
        body["task"]["env"] = dict.fromkeys(body["task"].get("env", {}), REDACTED)
    return body


def version_for(request: web.Request, version: JobVersion) -> dict[str, Any]:
    return version.model_dump(mode="json") | {"spec": spec_for(request, version.spec)}


@routes.get("/v1/jobs")
async def handle_list_jobs(request: web.Request) -> web.Response:
    jobs = await deps(request).store.list_jobs()
    return respond({"jobs": [job_summary(j) for j in jobs]})


@routes.get("/v1/jobs/{name}")
async def handle_get_job(request: web.Request) -> web.Response:
    job = await load_job(request)
    body = job_summary(job) | {"spec": spec_for(request, job.spec)}
    return respond(body, headers={"ETag": f'"{job.status.revision}"'})


@routes.get("/v1/jobs/{name}/status")
async def handle_job_status(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    name = request.match_info["name"]
    index, wait = blocking_params(request)
    job = await load_job(request)
    if index is not None and job.status.revision <= index:
        after = index
        with d.metrics.long_polls.labels("job_status").track_inprogress():
            job = await d.watches.block(
                job_key(name), lambda: load_job(request), lambda j: j.status.revision > after, wait
            )
        if not await principal_valid(d, request[PRINCIPAL]):
            # Revoked (or expired) while it waited: no answer for it.
            raise Unauthorized("the token was revoked or expired while the request waited")
    etag = f'"{job.status.revision}"'
    if index is None and request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return respond(
        job.status, headers={"ETag": etag, "X-Fleetwave-Index": str(job.status.revision)}
    )


@routes.get("/v1/jobs/{name}/versions")
async def handle_job_versions(request: web.Request) -> web.Response:
    job = await load_job(request)
    versions = await deps(request).store.list_versions(job.name)
    return respond({"versions": [version_for(request, v) for v in versions]})


@routes.get("/v1/jobs/{name}/versions/{version}")
async def handle_job_version(request: web.Request) -> web.Response:
    job = await load_job(request)
    raw = request.match_info["version"]
    number = plain_int(raw)
    if number is None or number < 1:
        raise ValidationFailed(
            [FieldError(field="version", message="must be an integer from 1 to 10^18 - 1")]
        )
    # Versions are 1..latest; anything beyond is unknown without asking the store.
    version = (
        await deps(request).store.get_version(job.name, number)
        if number <= job.status.version
        else None
    )
    if version is None:
        raise NotFound(
            f"job {job.name!r} has no version {raw} (latest is {job.status.version})",
            {"job": job.name, "version": number},
        )
    return respond(version_for(request, version))


@routes.get("/v1/jobs/{name}/nodes")
async def handle_job_nodes(request: web.Request) -> web.Response:
    d = deps(request)
    job = await load_job(request)
    assignments = await d.store.job_assignments(job.name)
    executions = await d.store.job_executions(job.name)
    nodes = {n.id: n for n in await d.store.list_nodes()}
    rows = []
    for node_id in sorted(assignments.keys() | executions.keys()):
        node = nodes.get(node_id)
        assignment = assignments.get(node_id)
        execution = executions.get(node_id)
        rows.append(
            {
                "node_id": node_id,
                "node_name": node.name if node else "",
                "node_status": node.api_status.value if node else "",
                "assigned_version": assignment.version if assignment else None,
                "assigned_at": assignment.model_dump(mode="json")["assigned_at"]
                if assignment
                else None,
                "execution": execution.model_dump(mode="json", exclude={"node_id", "job"})
                if execution
                else None,
            }
        )
    return respond({"nodes": rows})
