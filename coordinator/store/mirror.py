"""The committed state of the hot tables, in memory, indexed the ways the coordinator reads it.

Every agent request reads its node (auth), its assignments (long-poll) and its
executions (report), and every engine step reads a whole job's nodes, assignments and
executions. The embedded store is the only writer of its database file, so it keeps
these rows here, updates them only after a transaction commits, and answers reads
without a database round trip or a JSON parse. Records are values that the coordinator
never mutates (it derives new ones with ``model_copy``), so they are shared, and so are
equal parts of them: what a node record holds that many nodes have alike (labels,
resources, an empty load or condition list, job names) is kept once (``Shared``).
"""

from __future__ import annotations

import bisect
import sys
from collections import defaultdict
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
    TokenRecord,
)
from coordinator.store.changes import ChangeLog, LiveState
from shared.nodes import Load, NodeCondition, Resources


class _PerJob(Protocol):
    @property
    def job(self) -> str: ...


R = TypeVar("R", bound=_PerJob)

SHARED_VALUES = 4096
"""Distinct label sets and resources kept for sharing; past it the cache starts over."""

NO_LOAD = Load()
NO_CONDITIONS: list[NodeCondition] = []
"""Shared by every node that reports none (records are never mutated)."""


class Shared:
    """Equal immutable parts of node records, kept once: at 10,000 nodes most nodes have
    the same label set (and its strings) and the same resources, each ~0.5 KB apart."""

    def __init__(self, limit: int = SHARED_VALUES) -> None:
        self._limit = limit
        self._labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._resources: dict[Resources, Resources] = {}
        # The ids of the values kept: a record whose parts are already the shared ones (a
        # heartbeat's copy of its node) is passed through without hashing them again. The
        # values are held by the caches, so their ids are not reused while listed.
        self._kept: set[int] = set()

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        if id(labels) in self._kept:
            return labels
        key = tuple(labels.items())
        shared = self._labels.get(key)
        if shared is None:
            if len(self._labels) >= self._limit:
                self._forget()
            shared = self._labels[key] = {sys.intern(k): sys.intern(v) for k, v in key}
            self._kept.add(id(shared))
        return shared

    def resources(self, resources: Resources) -> Resources:
        if id(resources) in self._kept:
            return resources
        shared = self._resources.get(resources)
        if shared is None:
            if len(self._resources) >= self._limit:
                self._forget()
            shared = self._resources[resources] = resources
            self._kept.add(id(shared))
        return shared

    def _forget(self) -> None:
        """Start over (the caches are full): records keep what they share already."""
        self._labels.clear()
        self._resources.clear()
        self._kept.clear()

    def node(self, node: NodeRecord) -> NodeRecord:
        """``node`` with its shareable parts replaced by the shared equal ones."""
        update: dict[str, Any] = {}
        for name in ("labels", "bound_labels"):
            value = getattr(node, name)
            shared = self.labels(value)
            if shared is not value:
                update[name] = shared
        resources = self.resources(node.resources)
        if resources is not node.resources:
            update["resources"] = resources
        if node.load is not NO_LOAD and node.load == NO_LOAD:
            update["load"] = NO_LOAD
        if not node.conditions and node.conditions is not NO_CONDITIONS:
            update["conditions"] = NO_CONDITIONS
        return node.model_copy(update=update) if update else node


class Mirror:
    """Jobs, nodes, assignments and executions as last committed; versions once read."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.versions: dict[tuple[str, int], JobVersion] = {}
        self._node_by_token: dict[str, str] = {}
        self._nodes_by_name: dict[str, tuple[str, ...]] = {}  # names are unique but rarely
        self._node_order: list[tuple[str, str]] = []  # (name, id), sorted
        self._assignments = _Pairs[AssignmentRecord]()
        self._executions = _Pairs[ExecutionRecord]()
        self.liveness_kept: set[str] = set()
        """Nodes whose newer in-memory liveness survived a write of an older copy."""
        self.tokens: dict[str, TokenRecord] = {}
        self._token_by_hash: dict[str, str] = {}
        self.fleet: dict[str, NodeRecord] = {}
        """The nodes the engine plans with: approved, not revoked."""
        self.changes = ChangeLog()
        """Nodes whose record, assignment or execution changed, for the engine."""
        self.seq_reserved: dict[str, int] = {}
        """Per node, the committed seq reservation: heartbeats up to it may be acknowledged
        from memory (see ``store.sqlite.SEQ_RESERVATION``)."""
        self.shared = Shared()

    # jobs

    def put_job(self, job: JobRecord) -> None:
        self.jobs[job.name] = job

    def listed_jobs(self) -> list[JobRecord]:
        return [self.jobs[name] for name in sorted(self.jobs)]

    # nodes

    def put_node(self, node: NodeRecord) -> None:
        old = self.nodes.get(node.id)
        if old is not None and old.last_seq > node.last_seq:
            # Written from a copy taken before a newer heartbeat reached memory: keep the
            # newer liveness (and have the store persist it again).
            node = node.model_copy(
                update={
                    "last_seq": old.last_seq,
                    "last_heartbeat": old.last_heartbeat,
                    "load": old.load,
                }
            )
            self.liveness_kept.add(node.id)
        node = self.shared.node(node)
        if old is not None and old.name != node.name:
            self._unname(old.name, node.id)
            self._node_order.remove((old.name, node.id))
        if old is None or old.name != node.name:
            self._nodes_by_name[node.name] = (*self._nodes_by_name.get(node.name, ()), node.id)
            bisect.insort(self._node_order, (node.name, node.id))
        if old is not None:
            for stale in {old.token_hash, old.next_token_hash} - {
                node.token_hash,
                node.next_token_hash,
            }:
                self._node_by_token.pop(stale, None)
        self._node_by_token[node.token_hash] = node.id
        if node.next_token_hash:
            self._node_by_token[node.next_token_hash] = node.id
        self.nodes[node.id] = node
        if node.approved and node.revoked_at is None:
            self.fleet[node.id] = node
        else:
            self.fleet.pop(node.id, None)
        self.changes.note(node.id)

    def drop_node(self, node_id: str) -> None:
        """Forget a purged node with its assignments and executions."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        self.fleet.pop(node_id, None)
        self.changes.note(node_id)
        self._node_by_token.pop(node.token_hash, None)
        self._node_by_token.pop(node.next_token_hash, None)
        self._unname(node.name, node_id)
        self._node_order.remove((node.name, node_id))
        self.seq_reserved.pop(node_id, None)
        self.liveness_kept.discard(node_id)
        self._assignments.forget_node(node_id)
        self._executions.forget_node(node_id)

    def _unname(self, name: str, node_id: str) -> None:
        holders = tuple(i for i in self._nodes_by_name.get(name, ()) if i != node_id)
        if holders:
            self._nodes_by_name[name] = holders
        else:
            self._nodes_by_name.pop(name, None)

    # tokens

    def put_token(self, token: TokenRecord) -> None:
        self.tokens[token.id] = token
        self._token_by_hash[token.secret_hash] = token.id

    def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        token_id = self._token_by_hash.get(secret_hash)
        return self.tokens.get(token_id) if token_id is not None else None

    def reserve_seq(self, node_id: str, up_to: int) -> None:
        """A committed reservation; reservations never shrink while the store is open."""
        self.seq_reserved[node_id] = max(self.seq_reserved.get(node_id, 0), up_to)

    def node_by_token(self, token_hash: str) -> NodeRecord | None:
        node_id = self._node_by_token.get(token_hash)
        return self.nodes.get(node_id) if node_id is not None else None

    def nodes_named(self, name: str) -> list[NodeRecord]:
        return [self.nodes[i] for i in self._nodes_by_name.get(name, ())]

    def listed_nodes(self) -> list[NodeRecord]:
        """Every node ordered by name, then id."""
        nodes = self.nodes
        return [nodes[i] for _, i in self._node_order]

    # assignments and executions

    def put_assignment(self, record: AssignmentRecord) -> None:
        job = sys.intern(record.job)
        if job is not record.job:
            record = record.model_copy(update={"job": job})
        self._assignments.put(record.node_id, record)
        self.changes.note(record.node_id)

    def drop_assignment(self, node_id: str, job: str) -> None:
        self._assignments.drop(node_id, job)
        self.changes.note(node_id)

    def node_assignments(self, node_id: str) -> list[AssignmentRecord]:
        """The node's assignments ordered by job."""
        by_job = self._assignments.of_node(node_id)
        return [by_job[job] for job in sorted(by_job)]

    def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        return dict(self._assignments.of_job(job))

    def put_execution(self, record: ExecutionRecord) -> None:
        job = sys.intern(record.job)
        if job is not record.job:
            record = record.model_copy(update={"job": job})
        self._executions.put(record.node_id, record)
        self.changes.note(record.node_id)

    def drop_execution(self, node_id: str, job: str) -> None:
        self._executions.drop(node_id, job)
        self.changes.note(node_id)

    def node_executions(self, node_id: str) -> dict[str, ExecutionRecord]:
        return self._executions.of_node(node_id)

    def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        return dict(self._executions.of_job(job))

    def live(self) -> LiveState:
        """Live views for the engine (see ``coordinator.store.changes``)."""
        return LiveState(
            changes=self.changes,
            fleet=MappingProxyType(self.fleet),
            job_assignments=lambda job: MappingProxyType(self._assignments.of_job(job)),
            job_executions=lambda job: MappingProxyType(self._executions.of_job(job)),
        )


class _Pairs(Generic[R]):
    """Records keyed by (node, job), reachable from either side. A node has a few jobs at
    most: its records are a tuple (48 bytes for one) rather than a dict (184)."""

    def __init__(self) -> None:
        self._by_node: dict[str, tuple[R, ...]] = {}
        self._by_job: defaultdict[str, dict[str, R]] = defaultdict(dict)

    def put(self, node_id: str, record: R) -> None:
        others = tuple(r for r in self._by_node.get(node_id, ()) if r.job != record.job)
        self._by_node[node_id] = (*others, record)
        self._by_job[record.job][node_id] = record

    def drop(self, node_id: str, job: str) -> None:
        kept = tuple(r for r in self._by_node.get(node_id, ()) if r.job != job)
        if kept:
            self._by_node[node_id] = kept
        else:
            self._by_node.pop(node_id, None)
        self._by_job[job].pop(node_id, None)

    def forget_node(self, node_id: str) -> None:
        """Drop every record of ``node_id`` and its (now empty) index entries."""
        for record in self._by_node.pop(node_id, ()):
            by_job = self._by_job.get(record.job)
            if by_job is not None:
                by_job.pop(node_id, None)
                if not by_job:
                    del self._by_job[record.job]

    def of_node(self, node_id: str) -> dict[str, R]:
        return {r.job: r for r in self._by_node.get(node_id, ())}

    def of_job(self, job: str) -> dict[str, R]:
        return self._by_job.get(job, {})
