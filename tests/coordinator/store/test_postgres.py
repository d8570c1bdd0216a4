"""PostgresStore beyond the shared contract (test_contract.py): what only a database that
several coordinators share must get right — migrations run once, concurrent writers,
seq dedupe across coordinators, heartbeats reaching the database, the lease and fencing,
change notification, and outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from coordinator.domain.records import (
    AssignmentChange,
    Event,
    JobRecord,
    NodeRecord,
    ReportOutcome,
    TokenRecord,
)
from coordinator.store.lease import Fenced
from coordinator.store.pg_errors import redact
from coordinator.store.pg_listen import PAYLOAD_LIMIT, parse, payloads
from coordinator.store.pg_migrations import MIGRATIONS
from coordinator.store.postgres import EVENTS_LOCK, PostgresStore
from coordinator.submit import revise
from shared.errors import Conflict, StoreError, StoreUnavailable, Unauthorized
from shared.nodes import Load, NodeStatus
from shared.protocol import ExecutionReport, ExecutionState
from shared.spec import parse_job_spec
from shared.tokens import Approval, TokenKind
from tests.helpers import eventually
from tests.pg import Outage, fresh_database, pg_store, terminate_connections

NOW = datetime(2026, 1, 1, tzinfo=UTC)
JOIN_ID = "9b1d4e3a-7f2c-4c1e-8a5d-3e6f7a8b9c0d"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A fresh database on the test server (tests.pg), for this test only."""
    async with fresh_database() as fresh:
        yield fresh


def job(name: str = "web") -> JobRecord:
    record = revise(None, parse_job_spec({"name": name, "task": {"command": ["sleep", "1"]}}), NOW)
    assert record is not None
    return record


def engine_step(record: JobRecord) -> JobRecord:
    """The job as an engine decision leaves it: revision + 1."""
    status = record.status.model_copy(update={"revision": record.status.revision + 1})
    return record.model_copy(update={"status": status})


def node(node_id: str = "n1", **fields: Any) -> NodeRecord:
    return NodeRecord(
        id=node_id, name=node_id, token_hash=f"hash-{node_id}", registered_at=NOW, **fields
    )


def running(version: int = 1, state: ExecutionState = ExecutionState.HEALTHY) -> ExecutionReport:
    return ExecutionReport(job="web", version=version, state=state)


async def report(
    store: PostgresStore, seq: int, *executions: ExecutionReport, node_id: str = "n1"
) -> ReportOutcome:
    return await store.record_report(
        node_id,
        seq=seq,
        load=Load(),
        resources=None,
        executions=list(executions),
        now=NOW + timedelta(seconds=seq),
    )


async def scalar(url: str, sql: str, *args: object) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


class TestMigrations:
    async def test_reopening_applies_nothing(self, url: str) -> None:
        """The first open applies every migration; the next finds them applied."""
        async with pg_store(url) as store:
            assert store.migrated == list(range(1, len(MIGRATIONS) + 1))
        async with pg_store(url) as store:
            assert store.migrated == []
        assert await scalar(url, "SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)

    async def test_three_coordinators_starting_at_once_migrate_once(self, url: str) -> None:
        """Stores opening together on an empty database apply each migration exactly once."""
        stores = [PostgresStore(url, f"m{i}") for i in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            applied = sorted(n for s in stores for n in s.migrated)
            assert applied == list(range(1, len(MIGRATIONS) + 1))
        finally:
            await asyncio.gather(*(s.close() for s in stores))


class TestUnreachable:
    async def test_the_error_names_the_url_without_its_password(self) -> None:
        """An unreachable database fails open() with the URL (password hidden) and the cause."""
        store = PostgresStore("postgresql://fleetwave:s3cret@127.0.0.1:1/fleetwave")
        with pytest.raises(StoreError) as caught:
            await store.open()
        message = caught.value.message
        assert "postgresql://fleetwave:***@127.0.0.1:1/fleetwave" in message
        assert "s3cret" not in message
        assert "Connect call failed" in message or "refused" in message

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://fw:pw@db:5432/fw", "postgresql://fw:***@db:5432/fw"),
            ("postgresql://fw:p@ss@db/fw", "postgresql://fw:***@db/fw"),
            ("postgresql://fw@db/fw", "postgresql://fw@db/fw"),
            (
                "postgresql://db/fw?user=fw&password=pw&x=1",
                "postgresql://db/fw?user=fw&password=***&x=1",
            ),
            ("postgresql://fw:pw@h1:5432,h2:5433/fw", "postgresql://fw:***@h1:5432,h2:5433/fw"),
        ],
    )
    def test_redact(self, url: str, shown: str) -> None:
        """A URL shows in messages with its password, wherever it is, as ***."""
        assert redact(url) == shown


class TestConcurrentWriters:
    async def test_a_stale_revision_is_a_conflict_across_coordinators(self, url: str) -> None:
        """Of two coordinators writing from the same revision, the second gets Conflict."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            first = job()
            await a.save_job(first, expected_revision=None, new_version=None)
            with pytest.raises(Conflict):
                await b.save_job(first, expected_revision=None, new_version=None)
            rev = first.status.revision
            await a.save_job(engine_step(first), expected_revision=rev, new_version=None)
            with pytest.raises(Conflict):
                await b.save_job(engine_step(first), expected_revision=rev, new_version=None)
            assert await b.get_job("web") == engine_step(first)

    async def test_a_one_use_join_token_enrolls_one_of_30_nodes(self, url: str) -> None:
        """30 registrations racing on a join token with one use: exactly one succeeds."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            await a.insert_token(
                TokenRecord(
                    id=JOIN_ID,
                    name="rack-7",
                    kind=TokenKind.JOIN,
                    approval=Approval.AUTO,
                    max_uses=1,
                    created_at=NOW,
                    secret_hash="secret-join",
                )
            )
            results = await asyncio.gather(
                *((a, b)[i % 2].insert_node(node(f"n{i}"), join_token=JOIN_ID) for i in range(30)),
                return_exceptions=True,
            )
            assert results.count(None) == 1
            assert all(isinstance(r, Unauthorized) for r in results if r is not None)
            token = await b.get_token(JOIN_ID)
            assert token is not None
            assert token.uses == 1
            assert len(await a.list_nodes()) == 1

    async def test_a_report_seq_is_accepted_by_one_coordinator_only(self, url: str) -> None:
        """A report replayed to another coordinator is refused; of two racing with one seq,
        exactly one is accepted."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            await a.insert_node(node())
            assert (await report(a, 5, running())).accepted
            refused = await report(b, 5, running())
            assert (refused.accepted, refused.last_seq) == (False, 5)
            outcomes = await asyncio.gather(
                report(a, 6, running(state=ExecutionState.FAILED)),
                report(b, 6, running(state=ExecutionState.FAILED)),
            )
            assert sorted(o.accepted for o in outcomes) == [False, True]
            assert await scalar(url, "SELECT last_seq FROM nodes WHERE id = 'n1'") == 6

    async def test_a_heartbeat_reaches_the_database_by_itself(self, url: str) -> None:
        """A heartbeat-only report is acknowledged at once and written by the next flush,
        where another coordinator (the leader) sees it; its replay is refused there too."""
        async with (
            pg_store(url, "a", liveness_flush_seconds=0.05) as a,
            pg_store(url, "b") as b,
        ):
            await a.insert_node(node())
            assert (await report(a, 1, running())).accepted
            assert (await report(a, 2, running())).accepted  # same state: liveness only

            async def seen_by_b() -> bool:
                found = await b.get_node("n1")
                return found is not None and found.last_seq == 2

            await eventually(seen_by_b, timeout=5)
            found = await b.get_node("n1")
            assert found is not None
            assert found.last_heartbeat == NOW + timedelta(seconds=2)
            assert found.status == NodeStatus.READY
            assert not (await report(b, 2, running())).accepted


class TestPool:
    async def test_a_pooled_connection_is_reused_without_a_lock_or_transaction_left(
        self, url: str
    ) -> None:
        """Connections go back to the pool without asyncpg's reset query: after a write that
        took the events lock and a write that failed, the one connection is idle, holds no
        lock, and serves the next call."""
        store = PostgresStore(url, "a", pool_size=1)
        await store.open()
        try:
            first = job()
            await store.save_job(first, expected_revision=None, new_version=None)
            await store.append_events([Event(time=NOW, job="web", kind="job_submitted")])
            with pytest.raises(Conflict):
                await store.save_job(first, expected_revision=None, new_version=None)
            assert await scalar(url, "SELECT pg_try_advisory_lock($1)", EVENTS_LOCK)
            states = await scalar(
                url,
                "SELECT array_agg(state) FROM pg_stat_activity WHERE application_name = $1",
                "fleetwave a",
            )
            assert states == ["idle"]
            assert [e.kind for e in await store.list_events()] == ["job_submitted"]
        finally:
            await store.close()


class TestLease:
    async def test_take_renew_expire_takeover(self, url: str) -> None:
        """The lease is taken (epoch 1), renewed in the same epoch, and once it expires taken
        over by another member in the next epoch; the old holder then no longer holds it."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            taken = await a.try_lease("a", "10.0.0.1:7000", 0.3)
            assert (taken.holder, taken.epoch, taken.held) == ("a", 1, True)
            assert 0 < taken.expires_in <= 0.3
            other = await b.try_lease("b", "10.0.0.2:7000", 0.3)
            assert (other.holder, other.address, other.epoch, other.held) == (
                "a",
                "10.0.0.1:7000",
                1,
                False,
            )
            assert (await a.try_lease("a", "10.0.0.1:7000", 0.3)).epoch == 1

            async def b_takes_over() -> bool:
                return (await b.try_lease("b", "10.0.0.2:7000", 10)).held

            await eventually(b_takes_over, timeout=5)
            assert (await b.lease()).epoch == 2
            deposed = await a.try_lease("a", "10.0.0.1:7000", 10)
            assert (deposed.holder, deposed.epoch, deposed.held) == ("b", 2, False)
            members = await a.list_members()
            assert [(m.id, m.leader) for m in members] == [("a", False), ("b", True)]

    async def test_a_released_lease_is_taken_at_once(self, url: str) -> None:
        """A member shutting down releases the lease; another takes it in the next epoch."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            assert (await a.try_lease("a", "x", 60)).held
            await a.release_lease("a")
            taken = await b.try_lease("b", "y", 60)
            assert (taken.held, taken.epoch) == (True, 2)


class TestFencing:
    async def test_a_deposed_leaders_writes_are_fenced(self, url: str) -> None:
        """After a takeover the old leader's engine writes raise Fenced and write nothing;
        no row carries its epoch from after the takeover."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            first = job()
            await a.save_job(first, expected_revision=None, new_version=None)
            await a.insert_node(node())
            old = (await a.try_lease("a", "x", 0.2)).epoch
            rev = first.status.revision
            await a.apply_plan(
                engine_step(first),
                expected_revision=rev,
                changes=[AssignmentChange("n1", 1)],
                events=[Event(time=NOW, job="web", kind="wave_started")],
                now=NOW,
                epoch=old,
            )

            async def b_takes_over() -> bool:
                return (await b.try_lease("b", "y", 60)).held

            await eventually(b_takes_over, timeout=5)
            new = (await b.lease()).epoch
            assert new == old + 1
            stale = engine_step(engine_step(first))
            with pytest.raises(Fenced):
                await a.apply_plan(
                    stale,
                    expected_revision=rev + 1,
                    changes=[AssignmentChange("n1", 2)],
                    events=[Event(time=NOW, job="web", kind="stale")],
                    now=NOW,
                    epoch=old,
                )
            with pytest.raises(Fenced):
                await a.set_node_status("n1", NodeStatus.DOWN, epoch=old)
            with pytest.raises(Fenced):
                await a.append_events([Event(time=NOW, kind="stale")], epoch=old)
            assert await b.get_job("web") == engine_step(first)
            assert (await b.job_assignments("web"))["n1"].version == 1
            assert [e.kind for e in await b.list_events()] == ["wave_started"]
            node_now = await b.get_node("n1")
            assert node_now is not None
            assert node_now.status != NodeStatus.DOWN
            await b.apply_plan(
                stale,
                expected_revision=rev + 1,
                changes=[AssignmentChange("n1", 2)],
                events=[Event(time=NOW, job="web", kind="taken_over")],
                now=NOW,
                epoch=new,
            )
            for table in ("jobs", "assignments", "events", "nodes"):
                newest = f"SELECT max(epoch) FROM {table}"  # noqa: S608
                assert await scalar(url, newest) == new, table

    async def test_a_write_without_epoch_is_not_fenced(self, url: str) -> None:
        """Writes that are not the engine's (epoch None) go through whoever leads."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            await b.try_lease("b", "y", 60)
            await a.append_events([Event(time=NOW, kind="operator")])
            assert await scalar(url, "SELECT count(*) FROM events WHERE epoch IS NULL") == 1


class TestNotification:
    async def test_a_commit_reaches_the_other_coordinators_listener(self, url: str) -> None:
        """Keys of a commit on one store reach the other's listeners, not its own; a remote
        event append wakes the other's event listeners."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            at_a: list[str] = []
            at_b: list[str] = []
            woken: list[None] = []
            a.on_remote_change(at_a.extend)
            b.on_remote_change(at_b.extend)
            b.on_events(lambda: woken.append(None))
            await a.insert_node(node())
            await a.save_job(job(), expected_revision=None, new_version=None)
            await eventually(lambda: {"nodes", "job:web"} <= set(at_b), timeout=5)
            await a.append_events([Event(time=NOW, kind="note")])
            await eventually(lambda: woken, timeout=5)
            assert "events" in at_b
            assert at_a == []

    async def test_a_lost_listen_connection_reports_everything(self, url: str) -> None:
        """After its LISTEN connection is lost, a store reconnects by itself, tells its
        listeners that anything may have changed, and hears later commits again."""
        async with pg_store(url, "a") as a, pg_store(url, "b") as b:
            at_b: list[str] = []
            b.on_remote_change(at_b.extend)
            assert await terminate_connections(url, application="fleetwave b listen") == 1
            await eventually(lambda: "*" in at_b, timeout=10)
            await a.save_job(job(), expected_revision=None, new_version=None)
            await eventually(lambda: "job:web" in at_b, timeout=5)

    def test_payloads_stay_under_the_limit(self) -> None:
        """Many keys are split into notifications under PostgreSQL's payload limit, each
        naming the member, together carrying every key once."""
        keys = [f"node:{i:036d}" for i in range(1000)]
        sent = payloads("member-1", keys)
        assert len(sent) > 1
        assert all(len(p.encode()) < PAYLOAD_LIMIT for p in sent)
        parsed = [parse(p) for p in sent]
        assert {member for member, _ in parsed} == {"member-1"}
        assert sorted(k for _, ks in parsed for k in ks) == sorted(keys)
        assert payloads("member-1", []) == []


class TestOutage:
    async def test_an_outage_is_503_and_the_store_recovers_by_itself(self, url: str) -> None:
        """While the database is unreachable reads and writes raise StoreUnavailable and the
        write health says so; once it is back the probe write recovers it."""
        proxy = Outage()
        await proxy.up()
        try:
            async with pg_store(proxy.url(url), "a") as store:
                await store.insert_node(node())
                await proxy.down()
                with pytest.raises(StoreUnavailable):
                    await store.get_node("n1")
                with pytest.raises(StoreUnavailable):
                    await store.save_job(job(), expected_revision=None, new_version=None)
                with pytest.raises(StoreUnavailable):
                    await report(store, 1, running())
                assert store.write_health().failing is not None
                assert await store.check_writable(1.0) is not None
                await proxy.up()
                assert await store.check_writable(3.0) is None
                assert await store.get_node("n1") is not None
                assert (await report(store, 1, running())).accepted
        finally:
            await proxy.down()
