"""Adaptive heartbeats: what each agent is handed, the TTL that follows, and the pacer
that sizes both to the fleet, through the real app on a real SQLite file."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from coordinator.api.deps import DEPS
from coordinator.config import load_config
from coordinator.domain.heartbeats import HeartbeatPolicy
from coordinator.domain.records import NodeRecord
from coordinator.engine.driver import NodeMonitor
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import HeartbeatPacer, Heartbeats
from shared.errors import ValidationFailed
from shared.nodes import NodeStatus
from tests.coordinator.conftest import JOIN, Harness, node_key_of
from tests.promtext import parse

SMALL_BUDGET = HeartbeatPolicy(interval=10.0, budget=1.0, ttl_multiplier=3.0, jitter=0.1)
"""One heartbeat a second: 100 nodes make a 100 s interval, cheap to set up."""


async def add_nodes(harness: Harness, count: int, prefix: str = "n") -> list[str]:
    """``count`` ready nodes heard just now, straight into the store."""
    now = harness.clock.now()
    ids = [f"{prefix}{i}" for i in range(count)]
    for node_id in ids:
        await harness.store.insert_node(
            NodeRecord(
                id=node_id,
                name=node_id,
                token_hash=f"h-{node_id}",
                status=NodeStatus.READY,
                registered_at=now,
                last_heartbeat=now,
            )
        )
    return ids


class Paced:
    """The harness's app with adaptive heartbeats: a pacer and window as main wires them."""

    def __init__(self, harness: Harness, draw: float = 1.0) -> None:
        self.harness = harness
        self.heartbeats = Heartbeats(SMALL_BUDGET, rand=lambda: draw)
        deps = harness.client.app[DEPS]
        deps.heartbeats = self.heartbeats
        self.window = ObservationWindow(harness.clock, timedelta(0), gap_seconds=math.inf)
        self.pacer = HeartbeatPacer(
            harness.store, harness.clock, self.heartbeats, self.window, deps.metrics
        )
        self.monitor = NodeMonitor(
            harness.store, harness.clock, harness.driver, self.window, self.heartbeats
        )


class TestHeartbeats:
    def test_a_node_may_use_either_of_its_last_two_intervals(self) -> None:
        """After the fleet shrank, a node's TTL follows the long interval it was handed
        until two shorter answers followed it (the first may not have arrived)."""
        beats = Heartbeats(SMALL_BUDGET, rand=lambda: 0.0)
        beats.resize(100)
        assert beats.hand_out("a") == 100.0
        beats.resize(5)
        assert beats.hand_out("a") == 10.0
        assert beats.ttl("a") == timedelta(seconds=300)
        beats.hand_out("a")
        assert beats.ttl("a") == timedelta(seconds=33)

    def test_an_unknown_node_gets_the_longest_interval_for_the_fleet(self) -> None:
        """A node this coordinator never answered (another one did, or it restarted) is
        judged by the longest interval any answer for the current fleet carries."""
        beats = Heartbeats(SMALL_BUDGET, rand=lambda: 0.0)
        beats.resize(50)
        assert beats.ttl("stranger") == timedelta(seconds=165)

    def test_resize_forgets_nodes_that_stopped_heartbeating(self) -> None:
        """The longest interval in use falls back to the fleet's once the node handed the
        long one is no longer among the heartbeating nodes."""
        beats = Heartbeats(SMALL_BUDGET, rand=lambda: 0.0)
        beats.resize(100)
        beats.hand_out("gone")
        beats.resize(5, {"other"})
        assert beats.longest() == timedelta(seconds=11)
        assert beats.ttl("gone") == timedelta(seconds=33)


async def register(harness: Harness, name: str) -> Any:
    """The register answer for agent ``name`` (with its node key: again, it renews)."""
    resp = await harness.client.post(
        "/v1/agent/register",
        json={"join_token": JOIN, "name": name, "node_key": node_key_of(name)},
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


class TestAnswers:
    async def test_register_and_assignments_carry_the_interval_for_a_large_fleet(
        self, harness: Harness
    ) -> None:
        """With 100 nodes and a budget of 1/s, the register and assignments answers carry
        100 s stretched by the jitter, and /metrics shows interval, TTL and rate."""
        paced = Paced(harness, draw=0.5)
        await add_nodes(harness, 99)
        node_id = (await register(harness, "agent"))["node_id"]
        await paced.pacer.tick()
        assert paced.heartbeats.fleet == 100
        answer = await register(harness, "agent")  # again, now that the fleet is counted
        assert answer["heartbeat_interval"] == 105.0
        token = answer["node_token"]
        await harness.report(token, 1, [])
        resp = await harness.client.get(
            "/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200
        assert (await resp.json())["heartbeat_interval"] == 105.0
        assert paced.heartbeats.ttl(node_id) == timedelta(seconds=330)
        metrics = parse(await (await harness.client.get("/metrics")).text())
        assert metrics.value("fleetwave_heartbeat_interval_seconds") == 100.0
        assert metrics.value("fleetwave_heartbeat_ttl_seconds") == 330.0
        assert metrics.value("fleetwave_heartbeat_offered_rate") == 1.0
        assert metrics.value("fleetwave_heartbeat_budget") == 1.0

    async def test_a_small_fleet_is_handed_the_configured_interval(self, harness: Harness) -> None:
        """Within the budget the interval is the configured one (here with no jitter drawn)."""
        paced = Paced(harness, draw=0.0)
        await paced.pacer.tick()
        assert (await register(harness, "solo"))["heartbeat_interval"] == 10.0


class TestPacer:
    async def test_down_and_revoked_nodes_do_not_count(self, harness: Harness) -> None:
        """The fleet the interval is sized for is the nodes expected to report; the window
        learns the longest interval and its TTL."""
        paced = Paced(harness)
        ids = await add_nodes(harness, 30)
        for node_id in ids[:10]:
            await harness.store.set_node_status(node_id, NodeStatus.DOWN)
        await harness.store.revoke_node(ids[10], harness.clock.now())
        await paced.pacer.tick()
        assert paced.heartbeats.fleet == 19
        observation = paced.window.observe()
        assert observation.heartbeat == timedelta(seconds=20.9)
        assert observation.grace == timedelta(seconds=3 * 20.9)


class TestNodeMonitor:
    async def test_a_node_on_a_longer_interval_is_down_only_after_its_ttl(
        self, harness: Harness
    ) -> None:
        """Handed 110 s while the fleet was 100 nodes, a node keeps a 330 s TTL after 90 of
        them went down and the interval fell to 10 s; a node never handed the long one is
        down after 33 s."""
        paced = Paced(harness, draw=1.0)
        ids = await add_nodes(harness, 100)
        await paced.pacer.tick()
        assert paced.heartbeats.hand_out("n0") == 110.0
        for node_id in ids[10:]:
            await harness.store.set_node_status(node_id, NodeStatus.DOWN)
        await paced.pacer.tick()
        assert paced.heartbeats.interval == 10.0
        harness.clock.advance(34)
        assert sorted(await paced.monitor.tick()) == sorted(ids[1:10])
        harness.clock.advance(329 - 34)
        assert await paced.monitor.tick() == []
        harness.clock.advance(2)
        assert await paced.monitor.tick() == ["n0"]


class TestConfig:
    def test_the_policy_follows_the_options(self) -> None:
        """The defaults make a 10 s floor, 500/s and a 3x TTL; an explicit heartbeat_ttl is
        the policy's floor."""
        assert load_config(None, {}, {}).heartbeat_policy == HeartbeatPolicy(
            interval=10.0, budget=500.0, ttl_multiplier=3.0, ttl_floor=0.0
        )
        env = {
            "FLEETWAVE_HEARTBEAT_BUDGET": "50",
            "FLEETWAVE_HEARTBEAT_TTL_MULTIPLIER": "4",
            "FLEETWAVE_HEARTBEAT_TTL": "1m",
        }
        assert load_config(None, env, {}).heartbeat_policy == HeartbeatPolicy(
            interval=10.0, budget=50.0, ttl_multiplier=4.0, ttl_floor=60.0
        )

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("heartbeat_budget", "0"),
            ("heartbeat_budget", "-5"),
            ("heartbeat_budget", "lots"),
            ("heartbeat_budget", "inf"),
            ("heartbeat_ttl_multiplier", "1"),
            ("heartbeat_ttl_multiplier", "50"),
            ("heartbeat_interval", "0s"),
        ],
    )
    def test_a_bad_value_is_refused_naming_the_option(self, option: str, value: str) -> None:
        """A budget that is not a positive finite number, a multiplier outside 2 to 20 or
        an interval under 10 ms is a configuration error that names the option."""
        with pytest.raises(ValidationFailed) as refused:
            load_config(None, {f"FLEETWAVE_{option.upper()}": value}, {})
        assert [error.field for error in refused.value.errors] == [option]
