"""Nodes as the coordinator knows them, and what agents measure about their host."""

from __future__ import annotations

import unicodedata
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.spec import LABEL_KEY_PATTERN, fullmatch, label_map_schema
from shared.status import InputTimestamp, Timestamp

MAX_INT = 2**62
"""The largest integer an agent may send (versions, generations, counts, bytes): the store
keeps integers in SQLite's signed 64 bits, so a larger one is a 400, never a failed write."""
MAX_CPUS = 1 << 20
MAX_LABELS = 64
"""Labels one node may declare."""
MAX_LABEL_VALUE = 255
ID_SHAPE_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
"""A UUID in any case: the shape of node and token ids, which no name may have
(``coordinator.access.looks_like_an_id``), since operators name both by id or name."""


def check_node_labels(value: dict[str, str]) -> dict[str, str]:
    """``value`` when it is at most MAX_LABELS labels with valid keys and values of at most
    MAX_LABEL_VALUE characters; else raise ValueError naming the first bad one."""
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels (got {len(value)})")
    for key, label in value.items():
        if not fullmatch(LABEL_KEY_PATTERN, key):
            raise ValueError(
                f"invalid label key {key[:80]!r}: letters, digits, '_', '.', '-', '/' (max 63)"
            )
        if len(label) > MAX_LABEL_VALUE:
            raise ValueError(f"label {key!r}: value longer than {MAX_LABEL_VALUE} characters")
    return value


NODE_LABELS_SCHEMA = label_map_schema(
    additionalProperties={"type": "string", "maxLength": MAX_LABEL_VALUE},
    maxProperties=MAX_LABELS,
)
"""What ``check_node_labels`` accepts, as a JSON schema."""


class NodeStatus(StrEnum):
    PENDING = "pending"  # enrolled with a manual-approval join token; waits for `node approve`
    INITIALIZING = "initializing"  # registered, no heartbeat yet
    READY = "ready"  # heartbeating
    DOWN = "down"  # missed heartbeats for longer than the TTL
    REVOKED = "revoked"  # `node revoke`: its token is refused, it is never targeted again


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"  # may receive new job versions
    INELIGIBLE = "ineligible"  # keeps what it runs, gets nothing new


class Resources(BaseModel):
    """Capacity of a host, sent at registration and refreshed in heartbeats."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cpu_count: int = Field(default=0, ge=0, le=MAX_CPUS)
    memory_bytes: int = Field(default=0, ge=0, le=MAX_INT)
    disk_bytes: int = Field(default=0, ge=0, le=MAX_INT)


class Load(BaseModel):
    """How busy a host is right now."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # Finite: JSON has no infinity, so an inf would be stored as null and not load again.
    cpu_percent: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    load1: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    memory_used_bytes: int = Field(default=0, ge=0, le=MAX_INT)


DATA_DIR_UNWRITABLE = "data_dir_unwritable"
"""Condition: the agent cannot write its data dir (a full disk, a read-only mount); it goes on
in memory and keeps heartbeating, but what it writes there does not survive its restart."""

CONDITION_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
MAX_CONDITIONS = 8
"""Conditions one report may carry; an agent reports a handful at most."""
MAX_CONDITION_MESSAGE = 500


def clean_text(value: str) -> str:
    """``value`` safe to show in a terminal or a page: control characters become spaces,
    other invisible ones (format, private, unassigned) are dropped."""
    out = []
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            out.append(" ")
        elif not category.startswith("C"):
            out.append(char)
    return "".join(out)


class NodeCondition(BaseModel):
    """Something wrong on a node that its agent works around, reported while it lasts.

    The node stays ``ready``: its agent heartbeats and runs its workloads, but an operator
    should look (``message`` says what and why). Sent by agents, so bounded and cleaned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: str = Field(
        pattern=CONDITION_TYPE_PATTERN,
        description=f"what is wrong, e.g. `{DATA_DIR_UNWRITABLE}` (the agent cannot write its "
        "data dir)",
    )
    message: str = Field(default="", max_length=MAX_CONDITION_MESSAGE)
    since: InputTimestamp = Field(description="when the agent first saw it (the agent's clock)")

    @field_validator("message")
    @classmethod
    def _clean_message(cls, value: str) -> str:
        return clean_text(value)


class Node(BaseModel):
    """A node in ``GET /v1/nodes``."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: NodeStatus
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    load: Load = Field(default_factory=Load)
    last_heartbeat: Timestamp
    registered_at: Timestamp
    agent_version: str = ""
    conditions: list[NodeCondition] = Field(
        default_factory=list,
        description="what its agent last reported as wrong (empty: nothing); the node may "
        "still be ready",
    )
