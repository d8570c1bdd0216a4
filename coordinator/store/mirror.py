"""The committed state of the hot tables, in memory, indexed the ways the coordinator reads it.

Every agent request reads its node (auth), its assignments (long-poll) and its
executions (report), and every engine step reads a whole job's nodes, assignments and
executions. The embedded store is the only writer of its database file, so it keeps
these rows here, updates them only after a transaction commits, and answers reads
without a database round trip or a JSON parse. Records are pydantic models that the
coordinator never mutates (it derives new ones with ``model_copy``), so they are shared.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Generic, TypeVar

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
    TokenRecord,
)

R = TypeVar("R")


class Mirror:
    """Jobs, nodes, assignments and executions as last committed; versions once read."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.versions: dict[tuple[str, int], JobVersion] = {}
        self._node_by_token: dict[str, str] = {}
        self._nodes_by_name: defaultdict[str, set[str]] = defaultdict(set)
        self._node_order: list[tuple[str, str]] = []  # (name, id), sorted
        self._assignments = _Pairs[AssignmentRecord]()
        self._executions = _Pairs[ExecutionRecord]()
        self.liveness_kept: set[str] = set()
        """Nodes whose newer in-memory liveness survived a write of an older copy."""
        self.tokens: dict[str, TokenRecord] = {}
        self._token_by_hash: dict[str, str] = {}
        self.seq_reserved: dict[str, int] = {}
        """Per node, the committed seq reservation: heartbeats up to it may be acknowledged
        from memory (see ``store.sqlite.SEQ_RESERVATION``)."""

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
        if old is not None and old.name != node.name:
            self._nodes_by_name[old.name].discard(node.id)
            self._node_order.remove((old.name, node.id))
        if old is None or old.name != node.name:
            self._nodes_by_name[node.name].add(node.id)
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

    def drop_node(self, node_id: str) -> None:
        """Forget a purged node with its assignments and executions."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        self._node_by_token.pop(node.token_hash, None)
        self._node_by_token.pop(node.next_token_hash, None)
        holders = self._nodes_by_name[node.name]
        holders.discard(node_id)
        if not holders:
            del self._nodes_by_name[node.name]
        self._node_order.remove((node.name, node_id))
        self.seq_reserved.pop(node_id, None)
        self.liveness_kept.discard(node_id)
        self._assignments.forget_node(node_id)
        self._executions.forget_node(node_id)

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
        self._assignments.put(record.node_id, record.job, record)

    def drop_assignment(self, node_id: str, job: str) -> None:
        self._assignments.drop(node_id, job)

    def node_assignments(self, node_id: str) -> list[AssignmentRecord]:
        """The node's assignments ordered by job."""
        by_job = self._assignments.of_node(node_id)
        return [by_job[job] for job in sorted(by_job)]

    def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        return dict(self._assignments.of_job(job))

    def put_execution(self, record: ExecutionRecord) -> None:
        self._executions.put(record.node_id, record.job, record)

    def drop_execution(self, node_id: str, job: str) -> None:
        self._executions.drop(node_id, job)

    def node_executions(self, node_id: str) -> dict[str, ExecutionRecord]:
        return dict(self._executions.of_node(node_id))

    def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        return dict(self._executions.of_job(job))


class _Pairs(Generic[R]):
    """Records keyed by (node, job), reachable from either side."""

    def __init__(self) -> None:
        self._by_node: defaultdict[str, dict[str, R]] = defaultdict(dict)
        self._by_job: defaultdict[str, dict[str, R]] = defaultdict(dict)

    def put(self, node_id: str, job: str, record: R) -> None:
        self._by_node[node_id][job] = record
        self._by_job[job][node_id] = record

    def drop(self, node_id: str, job: str) -> None:
        self._by_node[node_id].pop(job, None)
        self._by_job[job].pop(node_id, None)

    def forget_node(self, node_id: str) -> None:
        """Drop every record of ``node_id`` and its (now empty) index entries."""
        for job in self._by_node.pop(node_id, {}):
            by_job = self._by_job.get(job)
            if by_job is not None:
                by_job.pop(node_id, None)
                if not by_job:
                    del self._by_job[job]

    def of_node(self, node_id: str) -> dict[str, R]:
        return self._by_node.get(node_id, {})

    def of_job(self, job: str) -> dict[str, R]:
        return self._by_job.get(job, {})
