"""One table test per rollout policy field and per hard case, on a fake clock (pure planner)."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.domain.records import JobRecord
from coordinator.engine import actions
from coordinator.engine.membership import plan_membership
from shared.status import JobState, JobStateType, RolloutType
from tests.coordinator.engine.fixtures import (
    Eligibility,
    ExecutionState,
    NodeStatus,
    World,
    make_node,
    make_spec,
)

HEALTHY = ExecutionState.HEALTHY


def assigned(world: World, version: int) -> set[str]:
    return {n for n, a in world.assignments.items() if a.version == version}


def pass_health(world: World, nodes: set[str] | None = None, seconds: float = 10) -> None:
    """Every given node (default: all with an assignment) reports healthy for its version."""
    for node in sorted(nodes if nodes is not None else set(world.assignments)):
        world.report(node, HEALTHY)
    world.plan()
    world.advance(seconds)
    world.plan()


def submit(world: World, **spec: Any) -> None:
    """What PUT /v1/jobs does for a changed spec (see coordinator/submit.py)."""
    status = world.job.status.model_copy(
        update={
            "version": world.job.status.version + 1,
            "revision": world.job.status.revision + 1,
            "state": JobState(state_type=JobStateType.PENDING),
        }
    )
    world.job = world.job.model_copy(update={"spec": make_spec(**spec), "status": status})


def running_v1(spec: dict[str, Any], nodes: int = 6, **labels: str) -> World:
    world = World.new(make_spec(**spec), node_count=nodes, **labels)
    world.plan()
    for _ in range(20):
        if not world.job.rollout.is_active():
            break
        if world.state == JobStateType.ROLLOUT_PAUSED:
            act(world, actions.promote(world.job, world.now, full=False))
        pass_health(world)
    assert world.state == JobStateType.RUNNING
    return world


def act(world: World, result: tuple[JobRecord, Any]) -> None:
    world.job = result[0]
    world.plan()


class TestMembership:
    def test_canary_count_and_percent(self) -> None:
        """canary takes a count or a percentage of target nodes, rounded up."""
        nodes = [make_node(f"n{i}") for i in range(10)]
        assert (
            len(plan_membership("j", nodes, make_spec(rollout={"canary": 2}).rollout).canary) == 2
        )
        pct = plan_membership("j", nodes, make_spec(rollout={"canary": "15%"}).rollout)
        assert len(pct.canary) == 2

    def test_canary_selector_restricts_the_pool(self) -> None:
        """Canaries come only from nodes matching canary_selector."""
        nodes = [make_node(f"n{i}", tier="edge" if i < 2 else "core") for i in range(8)]
        spec = make_spec(rollout={"canary": 2, "canary_selector": {"tier": "core"}})
        membership = plan_membership("j", nodes, spec.rollout)
        assert set(membership.canary) <= {f"n{i}" for i in range(2, 8)}

    def test_spread_by_puts_each_zone_in_every_wave(self) -> None:
        """With spread_by, canaries and every wave cover the label's values round-robin."""
        nodes = [make_node(f"n{i}", zone=f"z{i % 3}") for i in range(9)]
        spec = make_spec(rollout={"canary": 3, "spread_by": "zone", "waves": 2})
        membership = plan_membership("j", nodes, spec.rollout)
        zone = {n.id: n.labels["zone"] for n in nodes}
        assert {zone[n] for n in membership.canary} == {"z0", "z1", "z2"}
        for wave in membership.waves:
            assert {zone[n] for n in wave} == {"z0", "z1", "z2"}

    def test_membership_is_deterministic(self) -> None:
        """The same job and nodes give the same canary and waves whatever the input order."""
        nodes = [make_node(f"n{i}") for i in range(7)]
        policy = make_spec(rollout={"canary": 1, "waves": 3}).rollout
        assert plan_membership("j", nodes, policy) == plan_membership("j", nodes[::-1], policy)

    @pytest.mark.parametrize(
        ("waves", "sizes"),
        [
            (3, [3, 3, 3]),
            (4, [3, 2, 2, 2]),
            (["10%", "50%", "100%"], [4, 5]),
            (["20%", "60%", "100%"], [1, 4, 4]),
            (20, [1] * 9),
        ],
    )
    def test_waves_int_or_cumulative_list(self, waves: Any, sizes: list[int]) -> None:
        """waves splits the non-canary nodes equally, or by cumulative percentages."""
        nodes = [make_node(f"n{i}") for i in range(10)]
        policy = make_spec(rollout={"canary": 1, "waves": waves}).rollout
        membership = plan_membership("j", nodes, policy)
        assert [len(w) for w in membership.waves] == sizes


class TestCanaryAndWaves:
    def test_update_runs_canary_then_each_wave_in_order(self) -> None:
        """An update gives the new version to the canary first, then wave by wave."""
        world = running_v1({"rollout": {"canary": 1, "waves": 2}})
        submit(world, rollout={"canary": 1, "waves": 2}, task={"command": ["run", "v2"]})
        world.plan()
        rs = world.job.rollout
        status = world.job.status
        assert status.rollout.type == RolloutType.UPDATE
        assert status.rollout.rollback_to_version == 1
        assert status.rollout.current_wave == 0
        assert assigned(world, 2) == set(rs.canary)
        pass_health(world, set(rs.canary))
        assert world.job.status.rollout.canary_promoted
        assert world.job.status.rollout.current_wave == 1
        assert assigned(world, 2) == set(rs.canary) | set(rs.waves[0])
        pass_health(world, assigned(world, 2))
        assert assigned(world, 2) == set(world.assignments)
        pass_health(world)
        assert world.state == JobStateType.RUNNING
        assert world.job.stable_version == 2
        assert world.job.status.rollout.updated_nodes == 6

    def test_manual_promotion_gate(self) -> None:
        """auto_promote=false waits in rollout_paused after the canaries until promoted."""
        spec = {"rollout": {"canary": 1, "auto_promote": False}}
        world = running_v1(spec)
        submit(world, task={"command": ["v2"]}, **spec)
        world.plan()
        pass_health(world, set(world.job.rollout.canary))
        assert world.state == JobStateType.ROLLOUT_PAUSED
        assert "promote" in world.job.status.state.message
        assert assigned(world, 2) == set(world.job.rollout.canary)
        act(world, actions.promote(world.job, world.now, full=False))
        assert world.state == JobStateType.DEPLOYING
        assert world.job.status.rollout.canary_promoted
        assert len(assigned(world, 2)) > 1

    def test_max_parallel_limits_nodes_in_flight(self) -> None:
        """No more than max_parallel nodes update at once within a wave."""
        world = World.new(make_spec(rollout={"max_parallel": 2}), node_count=5)
        world.plan()
        assert len(world.assignments) == 2
        pass_health(world)
        assert len(world.assignments) == 4
        pass_health(world)
        assert len(world.assignments) == 5

    def test_pause_between_waves_duration(self) -> None:
        """A timed pause holds the next wave until it has passed, and says when it resumes."""
        world = World.new(make_spec(rollout={"waves": 2, "pause_between_waves": "30s"}), 4)
        plan = world.plan()
        pass_health(world, set(world.assignments))
        assert len(world.assignments) == 2
        assert "next wave at" in world.job.status.state.message
        world.advance(29)  # wave 1 passed 10s in: the next one is due at 40s
        plan = world.plan()
        assert len(world.assignments) == 2
        assert plan.wake_at is not None
        world.advance(2)
        world.plan()
        assert len(world.assignments) == 4

    def test_pause_between_waves_manual(self) -> None:
        """A manual gate waits at every wave boundary until promoted (or resumed)."""
        world = World.new(make_spec(rollout={"waves": 3, "pause_between_waves": "manual"}), 3)
        world.plan()
        pass_health(world, set(world.assignments))
        assert world.state == JobStateType.ROLLOUT_PAUSED
        assert "manual gate" in world.job.status.state.message
        act(world, actions.promote(world.job, world.now, full=False))
        assert len(world.assignments) == 2
        pass_health(world, set(world.assignments))
        act(world, actions.resume(world.job, world.now))
        assert len(world.assignments) == 3

    def test_promote_full_rolls_out_all_remaining_waves(self) -> None:
        """promote --full gives every remaining node the version without further gates."""
        world = World.new(make_spec(rollout={"waves": 3, "pause_between_waves": "manual"}), 6)
        world.plan()
        act(world, actions.promote(world.job, world.now, full=True))
        assert len(world.assignments) == 6
        pass_health(world)
        assert world.state == JobStateType.RUNNING


class TestFailures:
    def test_canary_failure_rolls_back_and_no_other_node_gets_it(self) -> None:
        """A failing canary triggers an automatic rollback; no node outside it got the version."""
        world = running_v1({"rollout": {"canary": 1, "waves": 2}})
        submit(world, task={"command": ["v2"]}, rollout={"canary": 1, "waves": 2})
        world.plan()
        canary = world.job.rollout.canary[0]
        world.report(canary, ExecutionState.FAILED)
        world.plan()
        status = world.job.status
        assert status.rollout.type == RolloutType.ROLLBACK
        assert status.rollout.rollback_to_version == 2
        assert assigned(world, 2) == set()
        pass_health(world)
        assert world.state == JobStateType.ROLLOUT_FAILED
        assert "rolled back to version 1" in world.job.status.state.message
        assert world.job.status.version == 2
        assert world.job.stable_version == 1

    def test_healthy_deadline_fails_a_canary_that_never_gets_healthy(self) -> None:
        """A canary stuck starting is failed by healthy_deadline, then rolled back."""
        world = running_v1({"rollout": {"canary": 1}})
        submit(world, task={"command": ["v2"]}, rollout={"canary": 1})
        plan = world.plan()
        canary = world.job.rollout.canary[0]
        world.report(canary, ExecutionState.STARTING)
        assert plan.wake_at == world.now + make_spec().rollout.healthy_deadline
        world.advance(60)
        world.plan()
        assert world.job.status.rollout.type == RolloutType.ROLLBACK
        assert "healthy_deadline" in world.job.rollout.cause

    def test_progress_deadline_fails_a_stalled_wave(self) -> None:
        """A wave with no node passing its gate for progress_deadline fails the rollout."""
        spec = {
            "rollout": {
                "healthy_deadline": "1m",
                "progress_deadline": "1m",
                "min_healthy_time": "10s",
            }
        }
        world = World.new(make_spec(**spec), node_count=2)
        world.plan()
        world.report("n1", HEALTHY)
        world.report("n2", ExecutionState.UNHEALTHY)
        world.advance(10)
        world.plan()
        world.set_node("n2", status=NodeStatus.READY)
        world.advance(59)
        world.plan()
        assert world.state == JobStateType.FAILED
        assert "healthy_deadline" in world.job.status.state.details["failed.n2"]

    def test_failure_only_in_wave_two_rolls_every_updated_node_back(self) -> None:
        """Exceeding the budget in wave 2 returns canary and wave-1 nodes to the stable version."""
        world = running_v1({"rollout": {"canary": 1, "waves": 2}})
        submit(world, task={"command": ["v2"]}, rollout={"canary": 1, "waves": 2})
        world.plan()
        rs = world.job.rollout
        pass_health(world, set(rs.canary))
        pass_health(world, set(rs.canary) | set(rs.waves[0]))
        assert set(rs.waves[1]) <= assigned(world, 2)
        world.report(rs.waves[1][0], ExecutionState.FAILED)
        world.plan()
        assert assigned(world, 2) == set()
        assert assigned(world, 1) == set(world.assignments)

    def test_max_failed_nodes_tolerates_up_to_the_budget(self) -> None:
        """Failures up to max_failed_nodes are tolerated; one more halts the rollout."""
        world = World.new(make_spec(rollout={"max_failed_nodes": "34%"}), node_count=6)
        world.plan()
        world.report("n1", ExecutionState.FAILED)
        world.report("n2", ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.DEPLOYING
        world.report("n3", ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.FAILED
        assert world.job.status.rollout.failed_nodes == 3

    def test_no_auto_rollback_leaves_nodes_and_says_rollout_failed(self) -> None:
        """With auto_rollback=false a failed update halts in rollout_failed and keeps nodes."""
        world = running_v1({"rollout": {"auto_rollback": False}}, nodes=2)
        submit(world, task={"command": ["v2"]}, rollout={"auto_rollback": False})
        world.plan()
        world.report("n1", ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.ROLLOUT_FAILED
        assert world.job.status.rollout.type == RolloutType.UPDATE
        assert assigned(world, 2) == {"n1", "n2"}


class TestHardCases:
    def test_newer_version_supersedes_and_never_three_versions(self) -> None:
        """A version submitted mid-rollout supersedes it; nodes on the old target go back to
        stable, so at most two versions are ever assigned."""
        world = running_v1({"rollout": {"canary": 1, "waves": 2}})
        submit(world, task={"command": ["v2"]}, rollout={"canary": 1, "waves": 2})
        world.plan()
        pass_health(world, set(world.job.rollout.canary))
        assert assigned(world, 2)
        submit(world, task={"command": ["v3"]}, rollout={"canary": 1, "waves": 2})
        world.plan()
        versions = {a.version for a in world.assignments.values()}
        assert versions <= {1, 3}
        assert world.job.status.rollout.rollback_to_version == 1
        assert world.job.rollout.target_version == 3

    def test_node_joining_mid_rollout_gets_stable_then_target(self) -> None:
        """A node that joins before promotion runs the stable version until its wave."""
        spec = {"rollout": {"canary": 1, "auto_promote": False}}
        world = running_v1(spec, nodes=3)
        submit(world, task={"command": ["v2"]}, **spec)
        world.plan()
        world.nodes["new"] = make_node("new")
        world.plan()
        assert world.assignments["new"].version == 1
        pass_health(world, set(world.job.rollout.canary))
        act(world, actions.promote(world.job, world.now, full=False))
        assert world.assignments["new"].version == 2

    def test_node_down_mid_wave_is_skipped_and_converges(self) -> None:
        """A node lost mid-wave neither hangs the rollout nor fails it, and converges later."""
        world = running_v1({}, nodes=3)
        submit(world, task={"command": ["v2"]})
        world.plan()
        world.set_node("n2", status=NodeStatus.DOWN)
        pass_health(world, {"n1", "n3"})
        assert world.job.status.rollout.completed_at == world.now
        assert world.job.status.rollout.failed_nodes == 0
        assert world.assignments["n2"].version == 2
        world.set_node("n2", status=NodeStatus.READY)
        world.report("n2", HEALTHY)
        world.plan()
        assert world.state == JobStateType.RUNNING

    def test_batch_job_runs_to_completed(self) -> None:
        """A batch job counts nodes done when they report completed."""
        world = World.new(make_spec(type="batch", rollout={"waves": 2}), node_count=4)
        world.plan()
        for node in sorted(world.assignments):
            world.report(node, ExecutionState.COMPLETED)
        world.plan()
        for node in sorted(world.assignments):
            world.report(node, ExecutionState.COMPLETED)
        world.plan()
        assert world.state == JobStateType.COMPLETED

    def test_batch_job_failure_is_failed(self) -> None:
        """A batch job whose run fails beyond the budget ends failed."""
        world = World.new(make_spec(type="batch"), node_count=2)
        world.plan()
        world.report("n1", ExecutionState.FAILED)
        world.plan()
        assert world.state == JobStateType.FAILED

    def test_drained_node_stops_and_ineligible_keeps_running(self) -> None:
        """Draining removes the assignment; ineligibility keeps it but gives nothing new."""
        world = running_v1({}, nodes=3)
        world.set_node("n1", drain=True)
        world.set_node("n2", eligibility=Eligibility.INELIGIBLE)
        world.plan()
        assert "n1" not in world.assignments
        assert world.assignments["n2"].version == 1
        submit(world, task={"command": ["v2"]})
        world.plan()
        assert world.assignments["n2"].version == 1
        assert world.assignments["n3"].version == 2

    def test_rollback_to_identical_spec_is_not_looped(self) -> None:
        """An operator rollback to the running version is refused instead of looping."""
        world = running_v1({}, nodes=2)
        with pytest.raises(Exception, match="no earlier stable version"):
            actions.rollback(world.job, world.now, None)
        with pytest.raises(Exception, match="already runs version 1"):
            actions.rollback(world.job, world.now, 1)

    def test_restart_keeps_version_and_restarts_wave_by_wave(self) -> None:
        """A restart bumps the generation wave by wave and keeps the version."""
        world = running_v1({"rollout": {"waves": 2}}, nodes=4)
        act(world, actions.restart(world.job, world.nodes.values(), world.now))
        assert world.job.status.rollout.type == RolloutType.RESTART
        bumped = {n for n, a in world.assignments.items() if a.generation == 1}
        assert len(bumped) == 2
        pass_health(world, bumped)
        assert all(a.generation == 1 for a in world.assignments.values())
        pass_health(world)
        assert world.state == JobStateType.RUNNING
        assert world.job.status.version == 1


class TestOperatorControls:
    def test_pause_holds_and_resume_continues(self) -> None:
        """A paused rollout gives nothing new until resumed."""
        world = World.new(make_spec(rollout={"waves": 2}), node_count=4)
        world.plan()
        act(world, actions.pause(world.job, world.now))
        assert world.state == JobStateType.ROLLOUT_PAUSED
        pass_health(world, set(world.assignments))
        assert len(world.assignments) == 2
        act(world, actions.resume(world.job, world.now))
        assert len(world.assignments) == 4

    def test_abort_returns_updated_nodes_to_stable(self) -> None:
        """Abort halts an update and returns every updated node to the stable version."""
        world = running_v1({"rollout": {"waves": 2}}, nodes=4)
        submit(world, task={"command": ["v2"]}, rollout={"waves": 2})
        world.plan()
        pass_health(world, assigned(world, 2))
        act(world, actions.abort(world.job, world.now))
        assert assigned(world, 2) == set()
        pass_health(world)
        assert world.state == JobStateType.ROLLOUT_FAILED
        assert "aborted" in world.job.status.state.message

    def test_retry_resumes_from_the_first_unfinished_wave(self) -> None:
        """Retry re-runs the failed version starting at the wave that failed."""
        world = running_v1({"rollout": {"waves": 2}}, nodes=4)
        submit(world, task={"command": ["v2"]}, rollout={"waves": 2})
        world.plan()
        rs = world.job.rollout
        pass_health(world, set(rs.waves[0]))
        world.report(rs.waves[1][0], ExecutionState.FAILED)
        world.plan()
        pass_health(world)
        assert world.state == JobStateType.ROLLOUT_FAILED
        act(world, actions.retry(world.job, world.now))
        assert world.state == JobStateType.DEPLOYING
        assert world.job.status.rollout.current_wave == 2
        assert assigned(world, 2) == set(world.assignments)
        pass_health(world)
        assert world.state == JobStateType.RUNNING

    def test_operator_rollback_to_an_earlier_version(self) -> None:
        """rollback returns the fleet to the previous stable version; version is unchanged."""
        world = running_v1({}, nodes=2)
        submit(world, task={"command": ["v2"]})
        world.plan()
        pass_health(world)
        assert world.job.stable_version == 2
        act(world, actions.rollback(world.job, world.now, None))
        assert world.job.status.rollout.type == RolloutType.ROLLBACK
        assert world.job.status.rollout.rollback_to_version == 2
        assert assigned(world, 1) == {"n1", "n2"}
        pass_health(world)
        assert world.state == JobStateType.RUNNING
        assert world.job.status.version == 2
        assert world.job.stable_version == 1

    def test_stop_removes_everything_and_resubmission_creates(self) -> None:
        """Stop unassigns the job everywhere."""
        world = running_v1({}, nodes=2)
        act(world, actions.stop(world.job, world.now))
        assert world.state == JobStateType.STOPPED
        assert world.assignments == {}

    @pytest.mark.parametrize("action", ["pause", "resume", "abort"])
    def test_actions_without_a_rollout_are_refused(self, action: str) -> None:
        """Rollout controls on a finished rollout say why they do not apply."""
        world = running_v1({}, nodes=1)
        with pytest.raises(Exception, match="no rollout is in progress"):
            getattr(actions, action)(world.job, world.now)
