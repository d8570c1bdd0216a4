"""Dry runs and views: the spec diff and wave plan of a submission, and the rollout's
per-wave, per-node picture. Pure functions over stored state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
    Phase,
    RolloutState,
)
from coordinator.engine.membership import plan_membership
from coordinator.engine.planner import IDLE_STATES
from coordinator.engine.targets import is_schedulable, select_targets
from shared.nodes import NodeStatus
from shared.spec import JobSpec
from shared.status import RolloutType


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def spec_diff(old: JobSpec | None, new: JobSpec) -> list[dict[str, Any]]:
    before = flatten(old.canonical()) if old is not None else {}
    after = flatten(new.canonical())
    return [
        {"field": key, "old": before.get(key), "new": after.get(key)}
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def plan_preview(
    job: JobRecord | None, spec: JobSpec, nodes: Mapping[str, NodeRecord]
) -> dict[str, Any]:
    """What submitting ``spec`` would do: the diff, the new version and the wave plan."""
    ended = job is None or job.deleted or job.status.state.state_type in IDLE_STATES
    changed = ended or job is None or job.spec.canonical() != spec.canonical()
    targets = select_targets(spec.name, spec.target, nodes.values())
    stable = 0 if job is None or ended else job.stable_version
    kind = RolloutType.CREATE if stable == 0 else RolloutType.UPDATE
    membership = plan_membership(spec.name, targets, spec.rollout)

    def named(ids: list[str]) -> list[dict[str, str]]:
        return [{"id": n, "name": nodes[n].name} for n in ids]

    return {
        "name": spec.name,
        "exists": job is not None and not job.deleted,
        "changed": changed,
        "current_version": job.status.version if job is not None else 0,
        "next_version": (job.status.version if job is not None else 0) + (1 if changed else 0),
        "diff": spec_diff(None if job is None or job.deleted else job.spec, spec),
        "rollout": {
            "type": kind.value if changed else "",
            "from_version": stable,
            "total_nodes": len(targets),
            "canary": named(membership.canary),
            "waves": [named(w) for w in membership.waves],
        },
        "warnings": [] if targets else ["no eligible node matches the target: it would queue"],
    }


def rollout_view(
    job: JobRecord,
    nodes: Mapping[str, NodeRecord],
    assignments: Mapping[str, AssignmentRecord],
    executions: Mapping[str, ExecutionRecord],
) -> dict[str, Any]:
    """The rollout wave by wave with each node's assignment, execution and result."""
    rs = job.rollout

    def row(node_id: str) -> dict[str, Any]:
        node = nodes.get(node_id)
        assignment = assignments.get(node_id)
        execution = executions.get(node_id)
        result, reason = _node_result(rs, node_id, node)
        return {
            "id": node_id,
            "name": node.name if node else "",
            "node_status": node.status.value if node else "gone",
            "assigned_version": assignment.version if assignment else None,
            "execution": execution.state.value if execution else None,
            "running_version": execution.version if execution else None,
            "message": execution.message if execution else "",
            "restarts": execution.restarts if execution else 0,
            "result": result,
            "reason": reason,
        }

    waves = []
    for index, members in enumerate(rs.waves, start=1):
        waves.append(
            {"wave": index, "state": _wave_state(rs, index), "nodes": [row(n) for n in members]}
        )
    return {
        "type": rs.type.value,
        "phase": rs.phase.value,
        "for_version": rs.for_version,
        "target_version": rs.target_version,
        "stable_version": job.stable_version,
        "from_version": rs.from_version,
        "generation": rs.generation,
        "gate": rs.gate.value,
        "paused_reason": _pause_reason(rs),
        "halted_reason": rs.halted_reason,
        "cause": rs.cause,
        "rolled_back_from": rs.rolled_back_from,
        "current_wave": rs.current_wave,
        "total_waves": len(rs.waves),
        "next_wave_at": rs.gate_until.isoformat() if rs.gate_until.year > 1 else None,
        "started_at": job.status.rollout.model_dump(mode="json")["started_at"],
        "completed_at": job.status.rollout.model_dump(mode="json")["completed_at"],
        "canary": {
            "promoted": rs.promoted,
            "state": "active" if rs.phase == Phase.CANARY else ("passed" if rs.promoted else ""),
            "nodes": [row(n) for n in rs.canary],
        },
        "waves": waves,
        "can_retry": rs.retry is not None or rs.phase == Phase.HALTED,
    }


def _pause_reason(rs: RolloutState) -> str:
    return {
        "operator": "paused by an operator",
        "canary": "waiting at the canary promotion gate",
        "wave": f"manual gate after wave {rs.current_wave}",
    }.get(rs.gate.value, "")


def _wave_state(rs: RolloutState, index: int) -> str:
    if rs.phase == Phase.CANARY or index > rs.current_wave:
        return "pending"
    if index < rs.current_wave or rs.phase == Phase.DONE:
        return "passed"
    return "halted" if rs.phase == Phase.HALTED else "active"


def _node_result(rs: RolloutState, node_id: str, node: NodeRecord | None) -> tuple[str, str]:
    if node_id in rs.failed:
        return "failed", rs.failed[node_id]
    if node_id in set(rs.updated):
        return "updated", ""
    if node is None:
        return "skipped", "node is gone"
    if node.drain:
        return "skipped", "node is draining"
    if not is_schedulable(node):
        return "skipped", "node is ineligible"
    if node_id in rs.skipped:
        return "skipped", rs.skipped[node_id]
    if node_id in set(rs.started):
        if node.status == NodeStatus.DOWN:
            return "in_progress", "node is unreachable; skipped if it stays silent"
        return "in_progress", ""
    return "waiting", ""
