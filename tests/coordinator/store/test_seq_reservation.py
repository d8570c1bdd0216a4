"""An acknowledged report seq is never accepted twice, even across a crash, while heartbeats
are still acknowledged from memory: every written report reserves SEQ_RESERVATION seqs ahead
on disk, and a store that opens starts each node at its reservation.

Real SqliteStore on real files; a crash is a copy of the database file and its WAL taken
while the store runs (what kill -9 leaves), opened by a second store."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.backoff import BackoffPolicy
from agent.daemon import Agent
from coordinator.api.deps import DEPS
from coordinator.app import create_app
from coordinator.domain.records import NodeRecord
from coordinator.engine.driver import JobLocks
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.sqlite import SEQ_RESERVATION, SqliteStore
from coordinator.watch import Watches
from shared.nodes import Load
from tests.agent.factories import free_port, settings
from tests.coordinator.conftest import JOIN, Harness
from tests.coordinator.store.conftest import CLOCK
from tests.coordinator.store.faults import crash_copy
from tests.helpers import eventually


@contextlib.asynccontextmanager
async def opened(path: Path | str) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def report(store: SqliteStore, seq: int) -> tuple[bool, int]:
    """A report that says only "alive" (after the first, a heartbeat): accepted, last_seq."""
    outcome = await store.record_report(
        "n1", seq=seq, load=Load(), resources=None, executions=[], now=CLOCK.now()
    )
    return outcome.accepted, outcome.last_seq


def seq_columns(path: str) -> tuple[int, int]:
    """Node n1's last_seq and seq_reserved as the file holds them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT last_seq, seq_reserved FROM nodes WHERE id = 'n1'").fetchone()
    return int(row[0]), int(row[1])


class TestAcrossACrash:
    async def test_no_acknowledged_seq_is_accepted_after_a_crash(
        self, store: SqliteStore, tmp_path: Path
    ) -> None:
        """Seqs 1..50 acknowledged (49 of them from memory only), then a crash: the store on
        the crash image refuses every one of them with its floor, and takes the next."""
        for seq in range(1, 51):
            assert await report(store, seq) == (True, seq)
        assert seq_columns(store.path)[0] == 1  # the heartbeats are not on disk
        image = crash_copy(store, tmp_path / "crashed")
        floor = 1 + SEQ_RESERVATION
        async with opened(image) as after:
            for seq in range(1, 51):
                assert await report(after, seq) == (False, floor)
            assert await report(after, floor + 1) == (True, floor + 1)

    async def test_a_clean_restart_starts_from_the_last_seq(self, tmp_path: Path) -> None:
        """A store closed cleanly has written every heartbeat and releases its reservations:
        the next seq is accepted after a restart, without a refusal."""
        async with opened(tmp_path / "fleetwave.db") as store:
            await store.insert_node(
                NodeRecord(id="n1", name="a", token_hash="h1", registered_at=CLOCK.now())
            )
            for seq in range(1, 11):
                await report(store, seq)
        async with opened(tmp_path / "fleetwave.db") as store:
            assert await report(store, 10) == (False, 10)
            assert await report(store, 11) == (True, 11)


class TestReservation:
    async def test_heartbeats_within_the_reservation_stay_in_memory(
        self, store: SqliteStore
    ) -> None:
        """A written report reserves SEQ_RESERVATION seqs; heartbeats up to there are not
        written, and the first one beyond is written at once with a new reservation."""
        assert await report(store, 1) == (True, 1)
        assert seq_columns(store.path) == (1, 1 + SEQ_RESERVATION)
        last_lazy = 1 + SEQ_RESERVATION
        for seq in range(2, last_lazy + 1):
            assert await report(store, seq) == (True, seq)
        assert seq_columns(store.path) == (1, 1 + SEQ_RESERVATION)
        beyond = last_lazy + 1
        assert await report(store, beyond) == (True, beyond)
        assert seq_columns(store.path) == (beyond, beyond + SEQ_RESERVATION)

    async def test_a_flush_keeps_the_reservation(self, store: SqliteStore) -> None:
        """Writing heartbeats lazily moves last_seq on disk, never the reservation."""
        await report(store, 1)
        await report(store, 2)
        await store.flush_liveness()
        assert seq_columns(store.path) == (2, 1 + SEQ_RESERVATION)


FAST = BackoffPolicy(base=0.05, cap=0.2)


async def last_seq(store: SqliteStore, node_id: str) -> int:
    node = await store.get_node(node_id)
    assert node is not None
    return node.last_seq


class TestRealAgent:
    async def test_the_agent_catches_up_in_one_round_after_a_crash(
        self, harness: Harness, tmp_path: Path, aiohttp_server: Any
    ) -> None:
        """A real agent heartbeats against a coordinator that is killed; against a
        coordinator on the crash image its next report is refused once (with the floor),
        and the resend right after it is accepted."""
        deps = harness.client.app[DEPS]
        deps.heartbeats = Heartbeats.fixed(0.05)
        port = free_port()
        first = str(harness.client.make_url("")).rstrip("/")
        second = f"http://127.0.0.1:{port}"
        agent = Agent(
            settings(tmp_path / "agent", coordinators=[first, second]),
            join_token=JOIN,
            backoff=FAST,
            report_debounce=0.01,
            poll_margin=2.0,
        )
        await agent.start()
        try:
            node_id = ""

            async def heartbeating() -> bool:
                nonlocal node_id
                node = await harness.store.find_node("node-1")
                node_id = node.id if node is not None else ""
                return node is not None and node.last_seq >= 6

            await eventually(heartbeating)
            image = crash_copy(harness.store, tmp_path / "crashed")
            await harness.client.server.close()  # the coordinator is gone
            async with opened(image) as store:
                metrics = CoordinatorMetrics()
                restarted = dataclasses.replace(
                    deps, store=store, metrics=metrics, watches=Watches(), locks=JobLocks()
                )
                await aiohttp_server(create_app(restarted), host="127.0.0.1", port=port)
                floor = await last_seq(store, node_id)
                assert floor > await last_seq(harness.store, node_id)

                async def caught_up() -> bool:
                    return await last_seq(store, node_id) > floor

                await eventually(caught_up)
                ignored = metrics.registry.get_sample_value(
                    "fleetwave_agent_reports_received_total", {"result": "ignored"}
                )
                assert ignored == 1
        finally:
            await agent.shutdown()
