"""JobStatus from the rollout state: the state, its message and details, and the counters."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from coordinator.domain.records import (
    ExecutionRecord,
    Gate,
    JobRecord,
    NodeRecord,
    Phase,
    RolloutState,
)
from shared.nodes import NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobType, resolve_count
from shared.status import JobState, JobStateType, JobStatus, Rollout, RolloutType

if TYPE_CHECKING:
    from coordinator.engine.index import RolloutIndex

_MAX_DETAILS = 12


def derive_status(
    job: JobRecord,
    rs: RolloutState,
    nodes: Mapping[str, NodeRecord],
    executions: Mapping[str, ExecutionRecord],
    now: datetime,
    *,
    queued: bool = False,
    index: RolloutIndex | None = None,
) -> JobStatus:
    """The public status for ``rs`` (revision and updated_at are the caller's business).
    ``index``: the planner's, which knows the members' health without a look at each."""
    status = job.status.model_copy(update={"rollout": _rollout(rs)} if rs.type else {})
    if queued:
        selector = ",".join(f"{k}={v}" for k, v in sorted(job.spec.target.selector.items()))
        state = _state(
            JobStateType.QUEUED,
            f"version {job.status.version} waits: no eligible node matches the job's target",
            selector=selector or "(all nodes)",
        )
    elif rs.type == RolloutType.NONE:
        return status
    elif rs.is_active():
        state = _active_state(rs, job.spec.rollout.max_parallel)
    elif rs.phase == Phase.HALTED:
        state = _halted_state(job, rs)
    else:
        state = _done_state(job, rs, nodes, executions, index)
    return status.model_copy(update={"state": state})


def _rollout(rs: RolloutState) -> Rollout:
    back = rs.rolled_back_from if rs.type == RolloutType.ROLLBACK else rs.from_version
    return Rollout(
        type=rs.type,
        canary_nodes=list(rs.canary),
        canary_promoted=rs.promoted and bool(rs.canary) and rs.phase != Phase.CANARY,
        current_wave=rs.current_wave,
        total_waves=len(rs.waves),
        total_nodes=rs.member_count(),
        updated_nodes=len(rs.updated),
        failed_nodes=len(rs.failed),
        rollback_to_version=back,
        started_at=rs.started_at,
        completed_at=rs.completed_at,
    )


def _active_state(rs: RolloutState, max_parallel: int) -> JobState:
    details = _counts(rs)
    if rs.gate == Gate.OPERATOR:
        return _state(
            JobStateType.ROLLOUT_PAUSED,
            "paused by an operator; `fleetwave rollout resume` continues",
            **details,
        )
    if rs.gate == Gate.CANARY:
        return _state(
            JobStateType.ROLLOUT_PAUSED,
            f"canaries run version {rs.target_version} healthy; waiting at the"
            " promotion gate: `fleetwave rollout promote` continues",
            **details,
        )
    if rs.gate == Gate.WAVE:
        return _state(
            JobStateType.ROLLOUT_PAUSED,
            f"wave {rs.current_wave} of {len(rs.waves)} passed; waiting at a manual"
            " gate: `fleetwave rollout promote` starts the next wave",
            **details,
        )
    total = rs.member_count()
    if rs.type == RolloutType.ROLLBACK:
        message = (
            f"rolling back from version {rs.rolled_back_from} to version"
            f" {rs.target_version}: {len(rs.updated)} of {total} nodes back"
        )
    else:
        where = (
            "canary phase"
            if rs.phase == Phase.CANARY
            else (f"wave {rs.current_wave} of {len(rs.waves)}")
        )
        verb = "restarting" if rs.type == RolloutType.RESTART else "rolling out"
        message = (
            f"{verb} version {rs.target_version} ({where}): {len(rs.updated)} of"
            f" {total} nodes updated"
        )
        if rs.skipped:
            message += f", {len(rs.skipped)} skipped as unreachable"
        canaries = set(rs.canary)
        if (
            rs.phase == Phase.CANARY
            and canaries
            and not canaries & set(rs.updated)
            and canaries <= set(rs.skipped) | set(rs.failed)
        ):
            message += "; no canary is healthy: waiting for an unreachable canary"
        if rs.gate_until.year > 1:
            message += f"; next wave at {rs.gate_until.isoformat()}"
    if max_parallel:
        details["max_parallel"] = str(max_parallel)
    return _state(JobStateType.DEPLOYING, message, **details)


def _halted_state(job: JobRecord, rs: RolloutState) -> JobState:
    details = _counts(rs) | {"reason": rs.halted_reason}
    if rs.type == RolloutType.ROLLBACK:
        return _state(
            JobStateType.ROLLOUT_FAILED,
            f"rollback to version {rs.target_version} failed too: {rs.halted_reason}",
            **details,
        )
    failed_type = (
        JobStateType.FAILED
        if rs.type == RolloutType.CREATE or job.spec.type == JobType.BATCH
        else JobStateType.ROLLOUT_FAILED
    )
    keep = f"; nodes keep version {rs.from_version}" if rs.from_version else ""
    return _state(
        failed_type,
        f"{rs.type.value} rollout of version {rs.target_version} halted: {rs.halted_reason}{keep}",
        **details,
    )


def _done_state(
    job: JobRecord,
    rs: RolloutState,
    nodes: Mapping[str, NodeRecord],
    executions: Mapping[str, ExecutionRecord],
    index: RolloutIndex | None,
) -> JobState:
    if rs.type == RolloutType.ROLLBACK and rs.cause:
        details = {
            "rolled_back_from": str(rs.rolled_back_from),
            "running_version": str(rs.target_version),
            "reason": rs.cause,
        }
        if rs.retry is not None:
            details |= _failed_details(rs.retry.failed)
        return _state(
            JobStateType.ROLLOUT_FAILED,
            f"version {rs.rolled_back_from} {rs.cause}; rolled back to version {rs.target_version}",
            **details,
        )
    if job.spec.type == JobType.BATCH:
        return _state(
            JobStateType.COMPLETED,
            f"version {rs.target_version} completed on {len(rs.updated)} of"
            f" {rs.member_count()} nodes",
            **_failed_details(rs.failed),
        )
    return _health_state(job, rs, nodes, executions, index)


def _health_state(
    job: JobRecord,
    rs: RolloutState,
    nodes: Mapping[str, NodeRecord],
    executions: Mapping[str, ExecutionRecord],
    index: RolloutIndex | None,
) -> JobState:
    """After a rollout: running while problems stay within tolerance, else degraded."""

    def problem(node_id: str) -> str | None:
        execution = executions.get(node_id)
        if nodes[node_id].status == NodeStatus.DOWN:
            return "unreachable"
        if execution is None:
            return "not reported yet"
        if execution.state != ExecutionState.HEALTHY:
            return execution.state.value + (f": {execution.message}" if execution.message else "")
        if execution.version != rs.target_version:
            return f"runs version {execution.version}"
        return None

    if index is not None:
        count, problems = index.health(rs, problem)
    else:
        members = {n for n in rs.members() if (node := nodes.get(n)) is not None and not node.drain}
        count, problems = len(members), {}
        for node_id in members:
            if (found := problem(node_id)) is not None:
                problems[node_id] = found
    budget = resolve_count(job.spec.rollout.max_failed_nodes, count, round_up=False)
    prefix = (
        f"rolled back from version {rs.rolled_back_from}: "
        if rs.type == RolloutType.ROLLBACK
        else ""
    )
    healthy = count - len(problems)
    details = {f"node.{k}": v for k, v in heapq.nsmallest(_MAX_DETAILS, problems.items())}
    if len(problems) > budget:
        return _state(
            JobStateType.DEGRADED,
            f"{prefix}version {rs.target_version} runs, but {len(problems)} of"
            f" {count} nodes are unhealthy or unreachable (tolerated: {budget})",
            **details,
        )
    return _state(
        JobStateType.RUNNING,
        f"{prefix}version {rs.target_version} is running on {healthy} of {count} nodes",
        **details,
    )


def _counts(rs: RolloutState) -> dict[str, str]:
    details = {
        "target_version": str(rs.target_version),
        "updated": str(len(rs.updated)),
        "failed": str(len(rs.failed)),
    }
    if rs.skipped:
        details["skipped"] = str(len(rs.skipped))
        details |= {
            f"skipped.{n}": why for n, why in heapq.nsmallest(_MAX_DETAILS, rs.skipped.items())
        }
    return details | _failed_details(rs.failed)


def _failed_details(failed: Mapping[str, str]) -> dict[str, str]:
    return {
        f"failed.{node}": reason for node, reason in heapq.nsmallest(_MAX_DETAILS, failed.items())
    }


def _state(state_type: JobStateType, message: str, **details: str) -> JobState:
    return JobState(state_type=state_type, message=message, details=details)
