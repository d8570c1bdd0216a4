"""The thin loops around the planner: the rollout driver and the node heartbeat monitor."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from coordinator.domain.nodes import lost_nodes
from coordinator.domain.records import (
    AssignmentRecord,
    Event,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
)
from coordinator.engine.index import RolloutIndex
from coordinator.engine.observation import ObservationWindow
from coordinator.engine.planner import RolloutPlan, plan_rollout
from coordinator.engine.targets import fleet_nodes
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import Store
from coordinator.store.lease import Fenced
from coordinator.watch import Watches
from shared.clock import ZERO_TIME, Clock
from shared.errors import NotFound, StoreUnavailable
from shared.nodes import NodeStatus

log = structlog.get_logger("fleetwave.engine")


Action = Callable[[JobRecord], tuple[JobRecord, list[Event]]]
"""An operator action: the job record it leaves, and the events that say what it did."""


class JobLocks:
    """One lock per job: the API and the engine never write the same job concurrently."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def __call__(self, job: str) -> asyncio.Lock:
        return self._locks[job]


def job_key(name: str) -> str:
    return f"job:{name}"


def node_key(node_id: str) -> str:
    return f"node:{node_id}"


RETRY_SECONDS = 1.0
"""How soon a job whose evaluation failed is evaluated again."""


class RolloutDriver:
    """Runs the planner for every job that was kicked or whose timer is due, one at a time."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        watches: Watches,
        locks: JobLocks,
        window: ObservationWindow,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or CoordinatorMetrics()
        self._clock = clock
        self._watches = watches
        self._locks = locks
        self._window = window
        self._dirty: set[str] = set()
        # Evaluate every job at once after start: level-triggered recovery. Deadlines live
        # in memory only as timers; that first evaluation derives them again from the
        # stored state, so no rollout waits for a timer that died with the last process.
        self._all_dirty = True
        self._timers: dict[str, datetime] = {}
        # Per job, what its evaluations before worked out: the next one plans from what
        # changed. In memory only; a new leader, or a failed write, builds it again.
        self._indexes: dict[str, RolloutIndex] = {}
        self._wakeup = asyncio.Event()
        self.epoch: int | None = None
        """The leadership epoch its writes are fenced with (None: the only coordinator)."""
        self.on_fenced: Callable[[], None] = lambda: None
        """Called when a write was refused because another coordinator leads now."""

    def reset(self) -> None:
        """Forget every timer and kick (leadership was lost): whoever leads next derives
        them again from the stored state."""
        self._dirty.clear()
        self._timers.clear()
        self._indexes.clear()
        self._all_dirty = True
        self._wakeup.clear()

    def kick(self, job: str | None = None) -> None:
        """Ask for ``job`` (or every job, when None) to be evaluated soon."""
        if job is None:
            self._all_dirty = True
        else:
            self._dirty.add(job)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wait()
            started = self._clock.monotonic()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Fenced as exc:
                # Another coordinator leads now: this one's term is over.
                log.warning("engine_fenced", error=exc.message, epoch=self.epoch)
                self.on_fenced()
                await self._clock.sleep(1.0)
            except StoreUnavailable as exc:
                # An outage, not a bug: the store counts its failed writes; try again soon.
                log.warning("engine_step_postponed", error=exc.message)
                await self._clock.sleep(1.0)
            except Exception:
                log.exception("engine_step_failed")
                self._metrics.engine_step_errors.inc()
                await self._clock.sleep(1.0)
            # Planning a large fleet holds the event loop; under a stream of kicks give the
            # agents' requests at least as much time as the step took (the engine never
            # takes more than half the loop), and let the kicks meanwhile coalesce.
            await self._clock.sleep(self._clock.monotonic() - started)

    async def _wait(self) -> None:
        if self._wakeup.is_set() or self._all_dirty or self._dirty:
            return
        now = self._clock.now()
        delay = 60.0
        if self._timers:
            delay = max(0.0, (min(self._timers.values()) - now).total_seconds())
        waiter = asyncio.ensure_future(self._wakeup.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def step(self) -> None:
        """Evaluate every dirty job and every job whose timer is due."""
        self._wakeup.clear()
        started = self._clock.monotonic()
        now = self._clock.now()
        if self._all_dirty:
            self._all_dirty = False
            self._dirty.update(job.name for job in await self._store.list_jobs())
        due = {name for name, at in self._timers.items() if at <= now}
        names, self._dirty = self._dirty | due, set()
        pending = sorted(names)
        for index, name in enumerate(pending):
            self._timers.pop(name, None)
            try:
                await self.evaluate(name)
            except StoreUnavailable:
                # Nothing can be written now: this job and the rest stay due.
                self._dirty.update(pending[index:])
                raise
            except asyncio.CancelledError:
                self._dirty.update(pending[index:])
                raise
            except Exception:
                # A bug (or a conflict) in one job must not stall the others: try it again
                # a little later, and go on with the rest.
                log.exception("engine_evaluation_failed", job=name)
                self._metrics.engine_step_errors.inc()
                self._timers[name] = now + timedelta(seconds=RETRY_SECONDS)
        self._metrics.engine_step_duration.observe(self._clock.monotonic() - started)

    async def evaluate(self, name: str) -> None:
        started = self._clock.monotonic()
        async with self._locks(name):
            job = await self._store.get_job(name)
            if job is None:
                self._indexes.pop(name, None)
                return
            plan = await self._apply(job, job, [], epoch=self.epoch)
        self._metrics.engine_evaluation_duration.observe(self._clock.monotonic() - started)
        self._schedule(name, plan)

    async def act(self, name: str, action: Action, *, by: str = "") -> JobRecord:
        """Apply an operator's ``action`` to job ``name`` and the engine's reaction to it as
        one plan, in one transaction, with the action's events (attributed to ``by``).

        Any coordinator may act: the write is a compare-and-set on the job's revision, so
        it applies to the state it was decided on or not at all (Conflict). The leader's
        engine takes it from there.
        """
        async with self._locks(name):
            job = await self._store.get_job(name)
            if job is None:
                raise NotFound(f"job {name!r} not found", {"job": name})
            acted, events = action(job)
            events = [event.model_copy(update={"by": by}) for event in events]
            plan = await self._apply(job, acted, events, epoch=None)
        self._schedule(name, plan)
        self.kick(name)  # wherever the engine runs, it looks again (timers, next waves)
        return plan.job

    async def _apply(
        self, stored: JobRecord, job: JobRecord, events: list[Event], *, epoch: int | None
    ) -> RolloutPlan:
        """Plan ``job`` (``stored`` as an action left it) and write what changed."""
        name = job.name
        index = self._indexes.setdefault(name, RolloutIndex())
        try:
            plan, now = await self._plan(job, index)
            if not events and not plan.changed(stored):
                return plan
            plan = replace(plan, events=[*events, *plan.events])
            indexes = await self._store.apply_plan(
                plan.job,
                expected_revision=stored.status.revision,
                changes=plan.changes,
                events=plan.events,
                now=now,
                epoch=epoch,
            )
        except BaseException:
            # Not planned or not applied (or not known to be): the index may describe a
            # plan that is not the stored state. The next evaluation starts from scratch.
            self._indexes.pop(name, None)
            raise
        self._metrics.engine_plans_applied.inc()
        self._announce(stored, plan.job, plan.events)
        for node_id in indexes:
            self._watches.bump(node_key(node_id))
        self._watches.bump(job_key(name))
        return plan

    async def _plan(self, job: JobRecord, index: RolloutIndex) -> tuple[RolloutPlan, datetime]:
        """Plan ``job`` from the store's live state and change log when it has them."""
        name = job.name
        live = self._store.live()
        changed: set[str] | None = None
        if live is not None:
            # Live views and the change log, read without an await until planned.
            nodes: Mapping[str, NodeRecord] = live.fleet
            assignments: Mapping[str, AssignmentRecord] = live.job_assignments(name)
            executions: Mapping[str, ExecutionRecord] = live.job_executions(name)
            changed = live.changes.since(index.cursor) if index.cursor else None
            if changed is None and index.cursor:
                # The log no longer reaches back that far, and the index holds the live
                # views themselves (nothing to compare them with): build it afresh.
                index.reset()
            index.cursor = live.changes.end
        else:
            nodes = {n.id: n for n in fleet_nodes(await self._store.list_nodes())}
            assignments = await self._store.job_assignments(name)
            executions = await self._store.job_executions(name)
        observation = self._window.observe()
        now = self._clock.now()
        plan = plan_rollout(job, nodes, assignments, executions, now, observation, index, changed)
        return plan, now

    def _schedule(self, name: str, plan: RolloutPlan) -> None:
        if plan.wake_at is not None:
            # A tiny margin so a deadline is evaluated after it has passed, not just before.
            self._timers[name] = plan.wake_at + timedelta(milliseconds=5)

    @staticmethod
    def _announce(before: JobRecord, after: JobRecord, events: list[Event]) -> None:
        for event in events:
            log.info(
                event.kind,
                job=event.job,
                node=event.node,
                old=event.old,
                new=event.new,
                reason=event.reason,
            )
        if before.status.revision != after.status.revision:
            log.debug("job_revised", job=after.name, revision=after.status.revision)


class NodeMonitor:
    """Marks nodes ``down`` when the coordinator has heard nothing from them for their TTL,
    which follows the heartbeat interval each may be using (``Heartbeats.ttl``).

    Only silence the coordinator could have observed counts: after its own start, or a
    pause of its process, a node gets a whole TTL from that moment to be heard, however
    old its last stored heartbeat is (heartbeats are written lazily, and none can arrive
    while the coordinator is down or stopped).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        driver: RolloutDriver,
        window: ObservationWindow,
        heartbeats: Heartbeats,
        refused_at: Callable[[], datetime] = lambda: ZERO_TIME,
    ) -> None:
        self._store = store
        self._clock = clock
        self._driver = driver
        self._window = window
        self._heartbeats = heartbeats
        self._refused_at = refused_at
        """When the coordinator last refused an agent request (admission control)."""

    def period(self) -> float:
        """Seconds between ticks: a quarter of the shortest TTL, within 0.1 to 5 s."""
        return max(0.1, min(5.0, self._heartbeats.shortest_ttl().total_seconds() / 4))

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Fenced as exc:
                log.warning("node_monitor_fenced", error=exc.message)
                self._driver.on_fenced()
            except StoreUnavailable as exc:
                log.warning("node_monitor_postponed", error=exc.message)
            except Exception:
                log.exception("node_monitor_failed")
            await self._clock.sleep(self.period())

    async def tick(self) -> list[str]:
        """Mark every node not heard from for its TTL of observed time; return their ids.

        Nor is silence observed while the coordinator refuses agents (a reconnect storm
        after a restart): a node gets a whole TTL from the last refusal to be heard."""
        observation = self._window.observe()
        refused_at = self._refused_at()
        now = self._clock.now()

        def heard_since(last: datetime) -> datetime:
            return max(observation.heard_since(last), refused_at)

        lost = []
        for decision in lost_nodes(
            await self._store.list_nodes(), now, self._heartbeats.ttl, heard_since
        ):
            node = decision.node
            epoch = self._driver.epoch
            await self._store.set_node_status(node.id, NodeStatus.DOWN, epoch=epoch)
            lost.append(node.id)
            self._driver.kick()  # before the event: a failed append must not hide it
            await self._store.append_events([decision.event], epoch=epoch)
            log.warning("node_down", node_id=node.id, name=node.name)
        return lost
