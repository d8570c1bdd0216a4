"""``fleetwave node …``: inspect nodes, drain them, set their eligibility."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from coordinator.cliutil import Ctx, fail, json_option, node_argument, print_json, table


@click.group()
def node() -> None:
    """Inspect nodes, drain them and set their eligibility."""


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


def node_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    """``node list``: one row per node; CONDITIONS names what its agent reports as wrong."""
    rows = [
        (
            n["id"][:8],
            n["name"],
            n["status"],
            ",".join(c["type"] for c in n.get("conditions", [])) or "-",
            n["eligibility"],
            "yes" if n["drain"] else "no",
            ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())),
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
        lines.append(f"  {c['type']} since {c['since']}: {c['message']}")
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
        click.echo(f"{key + ':':<16}{body[key]}")
    click.echo(f"{'labels:':<16}{', '.join(f'{k}={v}' for k, v in sorted(body['labels'].items()))}")
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
