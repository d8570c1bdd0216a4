"""Operator endpoints that act on a job's rollout, and the plan, rollout and event views."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from coordinator.api.deps import acting_token, deps, optional_model, read_json, respond
from coordinator.api.jobs import load_job
from coordinator.api.schemas import PromoteRequest, RollbackRequest
from coordinator.domain.records import Event, JobRecord
from coordinator.engine import actions
from coordinator.engine.preview import plan_preview, rollout_view
from coordinator.engine.targets import fleet_nodes
from shared.errors import FieldError, ValidationFailed
from shared.spec import parse_job_spec

routes = web.RouteTableDef()

Action = Callable[[JobRecord], tuple[JobRecord, list[Event]]]


async def act(request: web.Request, action: Action) -> web.Response:
    """Apply ``action`` and the engine's reaction to it as one plan; answer with the status."""
    d = deps(request)
    name = request.match_info["name"]
    job = await d.driver.act(name, action, by=acting_token(request))
    return respond({"name": name, "status": job.status.model_dump(mode="json")})


@routes.post("/v1/jobs/{name}/rollout/pause")
async def handle_pause(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.pause(job, now))


@routes.post("/v1/jobs/{name}/rollout/resume")
async def handle_resume(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.resume(job, now))


@routes.post("/v1/jobs/{name}/rollout/promote")
async def handle_promote(request: web.Request) -> web.Response:
    full = (await optional_model(request, PromoteRequest)).full
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.promote(job, now, full=full))


@routes.post("/v1/jobs/{name}/rollout/abort")
async def handle_abort(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.abort(job, now))


@routes.post("/v1/jobs/{name}/rollout/retry")
async def handle_retry(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.retry(job, now))


@routes.post("/v1/jobs/{name}/rollback")
async def handle_rollback(request: web.Request) -> web.Response:
    to_version = (await optional_model(request, RollbackRequest)).to_version
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.rollback(job, now, to_version))


@routes.post("/v1/jobs/{name}/restart")
async def handle_restart(request: web.Request) -> web.Response:
    d = deps(request)
    nodes = fleet_nodes(await d.store.list_nodes())
    now = d.clock.now()
    return await act(request, lambda job: actions.restart(job, nodes, now))


@routes.post("/v1/jobs/{name}/stop")
async def handle_stop(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.stop(job, now))


@routes.delete("/v1/jobs/{name}")
async def handle_delete(request: web.Request) -> web.Response:
    now = deps(request).clock.now()
    return await act(request, lambda job: actions.delete(job, now))


@routes.post("/v1/jobs/{name}/plan")
async def handle_plan(request: web.Request) -> web.Response:
    d = deps(request)
    name = request.match_info["name"]
    spec = parse_job_spec(await read_json(request))
    if spec.name != name:
        raise ValidationFailed(
            [FieldError(field="name", message=f"{spec.name!r} does not match the path's {name!r}")]
        )
    job = await d.store.get_job(name)
    nodes = {n.id: n for n in fleet_nodes(await d.store.list_nodes())}
    return respond(plan_preview(job, spec, nodes))


@routes.get("/v1/jobs/{name}/rollout")
async def handle_rollout(request: web.Request) -> web.Response:
    d = deps(request)
    job = await load_job(request)
    nodes = {n.id: n for n in await d.store.list_nodes()}
    view = rollout_view(
        job, nodes, await d.store.job_assignments(job.name), await d.store.job_executions(job.name)
    )
    return respond(view)
