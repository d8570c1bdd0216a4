"""End to end with real processes: a coordinator, three agents, a real HTTP service."""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any

import pytest

from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.jobstatus_schema import validate_job_status

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def service_spec(greeting: str) -> dict[str, Any]:
    return {
        "name": "web",
        "task": {
            "command": [
                sys.executable,
                "-m",
                "coordinator.demo.service",
                "--port",
                "${node.label.port}",
                "--version",
                "${job.version}",
                "--node",
                "${node.name}",
            ],
            "env": {"GREETING": greeting},
            "kill_timeout": "3s",
        },
        "health": {
            "checks": [
                {
                    "type": "http",
                    "url": "http://127.0.0.1:${node.label.port}/",
                    "interval": "200ms",
                    "timeout": "1s",
                    "failure_threshold": 2,
                }
            ]
        },
        "rollout": {"min_healthy_time": "500ms", "healthy_deadline": "30s"},
    }


def answer(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def start_three(fleet: LocalFleet) -> dict[str, int]:
    ports = {f"n{i}": free_port() for i in range(1, 4)}
    fleet.start_coordinator()
    for name, port in ports.items():
        fleet.start_agent(name, {"port": str(port), "zone": f"z{port % 3}"})
    fleet.wait_nodes_ready(3)
    return ports


def test_create_update_resubmit_and_restart_keep_the_contract(fleet: LocalFleet) -> None:
    """Create, update, identical resubmission and a coordinator restart behave as DESIGN §4 says."""
    ports = start_three(fleet)
    api = fleet.api

    # create: every node runs the service and passes its http check -> running
    created = api.request("PUT", "/v1/jobs/web", service_spec("v1")).body
    assert created["version"] == 1
    status = fleet.wait_state("web", "running", timeout=60)
    validate_job_status(status)
    assert status["version"] == 1
    assert status["rollout"]["type"] == "create"
    assert status["rollout"]["rollback_to_version"] == 0
    assert status["rollout"]["updated_nodes"] == status["rollout"]["total_nodes"] == 3
    assert all(answer(p)["greeting"] == "v1" for p in ports.values())

    # update: version 2 everywhere, revision grew
    updated = api.request("PUT", "/v1/jobs/web", service_spec("v2")).body
    assert updated["version"] == 2
    assert updated["revision"] > status["revision"]

    def v2_running() -> dict[str, Any] | None:
        s = fleet.status("web")
        return s if s["version"] == 2 and s["state"]["state_type"] == "running" else None

    status = wait_for("version 2 running", v2_running, timeout=60)
    validate_job_status(status)
    assert status["rollout"]["type"] == "update"
    assert status["rollout"]["rollback_to_version"] == 1
    for port in ports.values():
        body = answer(port)
        assert (body["greeting"], body["version"]) == ("v2", "2")

    # identical resubmission: nothing changes
    again = api.request("PUT", "/v1/jobs/web", service_spec("v2"))
    assert again.status == 200
    assert again.body["changed"] is False
    assert fleet.status("web") == status

    # restart the coordinator on the same data dir: jobs, versions, status, nodes are kept
    nodes_before = {n["name"]: n["id"] for n in fleet.nodes()}
    versions_before = api.request("GET", "/v1/jobs/web/versions").body
    assert fleet.coordinator is not None
    assert fleet.stop(fleet.coordinator) == 0
    fleet.start_coordinator()
    assert fleet.status("web")["version"] == 2
    assert fleet.status("web")["revision"] >= status["revision"]
    assert api.request("GET", "/v1/jobs/web/versions").body == versions_before
    fleet.wait_nodes_ready(3)
    assert {n["name"]: n["id"] for n in fleet.nodes()} == nodes_before, "agents re-registered"
    assert fleet.wait_state("web", "running")["version"] == 2
    assert all(answer(p)["greeting"] == "v2" for p in ports.values())


def test_crashing_job_is_restarted_per_policy_and_reported(fleet: LocalFleet) -> None:
    """A job that keeps crashing is restarted max_restarts times, then the node reports failed."""
    fleet.start_coordinator()
    fleet.start_agent("solo", {})
    fleet.wait_nodes_ready(1)
    spec = {
        "name": "crashy",
        "task": {
            "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
            "restart": {
                "policy": "on-failure",
                "max_restarts": 2,
                "window": "1m",
                "delay": "100ms",
                "max_delay": "200ms",
            },
        },
        "rollout": {"min_healthy_time": "1s", "healthy_deadline": "1m"},
    }
    fleet.api.request("PUT", "/v1/jobs/crashy", spec)
    status = fleet.wait_state("crashy", "failed", timeout=60)
    validate_job_status(status)
    assert status["rollout"]["type"] == "create"
    assert status["rollout"]["failed_nodes"] == 1
    rows = fleet.api.request("GET", "/v1/jobs/crashy/nodes").body["nodes"]
    execution = rows[0]["execution"]
    assert execution["state"] == "failed"
    assert execution["restarts"] == 2
    assert execution["exit_code"] == 3
    assert "3" in execution["message"]
