"""The in-memory store: the fast fake behind engine and API tests.

It keeps the same records with the same meaning as the databases (the decisions come from
``coordinator.domain``, like theirs) and passes the same contract suite; it persists nothing.
Every method runs without awaiting anything in the middle, so each is atomic on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from coordinator.domain.nodes import (
    check_name_free,
    check_token_name_free,
    join_token_used,
    renewed,
    rescheduled,
    revoked,
    token_offered,
    token_promoted,
    token_revoked,
)
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
from coordinator.domain.reports import Report, decide_report
from coordinator.store import WriteHealth
from coordinator.store.changes import LiveState
from coordinator.store.mirror import Mirror
from shared.errors import Conflict, StoreError
from shared.nodes import ID_SHAPE_PATTERN, Eligibility, Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport


class MemoryStore:
    """Store in process memory; see the module docstring."""

    def __init__(self) -> None:
        self._state = Mirror()
        self._versions: dict[str, dict[int, JobVersion]] = {}
        self._events: list[Event] = []
        self._audit: list[AuditEntry] = []
        self._audit_id = 0
        self._event_listeners: list[Callable[[], None]] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def live(self) -> LiveState:
        return self._state.live()

    def write_health(self) -> WriteHealth:
        return WriteHealth()

    async def check_writable(self, now: float) -> str | None:
        return None

    # jobs

    async def get_job(self, name: str) -> JobRecord | None:
        return self._state.jobs.get(name)

    async def list_jobs(self) -> list[JobRecord]:
        return self._state.listed_jobs()

    async def save_job(
        self, job: JobRecord, *, expected_revision: int | None, new_version: JobVersion | None
    ) -> None:
        self._check_revision(job, expected_revision)
        if new_version is not None:
            versions = self._versions.setdefault(new_version.job, {})
            if new_version.version in versions:
                raise StoreError(f"version {new_version.version} of {job.name!r} exists")
            versions[new_version.version] = new_version
        self._state.put_job(job)

    def _check_revision(self, job: JobRecord, expected_revision: int | None) -> None:
        current = self._state.jobs.get(job.name)
        if expected_revision is None:
            if current is not None:
                raise Conflict(f"job {job.name!r} already exists")
        elif current is None or current.status.revision != expected_revision:
            raise Conflict(
                f"job {job.name!r} changed concurrently (expected revision {expected_revision})"
            )

    async def list_versions(self, job: str) -> list[JobVersion]:
        versions = self._versions.get(job, {})
        return [versions[v] for v in sorted(versions)]

    async def get_version(self, job: str, version: int) -> JobVersion | None:
        return self._versions.get(job, {}).get(version)

    # nodes

    async def insert_node(
        self, node: NodeRecord, *, join_token: str | None = None, events: Sequence[Event] = ()
    ) -> None:
        check_name_free(node.name, self._state.nodes_named(node.name))
        if node.id in self._state.nodes:
            raise Conflict(f"node {node.id} exists")
        if join_token is not None:
            self._state.put_token(join_token_used(self._state.tokens.get(join_token)))
        self._state.put_node(node)
        self._append(events)

    async def get_node(self, node_id: str) -> NodeRecord | None:
        return self._state.nodes.get(node_id)

    async def find_node(self, id_or_name: str) -> NodeRecord | None:
        node = self._state.nodes.get(id_or_name)
        if node is not None:
            return node
        named = self._state.nodes_named(id_or_name)
        return named[0] if named else None

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        return self._state.node_by_token(token_hash)

    async def list_nodes(self) -> list[NodeRecord]:
        return self._state.listed_nodes()

    def _node(self, node_id: str) -> NodeRecord:
        node = self._state.nodes.get(node_id)
        if node is None:
            raise StoreError(f"node {node_id} vanished")
        return node

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
        node = renewed(
            self._state.nodes.get(node_id),
            token_hash=token_hash,
            labels=labels,
            resources=resources,
            agent_version=agent_version,
            issued_at=issued_at,
            expires_at=expires_at,
        )
        if node is not None:
            self._state.put_node(node)
        return node

    async def offer_node_token(
        self, node_id: str, *, token_hash: str, expires_at: datetime | None
    ) -> None:
        self._state.put_node(token_offered(self._node(node_id), token_hash, expires_at))

    async def promote_node_token(self, node_id: str, token_hash: str, now: datetime) -> NodeRecord:
        node = self._node(node_id)
        promoted = token_promoted(node, token_hash, now)
        if promoted is None:
            return node
        self._state.put_node(promoted)
        return promoted

    async def approve_node(self, node_id: str, *, events: Sequence[Event] = ()) -> NodeRecord:
        node = self._node(node_id)
        if node.approved:
            return node
        node = node.model_copy(update={"approved": True})
        self._state.put_node(node)
        self._append(events)
        return node

    async def revoke_node(
        self, node_id: str, now: datetime, *, events: Sequence[Event] = ()
    ) -> NodeRecord:
        node = self._node(node_id)
        changed = revoked(node, now)
        if changed is not None:
            self._state.put_node(changed)
            self._append(events)
        return changed or node

    async def purge_node(self, node_id: str, *, events: Sequence[Event] = ()) -> None:
        self._state.drop_node(node_id)
        self._append(events)

    async def set_node_status(
        self, node_id: str, status: NodeStatus, *, epoch: int | None = None
    ) -> None:
        self._state.put_node(self._node(node_id).model_copy(update={"status": status}))

    async def set_node_agent_version(self, node_id: str, agent_version: str) -> None:
        node = self._node(node_id).model_copy(update={"agent_version": agent_version})
        self._state.put_node(node)

    async def set_node_scheduling(
        self,
        node_id: str,
        *,
        eligibility: Eligibility | None = None,
        drain: bool | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        node = rescheduled(self._node(node_id), eligibility=eligibility, drain=drain)
        self._state.put_node(node)
        self._append(events)

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
        node = self._node(node_id)
        existing = self._state.node_executions(node_id)
        report = Report(seq, load, resources, executions, tuple(conditions))
        decision = decide_report(node, existing, report, now)
        if decision.node is None:
            return decision.outcome
        self._state.put_node(decision.node)
        if not decision.liveness_only:
            # A heartbeat that repeats every execution changes none of them, not even
            # ``updated_at`` (the databases write it to the node only).
            for job in decision.removed:
                self._state.drop_execution(node_id, job)
            for record in decision.executions.values():
                self._state.put_execution(record)
        return decision.outcome

    # tokens

    async def insert_token(self, token: TokenRecord) -> None:
        check_token_name_free(token, self._state.tokens.values())
        self._state.put_token(token)

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._state.tokens.values(), key=lambda t: (t.created_at, t.id))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        return self._state.tokens.get(token_id)

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        return self._state.token_by_hash(secret_hash)

    async def revoke_token(self, token_id: str, now: datetime) -> TokenRecord | None:
        current = self._state.tokens.get(token_id)
        changed = None if current is None else token_revoked(current, now)
        if changed is None:
            return current
        self._state.put_token(changed)
        return changed

    # audit

    async def write_audit(
        self, entries: Sequence[AuditEntry], outcomes: Sequence[AuditOutcome]
    ) -> list[int]:
        ids = []
        for entry in entries:
            self._audit_id += 1
            ids.append(self._audit_id)
            self._audit.append(entry.model_copy(update={"id": self._audit_id}))
        by_id = {e.id: i for i, e in enumerate(self._audit)}
        for o in outcomes:
            index = by_id.get(o.entry_id)
            if index is None:
                continue
            old = self._audit[index]
            self._audit[index] = old.model_copy(
                update={
                    "status": o.status,
                    "token_id": o.token_id or old.token_id,
                    "token_name": o.token_name or old.token_name,
                    "node": o.node or old.node,
                }
            )
        return ids

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
        by_id = token is not None and re.fullmatch(ID_SHAPE_PATTERN, token) is not None

        def matches(e: AuditEntry) -> bool:
            if e.id <= after or (before is not None and e.id >= before):
                return False
            if job is not None and e.job != job:
                return False
            return token is None or (e.token_id if by_id else e.token_name) == token

        found = [e for e in self._audit if matches(e)]
        if newest_first:
            found.reverse()
        return found[:limit]

    async def prune_audit(
        self, *, before: datetime, keep_rows: int, keep_anonymous: int | None = None
    ) -> int:
        size = len(self._audit)
        kept = [e for e in self._audit if e.time >= before]
        if keep_anonymous is not None:
            anonymous = [e.id for e in kept if not e.token_id and e.status in (401, 403)]
            dropped = set(anonymous[: max(0, len(anonymous) - keep_anonymous)])
            kept = [e for e in kept if e.id not in dropped]
        self._audit = kept[max(0, len(kept) - keep_rows) :]
        return size - len(self._audit)

    # assignments and executions

    async def node_assignments(self, node_id: str) -> tuple[int, list[AssignmentRecord]]:
        node = self._state.nodes.get(node_id)
        return (node.assign_index if node else 0), self._state.node_assignments(node_id)

    async def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        return self._state.job_assignments(job)

    async def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        return self._state.job_executions(job)

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
        self._check_revision(job, expected_revision)
        indexes: dict[str, int] = {}
        for change in changes:
            node = self._state.nodes.get(change.node_id)
            if node is not None:
                indexes[change.node_id] = indexes.get(change.node_id, node.assign_index) + 1
            if change.version is None:
                self._state.drop_assignment(change.node_id, job.name)
            else:
                self._state.put_assignment(
                    AssignmentRecord(
                        node_id=change.node_id,
                        job=job.name,
                        version=change.version,
                        generation=change.generation,
                        assigned_at=now,
                    )
                )
        for node_id, index in indexes.items():
            node = self._state.nodes[node_id]
            self._state.put_node(node.model_copy(update={"assign_index": index}))
        self._state.put_job(job)
        self._append(events)
        return indexes

    # events

    async def append_events(self, events: Sequence[Event], *, epoch: int | None = None) -> None:
        self._append(events)

    def _append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        first = len(self._events) + 1
        self._events.extend(e.model_copy(update={"id": first + i}) for i, e in enumerate(events))
        for listener in self._event_listeners:
            listener()

    async def last_event_id(self) -> int:
        return len(self._events)

    def on_events(self, listener: Callable[[], None]) -> None:
        self._event_listeners.append(listener)

    async def list_events(
        self, *, job: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        found = [e for e in self._events[after:] if job is None or e.job == job]
        return found[:limit]
