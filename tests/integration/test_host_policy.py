"""The host policy end to end (DESIGN §10): a real coordinator and real agents whose config
says only ``[policy]`` defaults, so whatever the coordinator sends, the host decides."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import LocalFleet, wait_for
from tests.integration.conftest import print_logs_on_failure

pytestmark = [pytest.mark.slow, pytest.mark.integration]

AS_ROOT = os.geteuid() == 0
NEEDS_ROOT = pytest.mark.skipif(not AS_ROOT, reason="needs root to run jobs as nobody (CI is root)")


@pytest.fixture
def default_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A coordinator and one agent whose host policy is the default one (`[policy]` empty)."""
    fleet = LocalFleet(tmp_path, heartbeat_interval="1s", heartbeat_ttl="10s", policy={})
    try:
        fleet.start_coordinator()
        fleet.start_agent("host-1", {})
        fleet.wait_nodes_ready(1)
        yield fleet
    finally:
        fleet.close()
        assert not fleet.workload_processes(), "a workload outlived the fleet"


def execution(fleet: LocalFleet, job: str, version: int) -> dict[str, Any] | None:
    """The node's execution of ``job`` at ``version`` once it reached a final state."""
    for row in fleet.api.request("GET", f"/v1/jobs/{job}/nodes").body["nodes"]:
        found = row.get("execution") or {}
        if found.get("version") == version and found.get("state") in ("failed", "healthy"):
            return dict(found)
    return None


def marker_spec(marker: Path, user: str | None) -> dict[str, Any]:
    """A service that leaves ``marker`` behind the moment it runs."""
    task: dict[str, Any] = {
        "command": ["sh", "-c", f"touch {marker}; exec sleep 300"],
        "kill_timeout": "2s",
    }
    if user is not None:
        task["user"] = user
    return {
        "name": "rooted",
        "task": task,
        "rollout": {"min_healthy_time": "500ms", "healthy_deadline": "30s"},
    }


@pytest.mark.parametrize(
    "user",
    [
        "root",
        pytest.param(None, marks=pytest.mark.skipif(not AS_ROOT, reason="the agent is not root")),
    ],
    ids=["user-root", "no-user-on-a-root-agent"],
)
def test_a_root_job_is_refused_by_the_default_policy(
    default_fleet: LocalFleet, tmp_path: Path, user: str | None
) -> None:
    """A job that would run as uid 0 is reported failed with the policy's reason and never
    runs (its marker file never appears); the rollout fails; a later version that sets a
    non-root user runs normally on the same host."""
    fleet = default_fleet
    marker = tmp_path / "root-job-ran"
    fleet.api.request("PUT", "/v1/jobs/rooted", marker_spec(marker, user))
    try:
        status = fleet.wait_state("rooted", "failed", timeout=60)
    except TimeoutError:
        print(print_logs_on_failure(fleet))
        raise
    assert status["rollout"]["failed_nodes"] == 1
    refused = wait_for("the refusal", lambda: execution(fleet, "rooted", 1))
    assert refused["state"] == "failed"
    assert refused["message"].startswith("refused by host policy: job ")
    assert "(uid 0)" in refused["message"]
    assert "[policy] allow_root = true" in refused["message"]
    assert refused["restarts"] == 0
    assert not marker.exists()

    complying = marker_spec(tmp_path / "v2-ran", "nobody" if AS_ROOT else None)
    complying["task"]["command"] = ["sleep", "300"]
    fleet.api.request("PUT", "/v1/jobs/rooted", complying)
    fleet.wait_state("rooted", "running", timeout=60)
    healthy = wait_for("version 2 to run", lambda: execution(fleet, "rooted", 2))
    assert healthy["state"] == "healthy"


@NEEDS_ROOT
def test_a_check_planted_by_the_workload_runs_as_the_workloads_user(
    default_fleet: LocalFleet,
) -> None:
    """A workload running as nobody writes ./check.sh into its working directory, and the
    job's exec check runs it: as nobody with nobody's own groups (the agent is root, and the
    check used to run as root). The workload itself has no group 0 either."""
    fleet = default_fleet
    plant = (
        "id -u > workload-ids; id -G >> workload-ids;"
        " printf '#!/bin/sh\\nid -u > .ids; id -G >> .ids; mv .ids check-ids\\n' > check.sh;"
        " chmod 755 check.sh; exec sleep 300"
    )
    spec = {
        "name": "planter",
        "task": {"command": ["sh", "-c", plant], "user": "nobody", "kill_timeout": "2s"},
        "health": {
            "checks": [
                {
                    "type": "exec",
                    "command": ["./check.sh"],
                    "interval": "200ms",
                    "failure_threshold": 100,
                }
            ]
        },
        "rollout": {"min_healthy_time": "500ms", "healthy_deadline": "30s"},
    }
    fleet.api.request("PUT", "/v1/jobs/planter", spec)
    try:
        fleet.wait_state("planter", "running", timeout=60)
    except TimeoutError:
        print(print_logs_on_failure(fleet))
        raise
    job_dir = fleet.base_dir / "agents" / "host-1" / "jobs" / "planter"
    check_ids = wait_for("the check's ids", lambda: read_lines(job_dir / "check-ids"))
    entry = pwd.getpwnam("nobody")
    groups = " ".join(str(g) for g in dict.fromkeys(os.getgrouplist("nobody", entry.pw_gid)))
    assert check_ids == [str(entry.pw_uid), groups]
    assert read_lines(job_dir / "workload-ids") == [str(entry.pw_uid), groups]
    assert "0" not in groups.split()


def read_lines(path: Path) -> list[str] | None:
    """The file's two lines once both are written, else None."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines if len(lines) == 2 else None
