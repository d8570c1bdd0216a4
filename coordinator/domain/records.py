"""The domain's records: jobs with their engine state, versions, nodes, assignments,
executions, events, tokens and audit entries, and the values decisions produce.

Stores persist these and nothing else; every store (memory, SQLite, PostgreSQL) keeps the
same records with the same meaning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.clock import ZERO_TIME
from shared.nodes import Eligibility, Load, Node, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionState
from shared.spec import JobSpec
from shared.status import JobStatus, RolloutType, Timestamp
from shared.tokens import Token


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlottedRecord:
    """Base of the records that exist once per node or per (node, job): frozen, slotted
    dataclasses instead of pydantic models, with the part of pydantic's API the stores use.

    At 10,000 nodes the coordinator holds tens of thousands of them: a pydantic model keeps a
    ``__dict__`` and a fields-set per instance (~1-1.8 KB for a node), a slotted dataclass
    only its field pointers. Copies are ``dataclasses.replace`` (unvalidated, like pydantic's
    ``model_copy``); the database's JSON is read and written through a cached pydantic
    TypeAdapter, so what is stored stays validated and keeps its format.
    """

    __slots__ = ()
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    _adapters: ClassVar[dict[type, TypeAdapter[Any]]] = {}
    _fields: ClassVar[dict[type, frozenset[str]]] = {}

    @classmethod
    def _adapter(cls) -> TypeAdapter[Self]:
        adapter = SlottedRecord._adapters.get(cls)
        if adapter is None:
            adapter = SlottedRecord._adapters[cls] = TypeAdapter(cls)
        return adapter

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A copy with ``update``'s fields replaced (not validated, as pydantic's).

        Field by field into a new instance: every report copies its node, and
        ``dataclasses.replace`` (which goes through ``__init__`` with every field as a
        keyword) cost 15-20 microseconds a copy of a node record, a twentieth of a report."""
        if not update:
            return self
        cls = type(self)
        names = SlottedRecord._fields.get(cls)
        if names is None:
            names = SlottedRecord._fields[cls] = frozenset(
                f.name
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
        if not update.keys() <= names:
            unknown = ", ".join(sorted(update.keys() - names))
            raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
        copy = object.__new__(cls)
        for name in names:
            object.__setattr__(copy, name, update[name] if name in update else getattr(self, name))
        return copy

    def model_dump(
        self, *, mode: Literal["python", "json"] = "python", exclude: set[str] | None = None
    ) -> dict[str, Any]:
        dumped: dict[str, Any] = self._adapter().dump_python(self, mode=mode, exclude=exclude)
        return dumped

    def model_dump_json(self) -> str:
        return self._adapter().dump_json(self).decode()

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        return cls._adapter().validate_python(data)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes) -> Self:
        return cls._adapter().validate_json(json_data)


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

    def member_count(self) -> int:
        return len(self.canary) + sum(len(wave) for wave in self.waves)

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


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord(SlottedRecord):
    id: str
    name: str
    token_hash: str
    # Liveness only (initializing, ready, down); approval and revocation are kept apart so
    # that no heartbeat or silence can undo them (see ``api_status``).
    status: NodeStatus = NodeStatus.INITIALIZING
    key_hash: str = ""
    """Hash of the agent's node key: only it renews the registration."""
    approved: bool = True
    revoked_at: Timestamp | None = None
    token_issued_at: Timestamp | None = None
    token_expires_at: Timestamp | None = None
    """None: never."""
    next_token_hash: str = ""
    """A rotated token not used yet; the first use makes it current."""
    next_token_expires_at: Timestamp | None = None
    join_token: str = ""
    """Id of the join token that enrolled it."""
    bound_labels: dict[str, str] = field(default_factory=dict)
    """Labels its join token bound; they win on every later registration."""
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    load: Load = field(default_factory=Load)
    agent_version: str = ""
    conditions: list[NodeCondition] = field(default_factory=list)
    """What the agent's last accepted report said is wrong."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignmentRecord(SlottedRecord):
    """The version of a job a node must run; ``assigned_at`` starts its healthy deadline."""

    node_id: str
    job: str
    version: int
    generation: int = 0
    assigned_at: Timestamp


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRecord(SlottedRecord):
    """The last reported state of a job on a node, with coordinator-side timing."""

    node_id: str
    job: str
    version: int
    generation: int = 0
    state: ExecutionState
    message: str = ""
    restarts: int = 0
    exit_code: int | None = None
    since: Timestamp
    """When the coordinator first saw this state for this run."""
    updated_at: Timestamp
    """When a report last changed this record (heartbeats that repeat it do not)."""


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
