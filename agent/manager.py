"""Owns the node's executions: applies reconcile actions, persists records, lists reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import structlog

from agent.artifacts import ArtifactStore
from agent.config import HostPolicy
from agent.executions import TERMINAL_STATES, ExecutionRecord, ExecutionStore
from agent.launch import NodeInfo
from agent.metrics import AgentMetrics
from agent.paths import DataDir
from agent.reconcile import (
    Action,
    CurrentExecution,
    ReplaceJob,
    RestartJob,
    StartJob,
    StopJob,
)
from agent.restart import Resume, how_to_resume
from agent.runtime import Discovered, ProcessHandle, Runtime
from agent.supervisor import Supervisor
from agent.writes import DataDirWrites
from shared.clock import Clock
from shared.protocol import Assignment, ExecutionReport
from shared.spec import Driver

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("agent.manager")

STOP_TIMEOUT = 10.0
"""Seconds a duplicate or unwanted leftover workload gets between SIGTERM and SIGKILL."""


class ExecutionManager:
    """The supervisors of this node, plus finished executions remembered across restarts."""

    def __init__(
        self,
        *,
        runtimes: Mapping[Driver, Runtime],
        data_dir: DataDir,
        store: ExecutionStore,
        writes: DataDirWrites,
        clock: Clock,
        http: aiohttp.ClientSession,
        policy: HostPolicy,
        on_change: Callable[[], None] = lambda: None,
        artifacts: ArtifactStore | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._runtimes = dict(runtimes)
        self._data_dir = data_dir
        self._store = store
        self._writes = writes
        self._clock = clock
        self._http = http
        self._policy = policy
        self._on_change = on_change
        self._artifacts = artifacts or ArtifactStore(data_dir.artifacts, http)
        self._metrics = metrics or AgentMetrics()
        self.supervisors: dict[str, Supervisor] = {}
        self.finished: dict[str, ExecutionRecord] = {}
        self.unclaimed: dict[str, Discovered] = {}
        """Live workloads found without a usable record, until the first sync settles them."""

    def current(self) -> dict[str, CurrentExecution]:
        """Every job this node runs or remembers, as reconcile sees it."""
        out = {
            job: CurrentExecution(job, record.version, record.generation)
            for job, record in self.finished.items()
        }
        for job, sup in self.supervisors.items():
            out[job] = CurrentExecution(job, sup.assignment.version, sup.assignment.generation)
        return out

    def reports(self) -> list[ExecutionReport]:
        """Every execution's current state, sorted by job."""
        reports = {job: record.report() for job, record in self.finished.items()}
        reports.update({job: sup.report() for job, sup in self.supervisors.items()})
        return [reports[job] for job in sorted(reports)]

    async def restore(self, node: NodeInfo) -> None:
        """Take over what a previous agent run left: adopt live workloads, remember results.

        Each job ends up with at most one live workload: the one its record names (same pid
        and start time, or the same unit), else one found by the marker its runtime left on
        it; any other copy is stopped. A recorded workload that died while no agent watched
        is an exit like any other: the restart policy decides, with the record's restart
        history, whether and when it starts again (see ``how_to_resume``). A record without
        an assignment whose workload is gone is dropped. A workload found without a usable
        record waits for the first sync: kept if it is what the coordinator assigns, else
        stopped.
        """
        records = {record.job: record for record in self._store.load_all()}
        found = await self._discover()
        for job in sorted(records.keys() | found.keys()):
            record = records.get(job)
            live = found.get(job, [])
            if record is not None and record.state in TERMINAL_STATES:
                self.finished[job] = record
                await self._stop_copies(live, keep=None)
                continue
            picked = await self._pick(record, live)
            await self._stop_copies(live, keep=picked.handle if picked else None)
            if picked is None:
                if record is not None and record.assignment is not None:
                    if how_to_resume(record.state) is Resume.KEEP:
                        self.finished[job] = record  # e.g. a service its policy stopped
                        continue
                    # It died while no agent watched it: the supervisor applies the restart
                    # policy at once, without waiting for a coordinator that may be down.
                    self._supervise(record.assignment, node, restored=record)
                elif record is not None:
                    log.info("workload_gone", job=job, version=record.version, pid=record.pid)
                    self._persist(job, None)
                continue
            same = record is not None and (record.version, record.generation) == (
                picked.version,
                picked.generation,
            )
            if same and record is not None and record.assignment is not None:
                log.info("workload_adopted", job=job, version=picked.version, pid=picked.handle.pid)
                self._supervise(record.assignment, node, adopted=picked.handle, restored=record)
            else:
                log.info(
                    "workload_found_without_record",
                    job=job,
                    version=picked.version,
                    pid=picked.handle.pid,
                )
                self.unclaimed[job] = picked
                if record is not None:
                    self._persist(job, None)

    async def claim(self, desired: Sequence[Assignment], node: NodeInfo) -> None:
        """Settle workloads found without a record against the coordinator's assignments:
        one that runs exactly the assigned version and generation is supervised from now on,
        any other is stopped (reconcile then starts the assigned one)."""
        wanted = {assignment.job: assignment for assignment in desired}
        for job, found in list(self.unclaimed.items()):
            del self.unclaimed[job]
            assignment = wanted.get(job)
            if assignment is not None and (assignment.version, assignment.generation) == (
                found.version,
                found.generation,
            ):
                log.info("workload_adopted", job=job, version=found.version, pid=found.handle.pid)
                self._supervise(assignment, node, adopted=found.handle)
            else:
                await self._stop_copies([found], keep=None)

    async def _discover(self) -> dict[str, list[Discovered]]:
        found: dict[str, list[Discovered]] = {}
        for driver, runtime in self._runtimes.items():
            try:
                discovered = await runtime.discover(self._data_dir.instance)
            except OSError as exc:
                log.warning("workload_discovery_failed", driver=str(driver), error=str(exc))
                continue
            for item in discovered:
                found.setdefault(item.job, []).append(item)
        return found

    async def _pick(
        self, record: ExecutionRecord | None, live: Sequence[Discovered]
    ) -> Discovered | None:
        """The one workload to keep for a job: the record's own, else the newest found."""
        if record is not None:
            runtime = self._runtime_for(record.driver)
            handle = await runtime.adopt(record) if runtime is not None else None
            if handle is not None:
                return Discovered(record.job, record.version, record.generation, handle)
            for item in live:
                if (item.version, item.generation) == (record.version, record.generation):
                    return item
        return max(live, key=lambda item: (item.version, item.generation), default=None)

    async def _stop_copies(self, live: Sequence[Discovered], keep: ProcessHandle | None) -> None:
        for item in live:
            handle = item.handle
            if keep is not None and _same_workload(handle, keep):
                continue
            log.info("duplicate_workload_stopping", job=item.job, pid=handle.pid, unit=handle.unit)
            await handle.stop(STOP_TIMEOUT)

    def _runtime_for(self, driver: str) -> Runtime | None:
        drivers = {d.value: d for d in Driver}
        return self._runtimes.get(drivers[driver]) if driver in drivers else None

    async def apply(self, actions: Sequence[Action], node: NodeInfo) -> None:
        """Apply reconcile actions; jobs are handled concurrently, each job's steps in order."""
        if actions:
            await asyncio.gather(*(self._apply_one(action, node) for action in actions))

    async def stop_all(self) -> None:
        """Stop every workload (agent shutdown), remembering only finished executions."""
        await asyncio.gather(*(self._shut_down(job) for job in list(self.supervisors)))

    async def detach_all(self) -> None:
        """Stop supervising without stopping workloads; their records stay for the next run."""
        await asyncio.gather(*(sup.detach() for sup in self.supervisors.values()))
        self.supervisors.clear()
        self._writes.retry()  # the last chance for records that could not be written yet

    async def _shut_down(self, job: str) -> None:
        supervisor = self.supervisors.pop(job)
        await supervisor.stop()
        record = supervisor.record()
        if record.state in TERMINAL_STATES:
            self.finished[job] = record
            self._persist(job, record)
        else:
            self._persist(job, None)

    async def _apply_one(self, action: Action, node: NodeInfo) -> None:
        match action:
            case StopJob(job=job):
                log.info("job_stopping", job=job)
                await self._stop(job)
            case ReplaceJob(assignment=assignment) | RestartJob(assignment=assignment):
                log.info("job_replacing", job=assignment.job, version=assignment.version)
                await self._stop(assignment.job)
                self._start(assignment, node)
            case StartJob(assignment=assignment):
                self._start(assignment, node)

    def _start(self, assignment: Assignment, node: NodeInfo) -> None:
        log.info(
            "job_starting",
            job=assignment.job,
            version=assignment.version,
            generation=assignment.generation,
        )
        self._supervise(assignment, node)

    def _supervise(
        self,
        assignment: Assignment,
        node: NodeInfo,
        *,
        adopted: ProcessHandle | None = None,
        restored: ExecutionRecord | None = None,
    ) -> None:
        supervisor = Supervisor(
            assignment,
            node=node,
            runtime=self._runtimes.get(assignment.spec.task.driver),
            data_dir=self._data_dir,
            clock=self._clock,
            http=self._http,
            on_change=self._changed,
            metrics=self._metrics,
            writes=self._writes,
            policy=self._policy,
            artifacts=self._artifacts,
            adopted=adopted,
            restored=restored,
        )
        self.finished.pop(assignment.job, None)
        self.supervisors[assignment.job] = supervisor
        self._changed(supervisor)
        supervisor.start()

    async def _stop(self, job: str) -> None:
        supervisor = self.supervisors.get(job)
        if supervisor is not None:
            await supervisor.stop()
            # Only forget it if no newer execution replaced it meanwhile.
            if self.supervisors.get(job) is supervisor:
                del self.supervisors[job]
        self.finished.pop(job, None)
        self._persist(job, None)
        self._on_change()

    def _changed(self, supervisor: Supervisor) -> None:
        if self.supervisors.get(supervisor.job) is not supervisor:
            return  # a stopped, replaced execution
        self._persist(supervisor.job, supervisor.record())
        self._on_change()

    def _persist(self, job: str, record: ExecutionRecord | None) -> None:
        """Write the job's record (None: remove it). When the data dir cannot take it, the
        execution goes on as it is and the write is retried at the next report."""
        store = self._store
        write = partial(store.save, record) if record is not None else partial(store.delete, job)
        self._writes.attempt("execution_record", write, item=job)


def _same_workload(a: ProcessHandle, b: ProcessHandle) -> bool:
    """Whether two handles (say, one from a record and one discovered) name one workload."""
    return a.pid == b.pid or (a.unit is not None and a.unit == b.unit)
