"""The planner under the coordinator's own faults: restarts, pauses and unreachable nodes.

Pure planner tests on a fake clock: ``World.blind_spot()`` is what the driver passes after a
restart or a pause of the coordinator (an ``Observation`` that starts now, with a grace of
one TTL). Nothing here may pass a gate, fail a node or skip one on the strength of a silence
the coordinator could not have heard.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from coordinator.domain.records import Phase
from shared.status import JobStateType
from tests.coordinator.engine.fixtures import ExecutionState, NodeStatus, World, make_spec

HEALTHY = ExecutionState.HEALTHY
GRACE = 30


def canary_world(**rollout: object) -> World:
    """Six nodes, one canary, then waves; the canary has been given the version."""
    world = World.new(
        make_spec(rollout={"canary": 1, "waves": 2, "healthy_deadline": "1m", **rollout}),
        node_count=6,
    )
    world.plan()
    return world


def canary_of(world: World) -> str:
    return world.job.rollout.canary[0]


def kinds(world: World) -> list[str]:
    return [e.kind for e in world.plan().events]


class TestRestart:
    def test_falsely_down_canary_is_not_passed_over(self) -> None:
        """A canary marked down just before a restart neither opens the gate nor is skipped
        while the restarted coordinator cannot yet have heard it."""
        world = canary_world()
        canary = canary_of(world)
        world.set_node(canary, status=NodeStatus.DOWN)
        world.blind_spot(downtime=5, grace=GRACE)
        plan = world.plan()
        rs = world.job.rollout
        assert rs.phase == Phase.CANARY
        assert rs.skipped == {}
        assert not {"canary_promoted", "wave_started", "node_skipped"} & {
            e.kind for e in plan.events
        }
        assert plan.wake_at is not None
        assert plan.wake_at <= world.observation.blind_until
        assert set(world.assignments) == {canary}, "no wave node may start yet"

    def test_canary_heard_within_grace_goes_on_normally(self) -> None:
        """The canary reports within the grace window: it passes after min_healthy_time of
        observed health, and only then does wave 1 start."""
        world = canary_world()
        canary = canary_of(world)
        world.report(canary, HEALTHY)
        world.set_node(canary, status=NodeStatus.DOWN)
        world.blind_spot(downtime=40, grace=GRACE)
        world.plan()
        world.set_node(canary, status=NodeStatus.READY)
        world.advance(2)
        world.report(canary, HEALTHY)
        world.plan()
        assert world.job.rollout.phase == Phase.CANARY, "healthy for 42 s, but observed for 2 s"
        world.advance(10)
        assert "canary_promoted" in kinds(world)
        assert world.job.rollout.current_wave >= 1

    def test_unreachable_canary_is_skipped_after_grace_but_gate_stays_shut(self) -> None:
        """A canary still silent after the grace window is skipped explicitly, and the gate
        does not open without a healthy canary: the rollout waits and says why."""
        world = canary_world()
        canary = canary_of(world)
        world.set_node(canary, status=NodeStatus.DOWN)
        world.blind_spot(grace=GRACE)
        world.plan()
        world.advance(GRACE)
        plan = world.plan()
        assert [e.kind for e in plan.events if e.node == canary] == ["node_skipped"]
        assert canary in world.job.rollout.skipped
        assert world.job.rollout.phase == Phase.CANARY
        assert set(world.assignments) == {canary}
        assert "no canary is healthy" in world.job.status.state.message
        world.set_node(canary, status=NodeStatus.READY)
        world.report(canary, HEALTHY)
        world.plan()
        world.advance(10)
        world.plan()
        assert canary in world.job.rollout.updated
        assert canary not in world.job.rollout.skipped
        assert world.job.rollout.current_wave >= 1

    def test_stored_heartbeat_age_is_no_evidence_after_restart(self) -> None:
        """A node whose healthy deadline passed while the coordinator was down is not failed
        before it could have reported after the restart."""
        world = canary_world()
        canary = canary_of(world)
        world.blind_spot(downtime=120, grace=GRACE)
        world.plan()
        assert world.job.rollout.failed == {}
        world.advance(GRACE - 1)
        world.report(canary, HEALTHY)
        world.plan()
        assert world.job.rollout.failed == {}
        world.advance(10)
        world.plan()
        assert canary in world.job.rollout.updated


class TestPause:
    def test_paused_coordinator_does_not_fail_nodes_for_its_pause(self) -> None:
        """Healthy deadline 1m, the coordinator stopped for 45 s just before it: the node's
        queued report arrives after the resume and it passes."""
        world = canary_world()
        canary = canary_of(world)
        world.advance(50)
        world.plan()
        world.blind_spot(downtime=45, grace=GRACE)
        world.plan()
        assert world.job.rollout.failed == {}
        world.report(canary, HEALTHY)
        world.advance(10)
        world.plan()
        assert canary in world.job.rollout.updated

    def test_deadline_still_enforced_after_the_grace(self) -> None:
        """A node that stays unhealthy is failed once both its deadline and the grace have
        passed: blind spots delay judgement, they never cancel it."""
        world = canary_world()
        canary = canary_of(world)
        world.report(canary, ExecutionState.UNHEALTHY)
        world.advance(50)
        world.blind_spot(downtime=45, grace=GRACE)
        plan = world.plan()
        assert plan.wake_at == world.observation.blind_until
        world.advance(GRACE)
        world.plan()
        assert canary in world.job.rollout.failed
        assert "healthy_deadline" in world.job.rollout.failed[canary]

    def test_progress_deadline_waits_for_the_grace(self) -> None:
        """The progress deadline is not judged during a blind spot either."""
        world = canary_world(progress_deadline="2m", healthy_deadline="2m")
        canary = canary_of(world)
        world.report(canary, ExecutionState.UNHEALTHY)
        world.blind_spot(downtime=150, grace=GRACE)
        world.plan()
        assert world.job.rollout.phase == Phase.CANARY
        world.advance(GRACE)
        world.plan()
        assert world.job.rollout.phase == Phase.HALTED


class TestUnreachable:
    def test_down_node_in_a_wave_is_skipped_explicitly(self) -> None:
        """Under on_unreachable = skip, a down node is recorded as skipped with an event and
        a reason in the status, and the wave completes without it."""
        world = World.new(make_spec(rollout={"waves": 1}), node_count=3)
        world.plan()
        world.set_node("n3", status=NodeStatus.DOWN)
        world.report("n1", HEALTHY)
        world.report("n2", HEALTHY)
        plan = world.plan()
        assert ("node_skipped", "n3") in [(e.kind, e.node) for e in plan.events]
        world.advance(10)
        world.plan()
        rs = world.job.rollout
        assert rs.skipped.keys() == {"n3"}
        assert rs.phase == Phase.DONE

    def test_on_unreachable_fail_waits_for_the_grace(self) -> None:
        """on_unreachable = fail does not fail a node the coordinator could not hear yet."""
        world = World.new(make_spec(rollout={"on_unreachable": "fail"}), node_count=3)
        world.plan()
        world.set_node("n3", status=NodeStatus.DOWN)
        world.blind_spot(grace=GRACE)
        world.plan()
        assert world.job.rollout.failed == {}
        world.advance(GRACE)
        world.plan()
        assert world.state == JobStateType.FAILED

    def test_unreachable_node_holds_its_place_under_max_parallel(self) -> None:
        """A node that goes down after it was given the version stays in flight under
        max_parallel until it is skipped: no second node starts meanwhile."""
        world = World.new(make_spec(rollout={"max_parallel": 1, "waves": 1}), node_count=3)
        world.blind_spot(grace=GRACE)
        world.plan()
        (first,) = world.assignments
        world.set_node(first, status=NodeStatus.DOWN)
        world.advance(GRACE / 2)
        world.plan()
        assert set(world.assignments) == {first}
        world.advance(GRACE / 2)
        world.plan()
        assert first in world.job.rollout.skipped
        assert len(world.assignments) == 2, "the skipped node frees its place"

    def test_down_nodes_are_not_given_the_version(self) -> None:
        """Nodes down at their turn are not given the version (a healed partition must not
        restart them all at once); they are skipped after the grace, and get the version
        one at a time under max_parallel when they return."""
        world = World.new(make_spec(rollout={"max_parallel": 1, "waves": 1}), node_count=3)
        for node in ("n1", "n2", "n3"):
            world.set_node(node, status=NodeStatus.DOWN)
        world.blind_spot(grace=GRACE)
        world.plan()
        assert world.assignments == {}
        world.advance(GRACE)
        world.plan()
        assert set(world.job.rollout.skipped) == {"n1", "n2", "n3"}
        assert world.assignments == {}
        for node in ("n1", "n2", "n3"):
            world.set_node(node, status=NodeStatus.READY)
        world.plan()
        assert len(world.assignments) == 1, "returned nodes catch up paced by max_parallel"

    def test_failed_canary_within_budget_halts(self) -> None:
        """A failure budget never lets a failed canary open the gate."""
        world = canary_world(max_failed_nodes=1)
        canary = canary_of(world)
        world.report(canary, ExecutionState.FAILED)
        world.plan()
        rs = world.job.rollout
        assert rs.phase == Phase.HALTED
        assert "no canary became healthy" in rs.halted_reason
        assert world.assignments.keys() == {canary}

    def test_wave_order_holds_while_a_canary_is_silent(self) -> None:
        """Timers firing during the grace window start no wave."""
        world = canary_world()
        canary = canary_of(world)
        world.set_node(canary, status=NodeStatus.DOWN)
        world.blind_spot(grace=GRACE)
        for _ in range(5):
            world.advance(timedelta(seconds=GRACE / 6).total_seconds())
            world.plan()
        assert set(world.assignments) == {canary}


class TestSilentAfterHealthy:
    """A node's ``healthy`` is believed for about a heartbeat past its last report: an agent
    killed right after saying it must not pass the gate while its silence is still shorter
    than the TTL (the fault suite's ``completion`` invariant caught this in a crash loop)."""

    @staticmethod
    def world_heard_every(seconds: float) -> tuple[World, str]:
        world = canary_world(min_healthy_time="10s")
        world.observation = replace(world.observation, heartbeat=timedelta(seconds=seconds))
        canary = canary_of(world)
        world.report(canary, HEALTHY)
        world.set_node(canary, last_heartbeat=world.now)
        return world, canary

    def test_a_canary_not_heard_since_it_said_healthy_does_not_pass(self) -> None:
        world, canary = self.world_heard_every(2)
        world.advance(11)  # past min_healthy_time, no report since "healthy"
        assert "canary_promoted" not in kinds(world)
        assert canary not in world.job.rollout.updated
        world.set_node(canary, last_heartbeat=world.now)  # it reports: still healthy
        assert "canary_promoted" in kinds(world)

    def test_a_canary_heard_on_schedule_passes_at_min_healthy_time(self) -> None:
        world, canary = self.world_heard_every(2)
        for _ in range(5):
            world.advance(2)
            world.set_node(canary, last_heartbeat=world.now)
        assert "canary_promoted" in kinds(world)

    def test_a_late_heartbeat_costs_at_most_a_quarter_heartbeat(self) -> None:
        """Due, not heard lately: the engine looks again a quarter heartbeat later, not a
        whole one (a heartbeat that changes nothing does not wake it)."""
        world, canary = self.world_heard_every(4)
        world.advance(4)
        world.set_node(canary, last_heartbeat=world.now)
        world.advance(6.1)  # due at 10 s; the heartbeat due at 8 s has not come: 4 + 5 < 10
        plan = world.plan()
        assert canary not in world.job.rollout.updated
        assert plan.wake_at == world.now + timedelta(seconds=1)
        world.advance(0.4)
        world.set_node(canary, last_heartbeat=world.now)  # late, but here
        world.advance(0.6)
        assert "canary_promoted" in kinds(world)
