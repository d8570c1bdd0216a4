"""JobStatus exactly as the seed's API reference describes it (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from shared.clock import ZERO_TIME, format_time


def _parse_time(value: object) -> object:
    if isinstance(value, str) and value.startswith("0001-01-01T00:00:00"):
        return ZERO_TIME
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_time),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""RFC 3339 UTC; the zero value is ``0001-01-01T00:00:00Z`` as in the seed's Go API."""


class JobStateType(StrEnum):
    """The job's state; ``""`` is the zero value before the first decision."""

    NONE = ""
    PENDING = "pending"  # accepted, not yet planned
    QUEUED = "queued"  # no eligible node matches yet
    DEPLOYING = "deploying"  # a rollout is in progress
    RUNNING = "running"  # a service runs the desired version, healthy, on its targets
    ROLLOUT_PAUSED = "rollout_paused"  # paused by an operator or at a manual gate
    ROLLOUT_FAILED = "rollout_failed"  # the latest rollout halted on failures
    DEGRADED = "degraded"  # runs, but nodes are unhealthy or unreachable beyond tolerance
    COMPLETED = "completed"  # a batch job succeeded on its targets
    FAILED = "failed"  # a batch job failed, or a create rollout failed
    STOPPED = "stopped"  # stopped by an operator
    DELETED = "deleted"  # deleted (tombstone)


class RolloutType(StrEnum):
    """What triggered the rollout; ``""`` before the first one."""

    NONE = ""
    CREATE = "create"
    UPDATE = "update"
    RESTART = "restart"
    ROLLBACK = "rollback"


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class JobState(_Status):
    details: dict[str, str] = Field(default_factory=dict)
    message: str = ""
    state_type: JobStateType = JobStateType.NONE


class Rollout(_Status):
    canary_nodes: list[str] = Field(default_factory=list)
    canary_promoted: bool = False
    completed_at: Timestamp = ZERO_TIME
    current_wave: int = 0
    failed_nodes: int = 0
    rollback_to_version: int = 0
    started_at: Timestamp = ZERO_TIME
    total_nodes: int = 0
    total_waves: int = 0
    type: RolloutType = RolloutType.NONE
    updated_nodes: int = 0


class JobStatus(_Status):
    """The seed's ``types.JobStatus``: no field added, removed or renamed."""

    created_at: Timestamp = ZERO_TIME
    revision: int = 0
    rollout: Rollout = Field(default_factory=Rollout)
    state: JobState = Field(default_factory=JobState)
    updated_at: Timestamp = ZERO_TIME
    version: int = 0
