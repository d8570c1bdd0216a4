"""The planner's all-at-once behaviour, driven by a fake clock (no I/O anywhere)."""

from __future__ import annotations

from shared.status import JobStateType, RolloutType
from tests.coordinator.engine.fixtures import (
    Eligibility,
    ExecutionState,
    NodeStatus,
    World,
    make_spec,
)

HEALTHY = ExecutionState.HEALTHY


class TestCreate:
    def test_queued_when_no_node_matches(self) -> None:
        """With no matching node the job is queued and nothing is assigned."""
        world = World.new(make_spec(target={"selector": {"role": "db"}}), role="web")
        plan = world.plan()
        assert world.state == JobStateType.QUEUED
        assert plan.changes == []
        assert "role=db" in world.job.status.state.details["selector"]

    def test_create_assigns_and_deploys(self) -> None:
        """A first version starts a create rollout with nothing to roll back to."""
        world = World.new(make_spec())
        world.plan()
        assert world.state == JobStateType.DEPLOYING
        rollout = world.job.status.rollout
        assert rollout.type == RolloutType.CREATE
        assert rollout.rollback_to_version == 0
        assert rollout.total_nodes == 3
        assert set(world.assignments) == {"n1", "n2", "n3"}

    def test_running_only_after_min_healthy_time(self) -> None:
        """Healthy nodes count as updated once they stayed healthy for min_healthy_time."""
        world = World.new(make_spec())
        world.plan()
        for node in world.nodes:
            world.report(node, HEALTHY)
        plan = world.plan()
        assert world.state == JobStateType.DEPLOYING
        assert plan.wake_at == world.now + make_spec().rollout.min_healthy_time
        world.advance(10)
        world.plan()
        assert world.state == JobStateType.RUNNING
        assert world.job.status.rollout.updated_nodes == 3
        assert world.job.stable_version == 1

    def test_same_inputs_same_plan(self) -> None:
        """Planning twice without new input changes nothing the second time (level-triggered)."""
        world = World.new(make_spec())
        world.plan()
        before = world.job
        plan = world.plan()
        assert not plan.changed(before)
        assert world.job.status.revision == before.status.revision

    def test_healthy_deadline_fails_the_node(self) -> None:
        """A node that is not healthy by healthy_deadline is failed; create then fails the job."""
        world = World.new(make_spec(), node_count=1)
        world.plan()
        world.report("n1", ExecutionState.STARTING)
        world.advance(59)
        world.plan()
        assert world.state == JobStateType.DEPLOYING
        world.advance(1)
        world.plan()
        assert world.state == JobStateType.FAILED
        assert world.job.status.rollout.failed_nodes == 1
        assert "healthy_deadline" in world.job.status.state.details["failed.n1"]

    def test_failures_within_budget_still_complete(self) -> None:
        """Failed nodes up to max_failed_nodes do not halt the rollout."""
        world = World.new(make_spec(rollout={"max_failed_nodes": 1}))
        world.plan()
        world.report("n1", ExecutionState.FAILED)
        world.report("n2", HEALTHY)
        world.report("n3", HEALTHY)
        world.advance(10)
        world.plan()
        assert world.state == JobStateType.RUNNING
        assert world.job.status.rollout.failed_nodes == 1

    def test_revision_grows_with_every_status_change(self) -> None:
        """Each status change raises revision by one; version stays."""
        world = World.new(make_spec())
        revisions = [world.job.status.revision]
        world.plan()
        revisions.append(world.job.status.revision)
        for node in world.nodes:
            world.report(node, HEALTHY)
        world.advance(10)
        world.plan()
        revisions.append(world.job.status.revision)
        assert revisions == sorted(set(revisions))
        assert world.job.status.version == 1


class TestNodes:
    def test_down_node_does_not_block_or_fail(self) -> None:
        """An unreachable node is skipped (on_unreachable=skip): the rollout completes without
        counting it failed, and the job is degraded while it is beyond tolerance."""
        world = World.new(make_spec())
        world.plan()
        world.set_node("n3", status=NodeStatus.DOWN)
        world.report("n1", HEALTHY)
        world.report("n2", HEALTHY)
        world.advance(10)
        world.plan()
        rollout = world.job.status.rollout
        assert rollout.completed_at == world.now
        assert (rollout.updated_nodes, rollout.failed_nodes) == (2, 0)
        assert world.state == JobStateType.DEGRADED
        assert world.job.status.state.details["node.n3"] == "unreachable"
        world.set_node("n3", status=NodeStatus.READY)
        world.report("n3", HEALTHY)
        world.plan()
        assert world.state == JobStateType.RUNNING

    def test_down_node_fails_when_policy_says_so(self) -> None:
        """With on_unreachable=fail an unreachable node is a failure."""
        world = World.new(make_spec(rollout={"on_unreachable": "fail"}))
        world.plan()
        world.set_node("n3", status=NodeStatus.DOWN)
        world.plan()
        assert world.state == JobStateType.FAILED

    def test_ineligible_and_drained_nodes_get_nothing_new(self) -> None:
        """Ineligible or draining nodes are not targets of a new rollout."""
        world = World.new(make_spec())
        world.set_node("n1", eligibility=Eligibility.INELIGIBLE)
        world.set_node("n2", drain=True)
        world.plan()
        assert set(world.assignments) == {"n3"}
