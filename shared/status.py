"""JobStatus exactly as the seed's API reference describes it (DESIGN §4)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
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

RFC3339_PATTERN = (
    r"^(?!000[01]|9999)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""An RFC 3339 date-time (``format: date-time``) that is a Python datetime in UTC too: years
0002 to 9998 (no offset pushes it out of range), no leap second."""


def parse_rfc3339(value: object) -> datetime:
    """``value`` as an aware datetime when it is a string RFC3339_PATTERN matches and a real
    date; ValueError otherwise (no numbers, no dates without a time, no time without an offset).
    A naive datetime built in Python (never JSON) is UTC."""
    if isinstance(value, str) and re.fullmatch(RFC3339_PATTERN, value) is not None:
        value = datetime.fromisoformat(value.upper())
    if not isinstance(value, datetime):
        raise ValueError("must be an RFC 3339 date-time such as '2026-01-02T15:04:05Z'")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


InputTimestamp = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""A timestamp an agent sends: exactly RFC3339_PATTERN, as the OpenAPI document says."""


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
