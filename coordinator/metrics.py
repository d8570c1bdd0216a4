"""The coordinator's Prometheus metrics; each app instance owns its own registry.

Counters and histograms are updated where things happen (HTTP middleware, engine driver,
agent endpoints). Gauges that describe stored state (jobs, nodes, rollout progress) are
not kept in memory: ``GET /metrics`` reads the store into a ``StateSnapshot`` and renders
it together with the registry in one synchronous call. Every metric is listed in
docs/metrics.md.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

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
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
    Phase,
)
from coordinator.store import Store, WriteHealth
from shared.nodes import Eligibility, NodeStatus
from shared.protocol import ExecutionState
from shared.status import JobStateType

# ``*_created`` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Up to a minute: blocking queries (``?wait=30s``) are requests too."""

ENGINE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

UNMATCHED_ROUTE = "(unmatched)"
"""The route label of requests that matched no route, so raw paths never become labels."""

JOB_STATES = [s for s in JobStateType if s is not JobStateType.NONE]


M = TypeVar("M", bound=MetricWrapperBase)


@dataclass(frozen=True)
class JobProgress:
    """One job's rollout progress as the gauges show it."""

    job: str
    state: JobStateType
    phase: Phase
    version: int
    desired: int
    placed: int
    updated: int
    healthy: int
    unhealthy: int
    failed: int
    current_wave: int
    total_waves: int


@dataclass(frozen=True)
class StateSnapshot:
    """The stored state the scrape-time gauges describe."""

    jobs_by_state: Mapping[str, int] = field(default_factory=dict)
    nodes_by_status: Mapping[str, int] = field(default_factory=dict)
    nodes_ineligible: int = 0
    nodes_draining: int = 0
    jobs: Sequence[JobProgress] = ()
    writes: WriteHealth = field(default_factory=WriteHealth)


def job_progress(
    job: JobRecord,
    assignments: Mapping[str, AssignmentRecord],
    executions: Mapping[str, ExecutionRecord],
) -> JobProgress:
    """Rollout progress of ``job``; health counts only executions of the assigned version."""
    status = job.status
    rollout = job.rollout
    target = rollout.target_version or status.version
    health: Tally[ExecutionState] = Tally()
    for node_id, assignment in assignments.items():
        execution = executions.get(node_id)
        if execution is not None and execution.version == assignment.version:
            health[execution.state] += 1
    return JobProgress(
        job=job.name,
        state=status.state.state_type,
        phase=rollout.phase,
        version=status.version,
        desired=status.rollout.total_nodes,
        placed=sum(1 for a in assignments.values() if a.version == target),
        updated=status.rollout.updated_nodes,
        healthy=health[ExecutionState.HEALTHY],
        unhealthy=health[ExecutionState.UNHEALTHY],
        failed=status.rollout.failed_nodes,
        current_wave=status.rollout.current_wave,
        total_waves=status.rollout.total_waves,
    )


def summarize(
    jobs: Sequence[JobRecord],
    nodes: Sequence[NodeRecord],
    progress: Sequence[JobProgress],
    writes: WriteHealth,
) -> StateSnapshot:
    return StateSnapshot(
        jobs_by_state=Tally(j.status.state.state_type.value for j in jobs),
        nodes_by_status=Tally(n.api_status.value for n in nodes),
        nodes_ineligible=sum(1 for n in nodes if n.eligibility is Eligibility.INELIGIBLE),
        nodes_draining=sum(1 for n in nodes if n.drain),
        jobs=progress,
        writes=writes,
    )


async def read_state(store: Store) -> StateSnapshot:
    """Read what the state gauges need: every job and node, each live job's progress, and
    whether the store's writes commit."""
    jobs = await store.list_jobs()
    nodes = await store.list_nodes()
    progress = []
    for job in jobs:
        if job.deleted:
            continue
        assignments = await store.job_assignments(job.name)
        executions = await store.job_executions(job.name)
        progress.append(job_progress(job, assignments, executions))
    return summarize(jobs, nodes, progress, store.write_health())


class StateCollector:
    """Renders the latest ``StateSnapshot``; ``CoordinatorMetrics.render`` sets it first."""

    def __init__(self) -> None:
        self.snapshot = StateSnapshot()

    def describe(self) -> Iterator[Metric]:
        return self._families(StateSnapshot())

    def collect(self) -> Iterator[Metric]:
        return self._families(self.snapshot)

    def _families(self, snap: StateSnapshot) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "fleetwave_jobs", "Jobs by state (deleted jobs are tombstones).", labels=["state"]
        )
        for state in JOB_STATES:
            jobs.add_metric([state.value], snap.jobs_by_state.get(state.value, 0))
        yield jobs
        nodes = GaugeMetricFamily(
            "fleetwave_nodes", "Registered nodes by status.", labels=["status"]
        )
        for status in NodeStatus:
            nodes.add_metric([status.value], snap.nodes_by_status.get(status.value, 0))
        yield nodes
        yield GaugeMetricFamily(
            "fleetwave_nodes_ineligible",
            "Nodes marked ineligible for new job versions.",
            value=snap.nodes_ineligible,
        )
        yield GaugeMetricFamily(
            "fleetwave_nodes_draining", "Nodes being drained.", value=snap.nodes_draining
        )
        # The store counts its failed writes; like the state above, read at scrape time.
        yield CounterMetricFamily(
            "fleetwave_store_write_failures",
            "Store writes that failed because of the storage (disk full, I/O error, read-only).",
            value=snap.writes.failures,
        )
        yield GaugeMetricFamily(
            "fleetwave_store_write_failing",
            "1 while the store's last write failed (until a write commits again), else 0.",
            value=1 if snap.writes.failing is not None else 0,
        )
        yield from self._progress(snap.jobs)

    @staticmethod
    def _progress(progress: Sequence[JobProgress]) -> Iterator[Metric]:
        def per_job(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["job"])

        state = GaugeMetricFamily(
            "fleetwave_job_state",
            "1 for the job's current state, 0 for the others.",
            labels=["job", "state"],
        )
        phase = GaugeMetricFamily(
            "fleetwave_job_rollout_phase",
            "1 for the phase of the job's latest rollout (canary, waves, done, halted).",
            labels=["job", "phase"],
        )
        gauges = {
            "version": per_job("fleetwave_job_version", "The job's current version."),
            "desired": per_job(
                "fleetwave_job_desired_nodes", "Nodes the job's latest rollout targets."
            ),
            "placed": per_job(
                "fleetwave_job_placed_nodes", "Nodes assigned the latest rollout's target version."
            ),
            "updated": per_job(
                "fleetwave_job_updated_nodes",
                "Nodes that reached the target version and passed the health gate.",
            ),
            "healthy": per_job(
                "fleetwave_job_healthy_nodes", "Nodes reporting their assigned version healthy."
            ),
            "unhealthy": per_job(
                "fleetwave_job_unhealthy_nodes",
                "Nodes reporting their assigned version unhealthy.",
            ),
            "failed": per_job(
                "fleetwave_job_failed_nodes", "Nodes that failed in the latest rollout."
            ),
            "current_wave": per_job(
                "fleetwave_job_rollout_current_wave",
                "The latest rollout's current wave (0 during the canary phase).",
            ),
            "total_waves": per_job(
                "fleetwave_job_rollout_total_waves",
                "Waves of the latest rollout, the canary phase excluded.",
            ),
        }
        for p in progress:
            for s in JOB_STATES:
                state.add_metric([p.job, s.value], 1 if s is p.state else 0)
            for ph in Phase:
                phase.add_metric([p.job, ph.value], 1 if ph is p.phase else 0)
            for attr, family in gauges.items():
                family.add_metric([p.job], getattr(p, attr))
        yield state
        yield phase
        yield from gauges.values()


class CoordinatorMetrics:
    """The registry of one coordinator and the metrics its code updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.http_request_duration = Histogram(
            "fleetwave_http_request_duration_seconds",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self._series_cache: dict[tuple[int, tuple[str, ...]], object] = {}
        self.engine_step_duration = Histogram(
            "fleetwave_engine_step_duration_seconds",
            "Duration of one rollout engine step (every dirty or due job evaluated).",
            buckets=ENGINE_BUCKETS,
            registry=reg,
        )
        self.engine_evaluation_duration = Histogram(
            "fleetwave_engine_evaluation_duration_seconds",
            "Duration of evaluating one job: read its state, plan, apply the plan.",
            buckets=ENGINE_BUCKETS,
            registry=reg,
        )
        self.engine_plans_applied = Counter(
            "fleetwave_engine_plans_applied",
            "Engine decisions that changed a job and were written to the store.",
            registry=reg,
        )
        self.engine_step_errors = Counter(
            "fleetwave_engine_step_errors",
            "Engine steps that failed with an unexpected error (see the log).",
            registry=reg,
        )
        self.blind_spots = Counter(
            "fleetwave_coordinator_blind_spots",
            "Gaps in the coordinator's own event loop (a paused process, a held loop) after"
            " which nodes got a new grace window to be heard.",
            registry=reg,
        )
        self.agent_reports = Counter(
            "fleetwave_agent_reports_received",
            "Agent reports received, by whether they were accepted (stale seqs are ignored).",
            ["result"],
            registry=reg,
        )
        self.long_polls = Gauge(
            "fleetwave_long_polls_open",
            "Blocking queries currently waiting, by endpoint (assignments, job_status).",
            ["endpoint"],
            registry=reg,
        )
        self.cluster_leader = Gauge(
            "fleetwave_cluster_leader",
            "1 while this coordinator leads (runs the engine, its timers and node liveness).",
            registry=reg,
        )
        self.cluster_epoch = Gauge(
            "fleetwave_cluster_epoch",
            "The leadership epoch this coordinator last saw (it increases at every takeover).",
            registry=reg,
        )
        self.lease_renewals = Counter(
            "fleetwave_cluster_lease_renewals",
            "Lease attempts that succeeded, by outcome (renewed, taken, follower).",
            ["outcome"],
            registry=reg,
        )
        self.lease_failures = Counter(
            "fleetwave_cluster_lease_failures",
            "Lease attempts that failed (the database did not answer in time or refused).",
            registry=reg,
        )
        self.leadership_changes = Counter(
            "fleetwave_cluster_leadership_changes",
            "Times this coordinator became leader or stepped down, by direction.",
            ["change"],
            registry=reg,
        )
        self.heartbeat_interval = Gauge(
            "fleetwave_heartbeat_interval_seconds",
            "The heartbeat interval for the fleet as this coordinator last counted it (each"
            " answer adds up to 10% jitter).",
            registry=reg,
        )
        self.heartbeat_ttl = Gauge(
            "fleetwave_heartbeat_ttl_seconds",
            "Silence after which a node on the longest interval handed out is marked down.",
            registry=reg,
        )
        self.heartbeat_rate = Gauge(
            "fleetwave_heartbeat_offered_rate",
            "Heartbeats per second the fleet sends at most on the current interval.",
            registry=reg,
        )
        self.heartbeat_budget = Gauge(
            "fleetwave_heartbeat_budget",
            "The configured heartbeat_budget: heartbeats per second the fleet may send.",
            registry=reg,
        )
        self.state = StateCollector()
        reg.register(self.state)

    def _series(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, looked up once (on the hot path of every request;
        the label values are route templates, methods, statuses: a small, fixed set)."""
        key = (id(metric), labels)  # metrics live as long as this registry
        series = self._series_cache.get(key)
        if series is None:
            series = self._series_cache[key] = metric.labels(*labels)
        return cast(M, series)

    def count_report(self, *, accepted: bool) -> None:
        """One agent report, accepted or ignored (a replay)."""
        self._series(self.agent_reports, "accepted" if accepted else "ignored").inc()

    def pace_heartbeats(self, *, interval: float, ttl: float, rate: float, budget: float) -> None:
        """The heartbeat interval was sized to the fleet again."""
        self.heartbeat_interval.set(interval)
        self.heartbeat_ttl.set(ttl)
        self.heartbeat_rate.set(rate)
        self.heartbeat_budget.set(budget)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One served request, by method, route template and status."""
        self._series(self.http_request_duration, method, route, str(status)).observe(seconds)

    def render(self, snapshot: StateSnapshot) -> bytes:
        """The exposition text with ``snapshot`` as the state gauges.

        Setting the snapshot and generating happen without an ``await`` in between, so
        concurrent scrapes cannot interleave.
        """
        self.state.snapshot = snapshot
        return generate_latest(self.registry)
