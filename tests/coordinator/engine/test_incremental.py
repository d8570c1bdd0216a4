"""The planner with an index kept between evaluations plans exactly what it plans from scratch.

``RolloutIndex`` lets an evaluation touch only what changed since the last one (see
``coordinator/engine/index.py``). Its whole promise is that it changes nothing: this test
drives the rollout state machine of ``test_planner_properties`` (agents, operators, node
churn, new versions, coordinator restarts), and adds the node changes the index must follow
(drain, eligibility, labels, nodes joining and leaving the fleet). At every evaluation it
plans twice, from scratch and with the index the evaluations before it kept, and the two
plans must be equal: the job record, the assignment changes, the events in their order and
the wake-up time. The planner and the index are real; the world around them is the
in-memory one of the other planner tests (whose model of the rollout invariants knows
nothing of drains and joins: those invariants are test_planner_properties' business).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from coordinator.engine.index import RolloutIndex
from coordinator.engine.planner import RolloutPlan, plan_rollout
from shared.nodes import Eligibility
from tests.coordinator.engine.fixtures import make_node
from tests.coordinator.engine.test_planner_properties import MAX_NODES, RolloutMachine


class IncrementalMachine(RolloutMachine):
    """The rollout machine, planning every step with and without the index."""

    def __init__(self) -> None:
        super().__init__()
        self.index = RolloutIndex()
        self.joined = 0

    def step(self) -> RolloutPlan:
        world = self.world
        inputs = (world.job, world.nodes, world.assignments, world.executions, world.now)
        full = plan_rollout(*inputs, world.observation)
        indexed = plan_rollout(*inputs, world.observation, index=self.index)
        assert indexed.job == full.job
        assert indexed.changes == full.changes
        assert indexed.events == full.events
        assert indexed.wake_at == full.wake_at
        return self.world.plan()

    def teardown(self) -> None:
        """The invariants of the rollouts themselves are test_planner_properties' business
        (its model knows nothing of drains, relabelling or nodes joining); this machine only
        compares the two ways of planning."""

    @rule(node=st.integers(0, MAX_NODES - 1), drain=st.booleans())
    def node_drained(self, node: int, drain: bool) -> None:
        """An operator drains a node, or ends its drain."""
        node_id = self.node_id(node)
        if self.world.nodes[node_id].drain != drain:
            self.world.set_node(node_id, drain=drain)
            self.step()

    @rule(node=st.integers(0, MAX_NODES - 1), eligible=st.booleans())
    def node_eligibility(self, node: int, eligible: bool) -> None:
        """An operator marks a node (in)eligible for new work."""
        value = Eligibility.ELIGIBLE if eligible else Eligibility.INELIGIBLE
        node_id = self.node_id(node)
        if self.world.nodes[node_id].eligibility != value:
            self.world.set_node(node_id, eligibility=value)
            self.step()

    @rule(node=st.integers(0, MAX_NODES - 1), tier=st.sampled_from(["edge", "core"]))
    def node_relabelled(self, node: int, tier: str) -> None:
        """A node's labels change (its agent re-registered with other labels)."""
        node_id = self.node_id(node)
        labels = {**self.world.nodes[node_id].labels, "tier": tier}
        self.world.set_node(node_id, labels=labels)
        self.step()

    @rule(tier=st.sampled_from(["edge", "core"]))
    def node_joins(self, tier: str) -> None:
        """A new node joins the fleet mid-rollout."""
        if len(self.world.nodes) >= MAX_NODES:
            return
        self.joined += 1
        node_id = f"j{self.joined}"
        self.world.nodes[node_id] = make_node(node_id, zone="z1", tier=tier)
        self.step()

    @rule(node=st.integers(0, MAX_NODES - 1))
    def node_leaves(self, node: int) -> None:
        """A node is revoked or purged: it is no longer among the fleet's nodes."""
        if len(self.world.nodes) <= 2:
            return
        node_id = self.node_id(node)
        del self.world.nodes[node_id]
        self.world.executions.pop(node_id, None)
        self.step()


class TestIncrementalEqualsFull(IncrementalMachine.TestCase):  # type: ignore[name-defined,misc]
    """On random histories, planning with the index gives the plan a full re-plan gives."""

    settings = settings(
        max_examples=150,
        stateful_step_count=50,
        deadline=None,
        derandomize=False,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
