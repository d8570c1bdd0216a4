"""``fleetwave node …``: inspect nodes, drain them, set their eligibility; approve pending
nodes, revoke nodes and purge the ones that are gone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from coordinator.cliutil import Ctx, fail, json_option, node_argument, print_json, shown, table


@click.group()
def node() -> None:
    """Inspect nodes, drain them, set their eligibility; approve, revoke, purge them."""


@node.command("list")
@json_option('the nodes ({"nodes": [...]})')
@click.pass_obj
def node_list(obj: Ctx, as_json: bool) -> None:
    """List nodes with status, conditions, eligibility and labels."""
    body = obj.call("GET", "/v1/nodes").body
    if as_json:
        print_json(body)
        return
    nodes = body["nodes"]
    if not nodes:
        click.echo("No nodes have registered yet.")
        return
    click.echo(node_table(nodes))
    for line in attention_lines(nodes):
        click.echo(line)


def attention_lines(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """``node list``: what waits for an operator under the table (pending nodes)."""
    pending = [shown(n["name"]) for n in nodes if n["status"] == "pending"]
    if not pending:
        return []
    return [
        "",
        f"{len(pending)} pending approval ({', '.join(pending)}): check each is the host you"
        " expect (`fleetwave node show NODE`), then `fleetwave node approve NODE`.",
    ]


def node_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    """``node list``: one row per node; CONDITIONS names what its agent reports as wrong."""
    rows = [
        (
            n["id"][:8],
            shown(n["name"]),
            n["status"],
            ",".join(c["type"] for c in n.get("conditions", [])) or "-",
            n["eligibility"],
            "yes" if n["drain"] else "no",
            shown(",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))),
            n["last_heartbeat"],
        )
        for n in nodes
    ]
    headers = ["ID", "NAME", "STATUS", "CONDITIONS", "ELIGIBILITY", "DRAIN", "LABELS", "HEARTBEAT"]
    return table(rows, headers)


def condition_lines(conditions: Sequence[Mapping[str, Any]]) -> list[str]:
    """``node show``: each condition with its start and message, or that there is none."""
    if not conditions:
        return [f"{'conditions:':<16}none"]
    lines = [f"{'conditions:':<16}{len(conditions)}"]
    for c in conditions:
        lines.append(f"  {c['type']} since {c['since']}: {shown(c['message'])}")
    return lines


@node.command("show")
@node_argument
@json_option("the node")
@click.pass_obj
def node_show(obj: Ctx, node_id: str, as_json: bool) -> None:
    """Show one node (by id or name), its conditions and its assignments."""
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
        click.echo(f"{key + ':':<16}{shown(body[key])}")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(body["labels"].items()))
    click.echo(f"{'labels:':<16}{shown(labels)}")
    if body["status"] == "pending":
        click.echo(f"{'':<16}pending approval: `fleetwave node approve {shown(body['name'])}`")
    for line in condition_lines(body.get("conditions", [])):
        click.echo(line)
    for a in body["assignments"]:
        click.echo(f"  job {a['job']} version {a['version']} (since {a['assigned_at']})")


@node.command("drain")
@node_argument
@click.option("--disable", is_flag=True, help="Stop draining: the node may get jobs again.")
@click.pass_obj
def node_drain(obj: Ctx, node_id: str, disable: bool) -> None:
    """Drain a node (by id or name): its jobs stop and it gets no new ones."""
    body = obj.call("POST", f"/v1/nodes/{node_id}/drain", {"enable": not disable}).body
    click.echo(f"Node {shown(body['name'])}: drain {'on' if body['drain'] else 'off'}")


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
    click.echo(f"Node {shown(body['name'])}: {body['eligibility']}")


@node.command("approve")
@node_argument
@click.pass_obj
def node_approve(obj: Ctx, node_id: str) -> None:
    """Let a pending node (by id or name) into the fleet: rollouts may target it from now on.

    A node is pending when it enrolled with a join token whose approval is manual.
    """
    body = obj.call("POST", f"/v1/nodes/{node_id}/approve").body
    click.echo(
        f"Node {shown(body['name'])} ({body['id'][:8]}) approved: status {body['status']};"
        " rollouts may target it now."
    )


def confirm_or_fail(question: str, action: str) -> None:
    """Ask ``question``; no answer (a closed stdin) or "no" is exit 2, nothing done."""
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:
        fail(f"no confirmation (stdin closed): give --yes to {action} without asking")
    if not agreed:
        fail(f"not confirmed: nothing was done (give --yes to {action} without asking)")


@node.command("revoke")
@node_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def node_revoke(obj: Ctx, node_id: str, yes: bool) -> None:
    """Revoke a node (by id or name), for good: its token is refused at once, no rollout
    targets it again and it cannot come back (purge it to free its name).

    Asks for confirmation unless --yes. Its agent keeps running what it ran: drain the node
    first to stop its jobs.
    """
    target = node_id
    if not yes:
        current = obj.call("GET", f"/v1/nodes/{node_id}").body
        confirm_or_fail(
            f"Revoke node {shown(current['name'])} ({current['id'][:8]}, {current['status']})?"
            " Its token is refused at once and it can never rejoin as this node.",
            "revoke",
        )
        target = current["id"]  # the node that was confirmed, whatever holds the name now
    body = obj.call("POST", f"/v1/nodes/{target}/revoke").body
    click.echo(
        f"Node {shown(body['name'])} ({body['id'][:8]}) revoked: its token is refused; "
        f"`fleetwave node purge {shown(body['name'])}` forgets it."
    )


@node.command("purge")
@node_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def node_purge(obj: Ctx, node_id: str, yes: bool) -> None:
    """Forget a down or revoked node (by id or name): its record, assignments and
    executions are deleted (its events stay) and its name may be registered again.

    Asks for confirmation unless --yes. A node that is not down or revoked is refused:
    revoke it first.
    """
    current = obj.call("GET", f"/v1/nodes/{node_id}").body
    if not yes:
        confirm_or_fail(
            f"Purge node {shown(current['name'])} ({current['id'][:8]}, {current['status']})?"
            " Its record is deleted and its name is free again.",
            "purge",
        )
    # By id: the node that was looked at (and confirmed), not whatever the name means later.
    obj.call("DELETE", f"/v1/nodes/{current['id']}")
    click.echo(f"Node {shown(current['name'])} ({current['id'][:8]}) purged.")
