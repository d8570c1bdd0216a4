"""``fleetwave audit``: who did what, and who was refused (admin tokens only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from coordinator.cli_tokens import short_time
from coordinator.cliutil import Ctx, json_option, print_json, shown, table

PAGE = 1000


@click.command()
@click.option("--job", default=None, help="Only requests about this job.")
@click.option(
    "--token", "token_name", default=None, help="Only requests of this token (name or id)."
)
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only entries after this id.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=100_000),
    default=50,
    show_default=True,
    help="Show at most this many entries (the newest ones, unless --after is given).",
)
@click.option("--refused", is_flag=True, help="Only refused requests (401 and 403).")
@json_option('the entries ({"entries": [...], "last_id": N})')
@click.pass_obj
def audit(
    obj: Ctx,
    job: str | None,
    token_name: str | None,
    after: int,
    limit: int,
    refused: bool,
    as_json: bool,
) -> None:
    """Show the audit log: every request that changed something (recorded before it ran)
    and every refused one, with the token, its role, the remote address and the answer.
    Needs an admin token."""
    entries = _fetch(obj, job=job, token_name=token_name, after=after)
    if refused:
        entries = [e for e in entries if e["status"] in (401, 403)]
    entries = entries[:limit] if after else entries[-limit:]
    if as_json:
        print_json({"entries": entries, "last_id": entries[-1]["id"] if entries else after})
        return
    if not entries:
        click.echo("No audit entries.")
        return
    click.echo(audit_table(entries))


def _fetch(
    obj: Ctx, *, job: str | None, token_name: str | None, after: int
) -> list[dict[str, Any]]:
    """Every entry after ``after`` matching the filters, page by page."""
    query: dict[str, str] = {"limit": str(PAGE)}
    if job:
        query["job"] = job
    if token_name:
        query["token"] = token_name
    entries: list[dict[str, Any]] = []
    while True:
        body = obj.call("GET", "/v1/audit", query=query | {"after": str(after)}).body
        page = body["entries"]
        entries += page
        if len(page) < PAGE:
            return entries
        after = body["last_id"]


def audit_table(entries: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            str(e["id"]),
            short_time(e["time"]),
            shown(e["token_name"] or "-"),
            shown(e["role"] or "-"),
            shown(e["remote"] or "-"),
            f"{e['method']} {shown(e['path'])}",
            str(e["status"]) if e["status"] else "?",
        )
        for e in entries
    ]
    return table(rows, ["ID", "TIME", "TOKEN", "ROLE", "REMOTE", "REQUEST", "STATUS"])
