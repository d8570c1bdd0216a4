"""Nodes as the coordinator knows them, and what agents measure about their host."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.status import Timestamp


class NodeStatus(StrEnum):
    INITIALIZING = "initializing"  # registered, no heartbeat yet
    READY = "ready"  # heartbeating
    DOWN = "down"  # missed heartbeats for longer than the TTL


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"  # may receive new job versions
    INELIGIBLE = "ineligible"  # keeps what it runs, gets nothing new


class Resources(BaseModel):
    """Capacity of a host, sent at registration and refreshed in heartbeats."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_count: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)
    disk_bytes: int = Field(default=0, ge=0)


class Load(BaseModel):
    """How busy a host is right now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_percent: float = Field(default=0.0, ge=0)
    load1: float = Field(default=0.0, ge=0)
    memory_used_bytes: int = Field(default=0, ge=0)


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
