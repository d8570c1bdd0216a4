"""The election loop's decisions: when a coordinator leads, when it steps down, and what a
change made on another coordinator wakes here.

The lease store is a fake of our own seam (``cluster.LeaseStore``) whose answers each test
sets; the driver, node monitor, observation window and watches are the real ones over a
MemoryStore, on a FakeClock. The real lease in PostgreSQL is tested in
tests/coordinator/store/test_postgres.py, and whole coordinators failing over in tests/ha/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from coordinator.cluster import Cluster
from coordinator.engine.driver import JobLocks, NodeMonitor, RolloutDriver, job_key, node_key
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.lease import LeaseState, Member
from coordinator.store.memory import MemoryStore
from coordinator.watch import FEED, Watches
from shared.clock import FakeClock


class FakeLease:
    """Answers ``try_lease`` with whatever the test says the database would."""

    def __init__(self) -> None:
        self.answer: LeaseState | Exception = LeaseState("", "", 0, held=False, expires_in=0)
        self.stored: LeaseState | None = None
        self.released: list[str] = []
        self.listeners: list[Callable[[list[str]], None]] = []

    def grant(self, epoch: int, expires_in: float = 3.0) -> None:
        self.answer = LeaseState("me", "http://me", epoch, held=True, expires_in=expires_in)

    def lose(self, epoch: int, holder: str = "other") -> None:
        self.answer = LeaseState(holder, "http://other", epoch, held=False, expires_in=3.0)

    async def try_lease(self, member_id: str, address: str, ttl_seconds: float) -> LeaseState:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def release_lease(self, member_id: str) -> None:
        self.released.append(member_id)

    async def lease(self) -> LeaseState:
        """The lease as stored: ``stored`` when a test set it (another member acted since
        this one's last tick), else the last answer."""
        if self.stored is not None:
            return self.stored
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def list_members(self) -> list[Member]:
        return []

    def on_remote_change(self, listener: Callable[[list[str]], None]) -> None:
        self.listeners.append(listener)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.watches = Watches()
        self.metrics = CoordinatorMetrics()
        self.window = ObservationWindow(self.clock, timedelta(seconds=30))
        self.driver = RolloutDriver(
            self.store, self.clock, self.watches, JobLocks(), self.window, self.metrics
        )
        monitor = NodeMonitor(
            self.store, self.clock, self.driver, self.window, Heartbeats.fixed(10.0)
        )
        self.lease = FakeLease()
        self.cluster = Cluster(
            self.lease,
            member_id="me",
            address="http://me",
            clock=self.clock,
            driver=self.driver,
            monitor=monitor,
            window=self.window,
            watches=self.watches,
            metrics=self.metrics,
            lease_seconds=3.0,
        )


@pytest.fixture
async def world() -> World:
    w = World()
    yield w  # type: ignore[misc]
    await w.cluster._step_down("test over")


def gauge(world: World, name: str) -> float:
    value = world.metrics.registry.get_sample_value(name)
    assert value is not None
    return value


async def test_a_follower_leads_once_it_holds_the_lease(world: World) -> None:
    await world.cluster.tick()
    assert not world.cluster.leading
    assert world.driver.epoch is None
    world.lease.grant(epoch=7)
    await world.cluster.tick()
    assert world.cluster.leading
    assert world.driver.epoch == 7, "every engine write is fenced with the new epoch"
    assert gauge(world, "fleetwave_cluster_leader") == 1
    assert gauge(world, "fleetwave_cluster_epoch") == 7


async def test_a_new_leader_judges_no_silence_from_before_its_term(world: World) -> None:
    world.clock.advance(120)  # heartbeats went to the old leader meanwhile
    world.lease.grant(epoch=2)
    await world.cluster.tick()
    observation = world.window.observe()
    assert observation.since == world.clock.now()
    assert not observation.can_judge_silence(world.clock.now() + timedelta(seconds=29))


async def test_the_leader_steps_down_when_another_holds_the_lease(world: World) -> None:
    world.lease.grant(epoch=3)
    await world.cluster.tick()
    world.lease.lose(epoch=4)
    await world.cluster.tick()
    assert not world.cluster.leading
    assert world.driver.epoch is None
    assert gauge(world, "fleetwave_cluster_leader") == 0


async def test_a_failed_renewal_steps_down_before_the_lease_can_lapse(world: World) -> None:
    world.lease.grant(epoch=3, expires_in=3.0)
    await world.cluster.tick()
    world.lease.answer = ConnectionRefusedError("database down")
    await world.cluster.tick()
    assert world.cluster.leading, "one failed renewal, with most of the lease left: lead on"
    world.clock.advance(2.1)  # within one renewal interval (1 s) of the lease's end
    await world.cluster.tick()
    assert not world.cluster.leading
    failures = world.metrics.registry.get_sample_value("fleetwave_cluster_lease_failures_total")
    assert failures == 2


async def test_a_fenced_write_steps_down_at_once(world: World) -> None:
    world.lease.grant(epoch=5)
    await world.cluster.tick()
    world.driver.on_fenced()  # what the driver calls when the store raises Fenced
    stepping_down = world.cluster._fenced_task
    assert stepping_down is not None
    await asyncio.wait_for(stepping_down, timeout=5)
    assert not world.cluster.leading
    assert world.driver.epoch is None


async def test_the_lease_retaken_in_a_new_epoch_is_a_new_term(world: World) -> None:
    world.lease.grant(epoch=5)
    await world.cluster.tick()
    world.lease.grant(epoch=6)  # lost and retaken while this process was paused
    await world.cluster.tick()
    assert world.cluster.leading
    assert world.driver.epoch == 6


async def test_changes_on_other_coordinators_wake_waiters_here(world: World) -> None:
    (listener,) = world.lease.listeners
    feed = world.watches.event(FEED)
    listener(["events"])
    assert feed.is_set(), "event streams see events another coordinator stored"
    job = world.watches.event(job_key("web"))
    node = world.watches.event(node_key("n1"))
    other = world.watches.event(node_key("n2"))
    listener(["job:web", "node:n1"])
    assert job.is_set()
    assert node.is_set()
    assert not other.is_set()
    listener(["*"])  # the channel was lost: anything may have changed
    assert other.is_set()


async def test_the_cluster_view_names_the_stored_epoch_not_the_last_one_seen(
    world: World,
) -> None:
    """After another member took the lease (here: during a database outage, before this
    member's next tick), GET /v1/cluster says the stored epoch, not the older one it saw."""
    world.lease.grant(epoch=1)
    await world.cluster.tick()
    world.lease.stored = LeaseState("other", "http://other", 2, held=False, expires_in=3.0)
    view = await world.cluster.view()
    assert view.epoch == 2
    assert world.cluster.state.epoch == 1, "(its own view is older: no tick since)"


async def test_a_silent_database_makes_the_coordinator_unready(world: World) -> None:
    """No failed write tells it (nothing was written): the lease attempts do."""
    await world.cluster.tick()
    assert world.cluster.database_problem() is None
    world.lease.answer = TimeoutError()
    world.clock.advance(2)
    await world.cluster.tick()
    assert world.cluster.database_problem() is None, "within one lease: still ready"
    world.clock.advance(2)
    await world.cluster.tick()
    problem = world.cluster.database_problem()
    assert problem is not None
    assert "has not answered for 4s (TimeoutError)" in problem
    world.lease.lose(epoch=1)
    await world.cluster.tick()
    assert world.cluster.database_problem() is None
