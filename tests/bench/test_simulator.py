"""Smoke test of the agent simulator against a real coordinator process (no timings asserted)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bench.harness import Server, coordinator, job_spec
from bench.scenarios import HeldFleet
from bench.simulator import SimConfig, SimFleet, percentile

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def held_dir(tmp_path: Path) -> Path:
    return tmp_path / "held"


async def test_fifty_simulated_agents_register_report_and_take_a_small_rollout(
    held_dir: Path,
) -> None:
    """50 simulated agents register, heartbeat, and a canary + 2-wave rollout reaches them all."""
    async with HeldFleet(held_dir, 50, poll_wait=5.0) as held:
        assert not held.fleet.log.errors
        took, status = await held.deploy(
            "v1", canary=1, waves=2, min_healthy_time="200ms", deadline=120
        )
        assert status["state"]["state_type"] == "running"
        assert status["rollout"]["updated_nodes"] == 50
        assert status["rollout"]["total_waves"] == 2
        assert len(held.fleet.received("bench", 1)) == 50
        nodes = await held.admin.call("GET", "/v1/nodes")
        assert {n["status"] for n in nodes["nodes"]} == {"ready"}
        assert all(s.ok for s in held.fleet.log.reports)
        assert took > 0


async def test_a_failing_canary_is_rolled_back_on_the_simulated_agents(held_dir: Path) -> None:
    """A version the simulator fails on the canary is rolled back to the stable version."""
    async with HeldFleet(held_dir, 50, poll_wait=5.0) as held:
        await held.deploy("v1", canary=0, waves=1, min_healthy_time="0s", deadline=120)
        held.fail_versions(2)
        _, status = await held.deploy(
            "v2", canary=1, waves=2, min_healthy_time="200ms", deadline=120
        )
        assert status["state"]["state_type"] == "rollout_failed"
        [(_, canary, job, version)] = held.fleet.log.failures
        assert (job, version) == ("bench", 2)
        assert not held.fleet.received("bench", 2).keys() - {canary}


async def test_simulated_agents_spread_over_coordinators_and_move_on_a_failed_connect() -> None:
    """With several URLs, agent i starts on URL i mod n and moves to the next one when a
    connection fails (the real agent's rule), not on an HTTP error."""
    urls = ("http://a", "http://b", "http://c")
    fleet = SimFleet(SimConfig(url="", urls=urls, join_token="j", nodes=4))
    assert [n.url for n in fleet.nodes] == ["http://a", "http://b", "http://c", "http://a"]
    node = fleet.nodes[2]
    node._fail_over(aiohttp.ClientConnectionError())
    assert node.url == "http://a"
    node._fail_over(RuntimeError("HTTP 500"))
    assert node.url == "http://a"
    assert fleet.log.failovers == 1


def test_percentile_is_nearest_rank() -> None:
    """Percentiles use the nearest-rank method and are 0 for no samples."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) == 0.0


def test_harness_servers_are_real_processes(tmp_path: Path) -> None:
    """The harness starts the coordinator as its own process and stops it on close."""
    server: Server = coordinator(tmp_path).start("/readyz")
    try:
        assert server.process.pid != 0
        assert server.process.is_running()
    finally:
        server.close()
    assert server.popen is not None
    assert server.popen.poll() is not None
    assert job_spec("x", "m")["rollout"]["waves"] == 10
