"""Rollout invariants, checked by a Hypothesis state machine over random fleets and policies.

The machine plays the driver, the agents and the operator around the pure planner: agents
report health for the version actually assigned to them, nodes go down and come back, the fake
clock moves (stopping at every wake-up the plan asks for, as the driver's timers do), operators
pause, resume, promote, abort, retry, roll back and restart, new spec versions supersede the
running rollout, and the coordinator "restarts" (or pauses): the job record round-trips through
JSON and the planner is told that the coordinator listens again only from now (a blind spot).
After every planner step it checks the invariants of DESIGN.md §3, §4 and §6, and those of
issue 15: a gate opens only on nodes that positively passed or were skipped explicitly, the
canary gate never opens without a healthy canary, a node is failed or skipped for silence only
after the grace window, and "complete" means every member passed, failed or was skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from coordinator.domain.records import (
    ExecutionRecord,
    JobRecord,
    NodeRecord,
    Phase,
    RolloutState,
)
from coordinator.engine import actions
from coordinator.engine.actions import ActionResult
from coordinator.engine.observation import Observation
from coordinator.engine.planner import RolloutPlan, plan_rollout
from coordinator.submit import revise
from shared.clock import ZERO_TIME
from shared.errors import Conflict, ValidationFailed
from shared.spec import JobSpec
from shared.status import JobStateType, JobStatus, Rollout, RolloutType
from tests.coordinator.engine.fixtures import T0, ExecutionState, NodeStatus, World, make_node

MAX_NODES = 12
GRACE = timedelta(seconds=30)  # the heartbeat TTL the driver passes after a blind spot
TIMER_MARGIN = timedelta(milliseconds=5)  # the driver wakes just after a deadline, not on it
SETTLED = {
    JobStateType.RUNNING,
    JobStateType.DEGRADED,
    JobStateType.COMPLETED,
    JobStateType.FAILED,
    JobStateType.ROLLOUT_FAILED,
    JobStateType.ROLLOUT_PAUSED,
}
REPORTABLE = [
    ExecutionState.HEALTHY,
    ExecutionState.UNHEALTHY,
    ExecutionState.FAILED,
    ExecutionState.STARTING,
]

counts = st.one_of(st.integers(0, 3), st.sampled_from(["0%", "10%", "25%", "50%"]))
policies = st.fixed_dictionaries(
    {
        "canary": counts,
        "canary_selector": st.sampled_from([{}, {}, {"tier": "edge"}]),
        "spread_by": st.sampled_from([None, "zone"]),
        "auto_promote": st.booleans(),
        "waves": st.one_of(
            st.integers(1, 4),
            st.sampled_from([["100%"], ["50%", "100%"], ["10%", "50%", "100%"]]),
        ),
        "max_parallel": st.integers(0, 3),
        "pause_between_waves": st.sampled_from(["0s", "5s", "manual"]),
        "min_healthy_time": st.sampled_from(["0s", "5s", "10s"]),
        "healthy_deadline": st.sampled_from(["15s", "30s", "1m"]),
        "progress_deadline": st.sampled_from(["1m", "2m", "5m"]),
        "max_failed_nodes": st.one_of(st.integers(0, 2), st.sampled_from(["0%", "20%", "50%"])),
        "on_unreachable": st.sampled_from(["skip", "fail"]),
        "auto_rollback": st.booleans(),
    }
)


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, NodeRecord]:
    """2..12 ready nodes, each in one of 1..3 zones and an edge or core tier."""
    size = draw(st.integers(2, MAX_NODES))
    zones = draw(st.integers(1, 3))
    nodes = {}
    for i in range(1, size + 1):
        zone = draw(st.integers(1, zones))
        tier = draw(st.sampled_from(["edge", "core"]))
        nodes[f"n{i}"] = make_node(f"n{i}", zone=f"z{zone}", tier=tier)
    return nodes


def job_spec(policy: dict[str, Any], build: int) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "web", "task": {"command": ["run", f"build-{build}"]}, "rollout": policy}
    )


def report(world: World, node_id: str, state: ExecutionState) -> None:
    """The agent on ``node_id`` reports ``state`` for the run it is assigned, or nothing for a
    job it no longer runs (merged as the store does: a job missing from a report is dropped;
    ``since`` survives repeated reports of the same state of the same run)."""
    assigned = world.assignments.get(node_id)
    if assigned is None:
        world.executions.pop(node_id, None)
        return
    old = world.executions.get(node_id)
    unchanged = old is not None and (old.version, old.generation, old.state) == (
        assigned.version,
        assigned.generation,
        state,
    )
    world.executions[node_id] = ExecutionRecord(
        node_id=node_id,
        job=world.job.name,
        version=assigned.version,
        generation=assigned.generation,
        state=state,
        message="crashed" if state == ExecutionState.FAILED else "",
        since=old.since if unchanged and old is not None else world.now,
        updated_at=world.now,
    )


def rollout_key(rs: RolloutState) -> tuple[object, ...]:
    """What identifies one rollout (a retry starts a new one of the same version)."""
    return (rs.type, rs.for_version, rs.target_version, rs.generation, rs.started_at)


def halted_version(rs: RolloutState) -> int | None:
    """The version a create/update rollout stopped rolling out (failure budget, progress
    deadline or abort), whether or not it was rolled back automatically."""
    if rs.phase == Phase.HALTED and rs.type in (RolloutType.CREATE, RolloutType.UPDATE):
        return rs.target_version
    if rs.type == RolloutType.ROLLBACK and rs.cause:
        return rs.rolled_back_from
    return None


def wave_of(rs: RolloutState) -> dict[str, int]:
    """Node id -> 0 for canaries, k for wave k."""
    index = {n: 0 for n in rs.canary}
    for k, wave in enumerate(rs.waves, start=1):
        index.update({n: k for n in wave})
    return index


def groups(rs: RolloutState) -> int:
    return (1 if rs.canary else 0) + len(rs.waves)


def without_revision(status: JobStatus) -> JobStatus:
    return status.model_copy(update={"revision": 0, "updated_at": ZERO_TIME})


class RolloutMachine(RuleBasedStateMachine):
    """Drives one job's rollouts through random events and checks the engine's invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(job=JobRecord.model_construct(), nodes={})
        self.build = 0
        self.version = 0
        self.last_status = JobStatus()
        self.halted: set[int] = set()  # versions no node may be given again (invariant 3)
        self.key: tuple[object, ...] = ()
        self.active = False
        self.passed: set[int] = set()  # groups of the current rollout that passed (invariant 2)
        self.stable_at_start = 0
        self.started_at: dict[str, datetime] = {}
        self.failed_seen: set[str] = set()

    # -- the driver ------------------------------------------------------------------

    def step(self) -> RolloutPlan:
        """One evaluation by the driver: plan, apply, check."""
        before = self.world.job
        plan = self.world.plan()
        self.check_step(before, plan)
        self.check_converges()
        return plan

    def check_converges(self) -> None:
        """Evaluating again at the same instant (as a kick would) settles within a few
        evaluations: the planner never oscillates. Runs on a copy; the world is untouched."""
        probe = World(
            job=self.world.job,
            nodes=self.world.nodes,
            now=self.world.now,
            assignments=dict(self.world.assignments),
            executions=self.world.executions,
        )
        # With max_parallel = 1 and agents that already run the version, each evaluation may
        # pass one node and start the next: allow a few evaluations per node.
        for _ in range(2 * len(probe.nodes) + 4):
            before = probe.job
            if not probe.plan().changed(before):
                return
        raise AssertionError("re-evaluating at the same instant does not settle")

    def advance(self, seconds: float) -> None:
        """Move the clock, evaluating at every wake-up the plans asked for on the way."""
        until = self.world.now + timedelta(seconds=seconds)
        wake = self.step().wake_at
        while wake is not None and wake + TIMER_MARGIN <= until:
            self.world.now = max(self.world.now, wake + TIMER_MARGIN)
            wake = self.step().wake_at
        self.world.now = until
        self.step()

    def act(
        self, action: Callable[[], ActionResult], noted: Callable[[], None] = lambda: None
    ) -> bool:
        """Apply an operator action as the API does (store its result, then let the engine
        react); ``noted`` updates the model in between. Refusals are fine: False."""
        try:
            job, _ = action()
        except (Conflict, ValidationFailed):
            return False
        stable = self.world.job.stable_version
        self.world.job = job
        self.observe_status()
        self.track_rollout(before_stable=stable)
        noted()
        self.step()
        return True

    # -- checks ----------------------------------------------------------------------

    def check_step(self, before: JobRecord, plan: RolloutPlan) -> None:
        rs = self.world.job.rollout
        self.track_rollout(before_stable=before.stable_version)
        self.note_started(rs)
        self.note_passed_groups(rs)
        for change in plan.changes:
            if change.version is None:
                continue
            assert change.version not in self.halted, (
                f"{change.node_id} was given version {change.version} after its rollout halted"
            )
            if (change.version, change.generation) == (rs.target_version, rs.generation):
                self.check_wave_order(rs, change.node_id)
                if rs.type != RolloutType.ROLLBACK:
                    assert not self.is_skipped(change.node_id), (
                        f"{change.node_id} was given version {change.version} while down"
                    )
        versions = {a.version for a in self.world.assignments.values()}
        assert len(versions) <= 2, f"three versions assigned at once: {sorted(versions)}"
        self.check_max_parallel(rs, plan)
        self.check_timers(rs, plan)
        self.check_judgements(before, plan)
        failing = halted_version(rs)
        if failing is not None:
            self.halted.add(failing)
        self.observe_status()
        self.check_status_fields()

    def track_rollout(self, *, before_stable: int) -> None:
        """Notice a new rollout starting and what it should report as rollback_to_version."""
        rs = self.world.job.rollout
        key = rollout_key(rs)
        restarted = rs.is_active() and not self.active  # a retry at the same instant
        self.active = rs.is_active()
        if key == self.key and not restarted:
            return
        self.key = key
        self.stable_at_start = before_stable
        self.started_at = {}
        self.failed_seen = set()
        self.passed = set()
        if rs.type != RolloutType.ROLLBACK:
            # A retry resumes at its first unfinished group: the groups before it had passed.
            self.passed = set(range(rs.current_wave))

    def note_started(self, rs: RolloutState) -> None:
        """When each node was given the target in this rollout: its healthy deadline runs
        from then."""
        for node_id in rs.started:
            self.started_at.setdefault(node_id, self.world.now)

    def note_passed_groups(self, rs: RolloutState) -> None:
        """A group has passed once each of its nodes positively passed, failed, or was skipped
        explicitly as unreachable; a node that is merely down does not count."""
        settled = set(rs.updated) | set(rs.failed) | set(rs.skipped)
        for k, group in enumerate([rs.canary, *rs.waves]):
            index = k if rs.canary else k + 1
            if all(n in settled or self.is_excluded(n) for n in group):
                self.passed.add(index)

    def is_excluded(self, node_id: str) -> bool:
        """Taken out of the rollout by an operator (or gone): never waited for."""
        node = self.world.nodes.get(node_id)
        return node is None or node.drain or node.eligibility != "eligible"

    def is_skipped(self, node_id: str) -> bool:
        """Down (its agent says nothing) or gone."""
        node = self.world.nodes.get(node_id)
        return node is None or node.status == NodeStatus.DOWN

    def check_wave_order(self, rs: RolloutState, node_id: str) -> None:
        """Invariant 2: a node of wave k gets the target only after every earlier group passed."""
        if rs.type == RolloutType.ROLLBACK or rs.promote_full:
            return  # rollbacks are not waved; `promote --full` skips the order on purpose
        k = wave_of(rs).get(node_id)
        if k is None:
            return
        first = 0 if rs.canary else 1
        missing = [g for g in range(first, k) if g not in self.passed]
        assert not missing, (
            f"{node_id} of wave {k} got version {rs.target_version} before"
            f" group(s) {missing} passed"
        )

    def check_max_parallel(self, rs: RolloutState, plan: RolloutPlan) -> None:
        """Invariant 1: the planner gives the target to a node only while at most max_parallel
        nodes are in flight, unreachable ones included until they are skipped explicitly."""
        limit = self.world.job.spec.rollout.max_parallel
        if not limit or rs.type == RolloutType.ROLLBACK:
            return
        target = (rs.target_version, rs.generation)
        if not any((c.version, c.generation) == target for c in plan.changes):
            return
        updating = [
            n
            for n in rs.started
            if n not in rs.updated
            and n not in rs.failed
            and not (n in rs.skipped and self.is_skipped(n))  # skipped and still away
            and not self.is_excluded(n)
            and (a := self.world.assignments.get(n)) is not None
            and (a.version, a.generation) == (rs.target_version, rs.generation)
        ]
        assert len(updating) <= limit, f"{len(updating)} nodes updating, max_parallel={limit}"

    def check_judgements(self, before: JobRecord, plan: RolloutPlan) -> None:
        """Issue 15's invariants for one planner step: every pass is earned by observed
        health, silence is judged only after the grace window, the canary gate opens only on
        a healthy canary, and a completed rollout decided about every member."""
        world, rs = self.world, self.world.job.rollout
        observation, policy = world.observation, world.job.spec.rollout
        for event in plan.events:
            if event.kind == "node_updated":
                # One plan may end a rollout and start the next: the event names its version.
                execution = world.executions.get(event.node)
                assert execution is not None, f"{event.node} passed without any report"
                assert execution.version == int(event.new), (
                    f"{event.node} passed on a run of version {execution.version}"
                )
                if world.job.spec.type == "service":
                    assert execution.state == ExecutionState.HEALTHY
                    observed = world.now - max(execution.since, observation.since)
                    assert observed >= policy.min_healthy_time, (
                        f"{event.node} passed after {observed} of observed health"
                    )
            if event.kind == "node_skipped" or (
                event.kind == "node_failed" and "heartbeating" in event.reason
            ):
                node = world.nodes.get(event.node)
                assert node is not None, f"{event.node} judged unreachable, but it is gone"
                assert node.status == NodeStatus.DOWN, (
                    f"{event.node} judged unreachable while it was not down"
                )
                assert world.now >= observation.blind_until, (
                    f"{event.node} judged unreachable {world.now} inside the grace window"
                    f" (until {observation.blind_until})"
                )
        was = before.rollout
        if (
            was.phase == Phase.CANARY
            and rollout_key(was) == rollout_key(rs)
            and rs.phase == Phase.WAVES
        ):
            assert set(rs.canary) & set(rs.updated), (
                "the canary gate opened without a healthy canary"
            )
        if any(e.kind == "rollout_completed" for e in plan.events):
            decided = set(rs.updated) | set(rs.failed) | set(rs.skipped)
            undecided = [n for n in rs.members() if n not in decided and not self.is_excluded(n)]
            assert not undecided, f"rollout completed while {undecided} never passed"

    def check_timers(self, rs: RolloutState, plan: RolloutPlan) -> None:
        """Deadlines are enforced by the engine's own timers (DESIGN §6): an updating node is
        failed by its healthy deadline, not before, and the plan asks to be woken by then."""
        hd = self.world.job.spec.rollout.healthy_deadline
        blind_until = self.world.observation.blind_until
        for node_id, reason in rs.failed.items():
            if "healthy_deadline" in reason and node_id not in self.failed_seen:
                assert self.world.now >= self.started_at[node_id] + hd, (
                    f"{node_id} failed for healthy_deadline {hd} only"
                    f" {self.world.now - self.started_at[node_id]} after it was given the version"
                )
                assert self.world.now >= blind_until, (
                    f"{node_id} failed for healthy_deadline inside the grace window"
                )
        self.failed_seen = set(rs.failed)
        if not rs.is_active():
            return
        settled = set(rs.updated) | set(rs.failed) | set(rs.skipped)
        for node_id in rs.started:
            if node_id in settled or self.is_skipped(node_id):
                continue
            deadline = max(self.started_at[node_id] + hd, blind_until)
            assert self.world.now < deadline, f"{node_id} is past its healthy deadline"
            assert plan.wake_at is not None, f"no timer at all while {node_id} is in flight"
            assert plan.wake_at <= deadline, (
                f"no timer for {node_id}'s healthy deadline {deadline}: wake_at={plan.wake_at}"
            )

    def observe_status(self) -> None:
        """Invariant 4: revision grows with every status change, version only on submission."""
        job = self.world.job
        status, old = job.status, self.last_status
        assert status.revision >= old.revision, "revision went backwards"
        if without_revision(status) != without_revision(old):
            assert status.revision > old.revision, "status changed without a new revision"
        assert status.version == self.version, "version moved without a submission"
        assert status.revision >= status.version
        self.last_status = status

    def check_status_fields(self) -> None:
        """The JobStatus field rules of DESIGN §4, for a status the planner derived."""
        job = self.world.job
        status, rs, r = job.status, job.rollout, job.status.rollout
        if r.type == RolloutType.NONE:
            assert r == Rollout(), "the rollout object is all-zero before the first rollout"
            return
        assert r.updated_nodes + r.failed_nodes <= r.total_nodes
        assert r.current_wave <= r.total_waves
        assert r.canary_promoted is False or bool(r.canary_nodes)
        if r.type == RolloutType.CREATE:
            assert r.rollback_to_version == 0
        if r.type == RolloutType.UPDATE:
            assert r.rollback_to_version == self.stable_at_start != 0
        if r.type == RolloutType.ROLLBACK:
            assert 1 <= r.rollback_to_version <= status.version
        state = status.state.state_type
        if state not in (JobStateType.PENDING, JobStateType.QUEUED):
            active = state in (JobStateType.DEPLOYING, JobStateType.ROLLOUT_PAUSED)
            assert active == rs.is_active(), f"state {state} but rollout phase {rs.phase}"
            assert (r.completed_at == ZERO_TIME) == rs.is_active()

    # -- rules -----------------------------------------------------------------------

    @initialize(fleet=fleets(), policy=policies, running=st.booleans())
    def create(self, fleet: dict[str, NodeRecord], policy: dict[str, Any], running: bool) -> None:
        """A new job; with ``running`` its first version is rolled out healthy everywhere
        first, so that the rules mostly exercise updates."""
        job = revise(None, job_spec(policy, 0), T0)
        assert job is not None
        self.world = World(job=job, nodes=fleet)
        self.version = 1
        self.step()
        if running:
            self.settles()
            if self.world.state == JobStateType.ROLLOUT_PAUSED:
                self.act(lambda: actions.promote(self.world.job, self.world.now, full=True))
                self.settles()

    @rule(node=st.integers(0, MAX_NODES - 1), state=st.sampled_from(REPORTABLE))
    def agent_reports(self, node: int, state: ExecutionState) -> None:
        node_id = self.node_id(node)
        if self.is_skipped(node_id):
            return
        report(self.world, node_id, state)
        self.step()

    @rule(
        states=st.lists(
            st.sampled_from([*REPORTABLE, None, *[ExecutionState.HEALTHY] * 8]),
            min_size=MAX_NODES,
            max_size=MAX_NODES,
        )
    )
    def agents_report(self, states: list[ExecutionState | None]) -> None:
        """Each live agent reports (None: this one stays silent this round)."""
        for node_id, state in zip(sorted(self.world.nodes), states, strict=False):
            if state is not None and not self.is_skipped(node_id):
                report(self.world, node_id, state)
        self.step()

    @rule()
    def healthy_tick(self) -> None:
        """Every live agent reports healthy, then min_healthy_time passes: a wave can pass."""
        self.all_healthy()
        self.advance(self.world.job.spec.rollout.min_healthy_time.total_seconds() + 1)

    @rule(seconds=st.sampled_from([1, 5, 10, 15, 30, 60, 120, 300]))
    def time_passes(self, seconds: int) -> None:
        self.advance(seconds)

    @rule(node=st.integers(0, MAX_NODES - 1))
    def node_lost(self, node: int) -> None:
        self.set_status(self.node_id(node), NodeStatus.DOWN)

    @rule(node=st.integers(0, MAX_NODES - 1))
    def node_returns(self, node: int) -> None:
        self.set_status(self.node_id(node), NodeStatus.READY)

    @rule()
    def pause(self) -> None:
        self.act(lambda: actions.pause(self.world.job, self.world.now))

    @rule()
    def resume(self) -> None:
        self.act(lambda: actions.resume(self.world.job, self.world.now))

    @rule(full=st.booleans())
    def promote(self, full: bool) -> None:
        def approve_canaries() -> None:
            self.passed.add(0)  # approving canaries early is the operator's call

        canary_phase = self.world.job.rollout.phase == Phase.CANARY
        self.act(
            lambda: actions.promote(self.world.job, self.world.now, full=full),
            approve_canaries if canary_phase else lambda: None,
        )

    @rule()
    def abort(self) -> None:
        self.act(lambda: actions.abort(self.world.job, self.world.now))

    @rule()
    def retry(self) -> None:
        """Retrying deliberately re-runs the halted version."""
        self.act(
            lambda: actions.retry(self.world.job, self.world.now),
            lambda: self.halted.discard(self.world.job.rollout.target_version),
        )

    @rule(to_version=st.one_of(st.none(), st.integers(0, 6)))
    def rollback(self, to_version: int | None) -> None:
        """Rolling back may name any version, a halted one too."""
        self.act(
            lambda: actions.rollback(self.world.job, self.world.now, to_version),
            lambda: self.halted.discard(self.world.job.rollout.target_version),
        )

    @rule()
    def restart(self) -> None:
        nodes = list(self.world.nodes.values())
        self.act(lambda: actions.restart(self.world.job, nodes, self.world.now))

    @rule(policy=st.one_of(st.none(), policies))
    def submit_new_version(self, policy: dict[str, Any] | None) -> None:
        """PUT /v1/jobs with a changed spec (same policy, or a new one)."""
        self.build += 1
        rollout = self.world.job.spec.rollout.model_dump(mode="json") if policy is None else policy
        revised = revise(self.world.job, job_spec(rollout, self.build), self.world.now)
        assert revised is not None
        self.world.job = revised
        self.version += 1
        self.observe_status()
        self.step()

    @rule(downtime=st.sampled_from([0, 0, 20, 90]), restart=st.booleans())
    def coordinator_blind_spot(self, downtime: int, restart: bool) -> None:
        """The coordinator restarts (the job record round-trips through JSON) or its process
        is paused: nothing is evaluated for ``downtime``, agents meanwhile report nothing it
        hears, and it listens again from now with a grace window of one TTL."""
        self.world.now += timedelta(seconds=downtime)
        self.world.observation = Observation(since=self.world.now, grace=GRACE)
        if restart:
            job = self.world.job
            restored = JobRecord.model_validate_json(job.model_dump_json())
            assert restored == job
            world = self.world
            args = (world.nodes, world.assignments, world.executions, world.now)
            expected = plan_rollout(job, *args, world.observation)
            self.world.job = restored
            plan = self.step()
            # Level-triggered: the restored record plans exactly what the original would.
            assert (plan.job, plan.changes, plan.events, plan.wake_at) == (
                expected.job,
                expected.changes,
                expected.events,
                expected.wake_at,
            )
            return
        self.step()

    def teardown(self) -> None:
        """Invariant 6: with every live agent healthy and no operator, the rollout settles in
        bounded time. Hypothesis calls this from a ``finally``: when a step already failed,
        skip it so that the real error is the one reported and shrunk."""
        if sys.exc_info()[1] is None:
            self.settles()

    def settles(self) -> None:
        world = self.world
        policy = world.job.spec.rollout
        n = groups(world.job.rollout) + 1
        pause = policy.pause_between_waves
        pauses = pause * n if isinstance(pause, timedelta) else timedelta(0)
        deadline = (
            world.now + (policy.healthy_deadline + policy.progress_deadline) * n + pauses + GRACE
        )
        for _ in range(10_000):
            # Agents pick up new assignments at once and report; then the clock moves on.
            for _ in range(MAX_NODES + 2):
                self.all_healthy()
                plan = self.step()
                if not plan.changes:
                    break
            if world.state in SETTLED:
                return
            assert world.now <= deadline, (
                f"still {world.state} at {world.now}, deadline {deadline}:"
                f" {world.job.status.state.message}"
            )
            wake: datetime = plan.wake_at or world.now + timedelta(seconds=1)
            world.now = max(world.now + TIMER_MARGIN, wake + TIMER_MARGIN)
        raise AssertionError("the liveness run did not end")

    # -- helpers ---------------------------------------------------------------------

    def all_healthy(self) -> None:
        """Every live agent reports its assignment healthy."""
        for node_id in sorted(self.world.nodes):
            if not self.is_skipped(node_id):
                report(self.world, node_id, ExecutionState.HEALTHY)

    def node_id(self, index: int) -> str:
        ids = sorted(self.world.nodes)
        return ids[index % len(ids)]

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        if self.world.nodes[node_id].status != status:
            self.world.set_node(node_id, status=status)
            self.step()


class TestRolloutInvariants(RolloutMachine.TestCase):  # type: ignore[name-defined,misc]
    """Random fleets, policies, health, node churn, operator actions and restarts never break
    the rollout invariants."""

    settings = settings(
        max_examples=150,
        stateful_step_count=50,
        deadline=None,
        derandomize=False,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
