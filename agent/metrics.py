"""The agent's Prometheus metrics; each ``Agent`` owns its own registry.

Counters and histograms are updated where things happen (supervisor restarts, health
probes, the sync and report loops). Gauges that describe the agent's current state
(executions, identity, index) are rendered from an ``AgentSnapshot`` taken at scrape
time. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from agent.errors import (
    BadResponse,
    CoordinatorUnavailable,
    JoinTokenRejected,
    NameConflict,
    RequestRejected,
    TokenRejected,
)
from agent.policy import RULES as POLICY_RULES
from shared.protocol import ExecutionReport, ExecutionState

# ``*_created`` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


def error_kind(exc: BaseException) -> str:
    """A short, bounded label for why a coordinator call failed."""
    kinds: list[tuple[type[BaseException], str]] = [
        (CoordinatorUnavailable, "unavailable"),
        (TokenRejected, "token_rejected"),
        (JoinTokenRejected, "join_token_rejected"),
        (NameConflict, "name_conflict"),
        (RequestRejected, "rejected"),
        (BadResponse, "bad_response"),
    ]
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind
    return "internal"


class SnapshotCollector:
    """Renders the latest ``AgentSnapshot``; ``AgentMetrics.render`` sets it first."""

    def __init__(self) -> None:
        self.snapshot = AgentSnapshot(
            ready=False,
            registered=False,
            synced=False,
            node_id="",
            assignment_index=0,
            reports_sent=0,
            sync_failures=0,
            report_failures=0,
        )

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily(
            "fleetwave_agent_up", "1 once the agent has loaded its state.", value=int(snap.ready)
        )
        yield GaugeMetricFamily(
            "fleetwave_agent_registered",
            "1 when the agent holds a node identity.",
            value=int(snap.registered),
        )
        yield GaugeMetricFamily(
            "fleetwave_agent_synced",
            "1 once the first assignments have been applied.",
            value=int(snap.synced),
        )
        yield GaugeMetricFamily(
            "fleetwave_agent_assignment_index",
            "The last assignment index received from the coordinator.",
            value=snap.assignment_index,
        )
        yield CounterMetricFamily(
            "fleetwave_agent_reports_sent",
            "Reports (heartbeat and execution states) the coordinator answered.",
            value=snap.reports_sent,
        )
        failures = GaugeMetricFamily(
            "fleetwave_agent_consecutive_failures",
            "Failed coordinator calls in a row, by loop (0 once a call succeeds).",
            labels=["loop"],
        )
        failures.add_metric(["assignments"], snap.sync_failures)
        failures.add_metric(["report"], snap.report_failures)
        yield failures
        yield from _execution_families(snap.executions)


def _execution_families(executions: Sequence[ExecutionReport]) -> Iterator[Metric]:
    by_state = GaugeMetricFamily(
        "fleetwave_agent_executions", "Executions on this node by state.", labels=["state"]
    )
    counts = Tally(report.state for report in executions)
    for state in ExecutionState:
        by_state.add_metric([state.value], counts[state])
    yield by_state
    per_job = GaugeMetricFamily(
        "fleetwave_agent_execution_state",
        "1 for the state of each job's execution on this node, 0 for the other states.",
        labels=["job", "state"],
    )
    version = GaugeMetricFamily(
        "fleetwave_agent_execution_version",
        "The job version each execution on this node runs.",
        labels=["job"],
    )
    restarts = GaugeMetricFamily(
        "fleetwave_agent_execution_restarts",
        "Restarts of each job's current execution (reset when a new version starts).",
        labels=["job"],
    )
    for report in executions:
        for state in ExecutionState:
            per_job.add_metric([report.job, state.value], 1 if state is report.state else 0)
        version.add_metric([report.job], report.version)
        restarts.add_metric([report.job], report.restarts)
    yield per_job
    yield version
    yield restarts


class AgentMetrics:
    """The registry of one agent and the metrics its loops update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.restarts = Counter(
            "fleetwave_agent_restarts",
            "Workload restarts by the restart policy, by job.",
            ["job"],
            registry=reg,
        )
        self.check_duration = Histogram(
            "fleetwave_agent_health_check_duration_seconds",
            "Duration of health check probes, by job and check type (http, tcp, exec).",
            ["job", "check_type"],
            buckets=CHECK_BUCKETS,
            registry=reg,
        )
        self.check_results = Counter(
            "fleetwave_agent_health_checks",
            "Health check probes by job, check type and result (pass, fail).",
            ["job", "check_type", "result"],
            registry=reg,
        )
        self.sync_errors = Counter(
            "fleetwave_agent_sync_errors",
            "Failed coordinator calls by loop (assignments, report) and kind of error.",
            ["loop", "kind"],
            registry=reg,
        )
        self.data_dir_write_errors = Counter(
            "fleetwave_agent_data_dir_write_errors",
            "Failed writes of agent state to its data dir (full disk, read-only), by kind.",
            ["kind"],
            registry=reg,
        )
        self.policy_refusals = Counter(
            "fleetwave_agent_policy_refusals",
            "Executions the host policy refused to run, by the [policy] key involved.",
            ["rule"],
            registry=reg,
        )
        for rule in POLICY_RULES:  # every rule has a series from the start, so alerts see 0
            self.policy_refusals.labels(rule)
        self.last_sync = Gauge(
            "fleetwave_agent_last_successful_sync_timestamp_seconds",
            "Unix time of the last assignments poll that was answered and applied.",
            registry=reg,
        )
        self.state = SnapshotCollector()
        reg.register(self.state)

    def render(self, snapshot: AgentSnapshot) -> bytes:
        """The exposition text with ``snapshot`` as the state gauges (no await in between)."""
        self.state.snapshot = snapshot
        return generate_latest(self.registry)
