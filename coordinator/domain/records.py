"""The domain's records: jobs with their engine state, versions, nodes, assignments,
executions, events, tokens and audit entries, and the values decisions produce.

Stores persist these and nothing else; every store (memory, SQLite, PostgreSQL) keeps the
same records with the same meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import ZERO_TIME
from shared.nodes import Eligibility, Load, Node, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionState
from shared.spec import JobSpec
from shared.status import JobStatus, RolloutType, Timestamp
from shared.tokens import Token


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Phase(StrEnum):
    """Where a rollout is. ``done`` and ``halted`` are final."""

    CANARY = "canary"
    WAVES = "waves"
    DONE = "done"
    HALTED = "halted"


class Gate(StrEnum):
    """Why a rollout waits for an operator (``rollout_paused``)."""

    NONE = ""
    CANARY = "canary"  # canaries healthy, auto_promote is off: `rollout promote`
    WAVE = "wave"  # pause_between_waves = "manual": `rollout promote` (or resume)
    OPERATOR = "operator"  # `rollout pause`: `rollout resume`


class RolloutState(_Record):
    """The engine's bookkeeping for the job's latest rollout; JobStatus.rollout is derived."""

    type: RolloutType = RolloutType.NONE
    for_version: int = Field(default=0, description="the job version this rollout serves")
    target_version: int = Field(default=0, description="the version nodes are moved to")
    from_version: int = Field(default=0, description="what nodes not yet reached run (0: none)")
    generation: int = 0
    canary: list[str] = Field(default_factory=list)
    waves: list[list[str]] = Field(default_factory=list)
    phase: Phase = Phase.DONE
    current_wave: int = 0
    promoted: bool = False
    promote_full: bool = False
    gate: Gate = Gate.NONE
    gate_until: Timestamp = ZERO_TIME
    started: list[str] = Field(default_factory=list, description="nodes given the target")
    updated: list[str] = Field(default_factory=list, description="nodes that passed the gate")
    failed: dict[str, str] = Field(default_factory=dict, description="failed node id -> reason")
    skipped: dict[str, str] = Field(
        default_factory=dict,
        description="node id -> reason: unreachable past the grace window, on_unreachable = skip",
    )
    started_at: Timestamp = ZERO_TIME
    completed_at: Timestamp = ZERO_TIME
    progress_at: Timestamp = ZERO_TIME
    halted_reason: str = ""
    cause: str = Field(default="", description="for rollbacks: what triggered them")
    rolled_back_from: int = 0
    retry: RolloutState | None = Field(
        default=None, description="the halted rollout a `rollout retry` would resume"
    )

    def members(self) -> list[str]:
        return [*self.canary, *(n for wave in self.waves for n in wave)]

    def is_active(self) -> bool:
        return self.phase in (Phase.CANARY, Phase.WAVES)


class JobRecord(_Record):
    """A job: its current spec, its public status and the engine's state."""

    name: str
    spec: JobSpec
    status: JobStatus
    rollout: RolloutState = Field(default_factory=RolloutState)
    stable_version: int = 0
    stable_history: list[int] = Field(default_factory=list, description="oldest first")
    deleted: bool = False
    changed_by: str = Field(default="", description="the token that submitted the current spec")


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
    status: NodeStatus = Field(
        default=NodeStatus.INITIALIZING,
        description="liveness only (initializing, ready, down); approval and revocation are "
        "kept apart so that no heartbeat or silence can undo them (see ``api_status``)",
    )
    key_hash: str = Field(
        default="", description="hash of the agent's node key: only it renews the registration"
    )
    approved: bool = True
    revoked_at: Timestamp | None = None
    token_issued_at: Timestamp | None = None
    token_expires_at: Timestamp | None = Field(default=None, description="None: never")
    next_token_hash: str = Field(
        default="", description="a rotated token not used yet; the first use makes it current"
    )
    next_token_expires_at: Timestamp | None = None
    join_token: str = Field(default="", description="id of the join token that enrolled it")
    bound_labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels its join token bound; they win on every later registration",
    )
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    load: Load = Field(default_factory=Load)
    agent_version: str = ""
    conditions: list[NodeCondition] = Field(
        default_factory=list, description="what the agent's last accepted report said is wrong"
    )
    registered_at: Timestamp
    last_heartbeat: Timestamp = ZERO_TIME
    last_seq: int = 0
    assign_index: int = 1

    @property
    def in_fleet(self) -> bool:
        """Approved and not revoked: the engine may target it."""
        return self.approved and self.revoked_at is None

    @property
    def api_status(self) -> NodeStatus:
        if self.revoked_at is not None:
            return NodeStatus.REVOKED
        if not self.approved:
            return NodeStatus.PENDING
        return self.status

    def to_api(self) -> Node:
        return Node(
            id=self.id,
            name=self.name,
            status=self.api_status,
            eligibility=self.eligibility,
            drain=self.drain,
            labels=self.labels,
            resources=self.resources,
            load=self.load,
            last_heartbeat=self.last_heartbeat,
            registered_at=self.registered_at,
            agent_version=self.agent_version,
            conditions=self.conditions,
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
    updated_at: Timestamp = Field(
        description="when a report last changed this record (heartbeats that repeat it do not)"
    )


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
    by: str = Field(default="", description="the token whose request caused it (none: the engine)")


class AuditEntry(_Record):
    """One operator request (or a refused request) as the audit log keeps it: who, from
    where, what, and the answer. Never a secret: tokens appear by id and name only."""

    id: int = 0
    time: Timestamp
    token_id: str = ""
    token_name: str = ""
    role: str = ""
    remote: str = ""
    method: str
    path: str
    job: str = ""
    node: str = ""
    status: int = Field(default=0, description="the HTTP status; 0: the answer was not recorded")
    request_id: str = ""


class AuditOutcome(_Record):
    """How an audited request ended, and what only its handler learned."""

    entry_id: int
    status: int
    token_id: str = ""
    token_name: str = ""
    node: str = ""


class TokenRecord(Token):
    """A managed token as stored: the API's view plus the hash of its secret (never the
    secret itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_hash: str = Field(repr=False)

    def to_api(self) -> Token:
        return Token.model_validate(self.model_dump(exclude={"secret_hash"}))


@dataclass(frozen=True)
class AssignmentChange:
    """Set (``version`` not None) or remove a node's assignment for a job."""

    node_id: str
    version: int | None
    generation: int = 0


@dataclass(frozen=True)
class ReportOutcome:
    """What a report changed: whether it was accepted and which jobs saw new execution state."""

    accepted: bool
    last_seq: int
    assign_index: int
    status_changed: bool = False
    changed_jobs: frozenset[str] = field(default_factory=frozenset)
