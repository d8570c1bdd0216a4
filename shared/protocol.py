"""The agent protocol: register, long-poll assignments, report (DESIGN §5, agent endpoints)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from shared.nodes import (
    ID_SHAPE_PATTERN,
    MAX_CONDITIONS,
    MAX_INT,
    NODE_LABELS_SCHEMA,
    Load,
    NodeCondition,
    Resources,
    check_node_labels,
)
from shared.spec import NAME_PATTERN, JobSpec
from shared.status import Timestamp

NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
MAX_EXECUTIONS = 1000
"""Executions one report may carry: one per job on the node."""
MAX_MESSAGE = 2000
MIN_EXIT_CODE, MAX_EXIT_CODE = -(2**31), 2**31
MAX_PID = 2**31 - 1


HEARTBEAT_INTERVAL = (
    "seconds between heartbeats: the coordinator's heartbeat_interval, or longer when the fleet"
    " would exceed its heartbeat_budget, plus up to 10% jitter; the agent follows the latest answer"
)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Request(_Wire):
    # Strict, as the OpenAPI document says: "5" is not a number, 1 is not true.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


NodeLabels = Annotated[dict[str, str], WithJsonSchema(NODE_LABELS_SCHEMA)]


class RegisterRequest(_Request):
    join_token: str = Field(min_length=1, max_length=512, repr=False)
    name: str = Field(
        pattern=NODE_NAME_PATTERN,
        description="not shaped like a node id (a UUID)",
        json_schema_extra={"not": {"pattern": ID_SHAPE_PATTERN}},
    )
    labels: NodeLabels = Field(
        default_factory=dict,
        description="at most 64; keys like job selectors (max 63), values at most 255 characters",
    )
    resources: Resources = Field(default_factory=Resources)
    agent_version: str = Field(default="", max_length=64)
    node_key: str | None = Field(
        default=None,
        min_length=32,
        max_length=256,
        repr=False,
        description="a secret the agent made once and keeps in its data dir: registering a"
        " name again renews that node only with the same key",
    )

    _labels = field_validator("labels")(check_node_labels)


class RegisterResponse(_Wire):
    node_id: str
    node_token: str = Field(repr=False)
    heartbeat_interval: float = Field(description=HEARTBEAT_INTERVAL)
    node_token_expires_at: Timestamp | None = Field(
        default=None, description="when the node token expires (none: never)"
    )
    status: str = Field(default="initializing", description="pending: waits for approval")


class TokenRotation(_Wire):
    """``POST /v1/agent/token``: the node's next token; the current one works until the
    next one is first used."""

    node_token: str = Field(repr=False)
    node_token_expires_at: Timestamp | None = None


class Assignment(_Wire):
    """One job version this node must run. ``generation`` grows when a restart is requested."""

    job: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    generation: int = Field(default=0, ge=0)
    spec: JobSpec


class AssignmentsResponse(_Wire):
    """The node's complete desired state; a job not listed must not run on the node."""

    node_id: str
    index: int
    heartbeat_interval: float = Field(description=HEARTBEAT_INTERVAL)
    assignments: list[Assignment] = Field(default_factory=list)


class ExecutionState(StrEnum):
    """One job version on one node, as the agent sees it."""

    PENDING = "pending"  # assigned, not started yet (e.g. fetching artifacts)
    STARTING = "starting"  # running, health checks have not passed yet
    HEALTHY = "healthy"  # running and passing its checks
    UNHEALTHY = "unhealthy"  # running but failing its checks
    RESTARTING = "restarting"  # exited; waiting out the restart backoff
    FAILED = "failed"  # could not start, or exceeded its restart budget
    COMPLETED = "completed"  # batch job exited 0
    STOPPED = "stopped"  # stopped on purpose


class ExecutionReport(_Request):
    job: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1, le=MAX_INT)
    generation: int = Field(default=0, ge=0, le=MAX_INT)
    state: ExecutionState = Field(strict=False)
    message: str = Field(default="", max_length=MAX_MESSAGE)
    restarts: int = Field(default=0, ge=0, le=MAX_INT)
    exit_code: int | None = Field(default=None, ge=MIN_EXIT_CODE, le=MAX_EXIT_CODE)
    pid: int | None = Field(default=None, ge=1, le=MAX_PID)


MAX_SEQ = MAX_INT
"""The highest report seq: the store keeps seqs (and a reservation above them) in SQLite's
signed 64-bit integers, so a larger one is refused with 400 instead of failing the write
of every report committed with it."""


class ReportRequest(_Request):
    """Heartbeat plus the state of every job on the node; ``seq`` orders reports per node."""

    seq: int = Field(ge=1, le=MAX_SEQ)
    load: Load = Field(default_factory=Load)
    resources: Resources | None = None
    executions: list[ExecutionReport] = Field(
        default_factory=list, max_length=MAX_EXECUTIONS, description="one per job on the node"
    )
    agent_version: str = Field(
        default="", max_length=64, description="the agent's version; updated after upgrades"
    )
    conditions: list[NodeCondition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="what is wrong on the node right now, one per type; an empty list (or "
        "none) clears what an earlier report said",
    )

    @field_validator("conditions")
    @classmethod
    def _one_per_type(cls, value: list[NodeCondition]) -> list[NodeCondition]:
        types = [condition.type for condition in value]
        if len(set(types)) != len(types):
            raise ValueError("each condition type may appear only once")
        return value


class ReportResponse(_Wire):
    accepted: bool
    last_seq: int
    index: int
    rotate_token: bool = Field(
        default=False, description="the node token is near its expiry: rotate it now"
    )
