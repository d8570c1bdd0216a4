"""Node conditions in the store: a report that changes them is written before its answer, one
that repeats them is a heartbeat like any other. Real SqliteStore on a real file."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

from coordinator.domain.records import NodeRecord
from coordinator.store.sqlite import SqliteStore
from shared.nodes import DATA_DIR_UNWRITABLE, Load, NodeCondition
from tests.coordinator.store.conftest import CLOCK


def full_disk(message: str = "[Errno 28] No space left on device") -> NodeCondition:
    return NodeCondition(type=DATA_DIR_UNWRITABLE, message=message, since=CLOCK.now())


def on_disk(store: SqliteStore) -> tuple[int, list[NodeCondition]]:
    """Node n1's last seq column and conditions as the file holds them."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        record, last_seq = conn.execute("SELECT record, last_seq FROM nodes").fetchone()
    return last_seq, NodeRecord.model_validate_json(record).conditions


async def report(store: SqliteStore, seq: int, conditions: list[NodeCondition]) -> None:
    outcome = await store.record_report(
        "n1",
        seq=seq,
        load=Load(),
        resources=None,
        executions=[],
        now=CLOCK.now() + timedelta(seconds=seq),
        conditions=conditions,
    )
    assert outcome.accepted


class TestConditions:
    async def test_changes_are_durable_repeats_are_heartbeats(self, store: SqliteStore) -> None:
        """A condition that appears, changes its message or clears is on disk at once; the
        same conditions again only update memory, like any heartbeat."""
        await report(store, 1, [])
        await report(store, 2, [full_disk()])
        assert on_disk(store) == (2, [full_disk()])
        await report(store, 3, [full_disk()])
        assert on_disk(store) == (2, [full_disk()])  # a heartbeat: flushed later
        node = await store.get_node("n1")
        assert node is not None
        assert (node.last_seq, node.conditions) == (3, [full_disk()])
        await report(store, 4, [full_disk("[Errno 30] Read-only file system")])
        assert on_disk(store) == (4, [full_disk("[Errno 30] Read-only file system")])
        await report(store, 5, [])
        assert on_disk(store) == (5, [])

    async def test_conditions_survive_a_restart(self, store: SqliteStore, tmp_path: Path) -> None:
        """A reopened store shows the conditions of the node's last report."""
        await report(store, 1, [full_disk()])
        await store.close()
        reopened = SqliteStore(tmp_path / "fleetwave.db")
        await reopened.open()
        try:
            node = await reopened.get_node("n1")
            assert node is not None
            assert node.conditions == [full_disk()]
            assert node.to_api().conditions == [full_disk()]
        finally:
            await reopened.close()
