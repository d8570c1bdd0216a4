"""The agent's Prometheus metrics; each ``Agent`` owns its own registry.

Counters and histograms are updated where things happen (supervisor restarts, health
probes, the sync and report loops). Gauges that describe the agent's current state
(executions, identity, index) are rendered from an ``AgentSnapshot`` taken at scrape
time. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agent.errors import (
    BadResponse,
    CoordinatorUnavailable,
    JoinTokenRejected,
    NameConflict,
    RequestRejected,
    TokenRejected,
)
from agent.exposition import (
    CONTENT_TYPE,
    Counter,
    Family,
    Fixed,
    Gauge,
    Histogram,
    Sample,
    process_families,
    python_families,
)
from agent.policy import RULES as POLICY_RULES
from shared.protocol import ExecutionReport, ExecutionState

__all__ = ["CONTENT_TYPE", "AgentMetrics", "AgentSnapshot", "Registry", "error_kind"]

F = TypeVar("F", bound=Family)

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


def state_families(snap: AgentSnapshot) -> Iterator[Fixed]:
    """The gauges that describe the agent's state at scrape time."""

    def one(name: str, kind: str, help_text: str, value: float) -> Fixed:
        sample = f"{name}_total" if kind == "counter" else name
        return Fixed(sample, kind, help_text, [(sample, {}, float(value))])

    yield one("fleetwave_agent_up", "gauge", "1 once the agent has loaded its state.", snap.ready)
    yield one(
        "fleetwave_agent_registered",
        "gauge",
        "1 when the agent holds a node identity.",
        snap.registered,
    )
    yield one(
        "fleetwave_agent_synced",
        "gauge",
        "1 once the first assignments have been applied.",
        snap.synced,
    )
    yield one(
        "fleetwave_agent_assignment_index",
        "gauge",
        "The last assignment index received from the coordinator.",
        snap.assignment_index,
    )
    yield one(
        "fleetwave_agent_reports_sent",
        "counter",
        "Reports (heartbeat and execution states) the coordinator answered.",
        snap.reports_sent,
    )
    name = "fleetwave_agent_consecutive_failures"
    yield Fixed(
        name,
        "gauge",
        "Failed coordinator calls in a row, by loop (0 once a call succeeds).",
        [
            (name, {"loop": "assignments"}, float(snap.sync_failures)),
            (name, {"loop": "report"}, float(snap.report_failures)),
        ],
    )
    yield from _execution_families(snap.executions)


def _execution_families(executions: Sequence[ExecutionReport]) -> Iterator[Fixed]:
    counts = Tally(report.state for report in executions)
    name = "fleetwave_agent_executions"
    yield Fixed(
        name,
        "gauge",
        "Executions on this node by state.",
        [(name, {"state": state.value}, float(counts[state])) for state in ExecutionState],
    )
    per_job: list[Sample] = []
    versions: list[Sample] = []
    restarts: list[Sample] = []
    for report in executions:
        for state in ExecutionState:
            per_job.append(
                (
                    "fleetwave_agent_execution_state",
                    {"job": report.job, "state": state.value},
                    1.0 if state is report.state else 0.0,
                )
            )
        versions.append(("fleetwave_agent_execution_version", {"job": report.job}, report.version))
        restarts.append(
            ("fleetwave_agent_execution_restarts", {"job": report.job}, report.restarts)
        )
    yield Fixed(
        "fleetwave_agent_execution_state",
        "gauge",
        "1 for the state of each job's execution on this node, 0 for the other states.",
        per_job,
    )
    yield Fixed(
        "fleetwave_agent_execution_version",
        "gauge",
        "The job version each execution on this node runs.",
        versions,
    )
    yield Fixed(
        "fleetwave_agent_execution_restarts",
        "gauge",
        "Restarts of each job's current execution (reset when a new version starts).",
        restarts,
    )


class Registry:
    """The agent's own metric families, in the order they are rendered."""

    def __init__(self) -> None:
        self.families: list[Family] = []

    def add(self, family: F) -> F:
        self.families.append(family)
        return family

    def get_sample_value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The value of one sample, None if there is none (as prometheus_client's registry)."""
        wanted = dict(labels or {})
        for family in self.families:
            for sample, sample_labels, value in family.samples():
                if sample == name and dict(sample_labels) == wanted:
                    return value
        return None


class AgentMetrics:
    """The metrics of one agent, which its loops update; rendered on a scrape."""

    def __init__(self) -> None:
        self.registry = reg = Registry()
        self.restarts = reg.add(
            Counter(
                "fleetwave_agent_restarts",
                "Workload restarts by the restart policy, by job.",
                ["job"],
            )
        )
        self.check_duration = reg.add(
            Histogram(
                "fleetwave_agent_health_check_duration_seconds",
                "Duration of health check probes, by job and check type (http, tcp, exec).",
                ["job", "check_type"],
                buckets=CHECK_BUCKETS,
            )
        )
        self.check_results = reg.add(
            Counter(
                "fleetwave_agent_health_checks",
                "Health check probes by job, check type and result (pass, fail).",
                ["job", "check_type", "result"],
            )
        )
        self.sync_errors = reg.add(
            Counter(
                "fleetwave_agent_sync_errors",
                "Failed coordinator calls by loop (assignments, report) and kind of error.",
                ["loop", "kind"],
            )
        )
        self.data_dir_write_errors = reg.add(
            Counter(
                "fleetwave_agent_data_dir_write_errors",
                "Failed writes of agent state to its data dir (full disk, read-only), by kind.",
                ["kind"],
            )
        )
        self.policy_refusals = reg.add(
            Counter(
                "fleetwave_agent_policy_refusals",
                "Executions the host policy refused to run, by the [policy] key involved.",
                ["rule"],
            )
        )
        for rule in POLICY_RULES:  # every rule has a series from the start, so alerts see 0
            self.policy_refusals.labels(rule)
        self.last_sync = reg.add(
            Gauge(
                "fleetwave_agent_last_successful_sync_timestamp_seconds",
                "Unix time of the last assignments poll that was answered and applied.",
            )
        )

    def render(self, snapshot: AgentSnapshot) -> bytes:
        """The exposition text with ``snapshot`` as the state gauges (no await in between)."""
        families: list[Family] = [*process_families(), *python_families()]
        families += self.registry.families
        families += state_families(snapshot)
        return "".join(line for family in families for line in family.render()).encode()
