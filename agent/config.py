"""Agent configuration: CLI flags > ``FLEETWAVE_*`` env vars > TOML file > defaults."""

from __future__ import annotations

import os
import re
import socket
import ssl
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import ConfigError
from shared.durations import Duration, parse_duration
from shared.nodes import check_node_labels
from shared.protocol import NODE_NAME_PATTERN
from shared.spec import Driver
from shared.tls import client_context, is_loopback

DEFAULT_CONFIG_FILE = Path("/etc/fleetwave/agent.toml")
DEFAULT_DATA_DIR = Path("/var/lib/fleetwave-agent")
DEFAULT_COORDINATOR = "http://127.0.0.1:7400"
DEFAULT_LISTEN = "127.0.0.1:7401"

ENV_VARS: Mapping[str, str] = {
    "FLEETWAVE_CONFIG": "config_file",
    "FLEETWAVE_COORDINATOR": "coordinators",
    "FLEETWAVE_COORDINATORS": "coordinators",
    "FLEETWAVE_JOIN_TOKEN": "join_token",
    "FLEETWAVE_JOIN_TOKEN_FILE": "join_token_file",
    "FLEETWAVE_DATA_DIR": "data_dir",
    "FLEETWAVE_NAME": "name",
    "FLEETWAVE_LABELS": "labels",
    "FLEETWAVE_LISTEN": "listen",
    "FLEETWAVE_LOG_FORMAT": "log_format",
    "FLEETWAVE_LOG_LEVEL": "log_level",
    "FLEETWAVE_LOG_MAX_BYTES": "log_max_bytes",
    "FLEETWAVE_POLL_WAIT": "poll_wait",
    "FLEETWAVE_ARTIFACT_KEEP": "artifact_keep",
    "FLEETWAVE_ARTIFACT_MAX_BYTES": "artifact_max_bytes",
    "FLEETWAVE_ON_STOP": "on_stop",
    "FLEETWAVE_WORKLOAD_SLICE": "workload_slice",
    "FLEETWAVE_CA_FILE": "ca_file",
    "FLEETWAVE_TLS_CERT": "tls_cert",
    "FLEETWAVE_TLS_KEY": "tls_key",
    "FLEETWAVE_ALLOW_PLAIN_HTTP": "allow_plain_http",
}
"""Environment variable -> option; the first one set wins when two name the same option."""

_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")

DEFAULT_DENIED_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH")
"""Variables that make any program load code of the job's choosing."""


class HostPolicy(BaseModel):
    """The ``[policy]`` table: what this host lets workloads do, whatever the coordinator
    sends (DESIGN §10). Read from the config file only; agent/policy.py applies it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_root: bool = False
    """Whether a workload or its exec checks may run as uid 0 (``user = "root"``, a user
    with uid 0, or no ``user`` on an agent running as root)."""
    allowed_users: tuple[str, ...] = ()
    """Users workloads may run as; empty: any user that exists (root only with allow_root)."""
    allowed_drivers: tuple[Driver, ...] = ()
    """Drivers jobs may use; empty: every driver."""
    allowed_commands: tuple[str, ...] = ()
    """Globs of absolute paths the program of a workload or exec check must match, after
    it is looked up on the job's PATH; ``*`` stays within one directory, ``**`` does not.
    Empty: any program."""
    denied_env: tuple[str, ...] = DEFAULT_DENIED_ENV
    """Variable names a job's ``task.env`` must not set (case-sensitive)."""

    @field_validator("allowed_commands")
    @classmethod
    def _absolute_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern.startswith("/"):
                raise ValueError(f"{pattern!r} must be an absolute path glob (starting with /)")
        return value

    @field_validator("allowed_users", "denied_env")
    @classmethod
    def _no_blank_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value


class AgentSettings(BaseModel):
    """Every agent option, validated; build it with :func:`load_settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    config_file: Path | None = Field(default=None, description="TOML config file")
    coordinators: list[str] = Field(default_factory=lambda: [DEFAULT_COORDINATOR], min_length=1)
    join_token: str = Field(default="", repr=False)
    join_token_file: Path | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    name: str = Field(default_factory=socket.gethostname, pattern=NODE_NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    listen: str = DEFAULT_LISTEN
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    poll_wait: Duration = parse_duration("30s")
    artifact_keep: int = Field(default=3, ge=1)
    """Versions whose artifacts stay on disk per job (the most recently used ones)."""
    artifact_max_bytes: int = Field(default=1 << 30, ge=1)
    """Largest artifact download; an archive may unpack to 8 times this."""
    on_stop: Literal["stop-workloads", "keep-workloads"] = "keep-workloads"
    """On SIGTERM: leave workloads running for the next agent run to adopt (the default, so
    an agent restart or upgrade never disrupts them), or stop every workload first."""
    workload_slice: str = Field(default="", pattern=r"^(?:[A-Za-z0-9:_.\-]+\.slice)?$")
    """Systemd slice in which each exec workload gets a scope of its own, out of the agent's
    cgroup (the unit file sets ``fleetwave-workloads.slice``); empty: workloads stay children
    in the agent's cgroup (agent/runtime/scope.py)."""
    ca_file: Path | None = None
    """CA certificate (PEM) that verifies an https:// coordinator; else the system's CAs."""
    tls_cert: Path | None = None
    """Client certificate (PEM) presented to the coordinator (mTLS); needs ``tls_key``."""
    tls_key: Path | None = None
    allow_plain_http: bool = False
    """Allow an http:// coordinator URL whose host is not loopback (a trusted network only)."""
    policy: HostPolicy = Field(default_factory=HostPolicy)
    """The host policy (``[policy]`` in the file; no flag or env var sets it)."""

    @field_validator("coordinators", mode="before")
    @classmethod
    def _split_coordinators(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return [str(item).strip().rstrip("/") for item in value if str(item).strip()]
        return value

    @field_validator("coordinators")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _parse_labels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            return parse_label_pairs([str(item) for item in value])
        return value

    # The coordinator's limits, so a bad label is a config error here, not a refused register.
    _labels = field_validator("labels")(check_node_labels)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        value = value.strip()
        if value == "off":
            return value
        match = _LISTEN.match(value)
        if not match or not 0 <= int(match["port"]) < 65536:
            raise ValueError(f"{value!r} must be HOST:PORT (e.g. 127.0.0.1:7401) or 'off'")
        return value

    @field_validator("poll_wait")
    @classmethod
    def _poll_wait(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than 0")
        return value

    def listen_address(self) -> tuple[str, int] | None:
        """The local endpoints' (host, port), or None when they are turned off."""
        if self.listen == "off":
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def transport_problem(settings: AgentSettings) -> str | None:
    """``option: problem`` for half a client certificate, or for an http:// coordinator on
    another machine without ``allow_plain_http``: whoever is on the path could read the
    node token and hand this root-running agent commands."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        missing = "tls_key" if settings.tls_key is None else "tls_cert"
        return f"{missing}: tls_cert and tls_key go together"
    if settings.allow_plain_http:
        return None
    for url in settings.coordinators:
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            return (
                f"coordinators: refusing plain HTTP to {url}: use https:// (with --ca-file),"
                " or set allow_plain_http = true (--allow-plain-http) on a trusted network"
            )
    return None


def coordinator_tls(settings: AgentSettings) -> ssl.SSLContext | None:
    """The context for https:// coordinators: ``ca_file`` verifies them, ``tls_cert`` is
    presented; None when neither is set (agent/transport.py then verifies against the system's CAs).
    Raise ConfigError for a transport :func:`transport_problem` refuses or an unreadable file."""
    if problem := transport_problem(settings):
        raise ConfigError(problem)
    if settings.ca_file is None and settings.tls_cert is None:
        return None
    try:
        return client_context(settings.ca_file, settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        option = "ca_file" if settings.tls_cert is None else "ca_file/tls_cert/tls_key"
        raise ConfigError(f"{option}: cannot load the TLS files: {exc}") from None


def parse_label_pairs(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; raise ValueError naming the malformed item."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, val = pair.strip().partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        labels[key.strip()] = val.strip()
    return labels


def env_options() -> dict[str, str]:
    """``FLEETWAVE_*`` variables as raw strings; the settings validators parse lists and maps."""
    values: dict[str, str] = {}
    for var, option in ENV_VARS.items():
        raw = os.environ.get(var)
        if raw is not None and raw.strip() and option not in values:
            values[option] = raw.strip()
    return values


def file_options(given: object) -> dict[str, Any]:
    """The TOML file named by the flags or env (``given``), else the default file if it
    exists; its own ``config_file`` key is ignored."""
    path = Path(str(given)) if given else DEFAULT_CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if given:
            raise ConfigError(f"config_file: {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config_file: cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config_file: {path} is not valid TOML: {exc}") from None
    data.pop("config_file", None)
    return data


def load_settings(flags: Mapping[str, Any] | None = None) -> AgentSettings:
    """Merge flags (only those given), env and file; raise ConfigError naming the bad option."""
    given = {key: value for key, value in (flags or {}).items() if value not in (None, (), [])}
    env = env_options()
    merged = file_options(given.get("config_file") or env.get("config_file")) | env | given
    try:
        return AgentSettings(**merged)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        option = ".".join(str(part) for part in err["loc"]) or "config"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown option"
            if err["loc"][:1] == ("policy",):
                message += f" (the [policy] keys are {', '.join(HostPolicy.model_fields)})"
        raise ConfigError(f"{option}: {message}") from None


def resolve_join_token(settings: AgentSettings) -> str:
    """The join token, read from ``join_token_file`` when it is not given directly."""
    if settings.join_token:
        return settings.join_token
    if settings.join_token_file is None:
        return ""
    try:
        return settings.join_token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"join_token_file: cannot read {settings.join_token_file}: {exc.strerror}"
        ) from None
