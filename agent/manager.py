"""Owns the node's executions: applies reconcile actions, persists records, lists reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import aiohttp
import structlog

from agent.artifacts import ArtifactStore
from agent.executions import TERMINAL_STATES, ExecutionRecord, ExecutionStore
from agent.paths import DataDir
from agent.reconcile import (
    Action,
    CurrentExecution,
    ReplaceJob,
    RestartJob,
    StartJob,
    StopJob,
)
from agent.runtime import Runtime
from agent.supervisor import NodeInfo, Supervisor
from shared.clock import Clock
from shared.protocol import Assignment, ExecutionReport
from shared.spec import Driver

log = structlog.get_logger("agent.manager")


class ExecutionManager:
    """The supervisors of this node, plus finished executions remembered across restarts."""

    def __init__(
        self,
        *,
        runtimes: Mapping[Driver, Runtime],
        data_dir: DataDir,
        store: ExecutionStore,
        clock: Clock,
        http: aiohttp.ClientSession,
        on_change: Callable[[], None] = lambda: None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self._runtimes = dict(runtimes)
        self._data_dir = data_dir
        self._store = store
        self._clock = clock
        self._http = http
        self._on_change = on_change
        self._artifacts = artifacts or ArtifactStore(data_dir.artifacts, http)
        self.supervisors: dict[str, Supervisor] = {}
        self.finished: dict[str, ExecutionRecord] = {}

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

    async def restore(self) -> None:
        """Load records left by a previous agent run.

        Finished executions (failed, completed) are remembered so they are not run again
        for the same version. Processes that were still running are stopped: adopting
        them instead is the seam for keeping workloads across agent restarts.
        """
        for record in self._store.load_all():
            if record.state in TERMINAL_STATES:
                self.finished[record.job] = record
                continue
            await self._stop_orphan(record)
            self._store.delete(record.job)

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

    async def _shut_down(self, job: str) -> None:
        supervisor = self.supervisors.pop(job)
        await supervisor.stop()
        record = supervisor.record()
        if record.state in TERMINAL_STATES:
            self.finished[job] = record
            self._store.save(record)
        else:
            self._store.delete(job)

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
        supervisor = Supervisor(
            assignment,
            node=node,
            runtime=self._runtimes.get(assignment.spec.task.driver),
            data_dir=self._data_dir,
            clock=self._clock,
            http=self._http,
            on_change=self._changed,
            artifacts=self._artifacts,
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
        self._store.delete(job)
        self._on_change()

    def _changed(self, supervisor: Supervisor) -> None:
        if self.supervisors.get(supervisor.job) is not supervisor:
            return  # a stopped, replaced execution
        try:
            self._store.save(supervisor.record())
        except OSError as exc:
            log.warning("execution_record_write_failed", job=supervisor.job, error=str(exc))
        self._on_change()

    async def _stop_orphan(self, record: ExecutionRecord) -> None:
        drivers = {driver.value: driver for driver in Driver}
        runtime = self._runtimes.get(drivers[record.driver]) if record.driver in drivers else None
        if runtime is None or record.pid is None or record.start_time is None:
            return
        handle = await runtime.adopt(record.pid, record.start_time)
        if handle is not None:
            log.info("orphan_stopping", job=record.job, pid=record.pid)
            await handle.stop(record.kill_timeout)
