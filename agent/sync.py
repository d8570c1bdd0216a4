"""The sync loop: long-poll the node's assignments and reconcile local executions to them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from agent.backoff import BackoffPolicy, retry_delay
from agent.client import CoordinatorClient
from agent.errors import CoordinatorError, CoordinatorUnavailable, TokenRejected
from agent.manager import ExecutionManager
from agent.metrics import AgentMetrics, error_kind
from agent.reconcile import reconcile
from agent.session import NodeSession
from agent.waiting import sleep_or_event
from shared.clock import Clock
from shared.protocol import AssignmentsResponse

log = structlog.get_logger("agent.sync")


class SyncLoop:
    """Each step: one blocking query for assignments, then reconcile (or back off on errors)."""

    def __init__(
        self,
        *,
        session: NodeSession,
        client: CoordinatorClient,
        manager: ExecutionManager,
        clock: Clock,
        rand: Callable[[], float],
        poll_wait: float,
        backoff: BackoffPolicy | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._session = session
        self._client = client
        self._manager = manager
        self._clock = clock
        self._rand = rand
        self._poll_wait = poll_wait
        self._backoff = backoff or BackoffPolicy()
        self._metrics = metrics or AgentMetrics()
        self.failures = 0
        self.synced = asyncio.Event()
        """Set once the first assignments have been applied."""
        self.attempted = asyncio.Event()
        """Set once the first poll was answered or failed (systemd readiness waits for it)."""

    async def run(self) -> None:
        while True:
            await self.step()

    async def step(self) -> None:
        """Poll once and apply the answer; errors are logged and backed off, never raised."""
        try:
            response = await self._poll()
            if response is not None:
                self._session.mark_contact(self._clock.monotonic())
                await self.apply(response)
                self._metrics.last_sync.set(self._clock.now().timestamp())
        except asyncio.CancelledError:
            raise
        except CoordinatorError as exc:
            await self._failed("assignments_poll_failed", exc)
            return
        except Exception as exc:  # a bug must not stop the node from syncing
            log.exception("sync_step_crashed")
            await self._failed("sync_step_crashed", exc)
            return
        self.failures = 0
        self.attempted.set()

    async def apply(self, response: AssignmentsResponse) -> None:
        """Record the index and reconcile local executions to the complete desired state."""
        session = self._session
        if response.index != session.index:
            log.info("assignments_received", index=response.index, jobs=len(response.assignments))
        session.index = response.index
        session.heartbeat_interval = response.heartbeat_interval or session.heartbeat_interval
        await self._manager.claim(response.assignments, session.node_info())
        actions = reconcile(response.assignments, self._manager.current())
        if actions:
            log.info("reconciling", actions=[type(a).__name__ for a in actions])
        await self._manager.apply(actions, session.node_info())
        self.synced.set()

    async def _poll(self) -> AssignmentsResponse | None:
        """The blocking query, cut short (None) when a report says the index moved on."""
        session = self._session
        identity = await session.ensure_identity()
        session.repoll.clear()
        # The first poll does not block, so a starting agent reconciles (and reports ready)
        # at once even when the node's assignments have not changed.
        wait = self._poll_wait if self.attempted.is_set() else 0.0
        poll = asyncio.ensure_future(
            self._client.assignments(identity.node_token, session.index, wait)
        )
        repoll = asyncio.ensure_future(session.repoll.wait())
        try:
            await asyncio.wait([poll, repoll], return_when=asyncio.FIRST_COMPLETED)
        finally:
            repoll.cancel()
            if not poll.done():
                poll.cancel()
            await asyncio.wait([poll, repoll])
        if poll.cancelled():
            return None
        try:
            return poll.result()
        except TokenRejected as exc:
            self._metrics.sync_errors.labels("assignments", error_kind(exc)).inc()
            await session.reregister(identity)
            return None

    async def _failed(self, event: str, exc: Exception) -> None:
        retry_after = None
        if isinstance(exc, CoordinatorUnavailable):
            # Workloads keep running untouched; only the polling backs off.
            self._session.mark_unreachable(self._clock.monotonic())
            retry_after = exc.retry_after
        # Losing a coordinator that answered (it restarted: every agent lost it at once),
        # the first retry is spread wide; a coordinator shedding load says when to return.
        delay = retry_delay(
            self.failures,
            self._backoff,
            self._rand,
            reconnecting=self._session.last_contact is not None,
            retry_after=retry_after,
        )
        self.failures += 1
        self.attempted.set()
        self._metrics.sync_errors.labels("assignments", error_kind(exc)).inc()
        log.warning(event, error=str(exc), retry_in=round(delay, 3), failures=self.failures)
        await sleep_or_event(self._clock, delay, self._session.repoll)
