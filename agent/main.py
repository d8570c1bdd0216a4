"""Composition root: parse flags, load config, configure logging and run the agent daemon."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import click
import structlog

from agent.config import AgentSettings, coordinator_tls, load_settings, resolve_join_token
from agent.daemon import Agent, run_until_stopped
from agent.errors import ConfigError
from agent.identity import IdentityStore
from agent.notify import SystemdNotifier, unset_systemd_environment
from shared.logsetup import configure_logging

log = structlog.get_logger("agent.main")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file [env FLEETWAVE_CONFIG; default /etc/fleetwave/agent.toml, "
    "ignored when missing].",
)
@click.option(
    "--coordinator",
    "coordinators",
    multiple=True,
    metavar="URL",
    help="Coordinator URL; repeat for several (tried in turn) "
    "[env FLEETWAVE_COORDINATOR, comma-separated; default http://127.0.0.1:7400].",
)
@click.option(
    "--join-token",
    metavar="TOKEN",
    help="Token that lets this node register; visible to every user in ps, so prefer "
    "[env FLEETWAVE_JOIN_TOKEN] or join_token_file / FLEETWAVE_JOIN_TOKEN_FILE.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Node identity, execution state, job dirs and logs "
    "[env FLEETWAVE_DATA_DIR; default /var/lib/fleetwave-agent].",
)
@click.option(
    "--name",
    metavar="NAME",
    help="Node name; it stays this node's (its key in the data dir proves it) "
    "[env FLEETWAVE_NAME; default the hostname].",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Node label for job targeting; repeat for several [env FLEETWAVE_LABELS 'k=v,k2=v2'].",
)
@click.option(
    "--listen",
    metavar="HOST:PORT|off",
    help="Local /healthz, /readyz and /metrics endpoints "
    "[env FLEETWAVE_LISTEN; default 127.0.0.1:7401].",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    help="Log output [env FLEETWAVE_LOG_FORMAT; default json unless stderr is a terminal].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Minimum log level [env FLEETWAVE_LOG_LEVEL; default info].",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificate (PEM) that verifies an https:// coordinator "
    "[env FLEETWAVE_CA_FILE; default the system's CAs].",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Client certificate (PEM) for a coordinator that requires mTLS; needs --tls-key "
    "[env FLEETWAVE_TLS_CERT].",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key of --tls-cert [env FLEETWAVE_TLS_KEY].",
)
@click.option(
    "--allow-plain-http",
    is_flag=True,
    default=None,
    help="Allow an http:// coordinator URL on another host (trusted networks only) "
    "[env FLEETWAVE_ALLOW_PLAIN_HTTP].",
)
def cli(**flags: Any) -> None:
    """Fleetwave node agent: runs the job versions the coordinator assigns to this node."""
    try:
        settings = load_settings(flags)
        join_token = resolve_join_token(settings)
        check_can_register(settings, join_token)
        coordinator_ssl = coordinator_tls(settings)
    except ConfigError as exc:
        click.echo(f"fleetwave-agent: {exc}", err=True)
        sys.exit(2)
    json_logs = settings.log_format == "json" or (
        settings.log_format is None and not sys.stderr.isatty()
    )
    configure_logging(json=json_logs, level=settings.log_level)
    if flags.get("join_token"):
        log.warning(
            "secret_on_command_line",
            flag="--join-token",
            hint="every user of this host can read it in ps; use join_token_file or"
            " FLEETWAVE_JOIN_TOKEN",
        )
    try:
        clean = asyncio.run(serve(settings, join_token, coordinator_ssl))
    except OSError as exc:
        log.error("agent_start_failed", error=str(exc))
        sys.exit(1)
    sys.exit(0 if clean else 1)


def check_can_register(settings: AgentSettings, join_token: str) -> None:
    """A node without an identity needs a join token to register; say so before starting."""
    if not join_token and IdentityStore(settings.data_dir).load() is None:
        raise ConfigError(
            "join_token: required for the first registration"
            " (--join-token, FLEETWAVE_JOIN_TOKEN or join_token_file)"
        )


async def serve(
    settings: AgentSettings, join_token: str, coordinator_ssl: ssl.SSLContext | None = None
) -> bool:
    """Run the agent until SIGTERM or SIGINT; the handlers only set an event.

    Returns False when the agent stopped because one of its loops died.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP (`systemctl reload`): load the client certificate again; never die of it.
    loop.add_signal_handler(signal.SIGHUP, reload_tls, settings, coordinator_ssl)
    # The notifier keeps systemd's variables; workloads and checks must never see them.
    notifier = SystemdNotifier()
    unset_systemd_environment()
    agent = Agent(
        settings, join_token=join_token, notifier=notifier, coordinator_ssl=coordinator_ssl
    )
    return await run_until_stopped(agent, stop, stop_workloads=settings.on_stop == "stop-workloads")


def reload_tls(settings: AgentSettings, ctx: ssl.SSLContext | None) -> None:
    """SIGHUP: load ``tls_cert``/``tls_key`` again into the context every new connection to
    the coordinator uses (open ones keep theirs). A bad file keeps the old pair; without a
    client certificate there is nothing to load, and the signal is logged and ignored."""
    if ctx is None or settings.tls_cert is None or settings.tls_key is None:
        log.info("reload_ignored", reason="no client certificate configured")
        return
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        log.error("tls_reload_failed", cert=str(settings.tls_cert), error=str(exc))
        return
    log.info("tls_reloaded", cert=str(settings.tls_cert))


def main() -> None:
    """The ``fleetwave-agent`` console script."""
    cli(prog_name="fleetwave-agent")
