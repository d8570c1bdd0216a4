"""``fleetwave job …``: submit, inspect and watch jobs."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import click

from coordinator.client import ApiError
from coordinator.cliutil import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Ctx,
    act,
    explain,
    fail,
    job_argument,
    json_option,
    load_spec,
    print_json,
    table,
)
from coordinator.follow import progress_line

EVENTS_PAGE = 1000  # the API's largest page of stored events


@click.group()
def job() -> None:
    """Submit, inspect and watch jobs."""


@job.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--check-revision",
    type=int,
    default=None,
    help="Only submit if the job's revision is still N (0: only if it is new).",
)
@click.option("--detach", is_flag=True, help="Submit and return without watching the rollout.")
@click.option(
    "--timeout",
    type=float,
    default=900.0,
    show_default=True,
    help="Stop watching after this many seconds (exit 1; the rollout goes on).",
)
@click.pass_obj
def job_run(obj: Ctx, file: Path, check_revision: int | None, detach: bool, timeout: float) -> None:
    """Create or update the job in FILE (TOML, YAML or JSON) and watch its rollout.

    On a terminal the rollout is shown live (canary, waves, each node, failures); otherwise
    one line per change. Exit status: 0 the rollout succeeded, 1 it failed or was rolled
    back, 2 usage or API error.
    """
    name, spec = load_spec(file)
    headers = {"If-Match": f'"{check_revision}"'} if check_revision is not None else None
    body = obj.call("PUT", f"/v1/jobs/{name}", spec, headers=headers).body
    if body["changed"]:
        click.echo(
            f"Job {name!r}: version {body['version']} submitted (revision {body['revision']})."
        )
    else:
        click.echo(f"Job {name!r}: unchanged, still version {body['version']}.")
    if detach:
        return
    sys.exit(watch(obj, name, timeout=timeout))


def watch(obj: Ctx, name: str, *, timeout: float | None = None, until_end: bool = True) -> int:
    """Show the rollout live until it settles; Ctrl-C stops watching, not the rollout."""
    try:  # the import too: rich takes a moment to load, and Ctrl-C may come meanwhile
        from coordinator.liveview import UntilRolloutEnds, follow_rollout, until_settled

        stop = until_settled if until_end else UntilRolloutEnds()
        return follow_rollout(obj.client, name, stop=stop, timeout=timeout)
    except ApiError as exc:
        fail(explain(exc, bool(obj.client.token)))
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped watching; the rollout goes on (`fleetwave job status {name} --watch`).",
            err=True,
        )
        return EXIT_INTERRUPTED


@job.command("status")
@job_argument
@json_option("the JobStatus object (with --watch: one object per line, on every change)")
@click.option(
    "--watch",
    is_flag=True,
    help="Follow the job live until its current (or next) rollout ends, or Ctrl-C.",
)
@click.pass_obj
def job_status(obj: Ctx, name: str, as_json: bool, watch: bool) -> None:
    """Show a job's JobStatus (exactly the API's object with --json).

    With --watch the exit status is that of `job run` once the rollout ends; Ctrl-C exits 0.
    """
    if watch:
        sys.exit(_watch_status(obj, name, as_json))
    status = obj.call("GET", f"/v1/jobs/{name}/status").body
    if as_json:
        print_json(status)
        return
    click.echo(render_status(name, status))


def _watch_status(obj: Ctx, name: str, as_json: bool) -> int:
    obj.call("GET", f"/v1/jobs/{name}/status")  # a clear error for a missing job, at once
    if not as_json:
        code = watch(obj, name, until_end=False)
        return EXIT_OK if code == EXIT_INTERRUPTED else code
    try:
        from coordinator.follow import RolloutFollower
        from coordinator.liveview import UntilRolloutEnds

        stop, revision = UntilRolloutEnds(), -1
        with RolloutFollower(obj.client, name) as follower:
            for snap in follower.snapshots():
                if snap.status["revision"] != revision:
                    click.echo(json.dumps(snap.status, separators=(",", ":")))
                    revision = snap.status["revision"]
                done = stop(snap)
                if done is not None:
                    return done
    except KeyboardInterrupt:
        return EXIT_OK
    except ApiError as exc:
        fail(explain(exc, bool(obj.client.token)))
    return EXIT_OK


def render_status(name: str, status: dict[str, Any]) -> str:
    state, ro = status["state"], status["rollout"]
    lines = [
        f"Job:       {name}",
        f"Version:   {status['version']}  (revision {status['revision']})",
        f"State:     {state['state_type'] or '-'}",
        f"Message:   {state['message']}",
    ]
    lines += [f"  {k}: {v}" for k, v in sorted(state["details"].items())]
    if ro["type"]:
        previous = "" if state["state_type"] != "pending" else "  (the previous rollout)"
        lines += [
            f"Rollout:   {ro['type']}  wave {ro['current_wave']}/{ro['total_waves']}"
            f"  updated {ro['updated_nodes']}/{ro['total_nodes']}  failed {ro['failed_nodes']}"
            + previous,
            f"Canaries:  {', '.join(ro['canary_nodes']) or '-'}"
            f"  (promoted: {'yes' if ro['canary_promoted'] else 'no'})",
            f"Started:   {ro['started_at']}",
            f"Completed: {_time_or_dash(ro['completed_at'])}",
        ]
        if ro["rollback_to_version"]:
            lines.append(f"Rollback:  version {ro['rollback_to_version']}")
    lines.append(f"Updated:   {status['updated_at']}")
    return "\n".join(lines)


def _time_or_dash(value: str) -> str:
    return "-" if value.startswith("0001-") else value


@job.command("list")
@json_option('the list ({"jobs": [...]})')
@click.pass_obj
def job_list(obj: Ctx, as_json: bool) -> None:
    """List jobs with their version and state."""
    body = obj.call("GET", "/v1/jobs").body
    if as_json:
        print_json(body)
        return
    jobs = body["jobs"]
    if not jobs:
        click.echo("No jobs. Submit one with: fleetwave job run FILE")
        return
    rows = [
        (
            j["name"],
            j["type"],
            str(j["status"]["version"]),
            j["status"]["state"]["state_type"],
            j["status"]["state"]["message"],
        )
        for j in jobs
    ]
    click.echo(table(rows, ["NAME", "TYPE", "VERSION", "STATE", "MESSAGE"]))


@job.command("history")
@job_argument
@json_option('the versions ({"versions": [...]}, oldest first)')
@click.pass_obj
def job_history(obj: Ctx, name: str, as_json: bool) -> None:
    """List a job's versions, newest first, marking the current and the stable one."""
    body = obj.call("GET", f"/v1/jobs/{name}/versions").body
    if as_json:
        print_json(body)
        return
    job = obj.call("GET", f"/v1/jobs/{name}").body
    rows = []
    for v in reversed(body["versions"]):
        marks = []
        if v["version"] == job["status"]["version"]:
            marks.append("current")
        if v["version"] == job["stable_version"]:
            marks.append("stable")
        task = v["spec"]["task"]
        rows.append(
            (str(v["version"]), v["created_at"], ",".join(marks), " ".join(task["command"])[:60])
        )
    click.echo(table(rows, ["VERSION", "CREATED", "", "COMMAND"]))


@job.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
@json_option("the plan")
@click.pass_obj
def job_plan(obj: Ctx, file: Path, as_json: bool) -> None:
    """Dry run: show what submitting FILE would change and which nodes go in each wave."""
    name, spec = load_spec(file)
    plan = obj.call("POST", f"/v1/jobs/{name}/plan", spec).body
    if as_json:
        print_json(plan)
        return
    if not plan["changed"]:
        click.echo(f"Job {name!r}: no change (version {plan['current_version']}).")
        return
    verb = "update" if plan["exists"] else "create"
    click.echo(f"Job {name!r}: {verb} to version {plan['next_version']}")
    for item in plan["diff"]:
        click.echo(f"  ~ {item['field']}: {json.dumps(item['old'])} -> {json.dumps(item['new'])}")
    ro = plan["rollout"]
    click.echo(f"Rollout ({ro['type']}) over {ro['total_nodes']} nodes:")
    click.echo(f"  canary: {_names(ro['canary']) or '-'}")
    for i, wave in enumerate(ro["waves"], start=1):
        click.echo(f"  wave {i}: {_names(wave)}")
    for warning in plan["warnings"]:
        click.echo(f"Warning: {warning}")


def _names(nodes: list[dict[str, str]]) -> str:
    return ", ".join(n["name"] for n in nodes)


@job.command("restart")
@job_argument
@click.pass_obj
def job_restart(obj: Ctx, name: str) -> None:
    """Restart the job's processes wave by wave (same version)."""
    act(obj, name, "restart", what="Restart started")


@job.command("stop")
@job_argument
@click.pass_obj
def job_stop(obj: Ctx, name: str) -> None:
    """Stop the job on every node (submit it again to start it)."""
    act(obj, name, "stop", what="Stopped")


@job.command("delete")
@job_argument
@click.pass_obj
def job_delete(obj: Ctx, name: str) -> None:
    """Stop the job everywhere and delete it (its versions stay readable)."""
    status = obj.call("DELETE", f"/v1/jobs/{name}").body["status"]
    click.echo(f"Deleted: {progress_line(status)}")


def newest_events(obj: Ctx, name: str, limit: int) -> list[dict[str, Any]]:
    """The job's ``limit`` most recent events, oldest first (the API pages forward only)."""
    newest: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
    after = 0
    while True:
        query = {"job": name, "after": str(after), "limit": str(EVENTS_PAGE)}
        page = obj.call("GET", "/v1/events", query=query).body
        newest.extend(page["events"])
        if len(page["events"]) < EVENTS_PAGE:
            return list(newest)
        after = page["last_id"]


@job.command("events")
@job_argument
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show the newest N events.",
)
@json_option('the events ({"events": [...]}, oldest first)')
@click.pass_obj
def job_events(obj: Ctx, name: str, limit: int, as_json: bool) -> None:
    """Show the job's most recent recorded transitions, oldest of them first."""
    obj.call("GET", f"/v1/jobs/{name}/status")  # "no job named X" rather than an empty list
    events = newest_events(obj, name, limit)
    if as_json:
        print_json({"events": events})
        return
    rows = [
        (
            e["time"],
            e["kind"],
            e["node"][:8],
            f"{e['old']} -> {e['new']}".strip(" ->"),
            e["reason"][:80],
        )
        for e in events
    ]
    click.echo(table(rows, ["TIME", "EVENT", "NODE", "CHANGE", "REASON"]))
