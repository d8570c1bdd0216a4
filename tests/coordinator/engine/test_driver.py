"""The engine's loops after the coordinator's own faults: a start, a pause of its process.

Real SqliteStore on a real file and the real app; the clock is a FakeClock, so a pause is
a jump of its monotonic time that the observation window sees as a gap, exactly as it sees
SIGSTOP/SIGCONT of the real process (see tests/faults/ for that, with real processes).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from coordinator.domain.records import NodeRecord
from coordinator.engine.driver import JobLocks, NodeMonitor, RolloutDriver
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.watch import Watches
from shared.clock import FakeClock
from shared.errors import StoreUnavailable
from shared.nodes import NodeStatus
from tests.coordinator.conftest import Harness, web_spec
from tests.coordinator.store.faults import writer

TTL = 30.0


class Engine:
    """A driver and a monitor over the harness's store, with a real observation window."""

    def __init__(self, harness: Harness) -> None:
        self.clock = harness.clock
        self.window = ObservationWindow(self.clock, timedelta(seconds=TTL))
        self.driver = RolloutDriver(
            harness.store, self.clock, Watches(), JobLocks(), self.window, CoordinatorMetrics()
        )
        self.monitor = NodeMonitor(
            harness.store, self.clock, self.driver, self.window, Heartbeats.fixed(TTL / 3)
        )

    def listen(self, seconds: float) -> None:
        """Time passes while the loop runs: the window's ticker observes every 0.25 s."""
        for _ in range(int(seconds / 0.25)):
            self.clock.advance(0.25)
            self.window.observe()


async def add_node(harness: Harness, node_id: str, seconds_ago: float) -> None:
    now = harness.clock.now()
    await harness.store.insert_node(
        NodeRecord(
            id=node_id,
            name=node_id,
            token_hash=f"h-{node_id}",
            status=NodeStatus.READY,
            registered_at=now - timedelta(hours=1),
            last_heartbeat=now - timedelta(seconds=seconds_ago),
        )
    )


async def status_of(harness: Harness, node_id: str) -> NodeStatus:
    node = await harness.store.get_node(node_id)
    assert node is not None
    return node.status


class TestObservationWindow:
    def test_a_start_is_a_blind_spot(self) -> None:
        """Right after it is made, the window has listened since now, for the grace."""
        clock = FakeClock()
        window = ObservationWindow(clock, timedelta(seconds=TTL))
        observation = window.observe()
        assert observation.since == clock.now()
        assert not observation.can_judge_silence(clock.now())
        assert observation.can_judge_silence(clock.now() + timedelta(seconds=TTL))

    def test_a_gap_in_the_loop_starts_a_new_window(self) -> None:
        """Observed at short intervals nothing changes; a long gap (a paused process)
        restarts the window at the moment it ends."""
        clock = FakeClock()
        gaps: list[float] = []
        window = ObservationWindow(
            clock, timedelta(seconds=TTL), gap_seconds=1.5, on_gap=lambda: gaps.append(1)
        )
        start = window.observe().since
        for _ in range(10):
            clock.advance(0.25)
            assert window.observe().since == start
        clock.advance(45)
        assert window.observe().since == clock.now()
        assert window.gaps == len(gaps) == 1


class TestNodeMonitor:
    async def test_restart_gives_every_node_a_ttl_to_be_heard(self, harness: Harness) -> None:
        """Stored heartbeats 36 s old (written lazily before a crash) mark no node down at
        start; a node still silent a TTL later is marked down."""
        await add_node(harness, "stale", seconds_ago=36)
        engine = Engine(harness)
        assert await engine.monitor.tick() == []
        engine.listen(TTL / 2)
        assert await engine.monitor.tick() == []
        engine.listen(TTL / 2 + 1)
        assert await engine.monitor.tick() == ["stale"]
        assert await status_of(harness, "stale") == NodeStatus.DOWN

    async def test_a_pause_is_not_blamed_on_the_nodes(self, harness: Harness) -> None:
        """After a 45 s pause of the coordinator (TTL 30 s) no node is marked down before
        it had a TTL to be heard."""
        await add_node(harness, "alive", seconds_ago=0)
        engine = Engine(harness)
        engine.listen(TTL + 1)  # long enough to pass the start's grace ...
        await harness.store.insert_node(
            NodeRecord(
                id="fresh",
                name="fresh",
                token_hash="h-fresh",
                status=NodeStatus.READY,
                registered_at=harness.clock.now(),
                last_heartbeat=harness.clock.now(),
            )
        )
        harness.clock.advance(45)  # ... then the process is stopped for 45 s
        assert await engine.monitor.tick() == []
        assert await status_of(harness, "fresh") == NodeStatus.READY


class TestDriverResumes:
    async def test_a_restarted_engine_evaluates_at_once(self, harness: Harness) -> None:
        """A new driver evaluates every job as soon as it runs, without waiting for a timer
        or a kick: the rollout is planned with no clock movement at all."""
        _, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        await harness.put_job(web_spec())
        assert (await harness.status("web"))["state"]["state_type"] == "pending"
        engine = Engine(harness)
        task = asyncio.create_task(engine.driver.run())
        try:
            for _ in range(200):
                if (await harness.status("web"))["state"]["state_type"] == "deploying":
                    break
                await asyncio.sleep(0.01)  # yields to the driver task; the clock never moves
            assert (await harness.status("web"))["state"]["state_type"] == "deploying"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TestDriverWhenWritesFail:
    async def test_a_job_whose_plan_could_not_be_written_stays_due(self, harness: Harness) -> None:
        """An evaluation whose write fails (here: SQLITE_READONLY) leaves the job due: the
        next step after writes work again evaluates it, without a kick or a timer."""
        _, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        await harness.put_job(web_spec())
        engine = Engine(harness)
        await writer(harness.store).execute("PRAGMA query_only = 1")
        with pytest.raises(StoreUnavailable):
            await engine.driver.step()
        assert (await harness.status("web"))["state"]["state_type"] == "pending"
        await writer(harness.store).execute("PRAGMA query_only = 0")
        await engine.driver.step()
        assert (await harness.status("web"))["state"]["state_type"] == "deploying"
