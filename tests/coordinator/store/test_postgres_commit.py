"""A connection that breaks while PostgreSQL commits: the outcome is unknown, and the store
says so (``outcome_unknown``) instead of "nothing changed" (``store_unavailable``), which
clients take as leave to resend the change to another coordinator.

Real PostgreSQL behind a real TCP proxy that cuts the connection when it sees the COMMIT go
by (it does not forward it: the server rolls back, but the client cannot know that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from coordinator.domain.records import JobRecord, JobVersion
from coordinator.store.postgres import PostgresStore
from shared.clock import FakeClock
from shared.errors import OutcomeUnknown, StoreUnavailable
from shared.spec import JobSpec
from shared.status import JobState, JobStateType, JobStatus
from tests.pg import Outage, fresh_database

CLOCK = FakeClock()


class CommitCutter(Outage):
    """The proxy of tests/pg.py that, once armed, cuts a connection at its next COMMIT."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.cuts = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def client_to_server() -> None:
            try:
                while data := await reader.read(65536):
                    if self.armed and b"COMMIT" in data.upper():
                        self.armed = False
                        self.cuts += 1
                        break  # never reaches the server
                    up_writer.write(data)
                    await up_writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()
                up_writer.transport.abort()

        async def server_to_client() -> None:
            try:
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(client_to_server(), server_to_client())


def job(name: str, revision: int = 1) -> tuple[JobRecord, JobVersion]:
    spec = JobSpec.model_validate({"name": name, "task": {"command": ["run"]}})
    status = JobStatus(
        created_at=CLOCK.now(),
        updated_at=CLOCK.now(),
        version=1,
        revision=revision,
        state=JobState(state_type=JobStateType.PENDING),
    )
    record = JobRecord(name=name, spec=spec, status=status)
    return record, JobVersion(job=name, version=1, spec=spec, created_at=CLOCK.now())


@pytest.fixture
async def cutter() -> AsyncIterator[CommitCutter]:
    proxy = CommitCutter()
    await proxy.up()
    yield proxy
    await proxy.down()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_a_connection_lost_at_commit_is_an_unknown_outcome(
    pg_url: str, cutter: CommitCutter
) -> None:
    store = PostgresStore(cutter.url(pg_url), member_id="a")
    await store.open()
    try:
        record, version = job("web")
        cutter.armed = True
        with pytest.raises(OutcomeUnknown, match="may or may not have been applied") as caught:
            await store.save_job(record, expected_revision=None, new_version=version)
        assert cutter.cuts == 1
        assert caught.value.code == "outcome_unknown"
        assert caught.value.status == 503
        # A failure before the commit is still the plain outage: nothing changed.
        await cutter.down()
        with pytest.raises(StoreUnavailable) as before:
            await store.save_job(record, expected_revision=None, new_version=version)
        assert before.value.code == "store_unavailable"
    finally:
        await store.close()
