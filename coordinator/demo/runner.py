"""``fleetwave demo``: a real coordinator and agents on this machine, rolling out a service."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

import click

from coordinator.cli import render_status, watch_rollout
from coordinator.client import ApiError
from coordinator.demo.fleet import LocalFleet, free_port

ZONES = ("zone-a", "zone-b", "zone-c")


def demo_spec(python: str, version_note: str) -> dict[str, Any]:
    """The demo job: the shipped HTTP service on each node's ``port`` label, checked over HTTP."""
    return {
        "name": "hello",
        "task": {
            "command": [
                python,
                "-m",
                "coordinator.demo.service",
                "--port",
                "${node.label.port}",
                "--version",
                "${job.version}",
                "--node",
                "${node.name}",
            ],
            "env": {"GREETING": version_note},
            "kill_timeout": "5s",
        },
        "health": {
            "checks": [
                {
                    "type": "http",
                    "url": "http://127.0.0.1:${node.label.port}/",
                    "interval": "500ms",
                    "timeout": "1s",
                    "failure_threshold": 2,
                }
            ]
        },
        "rollout": {
            "min_healthy_time": "2s",
            "healthy_deadline": "30s",
            "progress_deadline": "2m",
        },
    }


class _Ctx:
    """The CLI's watch loop needs an object with ``call``; the demo talks to its own fleet."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.fleet = fleet

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.fleet.api.request(method, path, body, **kw)


def _say(text: str) -> None:
    click.secho(text, bold=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(agents: int = 3, keep: bool = False) -> int:
    """Run the demo; returns the process exit code. Everything started is stopped at the end."""
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="fleetwave-demo-") as tmp:
        fleet = LocalFleet(Path(tmp), heartbeat_interval="1s")
        try:
            return _run(fleet, agents, keep)
        except KeyboardInterrupt:
            click.echo("\nInterrupted; stopping everything the demo started.")
            return 130
        except (ApiError, TimeoutError, RuntimeError) as exc:
            click.echo(f"Demo failed: {exc}", err=True)
            click.echo(f"Logs: {fleet.base_dir / 'logs'} (kept until exit)", err=True)
            return 1
        finally:
            fleet.close()
            click.echo("Stopped the coordinator, the agents and their workloads.")


def _run(fleet: LocalFleet, agents: int, keep: bool) -> int:
    _say(f"Starting a coordinator on {fleet.url} (data in {fleet.base_dir})")
    fleet.start_coordinator()
    ports = {}
    for i in range(agents):
        name = f"node-{i + 1}"
        ports[name] = free_port()
        fleet.start_agent(name, {"zone": ZONES[i % len(ZONES)], "port": str(ports[name])})
    _say(f"Starting {agents} agents: {', '.join(ports)}")
    fleet.wait_nodes_ready(agents)
    ctx = _Ctx(fleet)

    for version, note in ((1, "hello from version 1"), (2, "hello from version 2")):
        _say(f"\nDeploying job 'hello' version {version}")
        body = fleet.api.request("PUT", "/v1/jobs/hello", demo_spec(fleet.python, note)).body
        code = watch_rollout(ctx, "hello", body["status"], timeout=120)
        if code != 0:
            click.echo(f"Rollout of version {version} did not succeed.", err=True)
            return 1
        for name, port in ports.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                answer = json.loads(resp.read())
            click.echo(f"  {name}: {answer['greeting']!r} (version {answer['version']})")

    _say("\nFinal JobStatus (GET /v1/jobs/hello/status):")
    status = fleet.status("hello")
    click.echo(render_status("hello", status))
    click.echo(json.dumps(status, indent=2))
    if keep:
        _say(f"\nEverything keeps running at {fleet.url}. Press Ctrl-C to stop.")
        click.echo(f"  export FLEETWAVE_ADDR={fleet.url} FLEETWAVE_TOKEN={fleet.api.token}")
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
