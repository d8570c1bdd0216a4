"""Models of the JSON bodies that handlers build as plain dicts, for the OpenAPI document.

The handlers answer with dicts (cheap to grow); these models say what those dicts hold.
``tests/coordinator/test_openapi.py`` validates real responses against the schemas made from
them, so a handler that changes its body without changing its model fails a test.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coordinator.domain.records import AuditEntry, Event, Gate, JobVersion, Phase
from shared.nodes import Eligibility, Node
from shared.protocol import ExecutionState
from shared.spec import JobSpec, JobType
from shared.status import JobStatus, RolloutType, Timestamp
from shared.tokens import Token


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Request(_Body):
    """A request body: handlers validate with it, so it is exactly what the document says."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ProbeStatus(_Body):
    """Liveness or readiness: ``ok``, ``ready``, ``starting`` or ``storage_failing``."""

    status: Literal["ok", "ready", "starting", "storage_failing"]
    error: str | None = Field(
        default=None, description="with `storage_failing`: what the last failed write said"
    )
    role: Literal["leader", "follower"] | None = Field(
        default=None,
        description="readiness: whether this coordinator leads (runs the engine) or follows;"
        " both serve the whole API",
    )


class ClusterLeader(_Body):
    id: str = Field(description="the leader's member id; empty while nobody leads")
    address: str = Field(description="the URL the leader advertises")


class ClusterMember(_Body):
    id: str
    address: str
    role: Literal["leader", "follower"]
    last_seen: Timestamp = Field(description="its last lease attempt, by the database's clock")


class ClusterView(_Body):
    """The coordinators sharing this database (one, with SQLite) and which one leads."""

    leader: ClusterLeader
    epoch: int = Field(
        description="the leadership epoch: it grows at every takeover (0: SQLite, one"
        " coordinator without a lease)"
    )
    members: list[ClusterMember]
    member: str = Field(description="the id of the coordinator that answered")


class JobSummary(_Body):
    """One job in ``GET /v1/jobs``."""

    name: str
    type: JobType
    stable_version: int = Field(description="last version whose rollout completed (0: none)")
    status: JobStatus


class JobList(_Body):
    jobs: list[JobSummary]


class JobDetail(JobSummary):
    """A job's summary plus its current spec with every default filled in."""

    spec: JobSpec


class SubmitResult(_Body):
    """The answer to ``PUT /v1/jobs/{name}``."""

    name: str
    version: int
    revision: int
    changed: bool = Field(description="false when the spec was identical: nothing was stored")
    status: JobStatus


class VersionList(_Body):
    """Every stored version of a job, oldest first."""

    versions: list[JobVersion]


class ExecutionView(_Body):
    """What the node's agent last reported for the job."""

    version: int
    generation: int
    state: ExecutionState
    message: str
    restarts: int
    exit_code: int | None
    since: Timestamp = Field(description="when the coordinator first saw this state for this run")
    updated_at: Timestamp


class JobNode(_Body):
    """A node that is assigned the job or reports running it."""

    node_id: str
    node_name: str = Field(description="empty when the node is gone")
    node_status: str = Field(description="initializing, ready or down; empty when gone")
    assigned_version: int | None
    assigned_at: Timestamp | None
    execution: ExecutionView | None


class JobNodeList(_Body):
    nodes: list[JobNode]


class ActionResult(_Body):
    """The job's status after an operator action was applied and the engine reacted."""

    name: str
    status: JobStatus


class PromoteRequest(_Request):
    full: bool = Field(default=False, description="skip the remaining wave gates too")


class RollbackRequest(_Request):
    to_version: int | None = Field(
        default=None, ge=1, description="the version to return to (default: the stable one)"
    )


class SpecChange(_Body):
    """One changed field of the spec, by dotted path; ``null`` when absent on that side."""

    field: str
    old: Any
    new: Any


class NodeRef(_Body):
    id: str
    name: str


class PlannedRollout(_Body):
    type: Literal["", "create", "update"] = Field(description="empty when nothing would change")
    from_version: int
    total_nodes: int
    canary: list[NodeRef]
    waves: list[list[NodeRef]]


class PlanPreview(_Body):
    """What submitting the spec would do; nothing is stored."""

    name: str
    exists: bool
    changed: bool
    current_version: int
    next_version: int
    diff: list[SpecChange]
    rollout: PlannedRollout
    warnings: list[str]


class RolloutNode(_Body):
    """One node of a wave (or the canary set) and how it fares in the rollout."""

    id: str
    name: str
    node_status: str = Field(description="initializing, ready, down, or gone")
    assigned_version: int | None
    execution: ExecutionState | None
    running_version: int | None
    message: str
    restarts: int
    result: Literal["updated", "failed", "skipped", "in_progress", "waiting"]
    reason: str


class WaveView(_Body):
    wave: int = Field(description="1-based")
    state: Literal["pending", "active", "passed", "halted"]
    nodes: list[RolloutNode]


class CanaryView(_Body):
    promoted: bool
    state: Literal["", "active", "passed"]
    nodes: list[RolloutNode]


class RolloutView(_Body):
    """The job's latest rollout wave by wave, with each node's assignment and result."""

    type: RolloutType
    phase: Phase
    for_version: int
    target_version: int
    stable_version: int
    from_version: int
    generation: int
    gate: Gate
    paused_reason: str
    halted_reason: str
    cause: str
    rolled_back_from: int
    current_wave: int
    total_waves: int
    next_wave_at: str | None = Field(description="when a timed wave gate opens")
    started_at: Timestamp
    completed_at: Timestamp
    canary: CanaryView
    waves: list[WaveView]
    can_retry: bool


class EventPage(_Body):
    """Stored events after ``after``, oldest first (``Accept: application/json``)."""

    events: list[Event]
    last_id: int = Field(description="pass as ?after= to read on")


class NodeList(_Body):
    nodes: list[Node]


class NodeAssignment(_Body):
    job: str
    version: int
    generation: int
    assigned_at: Timestamp


class NodeDetail(Node):
    """A node plus the job versions assigned to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    assignments: list[NodeAssignment]


class DrainRequest(_Request):
    enable: bool = Field(default=True, description="false ends the drain")


class EligibilityRequest(_Request):
    eligibility: Eligibility = Field(strict=False)


class TokenList(BaseModel):
    tokens: list[Token]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    last_id: int = Field(
        description="the last entry's id (none: where the page started): pass it as `after` "
        "for the next page, or with `order=desc` as `before` for the next, older one"
    )
