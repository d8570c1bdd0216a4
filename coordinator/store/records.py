"""What the store keeps: jobs with their engine state, versions, nodes, assignments, executions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import ZERO_TIME
from shared.nodes import Eligibility, Load, Node, NodeStatus, Resources
from shared.protocol import ExecutionState
from shared.spec import JobSpec
from shared.status import JobStatus, Timestamp


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RolloutState(_Record):
    """The engine's private bookkeeping for the job's latest rollout (not part of JobStatus)."""

    target_version: int = 0
    generation: int = 0
    nodes: list[str] = Field(default_factory=list, description="target node ids at rollout start")
    updated: list[str] = Field(default_factory=list, description="nodes that passed the gate")
    failed: dict[str, str] = Field(default_factory=dict, description="failed node id -> reason")
    halted_reason: str = ""


class JobRecord(_Record):
    """A job: its current spec, its public status and the engine's state."""

    name: str
    spec: JobSpec
    status: JobStatus
    rollout: RolloutState = Field(default_factory=RolloutState)
    stable_version: int = 0
    deleted: bool = False


class JobVersion(_Record):
    """One immutable version of a job's spec."""

    job: str
    version: int
    spec: JobSpec
    created_at: Timestamp


class NodeRecord(_Record):
    id: str
    name: str
    token_hash: str
    status: NodeStatus = NodeStatus.INITIALIZING
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    load: Load = Field(default_factory=Load)
    agent_version: str = ""
    registered_at: Timestamp
    last_heartbeat: Timestamp = ZERO_TIME
    last_seq: int = 0
    assign_index: int = 1

    def to_api(self) -> Node:
        return Node(
            id=self.id,
            name=self.name,
            status=self.status,
            eligibility=self.eligibility,
            drain=self.drain,
            labels=self.labels,
            resources=self.resources,
            load=self.load,
            last_heartbeat=self.last_heartbeat,
            registered_at=self.registered_at,
            agent_version=self.agent_version,
        )


class AssignmentRecord(_Record):
    """The version of a job a node must run; ``assigned_at`` starts its healthy deadline."""

    node_id: str
    job: str
    version: int
    generation: int = 0
    assigned_at: Timestamp


class ExecutionRecord(_Record):
    """The last reported state of a job on a node, with coordinator-side timing."""

    node_id: str
    job: str
    version: int
    generation: int = 0
    state: ExecutionState
    message: str = ""
    restarts: int = 0
    exit_code: int | None = None
    since: Timestamp = Field(description="when the coordinator first saw this state for this run")
    updated_at: Timestamp


class Event(_Record):
    """One recorded transition: job state, rollout step or node change."""

    id: int = 0
    time: Timestamp
    job: str = ""
    node: str = ""
    kind: str
    old: str = ""
    new: str = ""
    reason: str = ""
