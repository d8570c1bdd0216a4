"""``fleetwave rollout …``: steer a job's rollout."""

from __future__ import annotations

import click

from coordinator.cliutil import Ctx, act, job_argument, json_option, print_json, table


@click.group()
def rollout() -> None:
    """Control a job's rollout: pause, resume, promote, abort, retry, rollback."""


@rollout.command("pause")
@job_argument
@click.pass_obj
def rollout_pause(obj: Ctx, name: str) -> None:
    """Hold the rollout: no further node gets the new version until resume."""
    act(obj, name, "rollout/pause", what="Paused")


@rollout.command("resume")
@job_argument
@click.pass_obj
def rollout_resume(obj: Ctx, name: str) -> None:
    """Continue a paused rollout (also passes a manual wave gate)."""
    act(obj, name, "rollout/resume", what="Resumed")


@rollout.command("promote")
@job_argument
@click.option(
    "--full", is_flag=True, help="Roll out every remaining wave at once, skipping further gates."
)
@click.pass_obj
def rollout_promote(obj: Ctx, name: str, full: bool) -> None:
    """Pass the canary or manual wave gate the rollout waits at."""
    act(obj, name, "rollout/promote", {"full": full}, what="Promoted")


@rollout.command("abort")
@job_argument
@click.pass_obj
def rollout_abort(obj: Ctx, name: str) -> None:
    """Halt the rollout and return updated nodes to the stable version."""
    act(obj, name, "rollout/abort", what="Aborted")


@rollout.command("retry")
@job_argument
@click.pass_obj
def rollout_retry(obj: Ctx, name: str) -> None:
    """Re-run a failed or aborted rollout from its first unfinished wave."""
    act(obj, name, "rollout/retry", what="Retrying")


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
    act(obj, name, "rollback", body, what="Rolling back")


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
