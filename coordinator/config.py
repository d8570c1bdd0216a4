"""Coordinator settings: TOML file, ``FLEETWAVE_*`` environment variables and flags."""

from __future__ import annotations

import socket
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coordinator.domain.heartbeats import HeartbeatPolicy
from shared.durations import Duration, parse_duration
from shared.errors import FieldError, ValidationFailed
from shared.spec import field_errors
from shared.tls import is_loopback

DEFAULT_CONFIG = Path("/etc/fleetwave/coordinator.toml")

DEFAULT_HEARTBEAT_BUDGET = 500.0
"""Heartbeats per second: 10 s intervals up to 5,000 nodes, 20 s at 10,000 (docs/operations.md)."""


class CoordinatorConfig(BaseModel):
    """Everything the coordinator daemon can be told; every field has a sane default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:7400"
    data_dir: Path = Path("/var/lib/fleetwave")
    database: str | None = Field(
        default=None, description="default sqlite:///<data_dir>/fleetwave.db"
    )
    admin_token: str | None = None
    join_token: str | None = None
    heartbeat_interval: Duration = Field(
        default=parse_duration("10s"),
        description="the shortest interval agents report at; longer when the fleet would"
        " exceed heartbeat_budget",
    )
    heartbeat_budget: float = Field(
        default=DEFAULT_HEARTBEAT_BUDGET,
        gt=0,
        allow_inf_nan=False,
        description="heartbeats per second the whole fleet may send: the interval grows to"
        " nodes / budget when that is longer than heartbeat_interval",
    )
    heartbeat_ttl_multiplier: float = Field(
        default=3.0,
        ge=2.0,
        le=20.0,
        allow_inf_nan=False,
        description="a node is down after this many of the longest heartbeat intervals it"
        " may be using",
    )
    heartbeat_ttl: Duration | None = Field(
        default=None,
        description="the least silence after which a node is down; default"
        " heartbeat_ttl_multiplier x the node's heartbeat interval",
    )
    node_token_ttl: Duration = Field(
        default=parse_duration("720h"),
        description="how long a node token lives ('0': forever); agents rotate it after 2/3",
    )
    audit_retention: Duration = Field(
        default=parse_duration("2160h"), description="audit entries older than this are dropped"
    )
    audit_max_rows: int = Field(
        default=1_000_000, ge=1000, le=10**9, description="at most this many audit entries"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    log_format: str = Field(default="console", pattern="^(json|console)$")
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain): serve HTTPS")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        default=None, description="CA whose client certificates the agent endpoints require"
    )
    allow_plain_http: bool = False
    member_id: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
        description="this coordinator's name among those sharing a database;"
        " default <hostname>:<port>",
    )
    advertise: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s/]+/?$",
        description="the URL agents, the CLI and the dashboard reach this coordinator at;"
        " default http(s)://<listen host, or the hostname for 0.0.0.0>:<port>",
    )
    lease_ttl: Duration = Field(
        default=parse_duration("3s"),
        description="how long the leader's lease lasts without renewal (PostgreSQL only):"
        " a dead leader is replaced within about this long",
    )

    @field_validator("heartbeat_interval")
    @classmethod
    def _heartbeat_interval(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=10):
            raise ValueError("must be at least 10ms")
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(seconds=60):
            raise ValueError("must be between 1s and 60s")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid listen address {value!r}: use HOST:PORT")
        return value

    @property
    def tls(self) -> bool:
        """Whether the coordinator serves HTTPS."""
        return self.tls_cert is not None

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def member_name(self) -> str:
        return self.member_id or f"{socket.gethostname()}:{self.port}"

    @property
    def advertise_url(self) -> str:
        if self.advertise:
            return self.advertise.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'fleetwave.db'}"

    @field_validator("node_token_ttl")
    @classmethod
    def _node_token_ttl(cls, value: timedelta) -> timedelta:
        if value and value < timedelta(seconds=3):
            raise ValueError("must be at least 3s (or '0' for tokens that never expire)")
        return value

    @property
    def heartbeat_policy(self) -> HeartbeatPolicy:
        """How heartbeat intervals and the node TTL follow the fleet's size."""
        return HeartbeatPolicy(
            interval=self.heartbeat_interval.total_seconds(),
            budget=self.heartbeat_budget,
            ttl_multiplier=self.heartbeat_ttl_multiplier,
            ttl_floor=self.heartbeat_ttl.total_seconds() if self.heartbeat_ttl else 0.0,
        )


def load_config(
    path: Path | None, env: dict[str, str], overrides: dict[str, Any]
) -> CoordinatorConfig:
    """Merge file < env < flags; raise ValidationFailed naming each bad option."""
    data: dict[str, Any] = {}
    file = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if file is not None:
        try:
            data.update(tomllib.loads(file.read_text()))
        except FileNotFoundError:
            raise ValidationFailed(
                [FieldError(field="--config", message=f"file {file} does not exist")]
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ValidationFailed(
                [FieldError(field="--config", message=f"{file}: invalid TOML: {exc}")]
            ) from None
    for key in CoordinatorConfig.model_fields:
        value = env.get(f"FLEETWAVE_{key.upper()}")
        if value:
            data[key] = value
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = CoordinatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None
    if problems := transport_problems(config):
        raise ValidationFailed(problems)
    return config


def transport_problems(config: CoordinatorConfig) -> list[FieldError]:
    """What is wrong with how the coordinator would be reached: half a TLS setup, or plain
    HTTP on an address other machines can reach without the operator saying so."""
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        return [FieldError(field=missing, message="tls_cert and tls_key go together")]
    if config.tls_client_ca is not None and not config.tls:
        message = "needs tls_cert and tls_key: client certificates are checked over TLS"
        return [FieldError(field="tls_client_ca", message=message)]
    if not config.tls and not config.allow_plain_http and not is_loopback(config.host):
        message = (
            f"refusing plain HTTP on non-loopback address {config.listen}: give --tls-cert"
            " and --tls-key, or --allow-plain-http (allow_plain_http = true) on a trusted network"
        )
        return [FieldError(field="listen", message=message)]
    return []
