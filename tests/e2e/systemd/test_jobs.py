"""Jobs on a real systemd host: the systemd driver's transient units, and a rollback served
from the artifact cache while the artifact server is down (a booted container, conftest.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.e2e.systemd.machine import SystemdHost
from tests.e2e.systemd.test_units import AGENT, agent_status, job_state, restarted, wait_ready

pytestmark = [pytest.mark.slow]

PORT = 8080  # the node's `port` label in the container's agent.toml

APP = """\
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"{version}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def http_check() -> dict[str, Any]:
    return {
        "checks": [
            {
                "type": "http",
                "url": f"http://127.0.0.1:{PORT}/",
                "interval": "500ms",
                "timeout": "1s",
            }
        ]
    }


def fleetwave_units(host: SystemdHost) -> list[str]:
    out = host.run(
        ["systemctl", "list-units", "--plain", "--no-legend", "--state=running", "fleetwave-*"]
    ).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [
        n for n in names if n not in ("fleetwave-agent.service", "fleetwave-coordinator.service")
    ]


def get(host: SystemdHost, path: str = "/") -> str:
    return host.run(["curl", "-sS", f"http://127.0.0.1:{PORT}{path}"]).stdout


class TestSystemdDriver:
    def test_job_runs_as_a_transient_unit_and_survives_an_agent_crash(
        self, systemd_host: SystemdHost
    ) -> None:
        """driver = "systemd": the version runs as a unit with the job's env; kill -9 of the
        agent re-finds it by name: same unit, same main pid, job still running."""
        host = systemd_host
        wait_ready(host)
        spec = {
            "name": "web",
            "task": {
                "driver": "systemd",
                "command": [
                    "/usr/bin/python3",
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    str(PORT),
                ],
                "env": {"GREETING": "hello from a unit"},
                "kill_timeout": "3s",
            },
            "health": http_check(),
            "rollout": {"min_healthy_time": "1s", "healthy_deadline": "30s"},
        }
        assert host.api("PUT", "/v1/jobs/web", spec).status == 201
        host.wait_until(lambda: job_state(host) == "running", timeout=60, what="job web running")
        (unit,) = fleetwave_units(host)
        assert unit.endswith("-web-1-0.service"), unit
        props = host.show(unit, "MainPID", "ActiveState", "SubState", "Restart")
        assert (props["ActiveState"], props["SubState"], props["Restart"]) == (
            "active",
            "running",
            "no",
        )
        pid = int(props["MainPID"])
        environ = host.run(["cat", f"/proc/{pid}/environ"], check=True).stdout.split("\0")
        assert "GREETING=hello from a unit" in environ
        assert not any(e.startswith(("NOTIFY_SOCKET=", "WATCHDOG_")) for e in environ)

        old_agent = host.main_pid(AGENT)
        host.run(["kill", "-KILL", str(old_agent)], check=True)
        host.wait_until(lambda: restarted(host, old_agent), timeout=30, what="agent restarted")
        host.wait_until(lambda: "1 healthy" in agent_status(host), what="unit adopted healthy")
        assert fleetwave_units(host) == [unit]
        assert int(host.show(unit, "MainPID")["MainPID"]) == pid
        # With a 1 s heartbeat the coordinator may have marked the node unreachable while
        # systemd restarted the agent (job "degraded"); its first report clears that.
        host.wait_until(lambda: job_state(host) == "running", what="job web running again")
        assert int(host.show(unit, "MainPID")["MainPID"]) == pid

        # Stopping the job stops (and unloads) its unit.
        assert host.api("POST", "/v1/jobs/web/stop").status == 200
        host.wait_until(lambda: not fleetwave_units(host), timeout=30, what="unit stopped")


PLANT = (
    "id -u > workload-ids; id -G >> workload-ids;"
    " printf '#!/bin/sh\\nid -u > .ids; id -G >> .ids; mv .ids check-ids\\n' > check.sh;"
    " chmod 755 check.sh; exec sleep 300"
)


class TestSystemdDriverUser:
    def test_unit_and_planted_check_run_as_the_jobs_user_with_its_groups(
        self, systemd_host: SystemdHost
    ) -> None:
        """driver = "systemd", user = "nobody": the unit gets User= and Group= of nobody, its
        process has nobody's uid and groups only (no gid 0), and the ./check.sh the workload
        wrote into its working directory runs, as the exec check, as nobody too."""
        host = systemd_host
        wait_ready(host)
        host.run(["install", "-d", "-o", "nobody", "-m", "0755", "/srv/planter"], check=True)
        spec = {
            "name": "planter",
            "task": {
                "driver": "systemd",
                "user": "nobody",
                "working_dir": "/srv/planter",
                "command": ["sh", "-c", PLANT],
                "kill_timeout": "3s",
            },
            "health": {
                "checks": [
                    {
                        "type": "exec",
                        "command": ["./check.sh"],
                        "interval": "500ms",
                        "failure_threshold": 100,
                    }
                ]
            },
            "rollout": {"min_healthy_time": "1s", "healthy_deadline": "30s"},
        }
        assert host.api("PUT", "/v1/jobs/planter", spec).status == 201
        host.wait_until(
            lambda: job_state(host, "planter") == "running", timeout=60, what="planter running"
        )
        (unit,) = fleetwave_units(host)
        nobody = host.run(["sh", "-c", "id -u nobody; id -G nobody"], check=True).stdout
        props = host.show(unit, "User", "Group")
        assert props["User"] == "nobody"
        assert props["Group"] == host.run(["id", "-g", "nobody"], check=True).stdout.strip()
        workload = host.run(["cat", "/srv/planter/workload-ids"], check=True).stdout
        check = host.run(["cat", "/srv/planter/check-ids"], check=True).stdout
        assert workload.split("\n") == check.split("\n") == nobody.split("\n")
        assert "0" not in nobody.split("\n")[1].split()
        assert host.api("POST", "/v1/jobs/planter/stop").status == 200


class TestArtifactCache:
    def test_rollback_needs_no_artifact_server(self, systemd_host: SystemdHost) -> None:
        """v1 and v2 come from an artifact server; with the server stopped, a rollback to v1
        succeeds from the agent's cache and v1 answers again."""
        host = systemd_host
        wait_ready(host)
        sums = {}
        for version in ("v1", "v2"):
            content = APP.replace("{version}", version)
            sums[version] = hashlib.sha256(content.encode()).hexdigest()
            host.run(
                [
                    "sh",
                    "-c",
                    f"mkdir -p /srv/artifacts/{version} && cat > /srv/artifacts/{version}/app.py",
                ],
                input=content,
                check=True,
            )
        host.run(
            ["systemd-run", "--unit=artifact-server", "/usr/bin/python3", "-m", "http.server",
             "--bind", "127.0.0.1", "--directory", "/srv/artifacts", "9000"],
            check=True,
        )  # fmt: skip
        host.wait_until(
            lambda: host.run(["curl", "-sSf", "http://127.0.0.1:9000/v1/app.py"]).returncode == 0,
            what="artifact server up",
        )

        def spec(version: str) -> dict[str, Any]:
            return {
                "name": "app",
                "task": {
                    "command": ["/usr/bin/python3", "app.py", str(PORT)],
                    "artifacts": [
                        {
                            "url": f"http://127.0.0.1:9000/{version}/app.py",
                            "sha256": sums[version],
                            "dest": "app.py",
                        }
                    ],
                    "kill_timeout": "3s",
                },
                "health": http_check(),
                "rollout": {"min_healthy_time": "1s", "healthy_deadline": "30s"},
            }

        for version in ("v1", "v2"):
            assert host.api("PUT", "/v1/jobs/app", spec(version)).status in (200, 201)
            host.wait_until(
                lambda version=version: (
                    get(host) == version and job_state(host, "app") == "running"
                ),
                timeout=60,
                what=f"{version} running",
            )
        host.systemctl("stop", "artifact-server", check=True)
        assert host.run(["curl", "-sSf", "http://127.0.0.1:9000/v1/app.py"]).returncode != 0

        answer = host.api("POST", "/v1/jobs/app/rollback", {"to_version": 1})
        assert answer.status == 200, answer.body
        host.wait_until(lambda: get(host) == "v1", timeout=60, what="v1 answering again")
        host.wait_until(
            lambda: job_state(host, "app") == "running", timeout=60, what="rollback finished"
        )
        status = host.api("GET", "/v1/jobs/app/status").body
        assert status["rollout"]["type"] == "rollback"
