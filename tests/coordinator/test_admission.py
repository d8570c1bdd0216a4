"""Admission control of agent traffic: over the limits an agent request is answered 503 with
a jittered Retry-After before any work; a held long-poll does not count against the limit;
operator requests are never shed.

Real: the app on a real SQLite file (the ``harness`` fixture), AgentAdmission.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest
from aiohttp.test_utils import make_mocked_request

from coordinator.admission import AgentAdmission
from coordinator.api.deps import DEPS
from coordinator.engine.driver import NodeMonitor
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import Heartbeats
from shared.clock import ZERO_TIME, FakeClock
from tests.coordinator.conftest import Harness
from tests.helpers import eventually


class TestAgentAdmission:
    def test_agent_requests_over_the_limit_are_refused_until_one_is_released(self) -> None:
        """The limit counts agent requests being worked on; a release frees a place."""
        admission = AgentAdmission(lambda: 0.0, limit=2)
        first, second, third = (make_mocked_request("POST", "/v1/agent/report") for _ in "abc")
        assert admission.admit(first)
        assert admission.admit(second)
        assert not admission.admit(third)
        admission.release(first)
        admission.release(first)  # idempotent: a poll released when it started to wait
        assert admission.working == 1
        assert admission.admit(third)
        assert admission.stats.shed == 1

    def test_registrations_have_a_lower_limit_of_their_own(self) -> None:
        """Registrations (several writes each) are capped apart, within the overall limit."""
        admission = AgentAdmission(lambda: 0.0, limit=10, registrations=1)
        assert admission.admit(make_mocked_request("POST", "/v1/agent/register"))
        assert not admission.admit(make_mocked_request("POST", "/v1/agent/register"))
        assert admission.admit(make_mocked_request("POST", "/v1/agent/report"))

    def test_operator_requests_are_never_counted(self) -> None:
        """An operator can always look at a coordinator that sheds agent traffic."""
        admission = AgentAdmission(lambda: 0.0, limit=0)
        assert admission.admit(make_mocked_request("GET", "/v1/nodes"))
        assert admission.working == 0

    @pytest.mark.parametrize(("rand", "expected"), [(0.0, 1), (0.5, 3), (0.999, 5), (1.0, 5)])
    def test_retry_after_is_whole_seconds_spread_from_one_to_the_maximum(
        self, rand: float, expected: int
    ) -> None:
        """Shed agents are told to come back after 1 to ``retry_after_max`` seconds."""
        assert AgentAdmission(lambda: rand, retry_after_max=5).retry_after() == expected


async def _poll(harness: Harness, token: str, index: int, wait: str) -> int:
    resp = await harness.client.get(
        "/v1/agent/assignments",
        params={"index": str(index), "wait": wait},
        headers={"Authorization": f"Bearer {token}"},
    )
    return resp.status


class TestStormSpread:
    def test_the_spread_grows_while_more_are_refused_than_admitted(self) -> None:
        """Refusing 1,000 agent requests in a second while admitting 100 tells agents to
        come back over 11 seconds (at the rate it admits, 10 s to take them all); once the
        refusals stop, the spread is back to the usual 1-5 s within two seconds."""
        clock = FakeClock()
        admission = AgentAdmission(lambda: 0.999, limit=100, clock=clock)
        held = [make_mocked_request("POST", "/v1/agent/report") for _ in range(100)]
        for request in held:
            assert admission.admit(request)
        refused = make_mocked_request("POST", "/v1/agent/report")
        for _ in range(1000):
            assert not admission.admit(refused)
        assert admission.spread() == 11
        assert admission.retry_after() == 11
        assert admission.last_shed_at == clock.now()
        for request in held:
            admission.release(request)
        clock.advance(1.0)
        admission.admit(held[0])  # a new second: the last one still counts
        assert admission.spread() == 11
        clock.advance(1.0)
        admission.admit(held[1])
        assert admission.spread() == 5

    def test_the_spread_has_a_ceiling(self) -> None:
        """However many are refused, agents are told to return within a minute."""
        clock = FakeClock()
        admission = AgentAdmission(lambda: 0.999, limit=0, clock=clock)
        request = make_mocked_request("GET", "/v1/agent/assignments")
        for _ in range(10_000):
            assert not admission.admit(request)
        assert admission.spread() == 60


class TestNodeMonitorDuringAStorm:
    async def test_no_node_is_judged_silent_while_agents_are_refused(
        self, harness: Harness
    ) -> None:
        """A node unheard for twice its TTL is not marked down while the coordinator keeps
        refusing agent requests (it may be one of those refused); a TTL after the last
        refusal it is."""
        node_id, _ = await harness.register("quiet")
        refused = {"at": ZERO_TIME}
        window = ObservationWindow(harness.clock, timedelta(0), gap_seconds=math.inf)
        monitor = NodeMonitor(
            harness.store,
            harness.clock,
            harness.driver,
            window,
            Heartbeats.fixed(10.0),  # TTL 30 s
            refused_at=lambda: refused["at"],
        )
        for _ in range(6):  # 60 s of refusals, one every 10 s
            harness.clock.advance(10)
            refused["at"] = harness.clock.now()
            assert await monitor.tick() == []
        harness.clock.advance(29)
        assert await monitor.tick() == []
        harness.clock.advance(2)
        assert await monitor.tick() == [node_id]


class TestThroughTheApp:
    async def test_a_shed_request_is_answered_503_with_retry_after_before_any_work(
        self, harness: Harness
    ) -> None:
        """Over the limit, even a request with a bad token gets the 503 (nothing was looked
        at), with ``Retry-After`` and the code ``overloaded``."""
        harness.client.app[DEPS].admission = AgentAdmission(lambda: 0.5, limit=0)
        resp = await harness.client.post(
            "/v1/agent/report",
            json={"seq": 1, "executions": []},
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["error"]["code"] == "overloaded"
        nodes = await harness.client.get("/v1/nodes", headers=harness.admin())
        assert nodes.status == 200

    async def test_a_held_long_poll_does_not_hold_a_place(self, harness: Harness) -> None:
        """With room for one request, a node's report is served while its long-poll waits."""
        _node, token = await harness.register("n1")
        first = await harness.client.get(
            "/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"}
        )
        index = (await first.json())["index"]
        admission = AgentAdmission(lambda: 0.0, limit=1)
        harness.client.app[DEPS].admission = admission
        held = asyncio.ensure_future(_poll(harness, token, index, "30s"))
        try:
            await eventually(lambda: admission.stats.admitted == 1 and not admission.working)
            assert not held.done()
            assert (await harness.report(token, 1, []))["accepted"]
            assert admission.stats.shed == 0
        finally:
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)
