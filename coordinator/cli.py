"""The ``fleetwave`` command: the coordinator daemon, operator commands and the demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click

from coordinator.client import ApiClient, ApiError
from coordinator.specfile import SpecFileError, load_spec_file

EXIT_OK, EXIT_ROLLOUT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_ADDR = "http://127.0.0.1:7400"
SUCCESS_STATES = {"running", "completed"}
FAILURE_STATES = {"failed", "rollout_failed", "degraded", "stopped", "deleted"}


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def api_error(exc: ApiError) -> NoReturn:
    lines = [exc.message]
    for item in exc.details.get("errors", []):
        lines.append(f"  - {item.get('field')}: {item.get('message')}")
    if exc.status == 401:
        lines.append("  Set FLEETWAVE_TOKEN (or --token) to the coordinator's admin token.")
    fail("\n".join(lines))


class Ctx:
    def __init__(self, addr: str, token: str | None) -> None:
        self.client = ApiClient(addr, token)

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        try:
            return self.client.request(method, path, body, **kw)
        except ApiError as exc:
            api_error(exc)


def _token(token: str | None, token_file: str | None) -> str | None:
    if token:
        return token
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file {token_file}: {exc.strerror}")
    return None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--addr",
    envvar="FLEETWAVE_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="Coordinator address (env FLEETWAVE_ADDR).",
)
@click.option(
    "--token",
    envvar="FLEETWAVE_TOKEN",
    default=None,
    help="Operator (admin) token (env FLEETWAVE_TOKEN).",
)
@click.option(
    "--token-file",
    envvar="FLEETWAVE_TOKEN_FILE",
    default=None,
    help="Read the operator token from this file (env FLEETWAVE_TOKEN_FILE).",
)
@click.pass_context
def cli(ctx: click.Context, addr: str, token: str | None, token_file: str | None) -> None:
    """Fleetwave: roll out versioned jobs to a fleet of hosts, safely."""
    ctx.obj = Ctx(addr, _token(token, token_file))


# -- the daemon ---------------------------------------------------------------


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML config file (default /etc/fleetwave/coordinator.toml if present).",
)
@click.option("--listen", default=None, help="HOST:PORT to serve on (default 127.0.0.1:7400).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory: database and token files (default /var/lib/fleetwave).",
)
@click.option(
    "--database", default=None, help="Database URL (default sqlite:///<data-dir>/fleetwave.db)."
)
@click.option(
    "--admin-token",
    default=None,
    help="Operator token; else read from or generated into <data-dir>/admin.token.",
)
@click.option(
    "--join-token",
    default=None,
    help="Agent join token; else read from or generated into <data-dir>/join.token.",
)
@click.option(
    "--heartbeat-interval",
    default=None,
    help="How often agents report, e.g. '10s'; nodes are down after 3 missed.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log as JSON lines (for journald) or readable console lines.",
)
def coordinator(config_file: Path | None, **options: Any) -> None:
    """Run the coordinator daemon (env FLEETWAVE_* for every option)."""
    from coordinator.config import load_config
    from coordinator.main import serve
    from shared.errors import FleetwaveError
    from shared.logsetup import configure_logging

    try:
        config = load_config(config_file, dict(os.environ), options)
    except FleetwaveError as exc:
        fail(f"invalid configuration: {exc.message}")
    configure_logging(json=config.log_format == "json")
    try:
        asyncio.run(serve(config))
    except FleetwaveError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot start: {exc}")


# -- jobs -----------------------------------------------------------------------


@cli.group()
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
    default=900.0,
    show_default=True,
    help="Stop watching after this many seconds (exit 1).",
)
@click.pass_obj
def job_run(obj: Ctx, file: Path, check_revision: int | None, detach: bool, timeout: float) -> None:
    """Create or update the job in FILE (TOML, YAML or JSON) and watch its rollout.

    Exit status: 0 the rollout succeeded, 1 it failed or was rolled back, 2 usage or API error.
    """
    try:
        spec = load_spec_file(file)
    except SpecFileError as exc:
        fail(str(exc))
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{file} has no 'name'")
    headers = {"If-Match": f'"{check_revision}"'} if check_revision is not None else None
    resp = obj.call("PUT", f"/v1/jobs/{name}", spec, headers=headers)
    body = resp.body
    if body["changed"]:
        click.echo(
            f"Job {name!r}: version {body['version']} submitted (revision {body['revision']})."
        )
    else:
        click.echo(f"Job {name!r}: unchanged, still version {body['version']}.")
    if detach:
        return
    sys.exit(watch_rollout(obj, name, body["status"], timeout))


class Caller(Protocol):
    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any: ...


def watch_rollout(obj: Caller, name: str, status: dict[str, Any], timeout: float) -> int:
    """Follow the status with blocking queries until the rollout ends; return the exit code."""
    deadline = time.monotonic() + timeout
    last_line = ""
    while True:
        state = status["state"]["state_type"]
        line = _progress_line(status)
        if line != last_line:
            click.echo(line)
            last_line = line
        if state in SUCCESS_STATES:
            return EXIT_OK
        if state in FAILURE_STATES:
            for key, value in sorted(status["state"]["details"].items()):
                click.echo(f"  {key}: {value}")
            return EXIT_ROLLOUT_FAILED
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            click.echo(f"Stopped watching after {timeout:.0f}s; the rollout goes on.", err=True)
            return EXIT_ROLLOUT_FAILED
        wait = max(1, min(30, int(remaining)))
        status = obj.call(
            "GET",
            f"/v1/jobs/{name}/status",
            query={"index": str(status["revision"]), "wait": f"{wait}s"},
            timeout=wait + 10,
        ).body


def _progress_line(status: dict[str, Any]) -> str:
    state = status["state"]
    ro = status["rollout"]
    text = f"[{state['state_type'] or '-'}] {state['message']}"
    if ro["type"]:
        text += (
            f"  ({ro['type']}: {ro['updated_nodes']}/{ro['total_nodes']} updated,"
            f" {ro['failed_nodes']} failed, wave {ro['current_wave']}/{ro['total_waves']})"
        )
    return text


@job.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the JobStatus object as JSON.")
@click.pass_obj
def job_status(obj: Ctx, name: str, as_json: bool) -> None:
    """Show a job's JobStatus."""
    status = obj.call("GET", f"/v1/jobs/{name}/status").body
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(render_status(name, status))


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
        lines += [
            f"Rollout:   {ro['type']}  wave {ro['current_wave']}/{ro['total_waves']}"
            f"  updated {ro['updated_nodes']}/{ro['total_nodes']}  failed {ro['failed_nodes']}",
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


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


@job.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_obj
def job_list(obj: Ctx, as_json: bool) -> None:
    """List jobs with their version and state."""
    jobs = obj.call("GET", "/v1/jobs").body["jobs"]
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
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
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@click.pass_obj
def job_history(obj: Ctx, name: str, as_json: bool) -> None:
    """List a job's versions, newest first."""
    versions = obj.call("GET", f"/v1/jobs/{name}/versions").body["versions"]
    status = obj.call("GET", f"/v1/jobs/{name}").body
    if as_json:
        click.echo(json.dumps(versions, indent=2))
        return
    rows = []
    for v in reversed(versions):
        marks = []
        if v["version"] == status["status"]["version"]:
            marks.append("current")
        if v["version"] == status["stable_version"]:
            marks.append("stable")
        task = v["spec"]["task"]
        rows.append(
            (str(v["version"]), v["created_at"], ",".join(marks), " ".join(task["command"])[:60])
        )
    click.echo(table(rows, ["VERSION", "CREATED", "", "COMMAND"]))


@job.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def job_plan(obj: Ctx, file: Path, as_json: bool) -> None:
    """Dry run: show what submitting FILE would change and which nodes go in each wave."""
    try:
        spec = load_spec_file(file)
    except SpecFileError as exc:
        fail(str(exc))
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{file} has no 'name'")
    plan = obj.call("POST", f"/v1/jobs/{name}/plan", spec).body
    if as_json:
        click.echo(json.dumps(plan, indent=2))
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


def _action(obj: Ctx, name: str, path: str, body: Any = None, what: str = "") -> None:
    status = obj.call("POST", f"/v1/jobs/{name}/{path}", body).body["status"]
    click.echo(f"{what or path}: {_progress_line(status)}")


@job.command("restart")
@click.argument("name")
@click.pass_obj
def job_restart(obj: Ctx, name: str) -> None:
    """Restart the job's processes wave by wave (same version)."""
    _action(obj, name, "restart", what="Restart started")


@job.command("stop")
@click.argument("name")
@click.pass_obj
def job_stop(obj: Ctx, name: str) -> None:
    """Stop the job on every node (submit it again to start it)."""
    _action(obj, name, "stop", what="Stopped")


@job.command("delete")
@click.argument("name")
@click.pass_obj
def job_delete(obj: Ctx, name: str) -> None:
    """Stop the job everywhere and delete it (its versions stay readable)."""
    status = obj.call("DELETE", f"/v1/jobs/{name}").body["status"]
    click.echo(f"Deleted: {_progress_line(status)}")


@job.command("events")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, help="How many events to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@click.pass_obj
def job_events(obj: Ctx, name: str, limit: int, as_json: bool) -> None:
    """Show the job's recorded transitions, oldest first."""
    events = obj.call("GET", "/v1/events", query={"job": name, "limit": str(limit)}).body["events"]
    if as_json:
        click.echo(json.dumps(events, indent=2))
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


# -- rollouts -----------------------------------------------------------------------


@cli.group()
def rollout() -> None:
    """Control a job's rollout: pause, resume, promote, abort, retry, rollback."""


@rollout.command("pause")
@click.argument("name")
@click.pass_obj
def rollout_pause(obj: Ctx, name: str) -> None:
    """Hold the rollout: no further node gets the new version until resume."""
    _action(obj, name, "rollout/pause", what="Paused")


@rollout.command("resume")
@click.argument("name")
@click.pass_obj
def rollout_resume(obj: Ctx, name: str) -> None:
    """Continue a paused rollout (also passes a manual wave gate)."""
    _action(obj, name, "rollout/resume", what="Resumed")


@rollout.command("promote")
@click.argument("name")
@click.option(
    "--full", is_flag=True, help="Roll out every remaining wave at once, skipping further gates."
)
@click.pass_obj
def rollout_promote(obj: Ctx, name: str, full: bool) -> None:
    """Pass the canary or manual wave gate the rollout waits at."""
    _action(obj, name, "rollout/promote", {"full": full}, what="Promoted")


@rollout.command("abort")
@click.argument("name")
@click.pass_obj
def rollout_abort(obj: Ctx, name: str) -> None:
    """Halt the rollout and return updated nodes to the stable version."""
    _action(obj, name, "rollout/abort", what="Aborted")


@rollout.command("retry")
@click.argument("name")
@click.pass_obj
def rollout_retry(obj: Ctx, name: str) -> None:
    """Re-run a failed or aborted rollout from its first unfinished wave."""
    _action(obj, name, "rollout/retry", what="Retrying")


@rollout.command("rollback")
@click.argument("name")
@click.option(
    "--to-version",
    type=int,
    default=None,
    help="Version to return to (default: the last stable version before this one).",
)
@click.pass_obj
def rollout_rollback(obj: Ctx, name: str, to_version: int | None) -> None:
    """Return every node to an earlier version (the job's spec version does not change)."""
    body = {"to_version": to_version} if to_version is not None else {}
    _action(obj, name, "rollback", body, what="Rolling back")


@rollout.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout as JSON.")
@click.pass_obj
def rollout_show(obj: Ctx, name: str, as_json: bool) -> None:
    """Show the rollout wave by wave with each node's state and reason."""
    view = obj.call("GET", f"/v1/jobs/{name}/rollout").body
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(
        f"{view['type'] or 'no rollout'} to version {view['target_version']}"
        f" (stable {view['stable_version']}), phase {view['phase']},"
        f" wave {view['current_wave']}/{view['total_waves']}"
    )
    for key in ("paused_reason", "halted_reason", "cause"):
        if view[key]:
            click.echo(f"  {key.replace('_', ' ')}: {view[key]}")
    groups = [("canary", view["canary"]["state"], view["canary"]["nodes"])]
    groups += [(f"wave {w['wave']}", w["state"], w["nodes"]) for w in view["waves"]]
    rows = []
    for label, state, nodes in groups:
        for n in nodes:
            rows.append(
                (
                    label,
                    state,
                    n["name"],
                    n["node_status"],
                    str(n["assigned_version"]),
                    n["execution"] or "-",
                    n["result"],
                    (n["reason"] or n["message"])[:60],
                )
            )
    if rows:
        click.echo(
            table(
                rows,
                ["GROUP", "STATE", "NODE", "STATUS", "ASSIGNED", "EXECUTION", "RESULT", "REASON"],
            )
        )


# -- nodes ------------------------------------------------------------------------


@cli.group()
def node() -> None:
    """Inspect nodes, drain them and set their eligibility."""


@node.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as JSON.")
@click.pass_obj
def node_list(obj: Ctx, as_json: bool) -> None:
    """List nodes with status, eligibility and labels."""
    nodes = obj.call("GET", "/v1/nodes").body["nodes"]
    if as_json:
        click.echo(json.dumps(nodes, indent=2))
        return
    if not nodes:
        click.echo("No nodes have registered yet.")
        return
    rows = [
        (
            n["id"][:8],
            n["name"],
            n["status"],
            n["eligibility"],
            "yes" if n["drain"] else "no",
            ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())),
            n["last_heartbeat"],
        )
        for n in nodes
    ]
    click.echo(table(rows, ["ID", "NAME", "STATUS", "ELIGIBILITY", "DRAIN", "LABELS", "HEARTBEAT"]))


@node.command("show")
@click.argument("node_id")
@click.option("--json", "as_json", is_flag=True, help="Print the node as JSON.")
@click.pass_obj
def node_show(obj: Ctx, node_id: str, as_json: bool) -> None:
    """Show one node (by id or name) and its assignments."""
    body = obj.call("GET", f"/v1/nodes/{node_id}").body
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    for key in (
        "id",
        "name",
        "status",
        "eligibility",
        "drain",
        "agent_version",
        "registered_at",
        "last_heartbeat",
    ):
        click.echo(f"{key + ':':<16}{body[key]}")
    click.echo(f"{'labels:':<16}{', '.join(f'{k}={v}' for k, v in sorted(body['labels'].items()))}")
    for a in body["assignments"]:
        click.echo(f"  job {a['job']} version {a['version']} (since {a['assigned_at']})")


@node.command("drain")
@click.argument("node_id")
@click.option("--disable", is_flag=True, help="Stop draining: the node may get jobs again.")
@click.pass_obj
def node_drain(obj: Ctx, node_id: str, disable: bool) -> None:
    """Drain a node (by id or name): its jobs stop and it gets no new ones."""
    body = obj.call("POST", f"/v1/nodes/{node_id}/drain", {"enable": not disable}).body
    click.echo(f"Node {body['name']}: drain {'on' if body['drain'] else 'off'}")


@node.command("eligibility")
@click.argument("node_id")
@click.option(
    "--enable/--disable",
    default=None,
    help="Eligible nodes get new versions; ineligible ones keep what they run.",
)
@click.pass_obj
def node_eligibility(obj: Ctx, node_id: str, enable: bool | None) -> None:
    """Mark a node (by id or name) eligible or ineligible for new job versions."""
    if enable is None:
        fail("give --enable or --disable")
    value = "eligible" if enable else "ineligible"
    body = obj.call("POST", f"/v1/nodes/{node_id}/eligibility", {"eligibility": value}).body
    click.echo(f"Node {body['name']}: {body['eligibility']}")


# -- demo ---------------------------------------------------------------------------


@cli.command()
@click.option("--agents", default=3, show_default=True, help="How many local agents to start.")
@click.option("--keep", is_flag=True, help="Leave everything running until Ctrl-C.")
def demo(agents: int, keep: bool) -> None:
    """Start a coordinator and local agents in a temp dir and roll out a small HTTP service."""
    from coordinator.demo.runner import run_demo

    sys.exit(run_demo(agents=agents, keep=keep))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetwave")
