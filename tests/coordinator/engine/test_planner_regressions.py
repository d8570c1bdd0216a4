"""Planner bugs found by the property tests, each shrunk to a small table test."""

from __future__ import annotations

from typing import Any

from coordinator.domain.records import JobRecord
from coordinator.engine import actions
from shared.clock import ZERO_TIME
from shared.status import JobStateType, RolloutType
from tests.coordinator.engine.fixtures import ExecutionState, World, make_spec

FAST = {"min_healthy_time": "0s", "healthy_deadline": "15s", "progress_deadline": "1m"}


def act(world: World, result: tuple[JobRecord, Any]) -> None:
    """Store an operator action's result and let the engine react, as the API does."""
    world.job = result[0]
    world.plan()


def submit(world: World, **rollout: Any) -> None:
    """A changed spec, as coordinator/submit.py revise() records it."""
    status = world.job.status.model_copy(
        update={"version": world.job.status.version + 1, "revision": world.job.status.revision + 1}
    )
    spec = make_spec(rollout={**FAST, **rollout}, task={"command": [f"v{status.version}"]})
    world.job = world.job.model_copy(update={"spec": spec, "status": status})


def on_version(world: World, version: int) -> set[str]:
    return {n for n, a in world.assignments.items() if a.version == version}


def healthy(world: World, nodes: set[str]) -> None:
    """The given nodes report healthy for what they are assigned, and the engine reacts."""
    for node in sorted(nodes):
        world.report(node, ExecutionState.HEALTHY)
    world.plan()


class TestRetry:
    def test_retry_runs_failed_executions_again(self) -> None:
        """Agents never re-run a failed execution of the same version and generation, so a
        retry assigns a new generation: the node that failed is told to run it again."""
        world = World.new(make_spec(rollout=FAST), node_count=2)
        world.plan()
        world.report("n1", ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.FAILED
        before = world.assignments["n1"]
        act(world, actions.retry(world.job, world.now))
        after = world.assignments["n1"]
        assert (after.version, after.generation) == (before.version, before.generation + 1)
        world.report("n1", ExecutionState.HEALTHY)
        world.report("n2", ExecutionState.HEALTHY)
        world.plan()
        assert world.state == JobStateType.RUNNING

    def test_retry_gives_nodes_a_fresh_healthy_deadline(self) -> None:
        """A retried rollout judges nodes that kept the version from the retry on, not from
        when they were first given it (they would fail again at the very next evaluation)."""
        world = World.new(make_spec(rollout=FAST), node_count=2)
        world.plan()
        world.advance(20)
        world.plan()
        assert world.state == JobStateType.FAILED
        world.job = actions.retry(world.job, world.now)[0]
        world.plan()
        world.report("n1", ExecutionState.STARTING)
        world.plan()
        assert world.state == JobStateType.DEPLOYING
        assert world.job.status.rollout.failed_nodes == 0
        world.advance(15)
        world.plan()
        assert world.state == JobStateType.FAILED
        assert world.job.status.rollout.failed_nodes == 2

    def test_retry_gives_a_node_started_later_its_full_healthy_deadline(self) -> None:
        """A node that kept the new run from the halted attempt of a restart and is started
        later in the retry (max_parallel) is judged from when it is started, not earlier."""
        world = World.new(make_spec(rollout={**FAST, "max_parallel": 1}), node_count=2)
        while world.state != JobStateType.RUNNING:
            healthy(world, set(world.assignments))
        act(world, actions.restart(world.job, world.nodes.values(), world.now))
        first = world.job.rollout.started[0]
        healthy(world, {first})
        (second,) = set(world.assignments) - {first}
        world.report(second, ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.ROLLOUT_FAILED
        act(world, actions.retry(world.job, world.now))
        world.report(first, ExecutionState.STARTING)
        world.report(second, ExecutionState.STARTING)
        world.plan()
        world.advance(10)
        healthy(world, {first})
        assert world.job.rollout.started == [first, second]
        world.advance(6)
        world.plan()
        assert world.state == JobStateType.DEPLOYING
        assert world.job.status.rollout.failed_nodes == 0
        world.advance(9)
        world.plan()
        assert world.job.status.rollout.failed_nodes == 1

    def test_retry_after_early_promotion_reruns_the_canary_phase(self) -> None:
        """Canaries approved early with `promote` had not passed: a retry runs them again
        instead of declaring the rollout complete without a single healthy node."""
        world = World.new(make_spec(rollout={**FAST, "canary": 2, "auto_promote": False}), 2)
        world.plan()
        act(world, actions.promote(world.job, world.now, full=False))
        act(world, actions.abort(world.job, world.now))
        act(world, actions.retry(world.job, world.now))
        assert world.state == JobStateType.DEPLOYING
        rollout = world.job.status.rollout
        assert (rollout.current_wave, rollout.completed_at) == (0, ZERO_TIME)
        assert world.job.stable_version == 0

    def test_retried_create_is_an_update_once_a_version_is_stable(self) -> None:
        """A failed create retried after an operator rollback made an older version stable
        rolls out from that version: an update with rollback_to_version set."""
        world = World.new(make_spec(rollout=FAST), node_count=2)
        world.plan()
        world.advance(20)
        world.plan()
        assert world.state == JobStateType.FAILED
        submit(world)
        world.plan()
        act(world, actions.abort(world.job, world.now))
        act(world, actions.rollback(world.job, world.now, 1))
        for node in ("n1", "n2"):
            world.report(node, ExecutionState.HEALTHY)
        world.plan()
        assert world.job.stable_version == 1
        act(world, actions.retry(world.job, world.now))
        rollout = world.job.status.rollout
        assert (rollout.type, rollout.rollback_to_version) == (RolloutType.UPDATE, 1)


class TestRetryPacing:
    def test_retry_after_a_rollback_respects_max_parallel(self) -> None:
        """Nodes of the waves that had passed were rolled back; a retry gives them the version
        again at most max_parallel at a time, before the wave it resumes at."""
        world = World.new(make_spec(rollout={**FAST, "waves": 2, "max_parallel": 1}), 4)
        while world.state != JobStateType.RUNNING:
            healthy(world, set(world.assignments))
        submit(world, waves=2, max_parallel=1)
        world.plan()
        while world.job.rollout.current_wave < 2:
            healthy(world, on_version(world, 2))
        second = world.job.rollout.waves[1]
        world.report(min(on_version(world, 2) & set(second)), ExecutionState.FAILED)
        world.plan()
        healthy(world, set(world.assignments))
        assert world.state == JobStateType.ROLLOUT_FAILED
        assert on_version(world, 2) == set()
        act(world, actions.retry(world.job, world.now))
        assert world.job.status.rollout.current_wave == 2
        given = on_version(world, 2)
        assert len(given) == 1
        assert given <= set(world.job.rollout.waves[0])
        while world.state != JobStateType.RUNNING:
            updating = on_version(world, 2) - set(world.job.rollout.updated)
            assert len(updating) <= 1
            healthy(world, on_version(world, 2))
        assert on_version(world, 2) == set(world.assignments)


class TestTimers:
    def test_automatic_rollback_is_woken_without_reports(self) -> None:
        """The plan that starts an automatic rollback asks to be woken by the rollback's
        healthy deadline, so it finishes (or fails) even if no agent reports again."""
        world = World.new(make_spec(rollout=FAST), node_count=2)
        world.plan()
        for node in ("n1", "n2"):
            world.report(node, ExecutionState.HEALTHY)
        world.plan()
        assert world.job.stable_version == 1
        world.job = world.job.model_copy(
            update={
                "spec": make_spec(rollout=FAST, task={"command": ["v2"]}),
                "status": world.job.status.model_copy(
                    update={"version": 2, "revision": world.job.status.revision + 1}
                ),
            }
        )
        world.plan()
        world.advance(20)  # the v2 agents never report: healthy_deadline fails the update
        plan = world.plan()
        assert world.job.status.rollout.type == RolloutType.ROLLBACK
        assert plan.wake_at is not None
        assert plan.wake_at <= world.now + make_spec(rollout=FAST).rollout.healthy_deadline
        world.now = plan.wake_at
        world.plan()
        assert world.state == JobStateType.ROLLOUT_FAILED
        assert world.job.status.rollout.completed_at == world.now


class TestGenerations:
    def test_rollback_after_a_restart_leaves_untouched_nodes_alone(self) -> None:
        """After `job restart`, a failed update's rollback does not restart nodes that never
        left the stable version (their generation still matches)."""
        from tests.coordinator.engine.test_planner_policies import pass_health, running_v1, submit

        world = running_v1({"rollout": {"canary": 1, "waves": 1}}, nodes=3)
        world.job = actions.restart(world.job, world.nodes.values(), world.now)[0]
        world.plan()
        for _ in range(5):
            pass_health(world)
        assert all(a.generation == 1 for a in world.assignments.values())
        submit(world, task={"command": ["v2"]}, rollout={"canary": 1, "waves": 1})
        world.plan()
        canary = world.job.rollout.canary[0]
        untouched = {n: a for n, a in world.assignments.items() if n != canary}
        world.report(canary, ExecutionState.FAILED)
        world.plan()
        assert world.job.status.rollout.type == RolloutType.ROLLBACK
        for node, before in untouched.items():
            assert world.assignments[node] == before
