"""Two coordinators configured with the same member id: only one process can ever hold the
lease, the other is told why, and takes over only once the first has been gone a while.

Real PostgreSQL (a fresh database per test), two real PostgresStores standing in for the
two coordinator processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coordinator.domain.records import Event
from coordinator.store.lease import DuplicateMember, Fenced
from shared.clock import FakeClock
from tests.helpers import eventually
from tests.pg import fresh_database, pg_store


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_a_second_process_with_the_same_member_id_never_holds_the_lease(
    pg_url: str,
) -> None:
    async with pg_store(pg_url, "c1") as first, pg_store(pg_url, "c1") as second:
        taken = await first.try_lease("c1", "http://a:7400", 0.5)
        assert taken.held
        with pytest.raises(DuplicateMember, match="used by another running coordinator"):
            await second.try_lease("c1", "http://b:7400", 0.5)
        # Even if it believed it led, its writes carry the wrong process: fenced.
        event = Event(time=FakeClock().now(), kind="test")
        with pytest.raises(Fenced):
            await second.append_events([event], epoch=taken.epoch)
        await first.append_events([event], epoch=taken.epoch)
        members = await second.list_members()
        assert [(m.id, m.address, m.leader) for m in members] == [("c1", "http://a:7400", True)]

        # The first process is gone (no renewals): after three leases the id is free again,
        # and the second takes the lease in a new epoch.
        async def second_leads() -> bool:
            try:
                return (await second.try_lease("c1", "http://b:7400", 0.5)).held
            except DuplicateMember:
                return False

        await eventually(second_leads, timeout=10)
        state = await second.try_lease("c1", "http://b:7400", 0.5)
        assert state.epoch == taken.epoch + 1
        with pytest.raises(Fenced):
            await first.append_events([event], epoch=taken.epoch)
