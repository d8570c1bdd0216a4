"""The pure rollout planner: ``(job, nodes, assignments, executions, now) -> RolloutPlan``.

No I/O and no clock: everything it knows is passed in, and its decision is a value the
driver applies in one transaction. It is level-triggered: called again with the same
inputs it decides the same thing, so a restarted coordinator simply continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator.engine.targets import select_targets
from coordinator.store import AssignmentChange
from coordinator.store.records import (
    AssignmentRecord,
    Event,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
    RolloutState,
)
from shared.clock import ZERO_TIME
from shared.durations import format_duration
from shared.nodes import NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobType, OnUnreachable, resolve_count
from shared.status import JobState, JobStateType, JobStatus, Rollout, RolloutType

_IDLE_STATES = {JobStateType.STOPPED, JobStateType.DELETED}


@dataclass(frozen=True)
class RolloutPlan:
    """What to change: the job record, node assignments, events, and when to look again."""

    job: JobRecord
    changes: list[AssignmentChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None

    def changed(self, before: JobRecord) -> bool:
        return bool(self.changes or self.events) or self.job != before


@dataclass
class _Progress:
    updated: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    wake_at: datetime | None = None

    def wake(self, at: datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def plan_rollout(
    job: JobRecord,
    nodes: Mapping[str, NodeRecord],
    assignments: Mapping[str, AssignmentRecord],
    executions: Mapping[str, ExecutionRecord],
    now: datetime,
) -> RolloutPlan:
    """Decide the next step of ``job``'s rollout."""
    if job.status.state.state_type in _IDLE_STATES:
        changes = [AssignmentChange(node_id=n, version=None) for n in assignments]
        return RolloutPlan(job=job, changes=changes)

    spec = job.spec
    version = job.status.version
    targets = select_targets(job.name, spec.target, nodes.values())
    rs = job.rollout
    status = job.status.model_copy(deep=True)
    events: list[Event] = []

    if rs.target_version != version:
        if not targets:
            status.state = _state(
                JobStateType.QUEUED,
                "no eligible node matches the job's target yet",
                selector=_selector_text(spec.target.selector),
            )
            return _finish(job, status, rs, [], events, now, wake_at=None)
        rollout_type = RolloutType.CREATE if job.stable_version == 0 else RolloutType.UPDATE
        rs = RolloutState(target_version=version, generation=rs.generation)
        status.rollout = Rollout(
            type=rollout_type,
            started_at=now,
            rollback_to_version=job.stable_version,
            total_waves=1,
            current_wave=1,
        )
        events.append(
            _event(
                now,
                job.name,
                "rollout_started",
                new=rollout_type.value,
                reason=f"version {version} to {len(targets)} nodes",
            )
        )

    # Every schedulable target joins the rollout, also nodes that registered mid-rollout.
    member_ids = list(rs.nodes) + [n.id for n in targets if n.id not in rs.nodes]
    rs = rs.model_copy(update={"nodes": member_ids})
    changes = _assignment_changes(job, rs, nodes, assignments, {n.id for n in targets})

    progress = _progress(job, rs, nodes, assignments, executions, now)
    finished = status.rollout.completed_at != ZERO_TIME
    if not finished:
        # Results stick for the rest of the rollout: a node counted once is not recounted.
        rs = rs.model_copy(update={"updated": progress.updated, "failed": progress.failed})
    rollout = status.rollout
    rollout.total_nodes = len(member_ids)
    rollout.updated_nodes = len(progress.updated)
    rollout.failed_nodes = len(progress.failed)
    budget = resolve_count(spec.rollout.max_failed_nodes, len(member_ids), round_up=False)

    if not finished:
        if len(progress.failed) > budget:
            rollout.completed_at = now
            rs = rs.model_copy(update={"halted_reason": _failure_summary(progress.failed)})
            failed_state = (
                JobStateType.FAILED
                if rollout.type == RolloutType.CREATE or spec.type == JobType.BATCH
                else JobStateType.ROLLOUT_FAILED
            )
            status.state = _state(
                failed_state,
                f"rollout of version {version} halted: {len(progress.failed)} of"
                f" {len(member_ids)} nodes failed (allowed: {budget})",
                **_failure_details(progress.failed),
            )
            events.append(_event(now, job.name, "rollout_halted", reason=rs.halted_reason))
        elif not progress.waiting and progress.updated:
            rollout.completed_at = now
            job = job.model_copy(update={"stable_version": version})
            done = JobStateType.COMPLETED if spec.type == JobType.BATCH else JobStateType.RUNNING
            status.state = _steady_state(done, version, progress, len(member_ids))
            events.append(_event(now, job.name, "rollout_completed", new=str(version)))
        else:
            status.state = _state(
                JobStateType.DEPLOYING,
                f"rolling out version {version}: {len(progress.updated)} of"
                f" {len(member_ids)} nodes updated",
                updated=str(len(progress.updated)),
                waiting=str(len(progress.waiting)),
                failed=str(len(progress.failed)),
                unreachable=str(len(progress.unreachable)),
            )
    elif status.state.state_type in {JobStateType.RUNNING, JobStateType.DEGRADED}:
        status.state = _health_state(version, nodes, executions, rs, budget)

    return _finish(job, status, rs, changes, events, now, wake_at=progress.wake_at)


def _assignment_changes(
    job: JobRecord,
    rs: RolloutState,
    nodes: Mapping[str, NodeRecord],
    assignments: Mapping[str, AssignmentRecord],
    target_ids: set[str],
) -> list[AssignmentChange]:
    changes = []
    for node_id in rs.nodes:
        current = assignments.get(node_id)
        if node_id not in target_ids:
            continue
        if current is None or current.version != rs.target_version:
            changes.append(
                AssignmentChange(
                    node_id=node_id, version=rs.target_version, generation=rs.generation
                )
            )
    for node_id in assignments:
        node = nodes.get(node_id)
        # Drained or vanished nodes stop the job; ineligible nodes keep what they run.
        if node is None or node.drain:
            changes.append(AssignmentChange(node_id=node_id, version=None))
    return changes


def _progress(
    job: JobRecord,
    rs: RolloutState,
    nodes: Mapping[str, NodeRecord],
    assignments: Mapping[str, AssignmentRecord],
    executions: Mapping[str, ExecutionRecord],
    now: datetime,
) -> _Progress:
    policy = job.spec.rollout
    progress = _Progress()
    for node_id in rs.nodes:
        node = nodes.get(node_id)
        execution = executions.get(node_id)
        assignment = assignments.get(node_id)
        if node_id in rs.updated:
            progress.updated.append(node_id)
            continue
        if node_id in rs.failed:
            progress.failed[node_id] = rs.failed[node_id]
            continue
        if node is None or node.drain:
            continue
        current = execution is not None and execution.version == rs.target_version
        if current and execution is not None and _is_done(job, execution, now):
            progress.updated.append(node_id)
            continue
        if current and execution is not None and execution.state == ExecutionState.FAILED:
            progress.failed[node_id] = execution.message or "execution failed"
            continue
        if node.status == NodeStatus.DOWN:
            if policy.on_unreachable == OnUnreachable.FAIL:
                progress.failed[node_id] = "node stopped heartbeating"
            else:
                progress.unreachable.append(node_id)
            continue
        assigned_at = assignment.assigned_at if assignment is not None else now
        deadline = assigned_at + policy.healthy_deadline
        if now >= deadline:
            progress.failed[node_id] = (
                f"not healthy within healthy_deadline ({_fmt(policy.healthy_deadline)})"
            )
            continue
        progress.waiting.append(node_id)
        progress.wake(deadline)
        if current and execution is not None and execution.state == ExecutionState.HEALTHY:
            progress.wake(execution.since + policy.min_healthy_time)
    return progress


def _is_done(job: JobRecord, execution: ExecutionRecord, now: datetime) -> bool:
    if job.spec.type == JobType.BATCH:
        return execution.state == ExecutionState.COMPLETED
    return (
        execution.state == ExecutionState.HEALTHY
        and now - execution.since >= job.spec.rollout.min_healthy_time
    )


def _health_state(
    version: int,
    nodes: Mapping[str, NodeRecord],
    executions: Mapping[str, ExecutionRecord],
    rs: RolloutState,
    budget: int,
) -> JobState:
    """After a rollout: running while problems stay within tolerance, else degraded."""
    problems: dict[str, str] = {}
    for node_id in rs.nodes:
        node = nodes.get(node_id)
        if node is None or node.drain:
            continue
        execution = executions.get(node_id)
        if node.status == NodeStatus.DOWN:
            problems[node_id] = "unreachable"
        elif execution is None or execution.state != ExecutionState.HEALTHY:
            problems[node_id] = execution.state.value if execution else "not reported"
    healthy = len(rs.nodes) - len(problems)
    if len(problems) > budget:
        return _state(
            JobStateType.DEGRADED,
            f"version {version} runs, but {len(problems)} of {len(rs.nodes)} nodes are"
            f" unhealthy or unreachable (tolerated: {budget})",
            **{f"node.{k}": v for k, v in sorted(problems.items())[:20]},
        )
    return _state(
        JobStateType.RUNNING,
        f"version {version} is running on {healthy} of {len(rs.nodes)} nodes",
    )


def _steady_state(done: JobStateType, version: int, progress: _Progress, total: int) -> JobState:
    what = "completed" if done == JobStateType.COMPLETED else "is running"
    details = {}
    if progress.unreachable:
        details["unreachable"] = ",".join(sorted(progress.unreachable))
    if progress.failed:
        details.update(_failure_details(progress.failed))
    return _state(
        done, f"version {version} {what} on {len(progress.updated)} of {total} nodes", **details
    )


def _finish(
    before: JobRecord,
    status: JobStatus,
    rs: RolloutState,
    changes: list[AssignmentChange],
    events: list[Event],
    now: datetime,
    *,
    wake_at: datetime | None,
) -> RolloutPlan:
    old_state = before.status.state.state_type
    if status.state.state_type != old_state:
        events.append(
            _event(
                now,
                before.name,
                "job_state",
                old=old_state.value,
                new=status.state.state_type.value,
                reason=status.state.message,
            )
        )
    comparable_old = before.status.model_copy(update={"updated_at": ZERO_TIME})
    comparable_new = status.model_copy(update={"updated_at": ZERO_TIME})
    if comparable_new != comparable_old or rs != before.rollout:
        status.revision = before.status.revision + 1
        status.updated_at = now
    job = before.model_copy(update={"status": status, "rollout": rs})
    return RolloutPlan(job=job, changes=changes, events=events, wake_at=wake_at)


def _state(state_type: JobStateType, message: str, **details: str) -> JobState:
    return JobState(state_type=state_type, message=message, details=details)


def _event(
    now: datetime,
    job: str,
    kind: str,
    *,
    node: str = "",
    old: str = "",
    new: str = "",
    reason: str = "",
) -> Event:
    return Event(time=now, job=job, node=node, kind=kind, old=old, new=new, reason=reason)


def _failure_summary(failed: Mapping[str, str]) -> str:
    first = sorted(failed.items())[:3]
    return "; ".join(f"{node}: {reason}" for node, reason in first)


def _failure_details(failed: Mapping[str, str]) -> dict[str, str]:
    return {f"failed.{node}": reason for node, reason in sorted(failed.items())[:20]}


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(all nodes)"


def _fmt(value: timedelta) -> str:
    return format_duration(value)
