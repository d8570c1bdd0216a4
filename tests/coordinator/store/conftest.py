"""Fixtures for store tests: a real SqliteStore on a real file, holding one node ``n1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator.domain.records import NodeRecord
from coordinator.store.sqlite import SqliteStore
from shared.clock import FakeClock

CLOCK = FakeClock()
"""The time the store tests report at (it never moves on its own)."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "fleetwave.db")
    await store.open()
    await store.insert_node(
        NodeRecord(id="n1", name="a", token_hash="h1", registered_at=CLOCK.now())
    )
    yield store
    await store.close()
