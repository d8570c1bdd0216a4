"""The ``fleetwave`` command: the coordinator daemon, operator commands and the demo.

Exit codes (DESIGN §2): 0 success, 1 the operation ran but the rollout failed or was rolled
back, 2 usage or API error. Read commands take ``--json`` (the API's body, for scripts). The
operator commands live in ``cli_jobs``, ``cli_rollouts``, ``cli_nodes`` and ``cli_tokens``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from click.shell_completion import get_completion_class

from coordinator.cli_audit import audit
from coordinator.cli_jobs import job
from coordinator.cli_nodes import node
from coordinator.cli_rollouts import rollout
from coordinator.cli_tls import tls
from coordinator.cli_tokens import token
from coordinator.cliutil import DEFAULT_ADDR, Ctx, fail, is_explicit, resolve_token


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--addr",
    envvar="FLEETWAVE_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="Coordinator address, or several comma-separated (HA): each call goes to the first"
    " that answers, moving on when one cannot be reached or its database is down (env"
    " FLEETWAVE_ADDR).",
)
@click.option(
    "--token",
    envvar="FLEETWAVE_TOKEN",
    default=None,
    help="Operator token: the admin token or one from `fleetwave token create` (env"
    " FLEETWAVE_TOKEN).",
)
@click.option(
    "--token-file",
    envvar="FLEETWAVE_TOKEN_FILE",
    default=None,
    help="Read the operator token from this file, e.g. the coordinator's"
    " <data-dir>/admin.token (env FLEETWAVE_TOKEN_FILE; the flag beats FLEETWAVE_TOKEN).",
)
@click.option(
    "--ca-file",
    envvar="FLEETWAVE_CA_FILE",
    default=None,
    help="CA certificate (PEM) to verify an https:// coordinator with, e.g. the ca.pem of"
    " `fleetwave tls ca create` (env FLEETWAVE_CA_FILE; default the system's CAs).",
)
@click.pass_context
def cli(
    ctx: click.Context, addr: str, token: str | None, token_file: str | None, ca_file: str | None
) -> None:
    """Fleetwave: roll out versioned jobs to a fleet of hosts, safely.

    Exit status: 0 success, 1 the rollout failed or was rolled back, 2 usage or API error.
    """
    explicit = is_explicit(ctx, "token"), is_explicit(ctx, "token_file")
    ctx.obj = Ctx(addr, lambda: resolve_token(token, token_file, *explicit), ca_file)


cli.add_command(job)
cli.add_command(rollout)
cli.add_command(node)
cli.add_command(tls)
cli.add_command(token)
cli.add_command(audit)


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
    help="Bootstrap admin token (visible in ps: prefer FLEETWAVE_ADMIN_TOKEN); else read"
    " from or generated into <data-dir>/admin.token.",
)
@click.option(
    "--join-token",
    default=None,
    help="Default join token (visible in ps: prefer FLEETWAVE_JOIN_TOKEN); else read from"
    " or generated into <data-dir>/join.token.",
)
@click.option(
    "--heartbeat-interval",
    default=None,
    help="How often agents report at least, e.g. '10s' (longer on fleets larger than"
    " heartbeat_budget allows); nodes are down after 3 missed.",
)
@click.option(
    "--node-token-ttl",
    default=None,
    help="How long a node token lives, e.g. '720h' (default); agents rotate it after two"
    " thirds of that. '0': never expires.",
)
@click.option(
    "--audit-retention",
    default=None,
    help="How long audit entries are kept, e.g. '2160h' (90 days, the default).",
)
@click.option(
    "--audit-max-rows",
    type=int,
    default=None,
    help="At most this many audit entries are kept (default 1000000); the oldest go first.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log as JSON lines (for journald) or readable console lines.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="PEM certificate (chain) to serve HTTPS with; needs --tls-key. SIGHUP reloads it.",
)
@click.option(
    "--tls-key", type=click.Path(path_type=Path), default=None, help="PEM key of --tls-cert."
)
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path),
    default=None,
    help="CA file: the agent endpoints require a client certificate it signed (mTLS).",
)
@click.option(
    "--allow-plain-http",
    is_flag=True,
    default=None,
    help="Serve plain HTTP on a non-loopback address (only on a trusted network).",
)
@click.option(
    "--member-id",
    default=None,
    help="This coordinator's name among those sharing a PostgreSQL database"
    " (default <hostname>:<port>).",
)
@click.option(
    "--advertise",
    default=None,
    help="URL agents, the CLI and the dashboard reach this coordinator at"
    " (default http(s)://<listen host>:<port>); shown by GET /v1/cluster.",
)
@click.option(
    "--lease-ttl",
    default=None,
    help="How long the leader's lease lasts without renewal, e.g. '3s' (the default;"
    " PostgreSQL only): a dead leader is replaced within about this long.",
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
    import structlog

    from coordinator.store.pg_errors import redact

    database = options.get("database") or ""
    if redact(database) != database:
        structlog.get_logger("fleetwave.coordinator").warning(
            "secret_on_command_line",
            flag="--database",
            hint="the URL's password is readable in ps; put the URL in FLEETWAVE_DATABASE,"
            " the config file, or leave the password to ~/.pgpass or PGPASSWORD",
        )
    for flag in ("admin_token", "join_token"):
        if options.get(flag):
            structlog.get_logger("fleetwave.coordinator").warning(
                "secret_on_command_line",
                flag="--" + flag.replace("_", "-"),
                hint="every user of this host can read it in ps; use the token file in the"
                f" data dir or FLEETWAVE_{flag.upper()}",
            )
    try:
        asyncio.run(serve(config))
    except FleetwaveError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot start: {exc}")


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
@click.option(
    "--ha",
    is_flag=True,
    help="High availability instead: 3 coordinators on a local PostgreSQL database; the"
    " leader is killed in the middle of a rollout and another one takes over.",
)
@click.option(
    "--database-url",
    envvar="FLEETWAVE_DEMO_PG",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="With --ha: the PostgreSQL server where the demo creates its own database, dropped"
    " at the end (env FLEETWAVE_DEMO_PG).",
)
def demo(agents: int, keep: bool, ha: bool, database_url: str) -> None:
    """Run the showcase: a coordinator and local agents in a temp dir; v1, v2 through canary
    and waves, then a broken v3 that is rolled back automatically. Cleans up after itself.
    With --ha: three coordinators on PostgreSQL, and the leader is killed mid-rollout."""
    if ha:
        from coordinator.demo.ha import run_ha_demo

        sys.exit(run_ha_demo(database_url, agents=agents, keep=keep))
    from coordinator.demo.runner import run_demo

    sys.exit(run_demo(agents=agents, keep=keep))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetwave")
