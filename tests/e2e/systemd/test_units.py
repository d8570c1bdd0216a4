"""Fleetwave's systemd units on a real systemd: a booted Debian container (see conftest.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.systemd.machine import NODE_NAME, SystemdHost

pytestmark = [pytest.mark.slow]

AGENT = "fleetwave-agent.service"
COORDINATOR = "fleetwave-coordinator.service"
WORKLOAD = "http.server"
"""What the test job runs: ``python3 -m http.server``; pgrep finds it by this."""

WEB_JOB: dict[str, Any] = {
    "name": "web",
    "type": "service",
    "task": {
        "driver": "exec",
        "command": ["python3", "-m", WORKLOAD, "--bind", "127.0.0.1", "${node.label.port}"],
    },
    "health": {
        "checks": [
            {
                "type": "http",
                "url": "http://127.0.0.1:${node.label.port}/",
                "interval": "500ms",
                "timeout": "1s",
            }
        ]
    },
    "rollout": {"min_healthy_time": "1s", "healthy_deadline": "30s"},
}


def agent_status(host: SystemdHost) -> str:
    return host.show(AGENT, "StatusText")["StatusText"]


def job_state(host: SystemdHost, job: str = "web") -> str:
    answer = host.api("GET", f"/v1/jobs/{job}/status")
    return str(answer.body["state"]["state_type"]) if answer.status == 200 else ""


def wait_ready(host: SystemdHost) -> None:
    """Both units active and the agent registered and synced (its STATUS= says so)."""
    for unit in (COORDINATOR, AGENT):
        host.wait_until(
            lambda unit=unit: host.show(unit, "ActiveState")["ActiveState"] == "active",
            what=f"{unit} active",
        )
    host.wait_until(lambda: "synced at index" in agent_status(host), what="the agent synced")


def deploy_web(host: SystemdHost) -> int:
    """Deploy WEB_JOB, wait until it runs healthy; the workload's pid inside the container."""
    wait_ready(host)
    answer = host.api("PUT", "/v1/jobs/web", WEB_JOB)
    assert answer.status == 201, answer.body
    host.wait_until(lambda: job_state(host) == "running", timeout=60, what="job web running")
    (pid,) = host.pids(WORKLOAD)
    return pid


def restarted(host: SystemdHost, old_pid: int) -> bool:
    """The agent runs again under a new main pid after at least one automatic restart."""
    props = host.show(AGENT, "ActiveState", "SubState", "MainPID", "NRestarts")
    return (
        props["ActiveState"] == "active"
        and props["SubState"] == "running"
        and int(props["MainPID"]) not in (0, old_pid)
        and int(props["NRestarts"]) >= 1
    )


def uptime(host: SystemdHost, pid: int) -> int:
    """Seconds since process ``pid`` (inside the container) started."""
    return int(host.run(["ps", "-o", "etimes=", "-p", str(pid)], check=True).stdout)


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, output
    return float(match[1])


class TestStartup:
    def test_units_start_and_report_ready(self, systemd_host: SystemdHost) -> None:
        """Both Type=notify units reach active/running with a useful STATUS=, and the agent
        is registered and ready at the coordinator inside."""
        host = systemd_host
        wait_ready(host)
        coordinator = host.show(COORDINATOR, "Type", "ActiveState", "SubState", "StatusText")
        assert coordinator == {
            "Type": "notify",
            "ActiveState": "active",
            "SubState": "running",
            "StatusText": "listening on 127.0.0.1:7400",
        }
        agent = host.show(AGENT, "Type", "ActiveState", "SubState", "WatchdogUSec")
        assert agent == {
            "Type": "notify",
            "ActiveState": "active",
            "SubState": "running",
            "WatchdogUSec": "30s",
        }
        # "synced" can come a moment before the first report that makes the node ready.
        host.wait_until(
            lambda: (
                [(n["name"], n["status"]) for n in host.api("GET", "/v1/nodes").body["nodes"]]
                == [(NODE_NAME, "ready")]
            ),
            what="node ready",
        )
        nodes = host.api("GET", "/v1/nodes").body["nodes"]
        assert agent_status(host) == f"node {nodes[0]['id']}; synced at index 1; no jobs"
        ready = host.run(["curl", "-sS", "http://127.0.0.1:7401/readyz"]).stdout
        assert '"ready": true' in ready or '"ready":true' in ready

    def test_unit_files_verify_and_coordinator_is_hardened(self, systemd_host: SystemdHost) -> None:
        """systemd-analyze verify passes for both installed units, and the coordinator's
        offline security exposure is at most 2.0."""
        host = systemd_host
        paths = [f"/etc/systemd/system/{unit}" for unit in (AGENT, COORDINATOR)]
        verify = host.run(["systemd-analyze", "verify", *paths])
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr.strip() == ""
        security = host.run(
            ["systemd-analyze", "security", "--offline=true", f"/etc/systemd/system/{COORDINATOR}"]
        )
        assert exposure(security.stdout) <= 2.0, security.stdout

    def test_reload_keeps_a_plain_http_coordinator_running(self, systemd_host: SystemdHost) -> None:
        """`systemctl reload` of the coordinator without TLS is logged and ignored: the same
        process keeps serving (SIGHUP's default action would end it, and systemd counts
        that as a clean exit, so it would not be restarted)."""
        host = systemd_host
        wait_ready(host)
        pid = host.main_pid(COORDINATOR)
        host.systemctl("reload", COORDINATOR, check=True)
        host.wait_until(
            lambda: "reload_ignored" in host.journal(COORDINATOR), what="reload_ignored logged"
        )
        assert host.show(COORDINATOR, "ActiveState", "MainPID") == {
            "ActiveState": "active",
            "MainPID": str(pid),
        }
        assert host.api("GET", "/v1/nodes").status == 200


class TestExecWorkloads:
    def test_job_runs_with_a_clean_environment(self, systemd_host: SystemdHost) -> None:
        """A job deployed with the exec driver runs and answers, and its environment has
        none of systemd's NOTIFY_SOCKET / WATCHDOG_* variables."""
        host = systemd_host
        pid = deploy_web(host)
        assert (
            host.run(["curl", "-sSf", "-o", "/dev/null", "http://127.0.0.1:8080/"]).returncode == 0
        )
        environ = host.run(["cat", f"/proc/{pid}/environ"], check=True).stdout.split("\0")
        names = {entry.split("=", 1)[0] for entry in environ if entry}
        assert not names & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}, names
        host.wait_until(lambda: "1 healthy" in agent_status(host), what="STATUS= counts the job")

    def test_killed_agent_is_restarted_and_keeps_the_workload(
        self, systemd_host: SystemdHost
    ) -> None:
        """kill -9 of the agent: systemd restarts it, the workload keeps its pid, no second
        copy starts, and the job stays running."""
        host = systemd_host
        pid = deploy_web(host)
        old_agent = host.main_pid(AGENT)
        host.run(["kill", "-KILL", str(old_agent)], check=True)
        host.wait_until(lambda: restarted(host, old_agent), timeout=30, what="agent restarted")
        host.wait_until(lambda: "1 healthy" in agent_status(host), what="job adopted healthy")
        assert host.pids(WORKLOAD) == [pid]
        # The node may have been marked down during the restart; it comes back by itself.
        host.wait_until(lambda: job_state(host) == "running", what="job web running again")
        assert host.pids(WORKLOAD) == [pid]

    def test_stopped_agent_leaves_the_workload_running(self, systemd_host: SystemdHost) -> None:
        """systemctl stop fleetwave-agent leaves the workload running; the next start adopts
        it instead of starting a second copy."""
        host = systemd_host
        pid = deploy_web(host)
        host.systemctl("stop", AGENT, check=True)
        assert host.show(AGENT, "ActiveState")["ActiveState"] == "inactive"
        assert host.pids(WORKLOAD) == [pid]
        host.systemctl("start", AGENT, check=True)
        host.wait_until(lambda: "1 healthy" in agent_status(host), what="job adopted healthy")
        assert host.pids(WORKLOAD) == [pid]


class TestWatchdog:
    def test_frozen_agent_is_restarted_by_the_watchdog(self, systemd_host: SystemdHost) -> None:
        """A SIGSTOPped agent stops pinging; systemd's watchdog kills and restarts it."""
        host = systemd_host
        wait_ready(host)
        host.sh(
            "mkdir -p /etc/systemd/system/fleetwave-agent.service.d && printf "
            "'[Service]\\nWatchdogSec=2s\\nTimeoutAbortSec=2s\\n' "
            "> /etc/systemd/system/fleetwave-agent.service.d/watchdog.conf"
        )
        host.systemctl("daemon-reload", check=True)
        host.systemctl("restart", AGENT, check=True)
        assert host.show(AGENT, "WatchdogUSec")["WatchdogUSec"] == "2s"
        first = host.main_pid(AGENT)
        host.wait_until(lambda: "synced at index" in agent_status(host), what="agent synced")
        # Living through several watchdog periods shows the event loop's pings arrive.
        host.wait_until(lambda: uptime(host, first) >= 5, what="agent up for 5 s")
        assert host.show(AGENT, "MainPID", "NRestarts") == {"MainPID": str(first), "NRestarts": "0"}
        host.run(["kill", "-STOP", str(first)], check=True)
        host.wait_until(lambda: restarted(host, first), timeout=30, what="watchdog restart")
        assert "Watchdog timeout" in host.journal(AGENT)
