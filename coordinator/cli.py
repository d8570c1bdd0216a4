"""The ``fleetwave`` command: the coordinator daemon, operator commands and the demo.

Exit codes (DESIGN §2): 0 success, 1 the operation ran but the rollout failed or was rolled
back, 2 usage or API error. Read commands take ``--json`` (the API's body, for scripts).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem, get_completion_class

from coordinator.client import ApiClient, ApiError
from coordinator.follow import progress_line
from coordinator.specfile import SpecFileError, load_spec_file

EXIT_OK, EXIT_ROLLOUT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
DEFAULT_ADDR = "http://127.0.0.1:7400"
EVENTS_PAGE = 1000  # the API's largest page of stored events


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def explain(exc: ApiError, token_given: bool = True) -> str:
    """The API error as an operator reads it: what went wrong, then what to do."""
    lines = [exc.message]
    for item in exc.details.get("errors", []):
        lines.append(f"  - {item.get('field')}: {item.get('message')}")
    if exc.status == 401:
        lines[0] = (
            f"the coordinator refused the token ({exc.message})"
            if token_given
            else "no token given: the coordinator needs its admin token"
        )
        lines.append(
            "  Set FLEETWAVE_TOKEN (or --token) to the admin token, or point --token-file /"
            " FLEETWAVE_TOKEN_FILE at the coordinator's admin.token file"
            " (<data-dir>/admin.token, default /var/lib/fleetwave/admin.token)."
        )
    elif exc.status == 404 and "version" in exc.details:
        job = exc.details.get("job", "")
        lines[0] = f"{exc.message}; see `fleetwave job history {job}`"
    elif exc.status == 404 and "job" in exc.details:
        lines[0] = f"no job named {exc.details['job']}; see `fleetwave job list`"
    elif exc.status == 404 and "node" in exc.details:
        lines[0] = f"no node named {exc.details['node']}; see `fleetwave node list`"
    return "\n".join(lines)


def resolve_token(
    token: str | None,
    token_file: str | None,
    token_explicit: bool = False,
    file_explicit: bool = False,
) -> str | None:
    """A flag beats an environment variable; with both from the same source the token wins."""
    if token and token_explicit:
        return token
    if token_file and (file_explicit or not token):
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file {token_file}: {exc.strerror}")
    return token


class Ctx:
    """The operator commands' connection; the token is read when the first call needs it."""

    def __init__(self, addr: str, token: Callable[[], str | None]) -> None:
        self.addr = addr
        self._token = token
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.addr, self._token())
        return self._client

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        try:
            return self.client.request(method, path, body, **kw)
        except ApiError as exc:
            fail(explain(exc, bool(self.client.token)))


def _explicit(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in {ParameterSource.COMMANDLINE, ParameterSource.PROMPT}


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
    help="Read the operator token from this file, e.g. the coordinator's"
    " <data-dir>/admin.token (env FLEETWAVE_TOKEN_FILE; the flag beats FLEETWAVE_TOKEN).",
)
@click.pass_context
def cli(ctx: click.Context, addr: str, token: str | None, token_file: str | None) -> None:
    """Fleetwave: roll out versioned jobs to a fleet of hosts, safely.

    Exit status: 0 success, 1 the rollout failed or was rolled back, 2 usage or API error.
    """
    explicit = _explicit(ctx, "token"), _explicit(ctx, "token_file")
    ctx.obj = Ctx(addr, lambda: resolve_token(token, token_file, *explicit))


def _completion_client(ctx: click.Context) -> ApiClient:
    params = ctx.find_root().params
    addr = params.get("addr") or os.environ.get("FLEETWAVE_ADDR") or DEFAULT_ADDR
    token = params.get("token") or os.environ.get("FLEETWAVE_TOKEN")
    token_file = params.get("token_file") or os.environ.get("FLEETWAVE_TOKEN_FILE")
    if token_file and not params.get("token"):
        with contextlib.suppress(OSError):
            token = Path(token_file).read_text().strip()
    return ApiClient(addr, token, timeout=2)


def complete_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Job names from the API, when it answers in time (else no suggestions)."""
    try:
        jobs = _completion_client(ctx).request("GET", "/v1/jobs").body["jobs"]
    except (ApiError, KeyError, TypeError):
        return []
    return [CompletionItem(j["name"]) for j in jobs if j["name"].startswith(incomplete)]


def complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Node names (and ids) from the API, when it answers in time."""
    try:
        nodes = _completion_client(ctx).request("GET", "/v1/nodes").body["nodes"]
    except (ApiError, KeyError, TypeError):
        return []
    keys = [n["name"] for n in nodes] + [n["id"] for n in nodes]
    return [CompletionItem(k) for k in keys if k.startswith(incomplete)]


def job_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("name", shell_complete=complete_jobs)(f)


def node_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("node_id", metavar="NODE", shell_complete=complete_nodes)(f)


def json_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help=f"Print {what} as JSON (the API's response body; no colours, stable keys).",
    )


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    Load it from your shell's startup file, e.g. eval "$(fleetwave completion bash)"
    in ~/.bashrc; job and node names complete from the coordinator when it is reachable.
    """
    cls = get_completion_class(shell)
    assert cls is not None  # click.Choice admits only shells click supports
    click.echo(cls(cli, {}, "fleetwave", "_FLEETWAVE_COMPLETE").source())


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


def _load(file: Path) -> tuple[str, dict[str, Any]]:
    try:
        spec = load_spec_file(file)
    except SpecFileError as exc:
        fail(str(exc))
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{file} has no 'name'")
    return name, spec


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
    name, spec = _load(file)
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


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


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
    name, spec = _load(file)
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


def _action(obj: Ctx, name: str, path: str, body: Any = None, what: str = "") -> None:
    status = obj.call("POST", f"/v1/jobs/{name}/{path}", body).body["status"]
    click.echo(f"{what or path}: {progress_line(status)}")


@job.command("restart")
@job_argument
@click.pass_obj
def job_restart(obj: Ctx, name: str) -> None:
    """Restart the job's processes wave by wave (same version)."""
    _action(obj, name, "restart", what="Restart started")


@job.command("stop")
@job_argument
@click.pass_obj
def job_stop(obj: Ctx, name: str) -> None:
    """Stop the job on every node (submit it again to start it)."""
    _action(obj, name, "stop", what="Stopped")


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


# -- rollouts -----------------------------------------------------------------------


@cli.group()
def rollout() -> None:
    """Control a job's rollout: pause, resume, promote, abort, retry, rollback."""


@rollout.command("pause")
@job_argument
@click.pass_obj
def rollout_pause(obj: Ctx, name: str) -> None:
    """Hold the rollout: no further node gets the new version until resume."""
    _action(obj, name, "rollout/pause", what="Paused")


@rollout.command("resume")
@job_argument
@click.pass_obj
def rollout_resume(obj: Ctx, name: str) -> None:
    """Continue a paused rollout (also passes a manual wave gate)."""
    _action(obj, name, "rollout/resume", what="Resumed")


@rollout.command("promote")
@job_argument
@click.option(
    "--full", is_flag=True, help="Roll out every remaining wave at once, skipping further gates."
)
@click.pass_obj
def rollout_promote(obj: Ctx, name: str, full: bool) -> None:
    """Pass the canary or manual wave gate the rollout waits at."""
    _action(obj, name, "rollout/promote", {"full": full}, what="Promoted")


@rollout.command("abort")
@job_argument
@click.pass_obj
def rollout_abort(obj: Ctx, name: str) -> None:
    """Halt the rollout and return updated nodes to the stable version."""
    _action(obj, name, "rollout/abort", what="Aborted")


@rollout.command("retry")
@job_argument
@click.pass_obj
def rollout_retry(obj: Ctx, name: str) -> None:
    """Re-run a failed or aborted rollout from its first unfinished wave."""
    _action(obj, name, "rollout/retry", what="Retrying")


@rollout.command("rollback")
@job_argument
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
@job_argument
@json_option("the rollout view")
@click.pass_obj
def rollout_show(obj: Ctx, name: str, as_json: bool) -> None:
    """Show the rollout wave by wave with each node's state and reason."""
    view = obj.call("GET", f"/v1/jobs/{name}/rollout").body
    if as_json:
        print_json(view)
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
@json_option('the nodes ({"nodes": [...]})')
@click.pass_obj
def node_list(obj: Ctx, as_json: bool) -> None:
    """List nodes with status, eligibility and labels."""
    body = obj.call("GET", "/v1/nodes").body
    if as_json:
        print_json(body)
        return
    nodes = body["nodes"]
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
@node_argument
@json_option("the node")
@click.pass_obj
def node_show(obj: Ctx, node_id: str, as_json: bool) -> None:
    """Show one node (by id or name) and its assignments."""
    body = obj.call("GET", f"/v1/nodes/{node_id}").body
    if as_json:
        print_json(body)
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
@node_argument
@click.option("--disable", is_flag=True, help="Stop draining: the node may get jobs again.")
@click.pass_obj
def node_drain(obj: Ctx, node_id: str, disable: bool) -> None:
    """Drain a node (by id or name): its jobs stop and it gets no new ones."""
    body = obj.call("POST", f"/v1/nodes/{node_id}/drain", {"enable": not disable}).body
    click.echo(f"Node {body['name']}: drain {'on' if body['drain'] else 'off'}")


@node.command("eligibility")
@node_argument
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
@click.option(
    "--agents",
    type=click.IntRange(min=3),
    default=9,
    show_default=True,
    help="How many local agents to start (spread over 3 zones).",
)
@click.option("--keep", is_flag=True, help="Leave everything running until Ctrl-C at the end.")
def demo(agents: int, keep: bool) -> None:
    """Run the showcase: a coordinator and local agents in a temp dir; v1, v2 through canary
    and waves, then a broken v3 that is rolled back automatically. Cleans up after itself."""
    from coordinator.demo.runner import run_demo

    sys.exit(run_demo(agents=agents, keep=keep))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetwave")
