"""The agent's lifecycle: ``start()`` wires and launches the loops, ``shutdown()`` drains them."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import structlog

from agent.artifacts import ArtifactStore
from agent.backoff import BackoffPolicy
from agent.client import CoordinatorClient, coordinator_session
from agent.config import AgentSettings
from agent.executions import ExecutionStore
from agent.host import HostProbe, PsutilHost
from agent.identity import IdentityStore
from agent.local import AgentSnapshot, LocalEndpoints
from agent.logs import LogRotator
from agent.manager import ExecutionManager
from agent.metrics import AgentMetrics
from agent.notify import SystemdNotifier
from agent.outbound import LazySession
from agent.paths import DataDir
from agent.report import ReportLoop
from agent.runtime import Runtime
from agent.runtime.exec import ExecRuntime
from agent.runtime.systemd import SystemdRuntime
from agent.session import NodeSession
from agent.sync import SyncLoop
from agent.transport import StreamTransport
from agent.waiting import sleep_or_event
from agent.writes import DataDirWrites
from shared.clock import Clock, SystemClock
from shared.spec import Driver

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("agent.daemon")

READY_CONTACT_INTERVALS = 3
"""/readyz needs a coordinator answer within this many heartbeat intervals."""

STATUS_INTERVAL = 2.0
"""Seconds between checks for a changed systemd STATUS= line (and the longest watchdog tick)."""


@dataclass(frozen=True)
class AgentParts:
    """The components ``Agent.start`` wires together."""

    client: CoordinatorClient
    session: NodeSession
    manager: ExecutionManager
    sync: SyncLoop
    reporter: ReportLoop


class Agent:
    """One node agent, runnable in-process (tests, demo) or from ``main`` (the daemon).

    ``await agent.start()`` loads state and starts the sync, report and log-rotation
    loops plus the local endpoints; ``await agent.shutdown()`` stops them and, by
    default, the workloads. ``async with Agent(...)`` does both.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        join_token: str = "",
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        host: HostProbe | None = None,
        runtimes: Mapping[Driver, Runtime] | None = None,
        backoff: BackoffPolicy | None = None,
        report_debounce: float = 0.1,
        rotate_interval: float = 5.0,
        poll_margin: float = 10.0,
        notifier: SystemdNotifier | None = None,
        coordinator_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._coordinator_ssl = coordinator_ssl
        self.clock: Clock = clock or SystemClock()
        self.data_dir = DataDir(settings.data_dir)
        self._join_token = join_token or settings.join_token
        self._rand = rand
        self._host = host
        self._runtimes = runtimes
        self._backoff = backoff
        self._report_debounce = report_debounce
        self._rotate_interval = rotate_interval
        self._poll_margin = poll_margin
        self._notifier = notifier or SystemdNotifier()
        self._tasks: list[asyncio.Task[None]] = []
        self._endpoints: LocalEndpoints | None = None
        self._http: LazySession | None = None
        self._coordinator_http: StreamTransport | None = None
        self._ready = False
        self._parts: AgentParts | None = None
        self._writes: DataDirWrites | None = None
        self.local_port: int | None = None
        self.metrics = AgentMetrics()
        self.failed = asyncio.Event()
        """Set when a loop ended unexpectedly; ``main`` then shuts down."""

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Load state, clean up after a previous run, and start every loop."""
        try:
            await self._start()
        except BaseException:
            await self.shutdown()
            raise

    async def _start(self) -> None:
        settings = self.settings
        self.data_dir.ensure()
        host = self._host or PsutilHost(settings.data_dir)
        self._http = LazySession()
        # LazySession makes the aiohttp session at the first HTTP check or download; it
        # answers the only calls made on it (get, close), which is what the cast claims.
        http = cast("aiohttp.ClientSession", self._http)
        store = IdentityStore(settings.data_dir)
        # One place learns of every failed write to the data dir; the report says so.
        writes = self._writes = DataDirWrites(
            settings.data_dir, clock=self.clock, metrics=self.metrics
        )
        self._coordinator_http = coordinator_session(self._coordinator_ssl)
        client = CoordinatorClient(
            settings.coordinators, self._coordinator_http, poll_margin=self._poll_margin
        )
        session = NodeSession(
            client=client,
            store=store,
            writes=writes,
            name=settings.name,
            labels=settings.labels,
            join_token=self._join_token,
            host=host,
        )
        manager = ExecutionManager(
            runtimes=self._runtimes
            or {
                Driver.EXEC: ExecRuntime(self.clock, workload_slice=settings.workload_slice),
                Driver.SYSTEMD: SystemdRuntime(self.clock),
            },
            data_dir=self.data_dir,
            store=ExecutionStore(self.data_dir.executions),
            writes=writes,
            clock=self.clock,
            http=http,
            policy=settings.policy,
            on_change=self._on_execution_change,
            metrics=self.metrics,
            artifacts=ArtifactStore(
                self.data_dir.artifacts,
                http,
                keep=settings.artifact_keep,
                max_bytes=settings.artifact_max_bytes,
            ),
        )
        sync = SyncLoop(
            session=session,
            client=client,
            manager=manager,
            clock=self.clock,
            rand=self._rand,
            poll_wait=settings.poll_wait.total_seconds(),
            backoff=self._backoff,
            metrics=self.metrics,
        )
        reporter = ReportLoop(
            session=session,
            client=client,
            manager=manager,
            store=store,
            writes=writes,
            host=host,
            clock=self.clock,
            rand=self._rand,
            debounce=self._report_debounce,
            backoff=self._backoff,
            metrics=self.metrics,
        )
        self._parts = AgentParts(client, session, manager, sync, reporter)
        rotator = LogRotator(
            self.data_dir.logs,
            settings.log_max_bytes,
            clock=self.clock,
            writes=writes,
            interval=self._rotate_interval,
        )
        await manager.restore(session.node_info())
        await self._start_local_endpoints()
        self._spawn("sync", sync.run())
        self._spawn("report", reporter.run())
        self._spawn("log_rotation", rotator.run())
        if self._notifier.enabled:
            self._spawn("systemd_notify", self._systemd_notify())
        self._ready = True
        log.info(
            "agent_started",
            name=settings.name,
            data_dir=str(settings.data_dir),
            coordinators=settings.coordinators,
            local_port=self.local_port,
            policy=settings.policy.model_dump(mode="json"),
        )

    async def shutdown(self, *, stop_workloads: bool = True) -> None:
        """Stop the loops, then (by default) every workload gracefully, then the endpoints.

        With ``stop_workloads=False`` the workloads keep running and their records stay in
        ``executions/``; the next start finds them by pid and start time.
        """
        self._notifier.stopping(
            "stopping workloads" if stop_workloads else "stopping; workloads keep running"
        )
        log.info("agent_stopping", stop_workloads=stop_workloads)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        if self._parts is not None:
            if stop_workloads:
                await self._parts.manager.stop_all()
            else:
                await self._parts.manager.detach_all()
        if self._endpoints is not None:
            await self._endpoints.close()
            self._endpoints = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._coordinator_http is not None:
            await self._coordinator_http.close()
            self._coordinator_http = None
        self._ready = False
        log.info("agent_stopped")

    def snapshot(self) -> AgentSnapshot:
        """The state the local endpoints expose."""
        identity = self.session.identity
        return AgentSnapshot(
            ready=self._ready,
            registered=identity is not None,
            synced=self.sync.synced.is_set(),
            node_id=identity.node_id if identity else "",
            assignment_index=self.session.index,
            reports_sent=self.reporter.sent,
            sync_failures=self.sync.failures,
            report_failures=self.reporter.failures,
            executions=self.manager.reports(),
        )

    def connected_recently(self) -> bool:
        """Whether a coordinator answered within READY_CONTACT_INTERVALS heartbeats."""
        if self._parts is None:
            return False
        session = self._parts.session
        window = READY_CONTACT_INTERVALS * session.heartbeat_interval
        return session.connected_within(self.clock.monotonic(), window)

    def _on_execution_change(self) -> None:
        if self._parts is not None:
            self._parts.reporter.notify()

    @property
    def parts(self) -> AgentParts:
        if self._parts is None:
            raise RuntimeError("the agent has not been started")
        return self._parts

    @property
    def client(self) -> CoordinatorClient:
        return self.parts.client

    @property
    def session(self) -> NodeSession:
        return self.parts.session

    @property
    def manager(self) -> ExecutionManager:
        return self.parts.manager

    @property
    def sync(self) -> SyncLoop:
        return self.parts.sync

    @property
    def reporter(self) -> ReportLoop:
        return self.parts.reporter

    async def _start_local_endpoints(self) -> None:
        address = self.settings.listen_address()
        if address is None:
            return
        self._endpoints = LocalEndpoints(self)
        await self._endpoints.start(address[0], address[1])
        self.local_port = self._endpoints.port

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._loop_ended)
        self._tasks.append(task)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        log.error("agent_loop_ended", loop=task.get_name(), error=repr(task.exception()))
        self.failed.set()

    async def _systemd_notify(self) -> None:
        """READY=1 once the first sync was attempted; WATCHDOG=1 and STATUS= changes after.

        It runs on the event loop, so a blocked loop stops the pings and systemd's watchdog
        restarts the agent.
        """
        interval = self._notifier.watchdog_interval
        tick = min(interval, STATUS_INTERVAL) if interval else STATUS_INTERVAL
        ready = False
        status = ""
        while True:
            if interval:
                self._notifier.watchdog()
            if not ready and self.sync.attempted.is_set():
                ready = True
                status = self.status_line()
                self._notifier.ready(status)
            elif ready and (line := self.status_line()) != status:
                status = line
                self._notifier.status(status)
            if ready:
                await self.clock.sleep(tick)
            else:
                await sleep_or_event(self.clock, tick, self.sync.attempted)

    def status_line(self) -> str:
        """One line for ``systemctl status``: identity, sync health and executions."""
        identity = self.session.identity
        who = f"node {identity.node_id}" if identity else "not registered"
        sync = (
            f"sync failing ({self.sync.failures} attempts in a row)"
            if self.sync.failures
            else f"synced at index {self.session.index}"
        )
        counts = Counter(str(report.state) for report in self.manager.reports())
        jobs = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no jobs"
        degraded = "; data dir not writable" if self._writes and self._writes.degraded else ""
        return f"{who}; {sync}; {jobs}{degraded}"


async def run_until_stopped(
    agent: Agent, stop: asyncio.Event, *, stop_workloads: bool = True
) -> bool:
    """Run ``agent`` until ``stop`` is set (a signal) or one of its loops died.

    Returns False when a loop died (``main`` then exits non-zero, so systemd restarts it).
    ``stop_workloads`` is passed on to :meth:`Agent.shutdown`.
    """
    await agent.start()
    try:
        stopped = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(agent.failed.wait())
        try:
            await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopped, failed):
                waiter.cancel()
            await asyncio.wait([stopped, failed])
    finally:
        await agent.shutdown(stop_workloads=stop_workloads)
    return not agent.failed.is_set()
