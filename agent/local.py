"""Local endpoints on the node (default 127.0.0.1:7401): /healthz, /readyz, /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from shared.protocol import ExecutionReport, ExecutionState


@dataclass(frozen=True)
class AgentSnapshot:
    """What the local endpoints show, taken at request time."""

    ready: bool
    registered: bool
    synced: bool
    node_id: str
    assignment_index: int
    reports_sent: int
    sync_failures: int
    report_failures: int
    executions: Sequence[ExecutionReport] = field(default_factory=list)


class SnapshotSource(Protocol):
    def snapshot(self) -> AgentSnapshot: ...

    def connected_recently(self) -> bool:
        """Whether a coordinator answered within the last few heartbeat intervals."""
        ...


SOURCE_KEY = web.AppKey("snapshot_source", SnapshotSource)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(snap: AgentSnapshot) -> str:
    """Prometheus text exposition of the agent's state."""
    lines = [
        "# HELP fleetwave_agent_up Whether the agent has loaded its state.",
        "# TYPE fleetwave_agent_up gauge",
        f"fleetwave_agent_up {int(snap.ready)}",
        "# HELP fleetwave_agent_registered Whether the agent holds a node identity.",
        "# TYPE fleetwave_agent_registered gauge",
        f"fleetwave_agent_registered {int(snap.registered)}",
        "# HELP fleetwave_agent_assignment_index Last assignment index seen.",
        "# TYPE fleetwave_agent_assignment_index gauge",
        f"fleetwave_agent_assignment_index {snap.assignment_index}",
        "# HELP fleetwave_agent_reports_sent_total Reports the coordinator answered.",
        "# TYPE fleetwave_agent_reports_sent_total counter",
        f"fleetwave_agent_reports_sent_total {snap.reports_sent}",
        "# HELP fleetwave_agent_consecutive_failures Failed coordinator calls in a row.",
        "# TYPE fleetwave_agent_consecutive_failures gauge",
        f'fleetwave_agent_consecutive_failures{{loop="sync"}} {snap.sync_failures}',
        f'fleetwave_agent_consecutive_failures{{loop="report"}} {snap.report_failures}',
        "# HELP fleetwave_agent_executions Executions on this node by state.",
        "# TYPE fleetwave_agent_executions gauge",
    ]
    counts = dict.fromkeys(ExecutionState, 0)
    for report in snap.executions:
        counts[report.state] += 1
    lines += [f'fleetwave_agent_executions{{state="{s}"}} {n}' for s, n in counts.items()]
    lines += [
        "# HELP fleetwave_agent_execution_restarts Restarts of each job's current execution.",
        "# TYPE fleetwave_agent_execution_restarts gauge",
    ]
    lines += [
        f'fleetwave_agent_execution_restarts{{job="{_escape(r.job)}",version="{r.version}"}}'
        f" {r.restarts}"
        for r in snap.executions
    ]
    return "\n".join(lines) + "\n"


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready: state loaded and a coordinator answered recently (within 3 heartbeats).

    An agent that lost its coordinators keeps running its workloads, but is not ready:
    it cannot take new assignments. /healthz stays 200 (the process is alive).
    """
    source = request.app[SOURCE_KEY]
    snap = source.snapshot()
    connected = snap.ready and source.connected_recently()
    body = {
        "ready": snap.ready and connected,
        "loaded": snap.ready,
        "connected": connected,
        "registered": snap.registered,
        "synced": snap.synced,
        "node_id": snap.node_id,
    }
    return web.json_response(body, status=200 if body["ready"] else 503)


async def handle_metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[SOURCE_KEY].snapshot())
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def create_local_app(source: SnapshotSource) -> web.Application:
    """The local endpoints' app, reading state from ``source``."""
    app = web.Application()
    app[SOURCE_KEY] = source
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    return app
