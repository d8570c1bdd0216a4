"""``fleetwave demo``: a real coordinator and agents on this machine, rolling out a service.

The showcase of DESIGN §9: 9 agents over 3 zones; version 1 deployed at once, version 2
through a canary and waves spread by zone, then a broken version 3 whose canary fails its
health check and is rolled back automatically. Each rollout is shown with the CLI's live
view. Everything it starts is stopped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from coordinator.cli_jobs import render_status
from coordinator.client import ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, free_port
from coordinator.liveview import follow_rollout

ZONES = ("zone-a", "zone-b", "zone-c")
JOB = "hello"


def demo_spec(python: str, version_note: str, *, broken: bool = False) -> dict[str, Any]:
    """The demo job: the shipped HTTP service on each node's ``port`` label, checked over HTTP."""
    command = [
        python,
        "-m",
        "coordinator.demo.service",
        "--port",
        "${node.label.port}",
        "--version",
        "${job.version}",
        "--node",
        "${node.name}",
    ]
    return {
        "name": JOB,
        "task": {
            "command": [*command, "--broken"] if broken else command,
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
            "healthy_deadline": "10s",
            "progress_deadline": "2m",
        },
    }


def demo_policy(python: str) -> dict[str, object]:
    """The demo agents' host policy, said as a host owner would (agent config ``[policy]``):
    the exec driver and the demo's Python only. The demo job sets no user, so it runs as
    whoever runs the demo; root (a container, CI) is allowed only when that is who runs it."""
    return {
        "allow_root": os.geteuid() == 0,
        "allowed_drivers": ["exec"],
        "allowed_commands": [re.sub(r"([*?\[])", r"[\1]", python)],  # the path, literally
    }


@dataclass(frozen=True)
class Step:
    title: str
    note: str
    rollout: dict[str, Any]
    expect: int  # the exit code `job run` would give
    broken: bool = False


STEPS = (
    Step(
        "version 1: deployed to every node at once",
        "hello from version 1",
        {"canary": 0, "waves": 1},
        expect=0,
    ),
    Step(
        "version 2: one canary, then 2 waves spread across zones",
        "hello from version 2",
        {"canary": 1, "spread_by": "zone", "waves": 2},
        expect=0,
    ),
    Step(
        "version 3 (broken): its canary fails the health check -> automatic rollback",
        "hello from version 3",
        {"canary": 1, "spread_by": "zone", "waves": 2},
        expect=1,
        broken=True,
    ),
)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C must not leave agents or workloads behind."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str) -> None:
    click.secho(text, bold=True)


def run_demo(agents: int = 9, keep: bool = False) -> int:
    """Run the demo; returns the process exit code. Everything started is stopped at the end."""
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="fleetwave-demo-") as tmp:
            fleet = LocalFleet(
                Path(tmp), heartbeat_interval="1s", policy=demo_policy(sys.executable)
            )
            try:
                return _run(fleet, agents, keep)
            except _Stopped as exc:
                click.echo(f"\nInterrupted ({exc}); stopping everything the demo started.")
                return 128 + exc.signum
            except (ApiError, TimeoutError, RuntimeError) as exc:
                click.echo(f"Demo failed: {exc}", err=True)
                _show_logs(fleet)
                return 1
            finally:
                with _signals_ignored():
                    fleet.close()
                click.echo("Stopped the coordinator, the agents and their workloads.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _show_logs(fleet: LocalFleet) -> None:
    for path in sorted((fleet.base_dir / "logs").glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-5:]
        click.echo(f"==> {path.name}\n" + "\n".join(tail), err=True)


def _run(fleet: LocalFleet, agents: int, keep: bool) -> int:
    started = time.monotonic()
    _say(f"Starting a coordinator on {fleet.url} (data in {fleet.base_dir})")
    fleet.start_coordinator()
    click.echo(f"  Dashboard: {fleet.url}/ui/#token={ADMIN_TOKEN}")
    ports = {}
    for i in range(agents):
        name = f"node-{i + 1}"
        ports[name] = free_port()
        fleet.start_agent(name, {"zone": ZONES[i % len(ZONES)], "port": str(ports[name])})
    _say(f"Starting {agents} agents over {len(ZONES)} zones")
    click.echo(f"  Host policy ([policy] in each agent's config): {_policy_line(fleet.policy)}")
    for zone in ZONES:
        names = [n for n in ports if fleet.labels[n]["zone"] == zone]
        click.echo(f"  {zone}: {', '.join(names)}")
    fleet.wait_nodes_ready(agents, timeout=60)

    finals: list[tuple[str, dict[str, Any]]] = []
    for step in STEPS:
        _say(f"\nRolling out {step.title}")
        spec = demo_spec(fleet.python, step.note, broken=step.broken)
        spec["rollout"].update(step.rollout)
        body = fleet.api.request("PUT", f"/v1/jobs/{JOB}", spec).body
        click.echo(f"  PUT /v1/jobs/{JOB}: version {body['version']} (revision {body['revision']})")
        code = follow_rollout(fleet.api, JOB, timeout=120)
        status = fleet.status(JOB)
        finals.append((f"v{body['version']}", status))
        if code != step.expect:
            click.echo(f"Unexpected outcome of {step.title}: {status['state']}", err=True)
            return 1
        _show_answers(ports)

    _say("\nThe JobStatus after each rollout (GET /v1/jobs/hello/status):")
    for label, status in finals:
        ro, state = status["rollout"], status["state"]
        click.echo(
            f"  {label}: {state['state_type']:<15} {ro['type']:<8}"
            f" updated {ro['updated_nodes']}/{ro['total_nodes']}, failed {ro['failed_nodes']},"
            f" rollback_to_version {ro['rollback_to_version']} (revision {status['revision']})"
        )
    final = finals[-1][1]
    if final["rollout"]["type"] == "rollback":
        click.echo(
            f"  v3 was rolled back: every node runs version"
            f" {final['state']['details'].get('running_version', '?')} again."
        )
    _say("\nFinal JobStatus:")
    click.echo(render_status(JOB, final))
    click.echo(json.dumps(final, indent=2))
    _say(f"\nDemo finished in {time.monotonic() - started:.0f}s.")
    if keep:
        _say(f"\nEverything keeps running at {fleet.url}. Press Ctrl-C to stop.")
        click.echo(f"  export FLEETWAVE_ADDR={fleet.url} FLEETWAVE_TOKEN={ADMIN_TOKEN}")
        while True:
            time.sleep(3600)
    return 0


def _policy_line(policy: Mapping[str, object]) -> str:
    return ", ".join(f"{key} = {json.dumps(value)}" for key, value in policy.items())


def _show_answers(ports: dict[str, int]) -> None:
    """Ask every node's service what it runs: the proof the rollout did what it says."""
    answers: dict[str, list[str]] = {}
    for name, port in ports.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                answer = json.loads(resp.read())
            key = f"{answer['greeting']!r} (version {answer['version']})"
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            key = f"no answer ({exc})"
        answers.setdefault(key, []).append(name)
    for key, names in answers.items():
        click.echo(f"  {len(names)} node{'s' if len(names) != 1 else ''} answer {key}")


if __name__ == "__main__":
    sys.exit(run_demo())
