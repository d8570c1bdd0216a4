"""Which nodes a job targets: label selection, eligibility, drain and a stable order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from coordinator.store.records import NodeRecord
from shared.nodes import Eligibility
from shared.spec import Target


def stable_rank(job: str, node_id: str) -> str:
    """A per-job pseudo-random but deterministic order of nodes."""
    return hashlib.sha256(f"{job}/{node_id}".encode()).hexdigest()


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def is_schedulable(node: NodeRecord) -> bool:
    """May this node receive a new job version?"""
    return node.eligibility == Eligibility.ELIGIBLE and not node.drain


def select_targets(job: str, target: Target, nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
    """Schedulable nodes matching the selector in stable order, at most ``target.count``."""
    chosen = sorted(
        (n for n in nodes if is_schedulable(n) and matches(target.selector, n.labels)),
        key=lambda n: stable_rank(job, n.id),
    )
    return chosen[: target.count] if target.count is not None else chosen
