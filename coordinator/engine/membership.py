"""Canary and wave membership: deterministic, spread across ``spread_by`` values."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.domain.records import NodeRecord
from coordinator.engine.targets import matches, stable_rank
from shared.nodes import NodeStatus
from shared.spec import RolloutPolicy, resolve_count


@dataclass(frozen=True)
class Membership:
    canary: list[str]
    waves: list[list[str]]


def spread_order(job: str, nodes: Sequence[NodeRecord], spread_by: str | None) -> list[NodeRecord]:
    """Nodes in stable-hash order, interleaved round-robin across the ``spread_by`` values."""
    ranked = sorted(nodes, key=lambda n: stable_rank(job, n.id))
    if not spread_by:
        return ranked
    groups: defaultdict[str, list[NodeRecord]] = defaultdict(list)
    for node in ranked:
        groups[node.labels.get(spread_by, "")].append(node)
    ordered_groups = [groups[key] for key in sorted(groups)]
    out: list[NodeRecord] = []
    for i in range(max((len(g) for g in ordered_groups), default=0)):
        out.extend(g[i] for g in ordered_groups if i < len(g))
    return out


def plan_membership(
    job: str, nodes: Sequence[NodeRecord], policy: RolloutPolicy, *, with_canary: bool = True
) -> Membership:
    """Choose the canary nodes and split the rest into waves; same inputs, same answer."""
    ordered = spread_order(job, nodes, policy.spread_by)
    total = len(ordered)
    canary: list[str] = []
    if with_canary and total:
        want = resolve_count(policy.canary, total, round_up=True)
        pool = [n for n in ordered if matches(policy.canary_selector, n.labels)]
        # A node that is down when the rollout starts cannot be a canary's evidence: take
        # reachable ones first (stable sort: the order is otherwise unchanged).
        pool.sort(key=lambda n: n.status == NodeStatus.DOWN)
        canary = [n.id for n in pool[:want]]
    rest = [n.id for n in ordered if n.id not in set(canary)]
    return Membership(canary=canary, waves=split_waves(rest, total, len(canary), policy.waves))


def split_waves(
    rest: list[str], total: int, already: int, waves: int | list[str]
) -> list[list[str]]:
    """Split ``rest`` into waves: an int is an equal split; a list holds cumulative percentages
    of all ``total`` target nodes (canaries count as already done). Empty waves are dropped."""
    if not rest:
        return []
    if isinstance(waves, int):
        count = min(waves, len(rest))
        size, extra = divmod(len(rest), count)
        out, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            out.append(rest[start:end])
            start = end
        return out
    out, start = [], 0
    for share in waves:
        cumulative = math.ceil(float(share[:-1]) / 100 * total - 1e-9)
        end = max(start, min(len(rest), cumulative - already))
        if end > start:
            out.append(rest[start:end])
            start = end
    if start < len(rest):  # rounding left a remainder: it joins the last wave
        if out:
            out[-1].extend(rest[start:])
        else:
            out.append(rest[start:])
    return out
