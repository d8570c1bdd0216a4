"""Heartbeat-only reports: applied to memory at once, written lazily; state changes stay
durable before the answer. Real SqliteStore on a real file; a plain SQLite connection to the
same file shows what is on disk."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

from coordinator.domain.records import NodeRecord
from coordinator.store.sqlite import FLUSH_CHUNK, SqliteStore
from shared.nodes import Eligibility, Load, NodeStatus
from shared.protocol import ExecutionReport, ExecutionState
from tests.coordinator.store.conftest import CLOCK


def stored(path: str) -> list[NodeRecord]:
    """Every node row as the file holds it, ``last_seq`` from its column."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT record, last_seq FROM nodes ORDER BY id").fetchall()
    return [
        NodeRecord.model_validate_json(record).model_copy(update={"last_seq": last_seq})
        for record, last_seq in rows
    ]


def on_disk(store: SqliteStore) -> NodeRecord:
    """Node n1 as the file holds it."""
    (node,) = [n for n in stored(store.path) if n.id == "n1"]
    return node


def healthy(state: ExecutionState = ExecutionState.HEALTHY) -> list[ExecutionReport]:
    return [ExecutionReport(job="web", version=1, state=state)]


async def report(store: SqliteStore, seq: int, state: ExecutionState, at: int) -> bool:
    outcome = await store.record_report(
        "n1",
        seq=seq,
        load=Load(cpu_percent=float(seq)),
        resources=None,
        executions=healthy(state),
        now=CLOCK.now() + timedelta(seconds=at),
    )
    return outcome.accepted


class TestLiveness:
    async def test_state_changes_are_durable_before_the_answer(self, store: SqliteStore) -> None:
        """A report that changes an execution (or brings the node up) is on disk at once."""
        assert await report(store, 1, ExecutionState.STARTING, at=1)
        node = on_disk(store)
        assert (node.last_seq, node.status) == (1, NodeStatus.READY)
        assert (await store.job_executions("web"))["n1"].state == ExecutionState.STARTING

    async def test_heartbeats_live_in_memory_until_flushed(self, store: SqliteStore) -> None:
        """Same state again: visible at once through the store, on disk only after a flush."""
        assert await report(store, 1, ExecutionState.HEALTHY, at=1)
        assert await report(store, 2, ExecutionState.HEALTHY, at=2)
        node = await store.get_node("n1")
        assert node is not None
        assert (node.last_seq, node.load.cpu_percent) == (2, 2.0)
        assert on_disk(store).last_seq == 1
        await store.flush_liveness()
        persisted = on_disk(store)
        assert (persisted.last_seq, persisted.last_heartbeat) == (2, node.last_heartbeat)

    async def test_replays_are_refused_without_a_write(self, store: SqliteStore) -> None:
        """A report with an old seq is refused, also on the quick path."""
        assert await report(store, 5, ExecutionState.HEALTHY, at=1)
        assert not await report(store, 5, ExecutionState.HEALTHY, at=2)
        assert not await report(store, 3, ExecutionState.FAILED, at=3)
        assert (await store.job_executions("web"))["n1"].state == ExecutionState.HEALTHY

    async def test_close_writes_what_memory_held(self, tmp_path: Path) -> None:
        """Closing the store (coordinator shutdown) flushes the pending liveness."""
        store = SqliteStore(tmp_path / "fleetwave.db")
        await store.open()
        await store.insert_node(
            NodeRecord(id="n1", name="a", token_hash="h1", registered_at=CLOCK.now())
        )
        assert await report(store, 1, ExecutionState.HEALTHY, at=1)
        assert await report(store, 2, ExecutionState.HEALTHY, at=2)
        await store.close()
        assert on_disk(store).last_seq == 2

    async def test_an_older_copy_never_rolls_liveness_back(self, store: SqliteStore) -> None:
        """A write computed from an older copy of the node keeps the newer heartbeat, and the
        next flush persists it."""
        assert await report(store, 1, ExecutionState.HEALTHY, at=1)
        stale = await store.get_node("n1")
        assert stale is not None
        assert await report(store, 2, ExecutionState.HEALTHY, at=2)
        store._mirror.put_node(stale.model_copy(update={"eligibility": Eligibility.INELIGIBLE}))
        node = await store.get_node("n1")
        assert node is not None
        assert (node.last_seq, node.eligibility) == (2, Eligibility.INELIGIBLE)
        await store.flush_liveness()
        assert on_disk(store).last_seq == 2


async def test_flush_writes_every_node_across_chunks(tmp_path: Path) -> None:
    """A flush of more nodes than one chunk writes all of them."""
    store = SqliteStore(tmp_path / "fleetwave.db")
    await store.open()
    try:
        count = 2 * FLUSH_CHUNK + 7
        for i in range(count):
            await store.insert_node(
                NodeRecord(id=f"n{i}", name=f"n{i}", token_hash=f"h{i}", registered_at=CLOCK.now())
            )
        for seq in (1, 2):  # the first report brings each node up, the second is a heartbeat
            for i in range(count):
                await store.record_report(
                    f"n{i}", seq=seq, load=Load(), resources=None, executions=[], now=CLOCK.now()
                )
        await store.flush_liveness()
        assert {n.last_seq for n in stored(store.path)} == {2}
    finally:
        await store.close()
