"""Offline operation with real processes: a real coordinator, a real agent, a real workload."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.helpers import JOBS_AS_PYTEST_USER
from tests.integration.test_first_rollout import answer

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    fleet = LocalFleet(
        tmp_path, heartbeat_interval="1s", heartbeat_ttl="10s", policy=JOBS_AS_PYTEST_USER
    )
    try:
        yield fleet
    finally:
        fleet.close()


def service(port: int) -> dict[str, Any]:
    return {
        "name": "web",
        "task": {
            "command": [sys.executable, "-m", "coordinator.demo.service", "--port", str(port)],
            "kill_timeout": "3s",
        },
        "health": {
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{port}/", "interval": "200ms"}]
        },
        "rollout": {"min_healthy_time": "300ms", "healthy_deadline": "30s"},
    }


def agent_events(fleet: LocalFleet, name: str = "n1") -> list[dict[str, Any]]:
    """Every JSON log line of the agent so far (all its runs append to one file)."""
    path = fleet.base_dir / "logs" / f"agent-{name}.log"
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def count(fleet: LocalFleet, event: str) -> int:
    return sum(1 for e in agent_events(fleet) if e.get("event") == event)


def workload_pid(fleet: LocalFleet) -> int:
    return wait_for("the workload", lambda: [p.pid for p in fleet.workload_processes()])[0]


def test_workload_survives_an_outage_and_an_agent_restart(fleet: LocalFleet) -> None:
    """With every coordinator gone the agent keeps (and after its own crash re-adopts) the
    workload, and catches up without a restart once one returns."""
    port = free_port()
    fleet.start_coordinator()
    fleet.start_agent("n1")
    fleet.wait_nodes_ready(1)
    fleet.api.request("PUT", "/v1/jobs/web", service(port))
    fleet.wait_state("web", "running")
    pid = workload_pid(fleet)

    assert fleet.coordinator is not None
    fleet.stop(fleet.coordinator, signal.SIGKILL)
    wait_for("the agent to notice", lambda: count(fleet, "coordinator_unreachable") >= 1)
    failed = count(fleet, "report_failed")
    wait_for("three more failed reports", lambda: count(fleet, "report_failed") >= failed + 3)
    assert answer(port)["version"] == "1"
    assert workload_pid(fleet) == pid

    # The agent crashes while offline: the next one adopts the workload from its records.
    fleet.stop(fleet.agents["n1"], signal.SIGKILL)
    assert psutil.pid_exists(pid)
    fleet.start_agent("n1")
    wait_for("the workload to be adopted", lambda: count(fleet, "workload_adopted") >= 1)
    failed = count(fleet, "report_failed")
    wait_for("failed reports of the new agent", lambda: count(fleet, "report_failed") > failed)
    assert workload_pid(fleet) == pid
    assert answer(port)["version"] == "1"

    fleet.start_coordinator()
    wait_for("the reconnect", lambda: count(fleet, "coordinator_reconnected") >= 1)
    fleet.wait_nodes_ready(1)
    status = fleet.wait_state("web", "running")
    assert status["version"] == 1
    nodes = fleet.api.request("GET", "/v1/jobs/web/nodes").body
    assert "healthy" in json.dumps(nodes)
    assert workload_pid(fleet) == pid
    # A coordinator that crashed refuses every seq it may have acknowledged before the
    # crash (its durable reservation, see docs/operations.md): one refusal, one resend.
    assert count(fleet, "report_seq_behind") <= 1
    assert count(fleet, "job_starting") == 1  # only the first start, never again
