"""``fleetwave token …``: create, list and revoke operator and join tokens; who am I.

A token's secret is printed once, by ``token create``: the coordinator keeps only its hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from coordinator.access import ROLE_RIGHTS
from coordinator.cliutil import Ctx, json_option, print_json, shown, table
from shared.clock import SystemClock
from shared.durations import parse_duration
from shared.tokens import Approval, Role, TokenKind

BOOTSTRAP_NOTE = (
    "bootstrap: the coordinator's configured tokens (--admin-token, --join-token or the token"
    " files); they cannot be revoked: change the configuration and restart"
    " (docs/operations.md)."
)


@click.group()
def token() -> None:
    """Create, list and revoke operator and join tokens; show the token in use."""


def _check_ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _labels(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> dict[str, str]:
    labels = {}
    for item in value:
        key, sep, label = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        labels[key] = label
    return labels


@token.command("create")
@click.option("--name", required=True, help="Who or what holds the token, e.g. ci-deploy.")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in TokenKind]),
    default=TokenKind.OPERATOR.value,
    show_default=True,
    help="operator: calls the API with a role; join: only enrolls nodes.",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=None,
    help="Operator tokens (required): viewer, deployer, operator or admin.",
)
@click.option(
    "--jobs",
    "jobs",
    metavar="GLOB",
    multiple=True,
    help="Deployer tokens: job names it may change (glob, e.g. 'web-*'); repeat for"
    " several. Default every job.",
)
@click.option(
    "--ttl",
    metavar="DURATION",
    default=None,
    callback=_check_ttl,
    help="Lifetime, e.g. '720h'; after it the token is refused (401). Default: no expiry.",
)
@click.option(
    "--max-uses",
    type=click.IntRange(min=1),
    default=None,
    help="Join tokens: how many nodes it may enroll. Default: no limit.",
)
@click.option(
    "--label",
    "labels",
    metavar="KEY=VALUE",
    multiple=True,
    callback=_labels,
    help="Join tokens: a label every node it enrolls gets (overrides the agent's own);"
    " repeat for several.",
)
@click.option(
    "--approval",
    type=click.Choice([a.value for a in Approval]),
    default=None,
    help="Join tokens: auto (default) or manual (its nodes stay pending until"
    " `fleetwave node approve`).",
)
@json_option("the created token with its secret")
@click.pass_obj
def token_create(
    obj: Ctx,
    name: str,
    kind: str,
    role: str | None,
    jobs: tuple[str, ...],
    ttl: str | None,
    max_uses: int | None,
    labels: dict[str, str],
    approval: str | None,
    as_json: bool,
) -> None:
    """Create a token and print its secret, once: store it right away.

    Examples: `token create --name ci --role deployer --jobs 'web-*' --ttl 720h`,
    `token create --name rack-7 --kind join --max-uses 10 --label rack=7 --approval manual`.
    """
    request: dict[str, Any] = {"name": name, "kind": kind}
    optional: dict[str, Any] = {"role": role, "jobs": list(jobs) or None, "ttl": ttl}
    optional |= {"max_uses": max_uses, "labels": labels or None, "approval": approval}
    request |= {k: v for k, v in optional.items() if v is not None}
    created = obj.call("POST", "/v1/tokens", request).body
    if as_json:
        print_json(created)
        return
    for line in created_lines(created):
        click.echo(line)


def created_lines(created: Mapping[str, Any]) -> list[str]:
    """``token create``: what the token is, then its secret set apart with the warning."""
    lines = [f"Created {created['kind']} token {shown(created['name'])}."]
    lines += [f"  {key + ':':<10}{value}" for key, value in token_facts(created)]
    lines += ["", "Secret (shown once; store it now, it cannot be shown again):", ""]
    lines += [f"  {created['secret']}", ""]
    if created["kind"] == TokenKind.JOIN:
        lines.append("Enroll a host: fleetwave-agent --join-token <secret> (or join_token_file).")
    else:
        lines.append(
            "Use it: export FLEETWAVE_TOKEN=<secret>; check with `fleetwave token whoami`."
        )
    return lines


def token_facts(t: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The lines ``token create`` and ``token whoami`` show of a token."""
    facts = [("id", str(t["id"]))]
    if t["kind"] == TokenKind.OPERATOR:
        facts.append(("role", str(t["role"])))
        if t["role"] == Role.DEPLOYER:
            facts.append(("jobs", ", ".join(t["jobs"])))
    else:
        facts.append(("approval", str(t.get("approval") or Approval.AUTO.value)))
        facts.append(("labels", label_text(t.get("labels") or {}) or "-"))
        facts.append(("uses", uses_text(t)))
    facts.append(("expires", short_time(t.get("expires_at")) or "never"))
    return facts


def label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{shown(k)}={shown(v)}" for k, v in sorted(labels.items()))


def uses_text(t: Mapping[str, Any]) -> str:
    if t["kind"] != TokenKind.JOIN:
        return "-"
    limit = t.get("max_uses")
    return f"{t.get('uses', 0)}/{limit}" if limit is not None else str(t.get("uses", 0))


def short_time(value: str | None) -> str:
    """An API timestamp to the second ('' for none or the zero time)."""
    if not value or value.startswith("0001-01-01"):
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def access_text(t: Mapping[str, Any]) -> str:
    """ACCESS: an operator token's role (and a deployer's job globs), or what a join token
    does to the nodes it enrolls."""
    if t["kind"] == TokenKind.OPERATOR:
        if t["role"] == Role.DEPLOYER:
            return f"deployer jobs={','.join(t['jobs'])}"
        return str(t["role"])
    parts = [f"approval={t.get('approval') or Approval.AUTO.value}"]
    if t.get("labels"):
        parts.append(f"labels={label_text(t['labels'])}")
    return " ".join(parts)


def token_state(t: Mapping[str, Any], now: datetime) -> str:
    """STATUS: revoked, expired, used up or active (a bootstrap token is always active)."""
    if t.get("revoked_at"):
        return f"revoked {short_time(t['revoked_at'])}"
    expires = t.get("expires_at")
    if expires and datetime.fromisoformat(expires) <= now:
        return "expired"
    limit = t.get("max_uses")
    if t["kind"] == TokenKind.JOIN and limit is not None and t.get("uses", 0) >= limit:
        return "used up"
    return "active"


def token_table(tokens: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """``token list``: one row per token; bootstrap tokens say so in CREATED BY."""
    rows = [
        (
            shown(t["id"]),
            shown(t["name"]),
            t["kind"],
            access_text(t),
            uses_text(t),
            short_time(t.get("expires_at")) or "never",
            token_state(t, now),
            "(bootstrap)" if t.get("bootstrap") else shown(t.get("created_by") or "-"),
        )
        for t in tokens
    ]
    headers = ["ID", "NAME", "KIND", "ACCESS", "USES", "EXPIRES", "STATUS", "CREATED BY"]
    return table(rows, headers)


@token.command("list")
@json_option('the tokens ({"tokens": [...]}, never their secrets)')
@click.pass_obj
def token_list(obj: Ctx, as_json: bool) -> None:
    """List every token (never a secret): kind, access, uses, expiry and status."""
    body = obj.call("GET", "/v1/tokens").body
    if as_json:
        print_json(body)
        return
    tokens = body["tokens"]
    click.echo(token_table(tokens, SystemClock().now()))
    if any(t.get("bootstrap") for t in tokens):
        click.echo()
        click.echo(BOOTSTRAP_NOTE)


@token.command("revoke")
@click.argument("token_id", metavar="ID_OR_NAME")
@click.pass_obj
def token_revoke(obj: Ctx, token_id: str) -> None:
    """Revoke a token (by id, or by name when one usable token has it): it is refused
    from its next request on. Nodes a join token enrolled stay enrolled."""
    revoked = obj.call("DELETE", f"/v1/tokens/{token_id}").body
    click.echo(
        f"Revoked {revoked['kind']} token {shown(revoked['name'])} ({shown(revoked['id'])})"
        f" at {short_time(revoked.get('revoked_at'))}."
    )


@token.command("whoami")
@json_option("the token in use")
@click.pass_obj
def token_whoami(obj: Ctx, as_json: bool) -> None:
    """Show the token this CLI uses: its name, role, scope, expiry and rights."""
    me = obj.call("GET", "/v1/tokens/self").body
    if as_json:
        print_json(me)
        return
    note = " (bootstrap: the coordinator's configured admin token)" if me.get("bootstrap") else ""
    click.echo(f"Token {shown(me['name'])}{note}")
    for key, value in token_facts(me):
        click.echo(f"  {key + ':':<10}{value}")
    role = me.get("role")
    if role:
        rights = sorted(r.value for r in ROLE_RIGHTS[Role(role)])
        click.echo(f"  {'rights:':<10}{', '.join(rights)}")
    if me.get("created_by"):
        click.echo(f"  {'by:':<10}{shown(me['created_by'])} at {short_time(me['created_at'])}")
