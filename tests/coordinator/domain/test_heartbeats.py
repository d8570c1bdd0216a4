"""Heartbeat pacing as pure functions: the interval for a fleet, its jitter, and the TTL."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.heartbeats import (
    HeartbeatPolicy,
    fleet_interval,
    jittered,
    longest_handed_out,
    node_ttl,
    offered_rate,
)

DEFAULT = HeartbeatPolicy(interval=10.0, budget=500.0)

intervals = st.floats(min_value=0.01, max_value=3600.0)
budgets = st.floats(min_value=0.01, max_value=1e6)
fleets = st.integers(min_value=0, max_value=10**7)
draws = st.floats(min_value=0.0, max_value=1.0)
jitters = st.floats(min_value=0.0, max_value=1.0)


class TestFleetInterval:
    def test_the_default_keeps_ten_seconds_up_to_five_thousand_nodes(self) -> None:
        """With the defaults (10 s, 500/s) the interval is 10 s up to 5,000 nodes and
        grows in proportion beyond: 20 s at 10,000, 100 s at 50,000."""
        assert fleet_interval(0, DEFAULT) == 10.0
        assert fleet_interval(5000, DEFAULT) == 10.0
        assert fleet_interval(10_000, DEFAULT) == 20.0
        assert fleet_interval(50_000, DEFAULT) == 100.0

    def test_no_budget_means_the_configured_interval(self) -> None:
        """An infinite budget never stretches the interval."""
        assert fleet_interval(10**6, HeartbeatPolicy(interval=2.0)) == 2.0

    @given(fleets, intervals, budgets, draws, jitters)
    def test_the_rate_stays_within_the_budget(
        self, fleet: int, interval: float, budget: float, draw: float, jitter: float
    ) -> None:
        """Whatever the fleet, the rate it offers at any interval an answer carries never
        exceeds the budget, and no answer is shorter than the configured interval."""
        policy = HeartbeatPolicy(interval=interval, budget=budget, jitter=jitter)
        handed = jittered(fleet_interval(fleet, policy), policy, lambda: draw)
        assert handed >= interval
        assert offered_rate(fleet, handed) <= budget * (1 + 1e-12)

    @given(fleets, intervals, budgets, draws)
    def test_answers_stay_within_the_jitter(
        self, fleet: int, interval: float, budget: float, draw: float
    ) -> None:
        """An answer carries the fleet interval stretched by at most the jitter."""
        policy = HeartbeatPolicy(interval=interval, budget=budget)
        base = fleet_interval(fleet, policy)
        handed = jittered(base, policy, lambda: draw)
        assert base <= handed <= longest_handed_out(base, policy)

    def test_the_offered_rate_of_no_interval_is_zero(self) -> None:
        """A zero interval (nothing sized yet) offers no rate rather than dividing by it."""
        assert offered_rate(100, 0.0) == 0.0


class TestNodeTtl:
    def test_three_of_the_longest_jittered_intervals(self) -> None:
        """By default a node is down after 3 times the longest interval an answer for the
        fleet carries: 33 s at 10 s, 66 s at 10,000 nodes."""
        assert node_ttl(DEFAULT, 10.0) == timedelta(seconds=33)
        assert node_ttl(DEFAULT, fleet_interval(10_000, DEFAULT)) == timedelta(seconds=66)

    def test_a_longer_interval_handed_before_the_fleet_shrank_counts(self) -> None:
        """A node last handed 100 s (the fleet was large) keeps a TTL of 300 s after the
        fleet shrank to the 10 s interval: it may not have heard of the shorter one."""
        assert node_ttl(DEFAULT, 10.0, handed=100.0) == timedelta(seconds=300)

    def test_a_configured_ttl_is_a_floor(self) -> None:
        """An explicit heartbeat_ttl above the multiple is the TTL; below it, the multiple."""
        policy = HeartbeatPolicy(interval=1.0, ttl_floor=10.0)
        assert node_ttl(policy, 1.0) == timedelta(seconds=10)
        assert node_ttl(policy, 20.0) == timedelta(seconds=66)

    @given(fleets, intervals, budgets, draws, st.floats(min_value=2.0, max_value=20.0))
    def test_no_answer_outlives_its_ttl(
        self, fleet: int, interval: float, budget: float, draw: float, multiplier: float
    ) -> None:
        """The TTL of a node covers ``multiplier`` times whatever interval an answer for
        the same fleet handed it, with or without its remembering that answer."""
        policy = HeartbeatPolicy(interval=interval, budget=budget, ttl_multiplier=multiplier)
        base = fleet_interval(fleet, policy)
        handed = jittered(base, policy, lambda: draw)
        for remembered in (0.0, handed):
            ttl = node_ttl(policy, base, remembered).total_seconds()
            assert math.isclose(ttl, multiplier * handed) or ttl > multiplier * handed
