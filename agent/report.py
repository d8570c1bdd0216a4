"""The report loop: heartbeat every interval, and promptly (debounced) on any state change."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from functools import partial

import structlog

from agent.backoff import BackoffPolicy, backoff_delay
from agent.client import CoordinatorClient, agent_version
from agent.errors import CoordinatorError, CoordinatorUnavailable, TokenRejected
from agent.host import HostProbe
from agent.identity import IdentityStore
from agent.manager import ExecutionManager
from agent.metrics import AgentMetrics, error_kind
from agent.session import NodeSession
from agent.waiting import sleep_or_event
from agent.writes import DataDirWrites
from shared.clock import Clock
from shared.protocol import ReportRequest, ReportResponse

log = structlog.get_logger("agent.report")

MAX_RESENDS = 3
"""Resends with a corrected seq after ``accepted=false`` before waiting for the next turn."""

RESERVATION = "report_seq"
"""The kind of data dir write that reserves seqs (a metric label)."""

SEQ_BLOCK = 100
"""Report seqs reserved on disk at a time: one write of report_seq.json per 100 reports."""


def seq_reservation(seq: int, reserved: int, block: int = SEQ_BLOCK) -> int | None:
    """The ceiling to write to disk before sending ``seq``; None while ``reserved`` covers it.

    The file holds the highest seq this node may have used, so an agent that restarts goes
    on above it: seqs only grow. Should a write fail (a full disk), the agent goes on in
    memory; after a restart it may then repeat a seq, which the coordinator refuses with
    the seq it saw, and the agent resends above that.
    """
    return None if seq <= reserved else seq + block - 1


def report_retry_delay(
    failures: int, policy: BackoffPolicy, rand: Callable[[], float], interval: float
) -> float:
    """Seconds before the next try after ``failures`` failed reports: the backoff, but never
    longer than a heartbeat interval. A coordinator that comes back (a restart, a pause)
    gives every node one TTL (3 heartbeat intervals) to be heard before it counts the node
    as down, so a node must not be backing off longer than that."""
    delay = backoff_delay(failures, policy, rand)
    return min(delay, interval) if interval > 0 else delay


def next_heartbeat(scheduled: float, now: float, interval: float, *, timed_out: bool) -> float:
    """When the heartbeat after a report sent at ``now`` is due, on the schedule that had
    one due at ``scheduled``: unchanged while that is still ahead, else moved past ``now``
    by whole intervals, so it keeps its phase (also after an outage). A timer that fired
    (``timed_out``) counts as the beat even when it fired a hair early."""
    if interval <= 0:
        return scheduled
    if scheduled <= now:
        return scheduled + (math.floor((now - scheduled) / interval) + 1) * interval
    return scheduled + interval if timed_out else scheduled


REPORT_DEADLINE_FLOOR = 2.0
"""Seconds a report waits for one coordinator at least (short heartbeats, busy machines)."""


class ReportLoop:
    """Sends ``ReportRequest``s with a per-node sequence number reserved in the data dir.

    Nothing is queued while no coordinator answers: every report is built when it is sent
    and carries the current state of every job, so an outage of any length buffers at most
    one pending report (the latest state per job) and never replays stale intermediate
    states. Seqs are reserved on disk in blocks before sending, so they only grow, across
    outages, lost answers and agent restarts alike. A data dir that cannot be written stops
    no report: the seq goes on in memory, and each report first retries the writes that
    failed and carries the ``data_dir_unwritable`` condition while any is pending.
    """

    def __init__(
        self,
        *,
        session: NodeSession,
        client: CoordinatorClient,
        manager: ExecutionManager,
        store: IdentityStore,
        writes: DataDirWrites,
        host: HostProbe,
        clock: Clock,
        rand: Callable[[], float],
        debounce: float = 0.1,
        backoff: BackoffPolicy | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._session = session
        self._client = client
        self._manager = manager
        self._store = store
        self._writes = writes
        self._host = host
        self._clock = clock
        self._rand = rand
        self._debounce = debounce
        self._backoff = backoff or BackoffPolicy()
        self._metrics = metrics or AgentMetrics()
        self._changed = asyncio.Event()
        self._changed.set()  # report right after start
        self._last_seq = self._reserved = store.load_seq()
        self._seq_node = session.identity.node_id if session.identity else ""
        self.failures = 0
        self.sent = 0
        self.last_response: ReportResponse | None = None
        self._next_beat: float | None = None  # monotonic time of the next heartbeat

    def notify(self) -> None:
        """An execution changed state: report soon."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self.step()

    def _until_heartbeat(self) -> float:
        """Seconds to the next heartbeat.

        Heartbeats keep their own schedule, at a random phase of the interval chosen once,
        and reports sent on a change do not move it: otherwise a rollout, which changes a
        whole wave of nodes at the same moment, would leave all of them heartbeating in the
        same instant ever after (a thundering herd at every interval).
        """
        interval = self._session.heartbeat_interval
        now = self._clock.monotonic()
        if self._next_beat is None or self._next_beat > now + interval:
            # First turn, or the coordinator shortened the interval.
            self._next_beat = now + self._rand() * interval
        return max(0.0, self._next_beat - now)

    def _beat_due(self, *, timed_out: bool) -> None:
        """A report goes out now: if a heartbeat is due, it is this one."""
        if self._next_beat is not None:
            self._next_beat = next_heartbeat(
                self._next_beat,
                self._clock.monotonic(),
                self._session.heartbeat_interval,
                timed_out=timed_out,
            )

    async def step(self) -> None:
        """Wait for a change or the next heartbeat, then send one report."""
        changed = await sleep_or_event(self._clock, self._until_heartbeat(), self._changed)
        if changed:
            # Let a burst of changes (several jobs starting) collapse into one report.
            await self._clock.sleep(self._debounce)
        self._beat_due(timed_out=not changed)
        self._changed.clear()
        try:
            await self.send()
        except asyncio.CancelledError:
            raise
        except CoordinatorError as exc:
            await self._failed("report_failed", exc)
        except Exception as exc:  # a bug must not stop heartbeats
            log.exception("report_step_crashed")
            await self._failed("report_step_crashed", exc)
        else:
            self.failures = 0

    async def send(self) -> ReportResponse:
        """Send the current state; fix the seq and resend when the coordinator saw a newer one."""
        session = self._session
        identity = await session.ensure_identity()
        if identity.node_id != self._seq_node:
            self._new_node(identity.node_id)
        # What could not be written before may go through now; the report says either way.
        # (The seq reservation is tried below, for this report's seq.)
        self._writes.check()
        self._writes.retry(skip=(RESERVATION,))
        response: ReportResponse | None = None
        for _ in range(MAX_RESENDS):
            seq = self._last_seq + 1
            # Reserve the seq first: a report whose answer got lost is never resent with the
            # same seq, so the coordinator never has to reject a replay.
            self._reserve(seq)
            self._last_seq = seq
            request = ReportRequest(
                seq=seq,
                load=self._host.load(),
                resources=self._host.resources(),
                executions=self._manager.reports(),
                agent_version=agent_version(),
                conditions=self._writes.conditions(),
            )
            try:
                # A coordinator that holds a report for two heartbeats without answering
                # (paused) is left for the next: the node must be heard within its TTL.
                response = await self._client.report(
                    identity.node_token,
                    request,
                    deadline=max(REPORT_DEADLINE_FLOOR, 2 * self._session.heartbeat_interval),
                )
            except TokenRejected as exc:
                self._metrics.sync_errors.labels("report", error_kind(exc)).inc()
                identity = await session.reregister(identity)
                self._new_node(identity.node_id)
                continue
            if response.accepted:
                break
            log.info("report_seq_behind", seq=request.seq, last_seq=response.last_seq)
            self._last_seq = max(self._last_seq, response.last_seq)
        if response is None:
            raise CoordinatorUnavailable("the node token was rejected again after registering")
        session.mark_contact(self._clock.monotonic())
        self.sent += 1
        self.last_response = response
        if response.rotate_token:
            try:
                await session.rotate_token(identity)
            except CoordinatorError as exc:
                # The current token stays valid: the next report asks again.
                log.warning("node_token_rotation_failed", error=str(exc))
        if response.index > session.index:
            session.repoll.set()
        return response

    def _new_node(self, node_id: str) -> None:
        """A new identity: its seqs start over at 1 (what the file holds for the old one
        is only higher, so it may stay until the next reservation)."""
        self._seq_node, self._last_seq, self._reserved = node_id, 0, 0

    def _reserve(self, seq: int) -> None:
        """Make sure the seq file covers ``seq``; when it cannot be written, go on anyway.

        While it fails, every report tries again (its seq is above what the file holds).
        """
        ceiling = seq_reservation(seq, self._reserved)
        if ceiling is not None:
            self._writes.attempt(RESERVATION, partial(self._save_reservation, ceiling))

    def _save_reservation(self, ceiling: int) -> None:
        self._store.save_seq(ceiling)
        self._reserved = max(self._reserved, ceiling)

    async def _failed(self, event: str, exc: Exception) -> None:
        delay = report_retry_delay(
            self.failures, self._backoff, self._rand, self._session.heartbeat_interval
        )
        if isinstance(exc, CoordinatorUnavailable) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)  # a coordinator shedding load said when
        self.failures += 1
        self._metrics.sync_errors.labels("report", error_kind(exc)).inc()
        log.warning(event, error=str(exc), retry_in=round(delay, 3), failures=self.failures)
        if isinstance(exc, CoordinatorUnavailable):
            self._session.mark_unreachable(self._clock.monotonic())
        self.notify()  # whatever failed to go out goes out right after the backoff
        # ... or as soon as the sync loop finds a coordinator again.
        await sleep_or_event(self._clock, delay, self._session.reconnected)
