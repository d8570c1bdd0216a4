"""``fleetwave audit``: who did what, and who was refused (admin tokens only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from coordinator.cli_tokens import short_time
from coordinator.cliutil import Ctx, json_option, print_json, shown, table

PAGE = 1000
"""The coordinator's largest ``limit``."""
REFUSED = (401, 403)


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
    entries = _fetch(obj, job=job, token_name=token_name, refused=refused, after=after, limit=limit)
    if as_json:
        print_json({"entries": entries, "last_id": entries[-1]["id"] if entries else after})
        return
    if not entries:
        click.echo("No audit entries.")
        return
    click.echo(audit_table(entries))


def _fetch(
    obj: Ctx, *, job: str | None, token_name: str | None, refused: bool, after: int, limit: int
) -> list[dict[str, Any]]:
    """The entries to show, oldest first: the first ``limit`` after ``after``, or without it
    the newest ``limit``, read newest first (one request for up to PAGE entries, and only as
    far back as needed)."""
    query: dict[str, str] = {}
    if job:
        query["job"] = job
    if token_name:
        query["token"] = token_name
    cursor = {"after": str(after)} if after else {"order": "desc"}
    wanted: list[dict[str, Any]] = []
    while True:
        # The coordinator does not filter refusals: with --refused read whole pages.
        size = PAGE if refused else min(PAGE, limit - len(wanted))
        body = obj.call("GET", "/v1/audit", query=query | cursor | {"limit": str(size)}).body
        page = body["entries"]
        wanted += [e for e in page if not refused or e["status"] in REFUSED]
        if len(wanted) >= limit or len(page) < size:
            break
        cursor |= {"after": str(body["last_id"])} if after else {"before": str(body["last_id"])}
    return wanted[:limit] if after else wanted[:limit][::-1]


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
