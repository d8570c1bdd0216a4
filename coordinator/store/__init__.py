"""The Store port: everything the coordinator persists, behind one interface.

SQLite (``store.sqlite``) is the embedded default; a PostgreSQL implementation
follows the same contract. Every method is atomic on its own; ``apply_plan`` writes
an engine decision (job record, assignment changes, events) in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from coordinator.store.records import (
    AssignmentRecord,
    Event,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
)
from shared.nodes import Eligibility, Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport


@dataclass(frozen=True)
class ReportOutcome:
    """What a report changed: whether it was accepted and which jobs saw new execution state."""

    accepted: bool
    last_seq: int
    assign_index: int
    status_changed: bool = False
    changed_jobs: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class WriteHealth:
    """Whether writes commit: what the last failed write said (None once one committed
    again), and how many writes failed because of the storage since the store opened."""

    failing: str | None = None
    failures: int = 0


@dataclass(frozen=True)
class AssignmentChange:
    """Set (``version`` not None) or remove a node's assignment for a job."""

    node_id: str
    version: int | None
    generation: int = 0


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # health
    def write_health(self) -> WriteHealth:
        """The outcome of recent writes, without touching the storage."""
        ...

    async def check_writable(self, now: float) -> str | None:
        """None while writes commit; else what the last one failed with, after trying a
        small real write (at most about once a second of the monotonic ``now``), so that
        the store notices by itself when the storage works again."""
        ...

    # jobs
    async def get_job(self, name: str) -> JobRecord | None: ...

    async def list_jobs(self) -> list[JobRecord]: ...

    async def save_job(
        self, job: JobRecord, *, expected_revision: int | None, new_version: JobVersion | None
    ) -> None:
        """Insert (expected_revision None) or compare-and-set on revision; Conflict if stale."""
        ...

    async def list_versions(self, job: str) -> list[JobVersion]: ...

    async def get_version(self, job: str, version: int) -> JobVersion | None: ...

    # nodes
    async def insert_node(self, node: NodeRecord) -> None: ...

    async def get_node(self, node_id: str) -> NodeRecord | None: ...

    async def find_node(self, id_or_name: str) -> NodeRecord | None: ...

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None: ...

    async def list_nodes(self) -> list[NodeRecord]: ...

    async def renew_registration(
        self,
        node_id: str,
        *,
        token_hash: str,
        labels: dict[str, str],
        resources: Resources,
        agent_version: str,
    ) -> NodeRecord | None:
        """Give a node that has not reported yet a new token (and what its agent registered
        with now); None, changing nothing, once it has reported."""
        ...

    async def set_node_status(self, node_id: str, status: NodeStatus) -> None: ...

    async def set_node_agent_version(self, node_id: str, agent_version: str) -> None: ...

    async def set_node_scheduling(
        self, node_id: str, *, eligibility: Eligibility | None = None, drain: bool | None = None
    ) -> None: ...

    async def record_report(
        self,
        node_id: str,
        *,
        seq: int,
        load: Load,
        resources: Resources | None,
        executions: Sequence[ExecutionReport],
        now: datetime,
        conditions: Sequence[NodeCondition] = (),
    ) -> ReportOutcome:
        """Record a report; ``conditions`` replace the node's (an empty list clears them)."""
        ...

    # assignments and executions
    async def node_assignments(self, node_id: str) -> tuple[int, list[AssignmentRecord]]: ...

    async def job_assignments(self, job: str) -> dict[str, AssignmentRecord]: ...

    async def job_executions(self, job: str) -> dict[str, ExecutionRecord]: ...

    async def apply_plan(
        self,
        job: JobRecord,
        *,
        expected_revision: int,
        changes: Sequence[AssignmentChange],
        events: Sequence[Event],
        now: datetime,
    ) -> Mapping[str, int]:
        """Write a decision atomically; returns the new assignment index of each changed node."""
        ...

    # events
    async def append_events(self, events: Sequence[Event]) -> None: ...

    async def last_event_id(self) -> int:
        """The id of the newest stored event (0 when there is none)."""

    def on_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each committed write that stored events."""

    async def list_events(
        self, *, job: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]: ...
