"""Rollouts with canaries and waves, with real agent processes and a real HTTP service."""

from __future__ import annotations

import signal
import sys
from typing import Any

import pytest

from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.integration.test_first_rollout import answer
from tests.jobstatus_schema import validate_job_status

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POLICY = {
    "canary": 1,
    "waves": 2,
    "spread_by": "zone",
    "min_healthy_time": "500ms",
    "healthy_deadline": "8s",
    "progress_deadline": "1m",
}


def spec(greeting: str, *, broken: bool = False, **rollout: Any) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "coordinator.demo.service",
        "--port",
        "${node.label.port}",
        "--version",
        "${job.version}",
    ]
    if broken:
        command.append("--broken")
    return {
        "name": "web",
        "task": {"command": command, "env": {"GREETING": greeting}, "kill_timeout": "3s"},
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
        "rollout": {**POLICY, **rollout},
    }


def start(fleet: LocalFleet, count: int) -> dict[str, int]:
    fleet.start_coordinator()
    ports = {f"n{i}": free_port() for i in range(1, count + 1)}
    for i, (name, port) in enumerate(ports.items()):
        fleet.start_agent(name, {"port": str(port), "zone": f"z{i % 2}"})
    fleet.wait_nodes_ready(count)
    return ports


def events(fleet: LocalFleet, kind: str) -> list[dict[str, Any]]:
    body = fleet.api.request("GET", "/v1/events", query={"job": "web", "limit": "1000"}).body
    return [e for e in body["events"] if e["kind"] == kind]


def run_v1(fleet: LocalFleet) -> None:
    fleet.api.request("PUT", "/v1/jobs/web", spec("v1"))
    fleet.wait_state("web", "running", timeout=60)


def test_good_update_goes_canary_then_waves_to_running(fleet: LocalFleet) -> None:
    """A good update passes the canary, then waves 1, 2 and 3 in order, and ends running."""
    ports = start(fleet, 7)
    run_v1(fleet)
    fleet.api.request("PUT", "/v1/jobs/web", spec("v2", waves=3))

    def v2_running() -> dict[str, Any] | None:
        s = fleet.status("web")
        return s if s["version"] == 2 and s["state"]["state_type"] == "running" else None

    status = wait_for("v2 running", v2_running, timeout=90)
    validate_job_status(status)
    rollout = status["rollout"]
    assert rollout["type"] == "update"
    assert len(rollout["canary_nodes"]) == 1
    assert rollout["canary_promoted"] is True
    assert rollout["current_wave"] == rollout["total_waves"] == 3
    assert rollout["updated_nodes"] == 7
    assert all(answer(p)["greeting"] == "v2" for p in ports.values())
    view = fleet.api.request("GET", "/v1/jobs/web/rollout").body
    order = [e["node"] for e in events(fleet, "node_updated") if e["new"] == "2"]
    groups = [[n["id"] for n in view["canary"]["nodes"]]]
    groups += [[n["id"] for n in w["nodes"]] for w in view["waves"]]
    position = {node: i for i, group in enumerate(groups) for node in group}
    assert [position[n] for n in order] == sorted(position[n] for n in order)


def test_failing_canary_is_rolled_back_and_no_other_node_gets_it(fleet: LocalFleet) -> None:
    """A version failing its check on the canary is rolled back; nobody else ever ran it."""
    ports = start(fleet, 4)
    run_v1(fleet)
    names = {n["id"]: n["name"] for n in fleet.nodes()}
    plan = fleet.api.request("POST", "/v1/jobs/web/plan", spec("v2", broken=True)).body
    canary = {n["id"] for n in plan["rollout"]["canary"]}
    assert len(canary) == 1
    fleet.api.request("PUT", "/v1/jobs/web", spec("v2", broken=True))
    status = fleet.wait_state("web", "rollout_failed", timeout=90)
    validate_job_status(status)
    assert status["version"] == 2
    assert status["rollout"]["type"] == "rollback"
    assert status["rollout"]["rollback_to_version"] == 2
    assert {e["node"] for e in events(fleet, "node_failed")} == canary
    for row in fleet.api.request("GET", "/v1/jobs/web/nodes").body["nodes"]:
        assert row["assigned_version"] == 1
    assert all(answer(p)["greeting"] == "v1" for p in ports.values())
    for node_id, name in names.items():
        # The demo service prints its version when it starts; the agent keeps its output.
        log = fleet.base_dir / "agents" / name / "logs" / "web" / "stdout.log"
        ran_v2 = "service v2 listening" in log.read_text()
        assert ran_v2 == (node_id in canary), name


def test_manual_promotion_gate_waits_and_continues(fleet: LocalFleet) -> None:
    """With auto_promote off the update waits in rollout_paused until promoted."""
    start(fleet, 3)
    run_v1(fleet)
    fleet.api.request("PUT", "/v1/jobs/web", spec("v2", auto_promote=False))
    paused = fleet.wait_state("web", "rollout_paused", timeout=60)
    assert "promote" in paused["state"]["message"]
    assert paused["rollout"]["canary_promoted"] is False
    fleet.api.request("POST", "/v1/jobs/web/rollout/promote", {"full": False})

    def v2_running() -> dict[str, Any] | None:
        s = fleet.status("web")
        return s if s["version"] == 2 and s["state"]["state_type"] == "running" else None

    status = wait_for("v2 running after promote", v2_running, timeout=60)
    assert status["rollout"]["canary_promoted"] is True


def v2_done(fleet: LocalFleet) -> dict[str, Any] | None:
    s = fleet.status("web")
    done = s["rollout"]["completed_at"] != "0001-01-01T00:00:00Z"
    return s if s["version"] == 2 and s["rollout"]["type"] == "update" and done else None


def test_agent_killed_mid_rollout_is_skipped_and_catches_up(fleet: LocalFleet) -> None:
    """An agent killed with SIGKILL does not hang the update nor count as failed, and runs
    the new version once it is back."""
    ports = start(fleet, 3)
    run_v1(fleet)
    victim = "n3"
    fleet.stop(fleet.agents[victim], signal.SIGKILL)
    wait_for(
        "n3 down",
        lambda: any(n["name"] == victim and n["status"] == "down" for n in fleet.nodes()),
        timeout=60,
    )
    fleet.api.request("PUT", "/v1/jobs/web", spec("v2", canary=0, waves=1))
    status = wait_for("the update to finish without n3", lambda: v2_done(fleet), timeout=60)
    assert status["rollout"]["failed_nodes"] == 0
    assert status["rollout"]["updated_nodes"] == 2
    fleet.start_agent(victim)
    wait_for("n3 to serve v2", lambda: answer(ports[victim])["greeting"] == "v2", timeout=60)
    assert fleet.wait_state("web", "running")["version"] == 2


def test_coordinator_kill_9_mid_rollout_continues_the_same_wave(fleet: LocalFleet) -> None:
    """kill -9 of the coordinator at a wave gate and a restart continue the same rollout;
    no node changes version twice and no agent registers again."""
    start(fleet, 4)
    run_v1(fleet)
    ids = {n["name"]: n["id"] for n in fleet.nodes()}
    fleet.api.request("PUT", "/v1/jobs/web", spec("v2", pause_between_waves="manual"))
    paused = fleet.wait_state("web", "rollout_paused", timeout=60)
    assert paused["rollout"]["current_wave"] == 1
    assert fleet.coordinator is not None
    fleet.stop(fleet.coordinator, signal.SIGKILL)
    fleet.start_coordinator()
    again = fleet.status("web")
    assert again["state"]["state_type"] == "rollout_paused"
    assert again["rollout"]["current_wave"] == 1
    assert again["revision"] >= paused["revision"]
    fleet.api.request("POST", "/v1/jobs/web/rollout/promote", {})
    wait_for(
        "v2 running",
        lambda: (
            (s := fleet.status("web"))["version"] == 2 and s["state"]["state_type"] == "running"
        ),
        timeout=60,
    )
    assert {n["name"]: n["id"] for n in fleet.nodes()} == ids
    for name in ids:
        log = fleet.base_dir / "agents" / name / "logs" / "web" / "stdout.log"
        assert log.read_text().count("service v2 listening") == 1, name


def test_failure_only_in_wave_two_rolls_every_updated_node_back(fleet: LocalFleet) -> None:
    """A version that fails only on wave-2 nodes sends canary and wave-1 nodes back too."""
    ports = start(fleet, 5)
    run_v1(fleet)
    plan = fleet.api.request("POST", "/v1/jobs/web/plan", spec("v2")).body
    wave2 = [n["id"] for n in plan["rollout"]["waves"][1]]
    bad = spec("v2")
    bad["task"]["command"] += ["--node", "${node.id}", "--broken-for", ",".join(wave2)]
    fleet.api.request("PUT", "/v1/jobs/web", bad)
    status = fleet.wait_state("web", "rollout_failed", timeout=90)
    assert status["rollout"]["type"] == "rollback"
    assert {e["node"] for e in events(fleet, "node_failed")} <= set(wave2)
    updated_before_halt = {e["node"] for e in events(fleet, "node_updated") if e["new"] == "2"}
    assert len(updated_before_halt) >= 2  # the canary and wave 1 had passed
    assert all(answer(p)["greeting"] == "v1" for p in ports.values())
    for row in fleet.api.request("GET", "/v1/jobs/web/nodes").body["nodes"]:
        assert row["assigned_version"] == 1
