"""Smoke tests of the fleet arrival scenarios against a real coordinator process: a fleet
registering from nothing, and the coordinator restarted under a held fleet (SIGTERM, then
kill -9). No timings asserted: every agent is back, no node is marked down, and the agents
saw no error that a restart does not explain."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import ROOT
from bench.simulator import EXPECTED_IN_OUTAGE, HTTPStatusError, error_kind
from bench.storm import reconnect_storm, registration, unexpected

pytestmark = [pytest.mark.slow, pytest.mark.integration]


async def test_fifty_agents_register_from_nothing_without_errors(tmp_path: Path) -> None:
    """50 simulated agents register with a fresh coordinator and are all heard, error-free."""
    result = await registration(tmp_path, 50, baseline=False)
    assert result["nodes"] == 50
    assert result["errors_by_kind"] == {}


async def test_fifty_agents_come_back_after_a_coordinator_restart(tmp_path: Path) -> None:
    """After a SIGTERM and after a kill -9 of the coordinator, started again on the same data
    dir and port, every agent has a report accepted again, no node is ever marked down, and
    the job still runs."""
    result = await reconnect_storm(
        tmp_path,
        50,
        signals=(signal.SIGTERM, signal.SIGKILL),
        coordinator_args=("--heartbeat-interval", "5s"),
    )
    for storm in result["storms"]:
        assert storm["all_back"], storm
        assert storm["agents_back"] == 50
        assert storm["unexpected_errors"] == {}, storm
    assert [s["exit_code"] for s in result["storms"]] == [0, -signal.SIGKILL]
    assert result["nodes_down_after"] == 0
    assert result["node_down_events"] == 0
    assert result["job_state_after"] == "running"


def test_errors_are_counted_by_kind() -> None:
    """A 503 with Retry-After is shedding, expected in a storm; other 5xx and 4xx are not."""
    assert error_kind(HTTPStatusError("x", 503, 2.0, "")) == "503_retry_after"
    assert error_kind(HTTPStatusError("x", 503, None, "")) == "503"
    assert error_kind(HTTPStatusError("x", 502, None, "")) == "5xx"
    assert error_kind(HTTPStatusError("x", 409, None, "")) == "http_409"
    assert error_kind(TimeoutError()) == "timeout"
    assert "503_retry_after" in EXPECTED_IN_OUTAGE
    assert unexpected({"connection_refused": 3, "503": 1, "timeout": 2}) == {"503": 1, "timeout": 2}


def test_pinning_falls_back_on_one_core() -> None:
    """With one usable core the benchmark pins nothing and says why (in its results)."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from bench.harness import pin_processes; print(pin_processes()['pinned'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
