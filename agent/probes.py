"""Health probes (http, tcp, exec) and the monitor that runs each check at its interval."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from agent.health import CheckCounts, HealthState, HealthVerdict, evaluate_health
from agent.metrics import AgentMetrics
from agent.runtime.users import RunAs
from shared.clock import Clock
from shared.spec import ExecCheck, HealthCheck, HttpCheck, TcpCheck

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("agent.probes")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    error: str = ""


async def probe_http(check: HttpCheck, session: aiohttp.ClientSession) -> ProbeResult:
    """GET the URL; pass on a status in ``expect_status`` (or any 2xx/3xx when it is empty)."""
    import aiohttp  # loaded by the first HTTP check (agent/outbound.py)

    timeout = aiohttp.ClientTimeout(total=check.timeout.total_seconds())
    try:
        async with session.get(check.url, timeout=timeout, allow_redirects=False) as response:
            status = response.status
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout.total_seconds():g}s")
    except aiohttp.ClientError as exc:
        return ProbeResult(False, str(exc) or type(exc).__name__)
    passed = status in check.expect_status if check.expect_status else 200 <= status < 400
    return ProbeResult(True) if passed else ProbeResult(False, f"HTTP status {status}")


async def probe_tcp(check: TcpCheck) -> ProbeResult:
    """Pass when a TCP connection to ``host:port`` opens within the timeout."""
    host, _, port = check.address.rpartition(":")
    try:
        async with asyncio.timeout(check.timeout.total_seconds()):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout.total_seconds():g}s")
    except (OSError, ValueError) as exc:
        return ProbeResult(False, getattr(exc, "strerror", None) or str(exc))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def probe_exec(
    check: ExecCheck, *, env: Mapping[str, str], run_as: RunAs | None, cwd: str | None = None
) -> ProbeResult:
    """Pass when the command exits 0 within the timeout; on timeout its group is killed.

    It runs as ``run_as`` (the job's user and groups; None: as the agent), never as more
    than the workload: the command may well be a file the workload wrote.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *check.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=list(run_as.groups) if run_as else None,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(False, f"cannot run {check.command[0]!r}: {exc.strerror}")
    try:
        async with asyncio.timeout(check.timeout.total_seconds()):
            code = await proc.wait()
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout.total_seconds():g}s")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return ProbeResult(True) if code == 0 else ProbeResult(False, f"exited with code {code}")


class HealthMonitor:
    """Runs every check of one execution at its interval and keeps the verdict up to date."""

    def __init__(
        self,
        checks: Sequence[HealthCheck],
        *,
        clock: Clock,
        session: aiohttp.ClientSession,
        env: Mapping[str, str],
        cwd: str | None,
        run_as: RunAs | None,
        on_change: Callable[[HealthVerdict], None],
        metrics: AgentMetrics | None = None,
        job: str = "",
    ) -> None:
        self.checks = list(checks)
        self.counts = [CheckCounts() for _ in self.checks]
        self.verdict = evaluate_health(self.counts, self.checks, HealthState.STARTING)
        self._clock = clock
        self._session = session
        self._env = dict(env)
        self._cwd = cwd
        self._run_as = run_as
        self._on_change = on_change
        self._metrics = metrics or AgentMetrics()
        self._job = job

    async def probe(self, check: HealthCheck) -> ProbeResult:
        """Run one probe of ``check``."""
        if isinstance(check, HttpCheck):
            return await probe_http(check, self._session)
        if isinstance(check, TcpCheck):
            return await probe_tcp(check)
        return await probe_exec(check, env=self._env, run_as=self._run_as, cwd=self._cwd)

    async def step(self, index: int) -> HealthVerdict:
        """Probe check ``index`` once, record the result and re-evaluate the verdict."""
        check = self.checks[index]
        started = self._clock.monotonic()
        result = await self.probe(check)
        elapsed = self._clock.monotonic() - started
        self._metrics.check_duration.labels(self._job, check.type).observe(elapsed)
        outcome = "pass" if result.ok else "fail"
        self._metrics.check_results.labels(self._job, check.type, outcome).inc()
        self.counts[index] = self.counts[index].record(result.ok, result.error)
        verdict = evaluate_health(self.counts, self.checks, self.verdict.state)
        if verdict != self.verdict:
            self.verdict = verdict
            self._on_change(verdict)
        return verdict

    async def run(self) -> None:
        """Run every check forever, each at its own interval, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(len(self.checks)):
                group.create_task(self._run_check(index))

    async def _run_check(self, index: int) -> None:
        interval = self.checks[index].interval.total_seconds()
        while True:
            try:
                await self.step(index)
            except Exception:  # a probe bug must not stop health checking
                log.exception("health_probe_crashed", check=index)
            await self._clock.sleep(interval)
