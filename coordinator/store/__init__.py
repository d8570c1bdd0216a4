"""The Store port: everything the coordinator persists, behind one interface.

Stores persist and read; they decide nothing. What a report, a registration or a token
rotation *means* is decided by the pure functions of ``coordinator.domain``, which every
store calls on its latest committed state inside its write transaction. Three stores pass
one contract suite (tests/coordinator/store/test_contract.py): ``store.memory`` (the fast
fake), ``store.sqlite`` (the embedded default) and ``store.postgres`` (HA). Every method is
atomic on its own; ``apply_plan`` writes a decision (job record, assignment changes,
events) in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from coordinator.domain.records import (
    AssignmentChange,
    AssignmentRecord,
    AuditEntry,
    AuditOutcome,
    Event,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
    ReportOutcome,
    TokenRecord,
)
from coordinator.store.changes import LiveState
from shared.nodes import Eligibility, Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport


@dataclass(frozen=True)
class WriteHealth:
    """Whether writes commit: what the last failed write said (None once one committed
    again), and how many writes failed because of the storage since the store opened."""

    failing: str | None = None
    failures: int = 0


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def live(self) -> LiveState | None:
        """Live views of the nodes, assignments and executions with a change log, when the
        store holds them in memory (the engine then plans from what changed); None when it
        does not (PostgreSQL)."""
        ...

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
    async def insert_node(
        self, node: NodeRecord, *, join_token: str | None = None, events: Sequence[Event] = ()
    ) -> None:
        """Add a node, with ``events``; NameTaken if any node holds its name. With
        ``join_token`` (a managed token's id), count one use of it in the same transaction:
        Unauthorized when it is used up or revoked meanwhile."""
        ...

    async def get_node(self, node_id: str) -> NodeRecord | None: ...

    async def find_node(self, id_or_name: str) -> NodeRecord | None: ...

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        """The node whose current or offered (rotated, not yet used) token has this hash."""
        ...

    async def list_nodes(self) -> list[NodeRecord]: ...

    async def renew_registration(
        self,
        node_id: str,
        *,
        token_hash: str,
        labels: dict[str, str],
        resources: Resources,
        agent_version: str,
        issued_at: datetime,
        expires_at: datetime | None,
    ) -> NodeRecord | None:
        """Give a node a new token (and what its agent registered with now); None, changing
        nothing, when it is gone or revoked."""
        ...

    async def offer_node_token(
        self, node_id: str, *, token_hash: str, expires_at: datetime | None
    ) -> None:
        """Offer a rotated token; the current one stays valid until the new one is used."""
        ...

    async def promote_node_token(self, node_id: str, token_hash: str, now: datetime) -> NodeRecord:
        """The offered token was used: it becomes the node's only token."""
        ...

    # An operator's change of a node is written with its ``events`` in one transaction:
    # approve and revoke write them only when they change the node.

    async def approve_node(self, node_id: str, *, events: Sequence[Event] = ()) -> NodeRecord: ...

    async def revoke_node(
        self, node_id: str, now: datetime, *, events: Sequence[Event] = ()
    ) -> NodeRecord: ...

    async def purge_node(self, node_id: str, *, events: Sequence[Event] = ()) -> None:
        """Forget a node with its assignments and executions (events stay)."""
        ...

    async def set_node_status(
        self, node_id: str, status: NodeStatus, *, epoch: int | None = None
    ) -> None: ...

    async def set_node_agent_version(self, node_id: str, agent_version: str) -> None: ...

    async def set_node_scheduling(
        self,
        node_id: str,
        *,
        eligibility: Eligibility | None = None,
        drain: bool | None = None,
        events: Sequence[Event] = (),
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

    # tokens
    async def insert_token(self, token: TokenRecord) -> None:
        """Conflict if a usable token has the same name."""
        ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...

    async def revoke_token(self, token_id: str, now: datetime) -> TokenRecord | None: ...

    # audit
    async def write_audit(
        self, entries: Sequence[AuditEntry], outcomes: Sequence[AuditOutcome]
    ) -> list[int]:
        """Insert ``entries`` and complete earlier ones with their answers, in one
        transaction; the new entries' ids in order."""
        ...

    async def list_audit(
        self,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
        job: str | None = None,
        token: str | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """At most ``limit`` entries with ids between ``after`` and ``before`` (both excluded):
        the oldest of them, oldest first, or with ``newest_first`` the newest, newest first.
        ``token`` is a token's id when shaped like one, else its name."""
        ...

    async def prune_audit(
        self, *, before: datetime, keep_rows: int, keep_anonymous: int | None = None
    ) -> int:
        """Drop entries older than ``before``, refusals of requests without a valid token
        beyond the newest ``keep_anonymous``, and then all but the newest ``keep_rows``."""
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
        epoch: int | None = None,
    ) -> Mapping[str, int]:
        """Write a decision atomically; returns the new assignment index of each changed node.

        ``epoch``: the leadership epoch of the engine that made the decision. A store shared
        by several coordinators (PostgreSQL) checks in the same transaction that it is still
        the current one and raises ``Fenced`` otherwise; the others have one coordinator and
        ignore it. The same holds for ``set_node_status`` and ``append_events``."""
        ...

    # events
    async def append_events(self, events: Sequence[Event], *, epoch: int | None = None) -> None: ...

    async def last_event_id(self) -> int:
        """The id of the newest stored event (0 when there is none)."""

    def on_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each committed write that stored events."""

    async def list_events(
        self, *, job: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]: ...
