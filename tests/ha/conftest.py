"""HA fixtures: a fresh database on the test server, and three coordinators sharing it."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.harness import HaFleet
from tests.pg import fresh_database, pg_url  # noqa: F401 - a fixture of these tests


@pytest.fixture
def ha_database() -> Iterator[str]:
    """The URL of a new database for this test only, dropped afterwards (for sync tests:
    the fleet's calls block)."""
    loop = asyncio.new_event_loop()
    database = fresh_database()
    try:
        url = loop.run_until_complete(database.__aenter__())
        try:
            yield url
        finally:
            loop.run_until_complete(database.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.fixture
def ha(request: pytest.FixtureRequest, tmp_path: Path, ha_database: str) -> Iterator[HaFleet]:
    """Three coordinators on ``ha_database`` (not started yet), the fault suite's short
    heartbeats (500 ms, a node is down after 4 s) and a 2 s lease; all stopped afterwards.
    Its seed is ``FLEETWAVE_FAULT_SEED``, else derived from the test's name (printed)."""
    seed = int(os.environ.get("FLEETWAVE_FAULT_SEED") or zlib.crc32(request.node.name.encode()))
    print(f"{request.node.name}: seed {seed} (rerun with FLEETWAVE_FAULT_SEED={seed})")
    fleet = HaFleet(tmp_path, seed, database_url=ha_database)
    try:
        yield fleet
    finally:
        fleet.close()
        print(f"logs and records: {tmp_path}")
