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

from dataclasses import replace
from datetime import timedelta

from hypothesis import strategies as st
from hypothesis.stateful import rule

from coordinator.domain.records import JobRecord
from coordinator.engine.index import RolloutIndex
from coordinator.engine.observation import Observation
from coordinator.engine.planner import RolloutPlan, plan_rollout
from shared.nodes import Eligibility
from tests.coordinator.engine import test_planner_properties as properties
from tests.coordinator.engine.fixtures import make_node
from tests.coordinator.engine.test_planner_properties import GRACE, MAX_NODES, RolloutMachine

HEARTBEAT = timedelta(seconds=4)


class IncrementalMachine(RolloutMachine):
    """The rollout machine, planning every step with and without the index."""

    def __init__(self) -> None:
        super().__init__()
        self.index = RolloutIndex()
        self.joined = 0

    def step(self) -> RolloutPlan:
        world = self.world
        if not world.observation.heartbeat:
            # Agents heartbeat every 4 s: a healthy word is believed for 5 s after it,
            # and a node due but not heard lately is looked at again every second.
            world.observation = replace(world.observation, heartbeat=HEARTBEAT)
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

    @rule(downtime=st.sampled_from([0, 0, 20, 90]), restart=st.booleans(), keep=st.booleans())
    def coordinator_blind_spot(self, downtime: int, restart: bool, keep: bool = False) -> None:
        """The coordinator restarts (its job record round-trips through JSON; its index is
        gone, or, with ``keep``, meets a record equal to the one it knew but not the same
        object) or pauses, and listens again from now, agents heartbeating as before."""
        self.world.now += timedelta(seconds=downtime)
        self.world.observation = Observation(since=self.world.now, grace=GRACE, heartbeat=HEARTBEAT)
        if restart:
            self.world.job = JobRecord.model_validate_json(self.world.job.model_dump_json())
            if not keep:
                self.index = RolloutIndex()
        self.step()

    @rule(silent=st.sets(st.integers(0, MAX_NODES - 1), max_size=4))
    def heartbeats(self, silent: set[int]) -> None:
        """The agents heartbeat (no change of state), but for a few silent ones."""
        quiet = {self.node_id(i) for i in silent}
        for node_id in sorted(self.world.nodes):
            if node_id not in quiet:
                self.world.set_node(node_id, last_heartbeat=self.world.now)
        self.step()

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

    settings = properties.TestRolloutInvariants.settings
