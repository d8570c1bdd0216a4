"""Several coordinators on one database: who leads, and what a follower does meanwhile.

Exactly one member runs the rollout engine, its timers and node liveness: the holder of a
lease in the database. The lease has an **epoch** that grows at every takeover, and every
write the engine makes carries it; the store checks it in the write's own transaction, so a
member that was paused or cut off past its lease can never apply a decision (fencing). A
leader that cannot renew steps down before its lease can run out; a follower takes the
lease once it has expired. Every member serves the whole API meanwhile: the database is
shared, and changes made on one member wake the long-polls held on the others (the store's
``on_remote_change``).

With SQLite there is one coordinator: it leads from its start, with no lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import structlog

from coordinator.engine.driver import NodeMonitor, RolloutDriver, job_key, node_key
from coordinator.engine.observation import ObservationWindow
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.lease import DuplicateMember, LeaseState, Member
from coordinator.watch import FEED, Watches
from shared.clock import Clock

log = structlog.get_logger("fleetwave.cluster")


@runtime_checkable
class LeaseStore(Protocol):
    """What a store shared by several coordinators offers for electing one of them."""

    async def try_lease(self, member_id: str, address: str, ttl_seconds: float) -> LeaseState: ...

    async def release_lease(self, member_id: str) -> None: ...

    async def lease(self) -> LeaseState: ...

    async def list_members(self) -> list[Member]: ...

    def on_remote_change(self, listener: Callable[[list[str]], None]) -> None: ...


@dataclass(frozen=True)
class ClusterView:
    """What ``GET /v1/cluster`` and ``/readyz`` say."""

    member_id: str
    address: str
    role: str
    """``leader`` or ``follower``."""
    leader_id: str
    leader_address: str
    epoch: int
    members: Sequence[Member]


def solo_view(member_id: str, address: str, started_at: datetime, now: datetime) -> ClusterView:
    """The view of a coordinator alone on its database (SQLite): it leads, at epoch 0."""
    me = Member(id=member_id, address=address, started_at=started_at, last_seen=now, leader=True)
    return ClusterView(member_id, address, "leader", member_id, address, 0, [me])


class Cluster:
    """This coordinator's part in the group: it leads, or follows and waits to lead.

    ``lease`` is a LeaseStore (PostgreSQL) or None (SQLite: the only member, always leader).
    """

    def __init__(
        self,
        lease: LeaseStore | None,
        *,
        member_id: str,
        address: str,
        clock: Clock,
        driver: RolloutDriver,
        monitor: NodeMonitor,
        window: ObservationWindow,
        watches: Watches,
        metrics: CoordinatorMetrics,
        lease_seconds: float = 3.0,
        started_at: datetime | None = None,
    ) -> None:
        self._lease = lease
        self.member_id = member_id
        self.address = address
        self._clock = clock
        self._driver = driver
        self._monitor = monitor
        self._window = window
        self._watches = watches
        self._metrics = metrics
        self._ttl = lease_seconds
        self._started_at = started_at or clock.now()
        self._engine: list[asyncio.Task[None]] = []
        self._valid_until = 0.0  # monotonic: our lease surely holds until then
        self.state = LeaseState(holder="", address="", epoch=0, held=False, expires_in=0.0)
        self._last_answer = clock.monotonic()  # the database last answered a lease attempt
        self._last_error = ""
        self.leading = False
        self._fenced_task: asyncio.Task[None] | None = None
        driver.on_fenced = self._fenced
        if lease is not None:
            lease.on_remote_change(self._remote_change)

    # timing

    @property
    def renew_every(self) -> float:
        """How often the leader renews: three tries within one lease."""
        return self._ttl / 3

    @property
    def forget_after(self) -> float:
        """A member not seen for this long is left out of the cluster view (it stopped)."""
        return max(30.0, self._ttl * 10)

    @property
    def poll_every(self) -> float:
        """How often a follower looks whether the lease has expired."""
        return self._ttl / 6

    # the loop

    async def run(self) -> None:
        """Lead or follow until cancelled; on a clean stop a leader hands the lease back."""
        if self._lease is None:
            self._become_leader(epoch=0)
            try:
                await asyncio.gather(*self._engine)
            finally:
                await self._stop_engine()
            return
        try:
            while True:
                await self.tick()
                await self._clock.sleep(self.renew_every if self.leading else self.poll_every)
        finally:
            was_leading = self.leading
            await self._step_down("coordinator stopping")
            if was_leading:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._lease.release_lease(self.member_id), 2.0)

    async def tick(self) -> None:
        """Try to take or renew the lease once, and act on the answer."""
        assert self._lease is not None
        started = self._clock.monotonic()
        try:
            state = await asyncio.wait_for(
                self._lease.try_lease(self.member_id, self.address, self._ttl),
                timeout=self.renew_every,
            )
        except asyncio.CancelledError:
            raise
        except DuplicateMember as exc:
            self._last_answer = self._clock.monotonic()  # the database did answer
            self._metrics.lease_failures.inc()
            log.error("member_id_in_use", member=self.member_id, error=exc.message)
            await self._step_down("another running coordinator uses this member id")
            return
        except Exception as exc:
            self._last_error = str(exc) or type(exc).__name__
            self._metrics.lease_failures.inc()
            log.warning("lease_failed", error=str(exc) or type(exc).__name__, leading=self.leading)
            if self.leading and self._clock.monotonic() >= self._valid_until - self.renew_every:
                # Renewal may not come in time: stop writing before the lease can lapse and
                # someone else takes it (fencing would refuse our writes anyway).
                await self._step_down("cannot renew the lease")
            return
        self.state = state
        self._last_answer = self._clock.monotonic()
        self._metrics.cluster_epoch.set(state.epoch)
        if state.held:
            self._valid_until = started + state.expires_in
            outcome = "renewed" if self.leading else "taken"
            self._metrics.lease_renewals.labels(outcome).inc()
            if not self.leading:
                self._become_leader(state.epoch)
            elif state.epoch != self._driver.epoch:
                # Lost and retaken between two ticks (a long pause): a new term.
                await self._step_down("the lease changed hands meanwhile")
                self._become_leader(state.epoch)
        else:
            self._metrics.lease_renewals.labels("follower").inc()
            if self.leading:
                await self._step_down(f"{state.holder} holds the lease (epoch {state.epoch})")

    # transitions

    def _become_leader(self, epoch: int) -> None:
        self.leading = True
        self._driver.epoch = epoch if self._lease is not None else None
        self._driver.reset()
        if self._lease is not None:
            # Heartbeats went to the previous leader, or to nobody: every node gets a whole
            # TTL from now before its silence counts.
            self._window.restart(f"became leader with epoch {epoch}")
        self._engine = [
            self._spawn(self._driver.run(), "rollout-driver"),
            self._spawn(self._monitor.run(), "node-monitor"),
        ]
        self._metrics.cluster_leader.set(1)
        self._metrics.leadership_changes.labels("became_leader").inc()
        log.info("leader_elected", member=self.member_id, epoch=epoch)

    async def _step_down(self, reason: str) -> None:
        if not self.leading:
            return
        self.leading = False
        await self._stop_engine()
        self._driver.epoch = None
        self._driver.reset()
        self._metrics.cluster_leader.set(0)
        self._metrics.leadership_changes.labels("stepped_down").inc()
        log.warning("leader_stepped_down", member=self.member_id, reason=reason)

    def _fenced(self) -> None:
        """The engine's write was refused: another member holds the lease. Step down now
        rather than at the next tick (from a task: the engine itself is being stopped)."""
        if self.leading and (self._fenced_task is None or self._fenced_task.done()):
            self._fenced_task = asyncio.create_task(
                self._step_down("a write was fenced: another coordinator leads")
            )

    async def _stop_engine(self) -> None:
        tasks, self._engine = self._engine, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @staticmethod
    def _spawn(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(work, name=name)

    # changes made on other members

    def _remote_change(self, keys: list[str]) -> None:
        """Another member committed a change: wake what waits for it here."""
        for key in keys:
            if key == "*":
                # The notification channel was lost and is back: anything may have changed.
                self._watches.bump_all()
                self._driver.kick()
            elif key.startswith("job:"):
                name = key[4:]
                self._watches.bump(job_key(name))
                self._driver.kick(name)
            elif key.startswith("node:"):
                self._watches.bump(node_key(key[5:]))
            elif key == "nodes":
                self._driver.kick()
            elif key in ("events", "tokens"):
                self._watches.bump(FEED)

    # views

    async def view(self) -> ClusterView:
        if self._lease is None:
            return solo_view(self.member_id, self.address, self._started_at, self._clock.now())
        now = self._clock.now()
        # The epoch as stored, like the members: the one this member last saw may be older
        # (a follower's tick, or every tick during a database outage, may not have come yet).
        lease = await self._lease.lease()
        members = [
            m
            for m in await self._lease.list_members()
            if m.leader or (now - m.last_seen).total_seconds() <= self.forget_after
        ]
        leader = next((m for m in members if m.leader), None)
        return ClusterView(
            member_id=self.member_id,
            address=self.address,
            role="leader" if self.leading else "follower",
            leader_id=leader.id if leader else "",
            leader_address=leader.address if leader else "",
            epoch=lease.epoch,
            members=members,
        )

    def database_problem(self) -> str | None:
        """Why this coordinator should not get traffic now: its database has not answered
        a lease attempt for longer than a lease (None with SQLite, or while it answers)."""
        if self._lease is None:
            return None
        silent = self._clock.monotonic() - self._last_answer
        if silent <= self._ttl:
            return None
        cause = self._last_error or "no answer"
        return f"the database has not answered for {silent:.0f}s ({cause})"

    @property
    def role(self) -> str:
        return "leader" if self.leading else "follower"
