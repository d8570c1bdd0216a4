"""Supervises one execution (job@version/generation): launch, health, restart policy, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent.artifacts import ArtifactError, ArtifactStore
from agent.backoff import BackoffPolicy, backoff_delay
from agent.config import HostPolicy
from agent.errors import LaunchError
from agent.executions import ExecutionRecord
from agent.health import HealthState, HealthVerdict
from agent.launch import NodeInfo, Prepared, pin_programs, prepare
from agent.logs import ensure_log_files
from agent.metrics import AgentMetrics
from agent.paths import DataDir
from agent.policy import Refusal, decide, describe_launch
from agent.probes import HealthMonitor
from agent.restart import (
    UNKNOWN_EXIT,
    ExitStatus,
    RestartAction,
    Resume,
    decide_restart,
    how_to_resume,
    restart_wait,
)
from agent.runtime import LaunchSpec, ProcessHandle, Runtime
from agent.runtime.users import RunAs, run_as
from agent.writes import DataDirWrites
from shared.clock import Clock
from shared.interpolation import InterpolationError
from shared.protocol import Assignment, ExecutionReport, ExecutionState
from shared.spec import JobType

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("agent.supervisor")

_RUNNING_STATES = frozenset(
    {ExecutionState.STARTING, ExecutionState.HEALTHY, ExecutionState.UNHEALTHY}
)
ARTIFACT_ATTEMPTS = 5
"""Downloads of a version's artifacts before a transient failure fails the execution."""
ARTIFACT_BACKOFF = BackoffPolicy(base=1.0, cap=30.0)

_FINAL_STATES = {
    RestartAction.GIVE_UP: ExecutionState.FAILED,
    RestartAction.COMPLETE: ExecutionState.COMPLETED,
    RestartAction.STOP: ExecutionState.STOPPED,
}


class Supervisor:
    """Runs one execution until it completes, fails for good, or is stopped."""

    def __init__(
        self,
        assignment: Assignment,
        *,
        node: NodeInfo,
        runtime: Runtime | None,
        data_dir: DataDir,
        clock: Clock,
        http: aiohttp.ClientSession,
        on_change: Callable[[Supervisor], None],
        writes: DataDirWrites,
        policy: HostPolicy,
        artifacts: ArtifactStore | None = None,
        rand: Callable[[], float] = random.random,
        adopted: ProcessHandle | None = None,
        restored: ExecutionRecord | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.assignment = assignment
        self.job = assignment.job
        self.state = ExecutionState.PENDING
        self.message = ""
        self.restarts = restored.restarts if restored else 0
        self.exit_code: int | None = restored.exit_code if restored else None
        self.history: list[datetime] = list(restored.restart_history) if restored else []
        """When this execution was restarted (within the window); kept across agent restarts."""
        self.last_exit = ""
        self._node = node
        self._runtime = runtime
        self._data_dir = data_dir
        self._clock = clock
        self._http = http
        self._on_change = on_change
        self._writes = writes
        self._policy = policy
        self._artifacts = artifacts
        self._rand = rand
        self._metrics = metrics or AgentMetrics()
        self._handle: ProcessHandle | None = None
        self._task: asyncio.Task[None] | None = None
        # A workload a previous agent run started: supervised from where it was, not restarted.
        self._adopted = adopted
        self._handle = adopted
        self._restart_at = restored.restart_at if restored else None
        # A recorded workload that is gone (no adopted handle) resumes as its state says;
        # until then it keeps its recorded state, so a record written meanwhile still
        # tells the next agent run the same.
        self._resume = Resume.START
        if restored is not None and adopted is None:
            self._resume = how_to_resume(restored.state)
        if restored is not None and (
            (adopted is not None and restored.state in _RUNNING_STATES)
            or self._resume in (Resume.EXITED, Resume.RESTART)
        ):
            self.state, self.message = restored.state, restored.message
        self._log = log.bind(job=self.job, version=assignment.version)

    def record(self) -> ExecutionRecord:
        """The execution as persisted under ``executions/``."""
        handle = self._handle
        return ExecutionRecord(
            job=self.job,
            version=self.assignment.version,
            generation=self.assignment.generation,
            state=self.state,
            message=self.message,
            restarts=self.restarts,
            restart_history=self.history,
            restart_at=self._restart_at,
            exit_code=self.exit_code,
            pid=handle.pid if handle else None,
            start_time=handle.start_time if handle else None,
            driver=str(self.assignment.spec.task.driver),
            kill_timeout=self.assignment.spec.task.kill_timeout.total_seconds(),
            unit=handle.unit if handle else None,
            assignment=self.assignment,
        )

    def report(self) -> ExecutionReport:
        return self.record().report()

    def start(self) -> None:
        """Run the execution in a background task."""
        self._task = asyncio.create_task(self.run(), name=f"supervise-{self.job}")

    async def run(self) -> None:
        """Launch and relaunch per the restart policy until the execution is finished."""
        try:
            if await self._resume_restored():
                while await self.step():
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: report it rather than hang in a stale state
            self._log.exception("supervisor_crashed")
            self._set(ExecutionState.FAILED, f"internal agent error: {exc!r}")

    async def _resume_restored(self) -> bool:
        """Pick up a recorded execution whose workload is gone; False when it is finished.

        One that ran and died while no agent watched is an exit of unknown status, so
        the restart policy decides, counting it as a restart, with the recorded history.
        """
        spec = self.assignment.spec
        match self._resume:
            case Resume.EXITED:
                self._log.info("workload_gone", restarts=self.restarts)
                return await self._after_exit(UNKNOWN_EXIT)
            case Resume.RESTART:
                wait = restart_wait(self._restart_at, spec.task.restart, self._clock.now())
                await self._clock.sleep(wait)
                return True
            case Resume.KEEP:
                return False
            case Resume.START:
                return True

    async def step(self) -> bool:
        """One launch, its lifetime and the restart decision; False when finished."""
        if self._runtime is None:
            driver = self.assignment.spec.task.driver
            self._set(ExecutionState.FAILED, f"{driver} driver not available yet")
            return False
        version_dir: Path | None = None
        if self.assignment.spec.task.artifacts and self._adopted is not None:
            # Already running from its version dir: nothing to fetch, whatever the cache holds.
            if self._artifacts is not None:
                version_dir = self._artifacts.version_dir(self.job, self.assignment.version)
        elif self.assignment.spec.task.artifacts:
            version_dir = await self._fetch_artifacts()
            if version_dir is None:
                return False
        try:
            prepared = prepare(self.assignment, self._node, self._data_dir, version_dir)
            prepared, refusal = self._admit(prepared)
            if refusal is not None:
                await self._refuse(refusal)
                return False
            creds = run_as(prepared.launch.user)
            handle, self._adopted = self._adopted, None
            self._restart_at = None
            if handle is None:
                self._ensure_working_dir(prepared.launch)
                handle = await self._runtime.start(self._with_output(prepared.launch))
            else:
                self._log.info("process_adopted", pid=handle.pid, unit=handle.unit)
        except (InterpolationError, LaunchError) as exc:
            self._set(ExecutionState.FAILED, str(exc))
            return False
        except OSError as exc:
            self._set(ExecutionState.FAILED, f"cannot start: {exc}")
            return False
        self._handle = handle
        monitor_task = self._begin_health(prepared, creds)
        try:
            status = await handle.wait()
        finally:
            if monitor_task is not None:
                monitor_task.cancel()
                await asyncio.wait([monitor_task])
        self._handle = None
        return await self._after_exit(status)

    def _admit(self, prepared: Prepared) -> tuple[Prepared, Refusal | None]:
        """The host policy's word on this version (agent/policy.py), and the launch with each
        program pinned to the file the policy judged, so no later PATH search can differ."""
        task = self.assignment.spec.task
        euid = os.geteuid()
        request = describe_launch(
            prepared.launch, prepared.checks, driver=task.driver, job_env=task.env, euid=euid
        )
        refusal = decide(request, self._policy, euid=euid)
        return pin_programs(prepared, request), refusal

    async def _refuse(self, refusal: Refusal) -> None:
        """Fail the execution without starting anything; a workload adopted from an agent
        run under another policy is stopped first."""
        self._log.warning("execution_refused", rule=refusal.rule, reason=refusal.reason)
        self._metrics.policy_refusals.labels(refusal.rule).inc()
        handle, self._adopted = self._adopted, None
        if handle is not None:
            self._handle = handle
            await handle.stop(self.assignment.spec.task.kill_timeout.total_seconds())
            self._handle = None
        self._set(ExecutionState.FAILED, refusal.message)

    async def _after_exit(self, status: ExitStatus) -> bool:
        """Apply the restart policy to an exit; after a restart's backoff, True."""
        self.exit_code = status.report_code
        self.last_exit = status.describe()
        now = self._clock.now()
        spec = self.assignment.spec
        policy = spec.task.restart
        self.history = [t for t in self.history if now - t < policy.window]
        decision = decide_restart(self.history, policy, spec.type, status, now)
        self._log.info("process_exited", status=status.describe(), action=str(decision.action))
        if decision.action is not RestartAction.RESTART:
            self._set(_FINAL_STATES[decision.action], decision.message)
            return False
        self.history.append(now)
        self.restarts += 1
        self._restart_at = now + timedelta(seconds=decision.delay)
        self._metrics.restarts.labels(self.job).inc()
        # Recorded (history, restart_at) before the wait: an agent restarted meanwhile
        # neither counts this restart again nor starts the workload before it is due.
        self._set(ExecutionState.RESTARTING, decision.message)
        await self._clock.sleep(decision.delay)
        return True

    async def _fetch_artifacts(self) -> Path | None:
        """The version dir with verified artifacts, or None once the execution has failed.

        A cached version needs no network. Transient failures (network, 5xx, a cut
        transfer) are retried with backoff up to ARTIFACT_ATTEMPTS times, but not past the
        rollout's healthy_deadline, by when the coordinator fails the node anyway. A
        checksum mismatch, a 4xx or an unsafe archive fails at once: the same bytes again
        cannot help.
        """
        store = self._artifacts
        spec = self.assignment.spec
        if store is None:
            self._set(ExecutionState.FAILED, "artifacts are not supported by this agent")
            return None
        job, version = self.job, self.assignment.version
        budget = spec.rollout.healthy_deadline.total_seconds()
        started = self._clock.monotonic()
        attempt = 0
        while True:
            if not store.is_installed(job, version, spec.task.artifacts):
                self._set(ExecutionState.PENDING, "fetching artifacts")
            try:
                return await store.ensure(job, version, spec.task.artifacts)
            except ArtifactError as exc:
                error = exc
            except OSError as exc:
                error = ArtifactError(f"artifact install failed: {exc}", transient=False)
            delay = backoff_delay(attempt, ARTIFACT_BACKOFF, self._rand)
            attempt += 1
            elapsed = self._clock.monotonic() - started
            if not error.transient or attempt >= ARTIFACT_ATTEMPTS or elapsed + delay > budget:
                self._log.warning("artifacts_failed", error=error.message, attempts=attempt)
                self._set(ExecutionState.FAILED, error.message)
                return None
            self._log.info("artifacts_retry", error=error.message, retry_in=round(delay, 3))
            message = f"{error.message} (attempt {attempt}; retrying in {delay:.0f}s)"
            self._set(ExecutionState.PENDING, message)
            await self._clock.sleep(delay)

    async def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after kill_timeout); the state becomes STOPPED."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        handle = self._handle
        if handle is not None:
            status = await handle.stop(self.assignment.spec.task.kill_timeout.total_seconds())
            self._handle = None
            self.exit_code = status.report_code
            self._log.info("process_stopped", status=status.describe())
        if self.state not in {ExecutionState.FAILED, ExecutionState.COMPLETED}:
            self._set(ExecutionState.STOPPED, "stopped by the agent")

    async def detach(self) -> None:
        """Stop supervising but leave the process running (its record keeps pid and start)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _begin_health(self, prepared: Prepared, creds: RunAs | None) -> asyncio.Task[None] | None:
        checks = prepared.checks
        if self.assignment.spec.type is JobType.BATCH:
            self._set(ExecutionState.STARTING, self._running("running"))
            return None
        if not checks:
            self._set(ExecutionState.HEALTHY, self._running("running"))
            return None
        if self.state is not ExecutionState.HEALTHY:
            # An adopted healthy workload stays healthy until its checks say otherwise.
            self._set(ExecutionState.STARTING, self._running("waiting for health checks to pass"))
        monitor = HealthMonitor(
            checks,
            clock=self._clock,
            session=self._http,
            env=prepared.launch.env,
            cwd=str(prepared.launch.working_dir) if prepared.launch.working_dir else None,
            # As the workload's user and groups: a check may be a file the workload wrote.
            run_as=creds,
            on_change=self._on_health,
            metrics=self._metrics,
            job=self.job,
        )
        return asyncio.create_task(monitor.run(), name=f"health-{self.job}")

    def _on_health(self, verdict: HealthVerdict) -> None:
        if verdict.state is HealthState.STARTING and self.state is ExecutionState.HEALTHY:
            return  # checks of an adopted workload have not settled yet; keep what was known
        if self.state in _RUNNING_STATES:
            state = {
                HealthState.STARTING: ExecutionState.STARTING,
                HealthState.HEALTHY: ExecutionState.HEALTHY,
                HealthState.UNHEALTHY: ExecutionState.UNHEALTHY,
            }[verdict.state]
            self._set(state, self._running(verdict.message or "health checks passing"))

    def _running(self, message: str) -> str:
        if not self.restarts:
            return message
        if not self.last_exit:  # restarted before this agent run: how it ended is not known
            return f"{message} (restart {self.restarts})"
        return f"{message} (restart {self.restarts}; previous run {self.last_exit})"

    def _with_output(self, launch: LaunchSpec) -> LaunchSpec:
        """``launch`` with its log files, or with its output discarded when they cannot be
        created or opened (a full or read-only data dir): the workload runs either way."""
        paths = [path for path in (launch.stdout_path, launch.stderr_path) if path is not None]
        if self._writes.attempt("log_files", partial(ensure_log_files, paths), item=self.job):
            return launch
        self._log.warning("workload_output_discarded", paths=[str(path) for path in paths])
        return dataclasses.replace(launch, stdout_path=None, stderr_path=None)

    def _ensure_working_dir(self, launch: LaunchSpec) -> None:
        default = self._data_dir.job_dir(self.job)
        if launch.working_dir != default:
            return
        default.mkdir(parents=True, exist_ok=True)
        if launch.user is not None and os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(launch.user)
            except KeyError:
                return  # the driver reports the unknown user
            # The child changes into its directory before dropping privileges, so it can
            # work there (relative paths) while the data dir itself stays 0700.
            os.chown(default, entry.pw_uid, entry.pw_gid)

    def _set(self, state: ExecutionState, message: str) -> None:
        if (state, message) == (self.state, self.message):
            return
        self._log.info("execution_state_changed", state=str(state), message=message)
        self.state = state
        self.message = message
        self._on_change(self)
