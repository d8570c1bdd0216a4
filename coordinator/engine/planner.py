"""The pure rollout planner: ``(job, nodes, assignments, executions, now) -> RolloutPlan``.

No I/O and no clock: everything it knows is passed in, and its decision is a value the
driver applies in one transaction. It is level-triggered: called again with the same
inputs it decides the same thing, so a restarted coordinator simply continues the wave
it was in. Canary and wave membership is chosen once, when a rollout starts, and stored.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from coordinator.domain.records import (
    AssignmentChange,
    AssignmentRecord,
    Event,
    ExecutionRecord,
    Gate,
    JobRecord,
    NodeRecord,
    Phase,
    RolloutState,
)
from coordinator.engine.index import RolloutIndex
from coordinator.engine.membership import plan_membership
from coordinator.engine.observation import ALWAYS_LISTENING, Observation
from coordinator.engine.status import derive_status
from coordinator.engine.targets import is_schedulable, select_targets
from shared.clock import ZERO_TIME
from shared.durations import format_duration
from shared.nodes import NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobType, OnUnreachable, resolve_count
from shared.status import JobStateType, RolloutType

IDLE_STATES = {JobStateType.STOPPED, JobStateType.DELETED}
_MAX_TRANSITIONS = 32  # start, pass, promote, next wave ... in one evaluation, bounded


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
class _Step:
    """Mutable scratch space of one planning step; nothing outside this module sees it."""

    job: JobRecord
    nodes: Mapping[str, NodeRecord]
    assignments: Mapping[str, AssignmentRecord]
    executions: Mapping[str, ExecutionRecord]
    now: datetime
    observation: Observation
    index: RolloutIndex | None = None
    """Kept by the driver between evaluations: answers the fleet-wide questions below from
    what changed (see ``coordinator.engine.index``); None: worked out from the whole fleet."""
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None
    # Nodes started in this step: their assignment is written now, even when it already names
    # the target (kept from a halted attempt), so that their healthy deadline starts now.
    given: set[str] = field(default_factory=set)

    def wake(self, at: datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def event(
        self,
        kind: str,
        *,
        node: str = "",
        old: str = "",
        new: str = "",
        reason: str = "",
        by: str = "",
    ) -> None:
        self.events.append(
            Event(
                time=self.now,
                job=self.job.name,
                node=node,
                kind=kind,
                old=old,
                new=new,
                reason=reason,
                by=by,
            )
        )


def plan_rollout(
    job: JobRecord,
    nodes: Mapping[str, NodeRecord],
    assignments: Mapping[str, AssignmentRecord],
    executions: Mapping[str, ExecutionRecord],
    now: datetime,
    observation: Observation = ALWAYS_LISTENING,
    index: RolloutIndex | None = None,
    changed: set[str] | None = None,
) -> RolloutPlan:
    """Decide the next step of ``job``'s rollout.

    ``observation`` says since when the coordinator has been able to hear nodes: no node is
    failed, skipped or counted healthy on the strength of a silence it could not observe.
    ``index``, when given, is this job's index from the evaluations before (the plan is the
    same with or without it; with it, an evaluation touches what changed, not the fleet);
    ``changed`` names the nodes whose inputs changed since then, when the caller knows them
    (see ``RolloutIndex.begin``).
    """
    step = _Step(job, nodes, assignments, executions, now, observation, index)
    if job.status.state.state_type in IDLE_STATES:
        if index is not None:
            index.reset()
        changes = [AssignmentChange(node_id=n, version=None) for n in sorted(assignments)]
        return RolloutPlan(job=job, changes=changes)

    rs = job.rollout
    if index is not None:
        index.begin(job.name, job.spec.target, nodes, assignments, executions, changed)
    if rs.for_version != job.status.version:
        targets = select_targets(job.name, job.spec.target, nodes.values())
        if not targets:
            return _finish(step, rs, queued=True)
        kind = RolloutType.CREATE if job.stable_version == 0 else RolloutType.UPDATE
        # The generation carries over: nodes restarted earlier must not look out of date.
        rs = start_rollout(
            job, kind, targets, now, target_version=job.status.version, generation=rs.generation
        )
        step.event(
            "rollout_started",
            new=kind.value,
            reason=f"version {rs.target_version} to {len(rs.members())} nodes",
            by=job.changed_by,
        )
    rs = _admit_new_nodes(step, rs)
    if rs.is_active():
        rs = _advance(step, rs)
    if rs.phase == Phase.DONE and rs.completed_at == ZERO_TIME:
        rs = _complete(step, rs)
    if rs.phase == Phase.DONE:
        rs = _catch_up_returned(step, rs)
    return _finish(step, rs)


def _catch_up_returned(step: _Step, rs: RolloutState) -> RolloutState:
    """After a rollout completed, members skipped while unreachable (never given its
    version) get it when they return, as nodes joining after the end do."""
    back = [
        n
        for n in rs.skipped
        if n not in rs.started and not _is_excluded(step, n) and not _is_down(step, n)
    ]
    if not back:
        return rs
    for node_id in back:
        step.event("node_joined_rollout", node=node_id, new="returned after it was skipped")
    return rs.model_copy(update={"started": [*rs.started, *back]})


def start_rollout(
    job: JobRecord,
    kind: RolloutType,
    nodes: list[NodeRecord],
    now: datetime,
    *,
    target_version: int,
    generation: int = 0,
) -> RolloutState:
    """A new rollout of ``target_version`` over ``nodes``, membership fixed from here on."""
    membership = plan_membership(
        job.name,
        nodes,
        job.spec.rollout,
        with_canary=kind in (RolloutType.CREATE, RolloutType.UPDATE),
    )
    has_canary = bool(membership.canary)
    return RolloutState(
        type=kind,
        for_version=job.status.version,
        target_version=target_version,
        from_version=job.stable_version,
        generation=generation,
        canary=membership.canary,
        waves=membership.waves,
        phase=Phase.CANARY if has_canary else Phase.WAVES,
        current_wave=0 if has_canary else 1,
        started_at=now,
        progress_at=now,
    )


def start_rollback(
    job: JobRecord, rs: RolloutState, to_version: int, cause: str, now: datetime
) -> RolloutState:
    """Return every member of ``rs`` to ``to_version`` at once (rollbacks are not waved)."""
    members = rs.members()
    return RolloutState(
        type=RolloutType.ROLLBACK,
        for_version=job.status.version,
        target_version=to_version,
        from_version=to_version,
        generation=rs.generation,
        waves=[members] if members else [],
        phase=Phase.WAVES if members else Phase.DONE,
        current_wave=1,
        promoted=True,
        started=members,
        started_at=now,
        progress_at=now,
        cause=cause,
        rolled_back_from=rs.target_version,
        retry=(rs.retry or rs).model_copy(update={"retry": None})
        if rs.type != RolloutType.ROLLBACK
        else rs.retry,
    )


def _admit_new_nodes(step: _Step, rs: RolloutState) -> RolloutState:
    """Nodes that joined (or became eligible) after the rollout started become members.

    While the rollout runs they join the current wave (wave 1 while canaries are not yet
    promoted), so they run the stable version until their wave starts. After it ended they
    get its version at once.
    """
    job = step.job
    if step.index is not None:
        new = step.index.new_targets(rs, step.nodes)
    else:
        members = set(rs.members())
        targets = select_targets(job.name, job.spec.target, step.nodes.values())
        new = [n.id for n in targets if n.id not in members]
    if not new or rs.type == RolloutType.NONE:
        return rs
    waves = [list(w) for w in rs.waves]
    if not waves:
        waves.append([])
    index = min(max(rs.current_wave, 1), len(waves)) - 1 if rs.is_active() else len(waves) - 1
    waves[index].extend(new)
    update: dict[str, object] = {"waves": waves}
    if rs.phase == Phase.DONE:
        update["started"] = [*rs.started, *new]
    for node_id in new:
        step.event("node_joined_rollout", node=node_id, new=f"wave {index + 1}")
    return rs.model_copy(update=update)


def _advance(step: _Step, rs: RolloutState) -> RolloutState:
    policy = step.job.spec.rollout
    total = rs.member_count()
    budget = resolve_count(policy.max_failed_nodes, total, round_up=False)
    for _ in range(_MAX_TRANSITIONS):
        rs = _evaluate_nodes(step, rs)
        if len(rs.failed) > budget:
            return _halt(
                step,
                rs,
                f"{len(rs.failed)} of {total} nodes failed (allowed: {budget}): "
                + _failure_summary(rs.failed),
            )
        if rs.gate != Gate.NONE:
            return rs
        if rs.gate_until != ZERO_TIME:
            if step.now < rs.gate_until:
                step.wake(rs.gate_until)
                return rs
            rs = _next_wave(step, rs.model_copy(update={"gate_until": ZERO_TIME}))
            continue
        deadline = max(rs.progress_at + policy.progress_deadline, step.observation.blind_until)
        if step.now >= deadline:
            return _halt(
                step,
                rs,
                f"no progress in {_group_name(rs)} for"
                f" progress_deadline ({format_duration(policy.progress_deadline)})",
            )
        step.wake(deadline)
        given = (len(rs.started), len(rs.failed))
        rs = _start_nodes(step, rs)
        if (len(rs.started), len(rs.failed)) != given:
            continue  # judge what changed at once: nodes just given the version, failures
        if not _group_finished(step, rs):
            return rs
        if _canary_gate_shut(step, rs):
            return _no_healthy_canary(step, rs)
        before = (rs.phase, rs.current_wave, rs.gate, rs.gate_until)
        rs = _group_passed(step, rs)
        if rs.phase == Phase.DONE or before == (rs.phase, rs.current_wave, rs.gate, rs.gate_until):
            return rs
    step.wake(step.now)  # more to do than one evaluation may take on: continue at once
    return rs


def _group(rs: RolloutState) -> list[str]:
    """The nodes the rollout is working on now: canaries, the current wave, or all with --full.

    Members of earlier groups that were never given the version (a retry after a rollback
    gives it again; a node eligible again) catch up with the current wave, paced like it,
    and stay in it until they are decided too.
    """
    if rs.phase == Phase.CANARY:
        return list(rs.canary)
    passed = [*rs.canary, *(n for wave in rs.waves[: max(rs.current_wave - 1, 0)] for n in wave)]
    started, settled = set(rs.started), _settled(rs)
    behind = [n for n in passed if n not in started or n not in settled]
    if rs.promote_full:
        return behind + [n for wave in rs.waves[rs.current_wave - 1 :] for n in wave]
    if 1 <= rs.current_wave <= len(rs.waves):
        return behind + list(rs.waves[rs.current_wave - 1])
    return behind


def _group_name(rs: RolloutState) -> str:
    return "the canary phase" if rs.phase == Phase.CANARY else f"wave {rs.current_wave}"


def _is_excluded(step: _Step, node_id: str) -> bool:
    """Nodes an operator took out of the rollout: gone, drained or ineligible.

    An unreachable node is not among them: it is only passed over once it has been skipped
    explicitly (``RolloutState.skipped``), after the full grace window.
    """
    node = step.nodes.get(node_id)
    return node is None or not is_schedulable(node)


def _is_down(step: _Step, node_id: str) -> bool:
    node = step.nodes.get(node_id)
    return node is not None and node.status == NodeStatus.DOWN


def _judge_unreachable(
    step: _Step, node_id: str, skipped: dict[str, str], failed: dict[str, str]
) -> datetime | None:
    """Skip or fail a down node by ``on_unreachable``, once the grace window has passed.

    Before that it may well be alive (marked down before the coordinator's own blind spot,
    a restart or a pause): wait for it to be heard, and look again when the window ends
    (returned).
    """
    observation = step.observation
    if not observation.can_judge_silence(step.now):
        return observation.blind_until
    if step.job.spec.rollout.on_unreachable == OnUnreachable.FAIL:
        failed[node_id] = "node stopped heartbeating (on_unreachable = fail)"
        step.event("node_failed", node=node_id, reason=failed[node_id])
    else:
        skipped[node_id] = "unreachable: no heartbeat within the TTL (on_unreachable = skip)"
        step.event("node_skipped", node=node_id, reason=skipped[node_id])
    return None


def _settled(rs: RolloutState) -> set[str]:
    """Nodes the rollout has decided about: passed, failed, or skipped as unreachable."""
    return set(rs.updated) | set(rs.failed) | set(rs.skipped)


def _start_nodes(step: _Step, rs: RolloutState) -> RolloutState:
    """Give the target version to the current group's nodes, at most max_parallel in flight."""
    policy = step.job.spec.rollout
    limit = policy.max_parallel if policy.max_parallel and rs.type != RolloutType.ROLLBACK else 0
    # An unreachable node that has not been skipped yet is still in flight: it may be
    # running the version unobserved, so it takes its place under max_parallel.
    # A skipped node that came back runs toward the version on its own: in flight again.
    room = limit - len(_in_flight(step, rs)) if limit else None
    newly = []
    skipped, failed = dict(rs.skipped), dict(rs.failed)
    if step.index is not None:
        candidates, started = step.index.unstarted(rs), set()  # neither started nor failed
    else:
        candidates, started = _group(rs), set(rs.started)
    for node_id in candidates:
        if node_id in started or node_id in failed:
            continue
        if _is_excluded(step, node_id):
            continue  # ineligible or draining: keeps what it runs, gets nothing new
        if _is_down(step, node_id):
            # Not given the version while unreachable: a partition that heals must not
            # restart a whole group at once. Judged once the grace window has passed; a
            # skipped node catches up, paced like the others, when it returns.
            if node_id not in skipped and (
                wake := _judge_unreachable(step, node_id, skipped, failed)
            ):
                step.wake(wake)
            continue
        if room is not None:
            if room <= 0:
                continue
            room -= 1
        newly.append(node_id)
    if (skipped, failed) != (rs.skipped, rs.failed):
        rs = rs.model_copy(update={"skipped": skipped, "failed": failed})
    if not newly:
        return rs
    # Their healthy deadline runs from now: look again then even if no agent reports.
    step.wake(step.now + policy.healthy_deadline)
    step.given.update(newly)
    return rs.model_copy(update={"started": [*rs.started, *newly]})


def _in_flight(step: _Step, rs: RolloutState) -> list[str]:
    """Started nodes still on their way: not failed, not passed, not excluded, and not
    skipped while still down."""

    def is_out(n: str) -> bool:
        return _is_excluded(step, n) or (n in rs.skipped and _is_down(step, n))

    if step.index is not None:
        return step.index.in_flight(rs, is_out)
    settled = _settled(rs)
    return [
        n
        for n in rs.started
        if not _is_excluded(step, n)
        and (n not in settled or (n in rs.skipped and not _is_down(step, n)))
        and n not in rs.failed
    ]


def _evaluate_nodes(step: _Step, rs: RolloutState) -> RolloutState:
    """Sort started nodes into updated, failed and skipped.

    Updated and failed stick for the rest of the rollout. A node skipped as unreachable
    that comes back is judged again, but only by what it reports: it can pass, or fail by
    reporting a failure, never by a deadline that ran while it could not be heard.
    """
    updated, failed, skipped = list(rs.updated), dict(rs.failed), dict(rs.skipped)
    index = step.index
    if index is not None:
        # Only pending nodes whose inputs changed or whose time has come: the others would
        # be judged as before, and their wake-ups are the index's.
        context = (step.observation, step.job.spec.rollout, step.job.spec.type)
        judged, already = index.to_judge(rs, context, step.now), set()
    else:
        judged, already = rs.started, set(updated)  # a set: fleets have thousands of nodes
    for node_id in judged:
        if node_id in failed or node_id in already:
            continue
        wake, moving = _judge(step, rs, node_id, updated, failed, skipped)
        if wake is not None:
            step.wake(wake)
        if index is not None:
            index.judged(node_id, wake, moving=moving)
    if index is not None and (later := index.next_wake(rs)) is not None:
        step.wake(later)
    if len(updated) != len(rs.updated):
        rs = rs.model_copy(update={"progress_at": step.now})
    return rs.model_copy(update={"updated": updated, "failed": failed, "skipped": skipped})


def _judge(
    step: _Step,
    rs: RolloutState,
    node_id: str,
    updated: list[str],
    failed: dict[str, str],
    skipped: dict[str, str],
) -> tuple[datetime | None, bool]:
    """Judge one started node; return when to look at it again (None: only when it
    changes), and whether that moment moves with the clock (it must be judged again at
    every evaluation, as nothing but time would tell it apart)."""
    policy = step.job.spec.rollout
    node = step.nodes.get(node_id)
    if node is None or node.drain:
        return None, False
    wake: datetime | None = None
    moving = False
    execution = step.executions.get(node_id)
    current = (
        execution is not None
        and execution.version == rs.target_version
        and execution.generation == rs.generation
    )
    if current and execution is not None:
        if _passed_gate(step, execution, node):
            updated.append(node_id)
            skipped.pop(node_id, None)
            step.event("node_updated", node=node_id, new=str(rs.target_version))
            return None, False
        if execution.state == ExecutionState.FAILED:
            failed[node_id] = execution.message or "execution failed"
            skipped.pop(node_id, None)
            step.event("node_failed", node=node_id, reason=failed[node_id])
            return None, False
        if execution.state == ExecutionState.HEALTHY:
            due = _healthy_from(step, execution) + policy.min_healthy_time
            # Due already, but not heard from lately: look again soon (a heartbeat that
            # changes nothing does not wake the engine; a report of a change does).
            moving = due <= step.now
            wake = due if not moving else step.now + step.observation.heartbeat / 4
    if node_id in skipped:
        return wake, moving
    if node.status == NodeStatus.DOWN:
        blind = _judge_unreachable(step, node_id, skipped, failed)
        return (blind if wake is None or blind is None else min(wake, blind)), moving
    assignment = step.assignments.get(node_id)
    assigned_at = step.now
    if (
        assignment is not None
        and assignment.version == rs.target_version
        and assignment.generation == rs.generation
    ):
        # A node that already had the version (a retry, a rollback) was given it by this
        # rollout only when the rollout started.
        assigned_at = max(assignment.assigned_at, rs.started_at)
    else:
        moving = True  # its deadline runs from now until its assignment is written
    # Never judged before a live node could have reported since the coordinator's
    # last blind spot: a paused or restarted coordinator does not blame nodes for it.
    deadline = max(assigned_at + policy.healthy_deadline, step.observation.blind_until)
    if step.now >= deadline:
        failed[node_id] = (
            f"not healthy within healthy_deadline ({format_duration(policy.healthy_deadline)})"
            + (f"; last state {execution.state.value}" if current and execution else "")
        )
        step.event("node_failed", node=node_id, reason=failed[node_id])
        return None, False
    return (deadline if wake is None else min(wake, deadline)), moving


def _healthy_from(step: _Step, execution: ExecutionRecord) -> datetime:
    """Healthy time counts only while the coordinator was listening: a node may have
    flapped unseen during a blind spot."""
    return step.observation.heard_since(execution.since)


def _passed_gate(step: _Step, execution: ExecutionRecord, node: NodeRecord) -> bool:
    """Completed (batch), or healthy for ``min_healthy_time`` as far as the coordinator can
    tell: up to now, but no further than a heartbeat (and a quarter, for a late one) past the
    node's last report. An agent killed right after it said ``healthy`` must not pass the
    gate on that word while its silence is still shorter than the TTL."""
    if step.job.spec.type == JobType.BATCH:
        return execution.state == ExecutionState.COMPLETED
    believed_until = step.now
    if step.observation.heartbeat:
        last = max(node.last_heartbeat, execution.updated_at)
        believed_until = min(step.now, last + step.observation.heartbeat * 1.25)
    return (
        execution.state == ExecutionState.HEALTHY
        and believed_until - _healthy_from(step, execution)
        >= step.job.spec.rollout.min_healthy_time
    )


def _group_finished(step: _Step, rs: RolloutState) -> bool:
    if step.index is not None:
        return all(_is_excluded(step, n) for n in step.index.unsettled(rs))
    settled = _settled(rs)
    return all(n in settled or _is_excluded(step, n) for n in _group(rs))


def _group_passed(step: _Step, rs: RolloutState) -> RolloutState:
    """The current group is done and within budget: promote canaries or move to the next wave."""
    policy = step.job.spec.rollout
    if rs.phase == Phase.CANARY:
        if not policy.auto_promote and not rs.promoted:
            if rs.gate != Gate.CANARY:
                step.event(
                    "rollout_paused",
                    new="canary",
                    reason="canaries healthy; waiting for `rollout promote`",
                )
            return rs.model_copy(update={"gate": Gate.CANARY})
        step.event("canary_promoted", reason="auto_promote" if policy.auto_promote else "operator")
        rs = rs.model_copy(update={"promoted": True, "phase": Phase.WAVES, "current_wave": 0})
        return _next_wave(step, rs)
    if rs.promote_full or rs.current_wave >= len(rs.waves):
        return _done(step, rs)
    pause = policy.pause_between_waves
    if pause == "manual":
        step.event(
            "rollout_paused",
            new="wave",
            reason=f"wave {rs.current_wave} passed; manual gate before the next",
        )
        return rs.model_copy(update={"gate": Gate.WAVE})
    if pause.total_seconds() > 0:
        return rs.model_copy(update={"gate_until": step.now + pause})
    return _next_wave(step, rs)


def _canary_gate_shut(step: _Step, rs: RolloutState) -> bool:
    """The canary gate opens only on a canary that passed, even after an early promote
    (which approves the canaries, not their health). Canaries an operator took out (drained,
    ineligible, gone) are no evidence either way: with none left, the gate opens."""
    if rs.phase != Phase.CANARY:
        return False
    candidates = [n for n in rs.canary if not _is_excluded(step, n)]
    return bool(candidates) and not set(candidates) & set(rs.updated)


def _no_healthy_canary(step: _Step, rs: RolloutState) -> RolloutState:
    """Every canary is decided and none passed: the gate never opens on that.

    Canaries that failed (within the failure budget) halt the rollout: there is nothing
    left to learn from. Canaries only skipped as unreachable may come back and pass, so
    the rollout waits for them, within its progress deadline (the status says so).
    """
    if all(n in rs.failed or _is_excluded(step, n) for n in rs.canary):
        return _halt(step, rs, "no canary became healthy: " + _failure_summary(rs.failed))
    return rs


def _done(step: _Step, rs: RolloutState) -> RolloutState:
    """Every group is decided: the rollout is done, if any node positively passed.

    A version that no node ran healthy (every member skipped as unreachable, or failed
    within the budget) never becomes the stable version: the rollout waits, within its
    progress deadline, for a skipped node to come back and pass.
    """
    if not rs.updated and any(not _is_excluded(step, n) for n in rs.members()):
        return rs
    return rs.model_copy(update={"phase": Phase.DONE})


def _next_wave(step: _Step, rs: RolloutState) -> RolloutState:
    wave = rs.current_wave + 1
    if wave > len(rs.waves):
        return _done(step, rs)
    step.event("wave_started", new=str(wave), reason=f"{len(rs.waves[wave - 1])} nodes")
    return rs.model_copy(
        update={"current_wave": wave, "phase": Phase.WAVES, "progress_at": step.now}
    )


def _halt(step: _Step, rs: RolloutState, reason: str) -> RolloutState:
    """Stop the rollout; roll back by itself when the policy allows and there is a stable
    version to go back to."""
    job = step.job
    halted = rs.model_copy(
        update={"phase": Phase.HALTED, "completed_at": step.now, "halted_reason": reason}
    )
    step.event("rollout_halted", new=rs.type.value, reason=reason)
    can_roll_back = (
        rs.type == RolloutType.UPDATE and job.spec.rollout.auto_rollback and rs.from_version > 0
    )
    if not can_roll_back:
        return halted
    step.event(
        "rollback_started", old=str(rs.target_version), new=str(rs.from_version), reason=reason
    )
    # Its nodes' healthy deadlines run from now: look again then even if no agent reports.
    step.wake(step.now + job.spec.rollout.healthy_deadline)
    return start_rollback(job, halted, rs.from_version, f"failed: {reason}", step.now)


def _complete(step: _Step, rs: RolloutState) -> RolloutState:
    rs = rs.model_copy(update={"completed_at": step.now})
    step.event("rollout_completed", new=str(rs.target_version), reason=rs.type.value)
    if rs.type != RolloutType.RESTART:
        history = [v for v in step.job.stable_history if v != rs.target_version]
        step.job = step.job.model_copy(
            update={
                "stable_version": rs.target_version,
                "stable_history": [*history, rs.target_version][-20:],
            }
        )
    return rs


def _finish(step: _Step, rs: RolloutState, *, queued: bool = False) -> RolloutPlan:
    job = step.job
    status = derive_status(
        job, rs, step.nodes, step.executions, step.now, queued=queued, index=step.index
    )
    old_state = job.status.state.state_type
    if status.state.state_type != old_state:
        step.event(
            "job_state",
            old=old_state.value,
            new=status.state.state_type.value,
            reason=status.state.message,
        )
    comparable_old = job.status.model_copy(update={"updated_at": ZERO_TIME})
    comparable_new = status.model_copy(update={"updated_at": ZERO_TIME, "revision": 0})
    comparable_old = comparable_old.model_copy(update={"revision": 0})
    if comparable_new != comparable_old or rs != job.rollout or job != step.job:
        status = status.model_copy(
            update={"revision": job.status.revision + 1, "updated_at": step.now}
        )
    else:
        status = job.status
    new_job = step.job.model_copy(update={"status": status, "rollout": rs})
    changes = [] if queued else _assignment_changes(step, rs)
    if step.index is not None:
        step.index.commit(rs)
    return RolloutPlan(job=new_job, changes=changes, events=step.events, wake_at=step.wake_at)


def _assignment_changes(step: _Step, rs: RolloutState) -> list[AssignmentChange]:
    """Started members run the target; the others keep the stable version (or nothing).
    In node order: the order is no part of the plan's meaning, and one order makes plans
    comparable."""
    if step.index is not None:
        candidates = step.index.assignment_candidates(rs)
        members: Container[str] = step.index.members(rs)
        started: Container[str] = step.index.started(rs)
    else:
        members, started = set(rs.members()), set(rs.started)
        candidates = set(members) | step.assignments.keys()
    changes = []
    for node_id in sorted(candidates):
        change = _assignment_change(step, rs, node_id, node_id in members, node_id in started)
        if change is not None:
            changes.append(change)
    return changes


def _assignment_change(
    step: _Step, rs: RolloutState, node_id: str, member: bool, started: bool
) -> AssignmentChange | None:
    node = step.nodes.get(node_id)
    current = step.assignments.get(node_id)
    if node is None or node.drain or (not member and is_schedulable(node)):
        # Drained or gone; or no longer matching the target selector.
        return AssignmentChange(node_id=node_id, version=None) if current is not None else None
    if not member:
        return None  # ineligible and no longer targeted: keeps what it runs
    if not is_schedulable(node) and current is not None:
        return None  # ineligible: keeps what it runs, gets nothing new
    if started:
        want: tuple[int, int] | None = (rs.target_version, rs.generation)
    elif current is not None and current.version == rs.from_version:
        return None  # not reached yet: keeps running the stable version
    else:
        # Never a third version: a superseded one goes back to stable (or away).
        want = (rs.from_version, 0) if rs.from_version else None
    have = (current.version, current.generation) if current is not None else None
    if want == have and node_id not in step.given:
        return None
    version, generation = want if want is not None else (None, 0)
    return AssignmentChange(node_id=node_id, version=version, generation=generation)


def _failure_summary(failed: Mapping[str, str]) -> str:
    first = heapq.nsmallest(3, failed.items())
    text = "; ".join(f"{node}: {reason}" for node, reason in first)
    return text + (f" (and {len(failed) - 3} more)" if len(failed) > 3 else "")
