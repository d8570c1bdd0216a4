"""The Store contract: the memory, SQLite and PostgreSQL stores keep the same records with the
same meaning (DESIGN §8). Every test runs against each of them, through the port only, and
reads what it wrote within one open store; durability and crash tests live beside each store.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from coordinator.domain.nodes import NameTaken
from coordinator.domain.records import (
    AssignmentChange,
    AssignmentRecord,
    AuditEntry,
    AuditOutcome,
    Event,
    JobRecord,
    JobVersion,
    NodeRecord,
    ReportOutcome,
    TokenRecord,
)
from coordinator.store import Store, WriteHealth
from coordinator.store.memory import MemoryStore
from coordinator.store.postgres import PostgresStore
from coordinator.store.sqlite import SqliteStore
from coordinator.submit import revise
from shared.errors import Conflict, StoreError, Unauthorized
from shared.nodes import (
    DATA_DIR_UNWRITABLE,
    Eligibility,
    Load,
    NodeCondition,
    NodeStatus,
    Resources,
)
from shared.protocol import ExecutionReport, ExecutionState
from shared.spec import parse_job_spec
from shared.tokens import Approval, Role, TokenKind
from tests.pg import fresh_database

NOW = datetime(2026, 1, 1, tzinfo=UTC)

STARTING = ExecutionState.STARTING
HEALTHY = ExecutionState.HEALTHY

CI_ID = "0d7c6f52-3c1e-4d84-9f0a-6b1f0e2a9c11"
ONCALL_ID = "5a0e2c47-8c0a-4b7e-a1f3-2d9e8b7c6a55"
JOIN_ID = "9b1d4e3a-7f2c-4c1e-8a5d-3e6f7a8b9c0d"


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# The stores. Creating a PostgreSQL database costs about 0.6 s (a checkpoint), which for
# every test would take the suite past half a minute: the PostgreSQL tests share one
# database (tests/pg.py's fresh_database), migrated once, and each starts from a copy of
# what the migrations left in every table.

_TABLES = """
SELECT schemaname, tablename,
       EXISTS (SELECT FROM pg_constraint WHERE contype = 'f'
               AND conrelid = format('%I.%I', schemaname, tablename)::regclass) AS child
FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'contract_seed')
"""
SAVE_SEED = (
    "CREATE SCHEMA contract_seed;"  # noqa: S608 (constant text, no input)
    " DO $$ DECLARE t record; BEGIN FOR t IN" + _TABLES + "LOOP"
    " EXECUTE format('CREATE TABLE contract_seed.%I AS SELECT * FROM %I.%I',"
    " t.tablename, t.schemaname, t.tablename);"
    " END LOOP; END $$"
)
"""Copy what the migrations left in each table to the schema ``contract_seed``."""

RESTORE_SEED = (
    "DO $$ DECLARE t record; BEGIN"  # noqa: S608 (constant text, no input)
    " FOR t IN" + _TABLES + "ORDER BY child DESC LOOP"
    " EXECUTE format('DELETE FROM %I.%I', t.schemaname, t.tablename);"
    " END LOOP;"
    " FOR t IN SELECT schemaname, sequencename FROM pg_sequences"
    " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') LOOP"
    " EXECUTE format('ALTER SEQUENCE %I.%I RESTART', t.schemaname, t.sequencename);"
    " END LOOP;"
    " FOR t IN" + _TABLES + "ORDER BY child LOOP"
    " EXECUTE format('INSERT INTO %I.%I OVERRIDING SYSTEM VALUE"
    " SELECT * FROM contract_seed.%I', t.schemaname, t.tablename, t.tablename);"
    " END LOOP; END $$"
)
"""Every table as the migrations left it (DELETE, not TRUNCATE: ten times faster on tables
this small); children are emptied first and filled last, identities start again."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pg_database() -> AsyncIterator[str]:
    """A database for this module's PostgreSQL tests, migrated, its seed rows saved."""
    async with fresh_database() as url:
        migrated = PostgresStore(url, member_id="contract")
        await migrated.open()
        await migrated.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SAVE_SEED)
        finally:
            await conn.close()
        yield url


async def restore_seed(url: str) -> None:
    """Every table of the shared database as the migrations left it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(RESTORE_SEED)
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def unopened(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each store: in memory, SQLite on a real file, PostgreSQL on the shared database."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "fleetwave.db")
    return PostgresStore(request.getfixturevalue("pg_database"), member_id="contract")


@pytest.fixture
async def store(unopened: Store) -> AsyncIterator[Store]:
    if isinstance(unopened, PostgresStore):
        await restore_seed(unopened.url)
    await unopened.open()
    yield unopened
    await unopened.close()


# records


def first_job(name: str = "web") -> JobRecord:
    job = revise(None, parse_job_spec({"name": name, "task": {"command": ["sleep", "1"]}}), NOW)
    assert job is not None
    return job


def next_job(job: JobRecord) -> JobRecord:
    """The job's next version, as a submission makes it (revision + 1)."""
    version = job.status.version + 1
    spec = parse_job_spec({"name": job.name, "task": {"command": ["sleep", str(version)]}})
    new = revise(job, spec, at(version))
    assert new is not None
    return new


def engine_step(job: JobRecord, generation: int = 1) -> JobRecord:
    """The job as an engine decision leaves it: same spec, revision + 1."""
    status = job.status.model_copy(update={"revision": job.status.revision + 1})
    rollout = job.rollout.model_copy(update={"generation": generation})
    return job.model_copy(update={"status": status, "rollout": rollout})


def version_of(job: JobRecord) -> JobVersion:
    return JobVersion(
        job=job.name, version=job.status.version, spec=job.spec, created_at=job.status.updated_at
    )


def node(node_id: str = "n1", name: str = "", **fields: Any) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        name=name or node_id,
        token_hash=f"hash-{node_id}",
        registered_at=NOW,
        **fields,
    )


def token(
    token_id: str = CI_ID, name: str = "ci", *, created_at: datetime = NOW, **fields: Any
) -> TokenRecord:
    return TokenRecord(
        id=token_id,
        name=name,
        kind=TokenKind.OPERATOR,
        role=Role.ADMIN,
        created_at=created_at,
        secret_hash=f"secret-{token_id}",
        **fields,
    )


def join_token(max_uses: int | None) -> TokenRecord:
    return TokenRecord(
        id=JOIN_ID,
        name="rack-7",
        kind=TokenKind.JOIN,
        approval=Approval.AUTO,
        max_uses=max_uses,
        created_at=NOW,
        secret_hash="secret-join",
    )


def ran(job: str, state: ExecutionState, version: int = 1, **fields: Any) -> ExecutionReport:
    return ExecutionReport(job=job, version=version, state=state, **fields)


def event(kind: str, job: str = "web", node_id: str = "", t: float = 0) -> Event:
    return Event(time=at(t), job=job, node=node_id, kind=kind, new=kind)


async def stored_node(store: Store, node_id: str = "n1") -> NodeRecord:
    found = await store.get_node(node_id)
    assert found is not None
    return found


async def report(
    store: Store,
    seq: int,
    executions: list[ExecutionReport],
    *,
    node_id: str = "n1",
    conditions: list[NodeCondition] | None = None,
    resources: Resources | None = None,
) -> ReportOutcome:
    """Node ``node_id``'s report ``seq``, made at ``at(seq)`` with a load that says its seq."""
    return await store.record_report(
        node_id,
        seq=seq,
        load=Load(cpu_percent=float(seq)),
        resources=resources,
        executions=executions,
        now=at(seq),
        conditions=conditions or [],
    )


async def plan(
    store: Store,
    job: JobRecord,
    changes: list[AssignmentChange],
    events: Sequence[Event] = (),
    *,
    expected: JobRecord,
    t: float = 0,
) -> dict[str, int]:
    return dict(
        await store.apply_plan(
            job,
            expected_revision=expected.status.revision,
            changes=changes,
            events=list(events),
            now=at(t),
        )
    )


class TestHealth:
    async def test_a_working_store_reports_healthy_writes(self, store: Store) -> None:
        """Before any failure, writes are healthy and the store says it is writable."""
        assert store.write_health() == WriteHealth()
        assert await store.check_writable(1000.0) is None
        assert store.write_health() == WriteHealth()


class TestJobs:
    async def test_a_saved_job_reads_back(self, store: Store) -> None:
        """Inserted jobs read back as saved, listed by name."""
        web, api = first_job("web"), first_job("api")
        await store.save_job(web, expected_revision=None, new_version=None)
        await store.save_job(api, expected_revision=None, new_version=None)
        assert await store.get_job("web") == web
        assert await store.get_job("nope") is None
        assert await store.list_jobs() == [api, web]

    async def test_inserting_a_job_that_exists_conflicts(self, store: Store) -> None:
        """A second insert under the same name raises Conflict and changes nothing."""
        web = first_job()
        await store.save_job(web, expected_revision=None, new_version=version_of(web))
        again = next_job(web)
        with pytest.raises(Conflict):
            await store.save_job(again, expected_revision=None, new_version=None)
        assert await store.get_job("web") == web

    async def test_save_compares_and_sets_the_revision(self, store: Store) -> None:
        """A save naming the current revision replaces the job; a stale one raises Conflict
        and stores neither the job nor its version."""
        v1 = first_job()
        await store.save_job(v1, expected_revision=None, new_version=version_of(v1))
        v2 = next_job(v1)
        await store.save_job(v2, expected_revision=1, new_version=version_of(v2))
        assert await store.get_job("web") == v2
        v3 = next_job(v2)
        with pytest.raises(Conflict):
            await store.save_job(v3, expected_revision=1, new_version=version_of(v3))
        assert await store.get_job("web") == v2
        assert await store.list_versions("web") == [version_of(v1), version_of(v2)]
        assert await store.get_version("web", 3) is None

    async def test_a_save_whose_version_exists_writes_nothing(self, store: Store) -> None:
        """Saving a version number that is stored already fails as a whole: neither the job
        nor the version changes."""
        v1 = first_job()
        await store.save_job(v1, expected_revision=None, new_version=version_of(v1))
        v2 = next_job(v1)
        clash = version_of(v2).model_copy(update={"version": 1})
        with pytest.raises(StoreError):
            await store.save_job(v2, expected_revision=1, new_version=clash)
        assert await store.get_job("web") == v1
        assert await store.list_versions("web") == [version_of(v1)]

    async def test_updating_a_job_that_does_not_exist_conflicts(self, store: Store) -> None:
        """A compare-and-set on a job that is not stored raises Conflict and inserts nothing."""
        with pytest.raises(Conflict):
            await store.save_job(first_job(), expected_revision=1, new_version=None)
        assert await store.get_job("web") is None

    async def test_versions_are_kept_per_job_oldest_first(self, store: Store) -> None:
        """Each saved version reads back by number and in the job's list, oldest first."""
        v1 = first_job()
        v2 = next_job(v1)
        await store.save_job(v1, expected_revision=None, new_version=version_of(v1))
        await store.save_job(v2, expected_revision=1, new_version=version_of(v2))
        await store.save_job(first_job("api"), expected_revision=None, new_version=None)
        assert await store.list_versions("web") == [version_of(v1), version_of(v2)]
        assert await store.get_version("web", 2) == version_of(v2)
        assert await store.get_version("web", 1) == version_of(v1)
        assert await store.get_version("api", 1) is None
        assert await store.list_versions("api") == []


class TestNodes:
    async def test_a_node_is_found_by_id_or_name(self, store: Store) -> None:
        """A node reads back by id, by id or name, and in the list ordered by name."""
        n1, n2 = node("n1", "zulu"), node("n2", "alpha")
        await store.insert_node(n1)
        await store.insert_node(n2)
        assert await store.get_node("n1") == n1
        assert await store.get_node("zulu") is None
        assert await store.find_node("n1") == n1
        assert await store.find_node("zulu") == n1
        assert await store.find_node("nope") is None
        assert await store.list_nodes() == [n2, n1]

    @pytest.mark.parametrize(
        "holder_status", ["initializing", "ready", "down", "revoked", "pending"]
    )
    async def test_a_name_belongs_to_its_node_whatever_its_status(
        self, store: Store, holder_status: str
    ) -> None:
        """Another node with a held name raises NameTaken naming the holder; it is not stored."""
        await store.insert_node(node("n1", "alpha", approved=holder_status != "pending"))
        if holder_status in ("ready", "down"):
            await store.set_node_status("n1", NodeStatus(holder_status))
        if holder_status == "revoked":
            await store.revoke_node("n1", at(1))
        with pytest.raises(NameTaken) as raised:
            await store.insert_node(node("n2", "alpha"))
        assert raised.value.holder.id == "n1"
        assert await store.get_node("n2") is None
        assert [n.id for n in await store.list_nodes()] == ["n1"]

    async def test_a_node_is_found_by_its_current_or_offered_token(self, store: Store) -> None:
        """Both the current and the offered token find the node; other hashes find nothing."""
        await store.insert_node(node())
        assert (await store.node_by_token_hash("hash-n1")) == node()
        await store.offer_node_token("n1", token_hash="next", expires_at=at(100))
        offered = await stored_node(store)
        assert (offered.token_hash, offered.next_token_hash) == ("hash-n1", "next")
        assert offered.next_token_expires_at == at(100)
        assert await store.node_by_token_hash("hash-n1") == offered
        assert await store.node_by_token_hash("next") == offered
        assert await store.node_by_token_hash("other") is None

    async def test_promoting_the_offered_token_makes_it_the_only_one(self, store: Store) -> None:
        """The offered token becomes current; promoting it again changes nothing."""
        await store.insert_node(node())
        await store.offer_node_token("n1", token_hash="next", expires_at=at(100))
        promoted = await store.promote_node_token("n1", "next", at(5))
        assert promoted.token_hash == "next"
        assert promoted.next_token_hash == ""
        assert promoted.next_token_expires_at is None
        assert (promoted.token_issued_at, promoted.token_expires_at) == (at(5), at(100))
        assert await stored_node(store) == promoted
        assert await store.node_by_token_hash("hash-n1") is None
        assert await store.node_by_token_hash("next") == promoted
        assert await store.promote_node_token("n1", "next", at(9)) == promoted
        assert await stored_node(store) == promoted

    async def test_renewal_gives_a_new_token_and_what_the_agent_registered_with(
        self, store: Store
    ) -> None:
        """A renewal replaces the token (an offered one is dropped), labels, resources and agent
        version; the old tokens find nothing."""
        await store.insert_node(node(labels={"rack": "1"}))
        await store.offer_node_token("n1", token_hash="next", expires_at=at(100))
        renewed = await store.renew_registration(
            "n1",
            token_hash="renewed",
            labels={"rack": "2"},
            resources=Resources(cpu_count=4),
            agent_version="1.2.3",
            issued_at=at(10),
            expires_at=at(20),
        )
        assert renewed is not None
        assert renewed == node(
            labels={"rack": "2"},
            resources=Resources(cpu_count=4),
            agent_version="1.2.3",
            token_issued_at=at(10),
            token_expires_at=at(20),
        ).model_copy(update={"token_hash": "renewed"})
        assert await stored_node(store) == renewed
        assert await store.node_by_token_hash("renewed") == renewed
        assert await store.node_by_token_hash("hash-n1") is None
        assert await store.node_by_token_hash("next") is None

    async def test_a_revoked_or_unknown_node_is_not_renewed(self, store: Store) -> None:
        """Renewal answers None and changes nothing for a revoked or unknown node."""
        await store.insert_node(node())
        revoked = await store.revoke_node("n1", at(1))
        for node_id in ("n1", "ghost"):
            renewed = await store.renew_registration(
                node_id,
                token_hash="renewed",
                labels={},
                resources=Resources(),
                agent_version="9",
                issued_at=at(2),
                expires_at=None,
            )
            assert renewed is None
        assert await stored_node(store) == revoked
        assert await store.node_by_token_hash("renewed") is None
        assert await store.get_node("ghost") is None

    async def test_approval(self, store: Store) -> None:
        """An approved node reads back approved (a fleet member)."""
        await store.insert_node(node(approved=False))
        approved = await store.approve_node("n1")
        assert approved.approved
        assert approved.in_fleet
        assert await stored_node(store) == approved

    async def test_the_first_revocation_stands(self, store: Store) -> None:
        """Revoking again keeps the first revocation time."""
        await store.insert_node(node())
        first = await store.revoke_node("n1", at(1))
        assert first.revoked_at == at(1)
        assert first.api_status == NodeStatus.REVOKED
        assert await store.revoke_node("n1", at(2)) == first
        assert await stored_node(store) == first

    async def test_an_operators_change_is_written_with_its_events(self, store: Store) -> None:
        """Approve, revoke, scheduling and purge store the events they are given with the
        change; an approval or revocation that changes nothing stores none."""
        await store.insert_node(node(approved=False))
        await store.approve_node("n1", events=[event("node_approved", node_id="n1")])
        await store.approve_node("n1", events=[event("node_approved", node_id="n1")])
        await store.set_node_scheduling("n1", drain=True, events=[event("node_drain", "", "n1")])
        await store.revoke_node("n1", at(1), events=[event("node_revoked", node_id="n1")])
        await store.revoke_node("n1", at(2), events=[event("node_revoked", node_id="n1")])
        await store.purge_node("n1", events=[event("node_purged", node_id="n1")])
        kinds = [e.kind for e in await store.list_events()]
        assert kinds == ["node_approved", "node_drain", "node_revoked", "node_purged"]
        assert await store.get_node("n1") is None

    async def test_status_agent_version_and_scheduling(self, store: Store) -> None:
        """Each setter changes its field only; scheduling changes what it is given."""
        await store.insert_node(node())
        await store.set_node_status("n1", NodeStatus.DOWN)
        await store.set_node_agent_version("n1", "2.0.0")
        await store.set_node_scheduling("n1", drain=True)
        assert await stored_node(store) == node(
            status=NodeStatus.DOWN, agent_version="2.0.0", drain=True
        )
        await store.set_node_scheduling("n1", eligibility=Eligibility.INELIGIBLE)
        changed = await stored_node(store)
        assert (changed.eligibility, changed.drain) == (Eligibility.INELIGIBLE, True)
        await store.set_node_scheduling("n1", drain=False)
        changed = await stored_node(store)
        assert (changed.eligibility, changed.drain) == (Eligibility.INELIGIBLE, False)

    async def test_purge_forgets_the_node_with_its_assignments_and_executions(
        self, store: Store
    ) -> None:
        """A purged node is gone with its assignments and executions; its events stay, the
        other nodes keep theirs, and its name is free again."""
        web = first_job()
        await store.save_job(web, expected_revision=None, new_version=None)
        await store.insert_node(node("n1"))
        await store.insert_node(node("n2"))
        step = engine_step(web)
        changes = [AssignmentChange("n1", 1), AssignmentChange("n2", 1)]
        await plan(store, step, changes, [event("assigned", node_id="n1")], expected=web)
        await report(store, 1, [ran("web", HEALTHY)], node_id="n1")
        await report(store, 1, [ran("web", HEALTHY)], node_id="n2")
        events = await store.list_events()
        await store.purge_node("n1")
        assert await store.get_node("n1") is None
        assert await store.find_node("n1") is None
        assert await store.node_by_token_hash("hash-n1") is None
        assert await store.node_assignments("n1") == (0, [])
        assert set(await store.job_assignments("web")) == {"n2"}
        assert set(await store.job_executions("web")) == {"n2"}
        assert await store.list_events() == events
        await store.insert_node(node("n3", "n1"))
        assert await store.find_node("n1") == node("n3", "n1")


class TestJoinTokens:
    async def test_each_enrollment_uses_the_token_once_up_to_max_uses(self, store: Store) -> None:
        """Enrollments count uses; the one beyond ``max_uses`` raises Unauthorized and
        stores no node."""
        await store.insert_token(join_token(max_uses=2))
        await store.insert_node(node("n1"), join_token=JOIN_ID)
        await store.insert_node(node("n2"), join_token=JOIN_ID)
        used = await store.get_token(JOIN_ID)
        assert used is not None
        assert used.uses == 2
        with pytest.raises(Unauthorized):
            await store.insert_node(node("n3"), join_token=JOIN_ID)
        assert await store.get_node("n3") is None
        assert await store.get_token(JOIN_ID) == used

    async def test_a_token_without_max_uses_counts_every_use(self, store: Store) -> None:
        """Without ``max_uses`` every enrollment succeeds and is counted."""
        await store.insert_token(join_token(max_uses=None))
        for node_id in ("n1", "n2", "n3"):
            await store.insert_node(node(node_id), join_token=JOIN_ID)
        used = await store.get_token(JOIN_ID)
        assert used is not None
        assert used.uses == 3

    async def test_a_revoked_token_enrolls_nothing(self, store: Store) -> None:
        """A revoked join token raises Unauthorized; no node is stored, no use counted."""
        await store.insert_token(join_token(max_uses=5))
        revoked = await store.revoke_token(JOIN_ID, at(1))
        with pytest.raises(Unauthorized):
            await store.insert_node(node("n1"), join_token=JOIN_ID)
        assert await store.get_node("n1") is None
        assert await store.get_token(JOIN_ID) == revoked

    async def test_a_refused_name_uses_nothing(self, store: Store) -> None:
        """An enrollment refused with NameTaken does not count a use."""
        await store.insert_token(join_token(max_uses=2))
        await store.insert_node(node("n1", "alpha"), join_token=JOIN_ID)
        with pytest.raises(NameTaken):
            await store.insert_node(node("n2", "alpha"), join_token=JOIN_ID)
        used = await store.get_token(JOIN_ID)
        assert used is not None
        assert used.uses == 1

    async def test_enrollments_at_once_are_each_judged_as_if_alone(self, store: Store) -> None:
        """Registrations that arrive together (a store may commit them in one transaction)
        each get their own answer: one of two with one name gets it, uses are counted up to
        ``max_uses`` and the one beyond is refused, and each stored node has its event and
        no refused one has."""
        await store.insert_token(join_token(max_uses=4))
        names = ["a", "b", "a", "c", "d", "e"]
        results = await asyncio.gather(
            *(
                store.insert_node(
                    node(f"n{i}", name),
                    join_token=JOIN_ID,
                    events=[event("node_registered", job="", node_id=f"n{i}")],
                )
                for i, name in enumerate(names)
            ),
            return_exceptions=True,
        )
        # Which of the two "a" gets the name, and which enrollment finds the token used up,
        # is the order the store commits them in (PostgreSQL commits them concurrently).
        outcomes = Counter(type(r).__name__ for r in results)
        assert outcomes == {"NoneType": 4, "NameTaken": 1, "Unauthorized": 1}
        stored = {n.id for n in await store.list_nodes()}
        assert len(stored) == 4
        assert len(stored & {"n0", "n2"}) == 1
        used = await store.get_token(JOIN_ID)
        assert used is not None
        assert used.uses == 4
        events = await store.list_events(limit=100)
        assert sorted(e.node for e in events if e.kind == "node_registered") == sorted(stored)


class TestReports:
    @pytest.fixture(autouse=True)
    async def n1(self, store: Store) -> None:
        await store.insert_node(node())

    async def test_a_report_is_accepted_once_by_seq(self, store: Store) -> None:
        """Reports with a higher seq are accepted; a replay or a late one is refused with the
        last accepted seq and changes nothing."""
        first = await report(store, 1, [ran("web", STARTING)])
        assert (first.accepted, first.last_seq, first.assign_index) == (True, 1, 1)
        assert (await report(store, 5, [ran("web", HEALTHY)])).accepted
        after = await stored_node(store)
        executions = await store.job_executions("web")
        for seq in (5, 3):
            refused = await report(store, seq, [ran("web", ExecutionState.FAILED)])
            assert (refused.accepted, refused.last_seq) == (False, 5)
            assert not refused.changed_jobs
        assert await stored_node(store) == after
        assert await store.job_executions("web") == executions
        assert (after.last_seq, after.last_heartbeat, after.load) == (
            5,
            at(5),
            Load(cpu_percent=5.0),
        )

    async def test_executions_are_merged_since_survives_a_repeated_state(
        self, store: Store
    ) -> None:
        """Each reported execution is stored; ``since`` stays while the state repeats and
        moves when it changes, and only changed jobs are named."""
        one = await report(store, 1, [ran("web", STARTING), ran("api", HEALTHY)])
        assert one.changed_jobs == {"web", "api"}
        again = await report(store, 2, [ran("web", STARTING), ran("api", HEALTHY)])
        assert again.accepted
        assert again.changed_jobs == frozenset()
        web = (await store.job_executions("web"))["n1"]
        assert (web.state, web.since, web.updated_at) == (STARTING, at(1), at(1))
        healthy = await report(store, 3, [ran("web", HEALTHY), ran("api", HEALTHY)])
        assert healthy.changed_jobs == {"web"}
        web = (await store.job_executions("web"))["n1"]
        assert (web.state, web.since, web.updated_at) == (HEALTHY, at(3), at(3))
        restarted = await report(store, 4, [ran("web", HEALTHY, restarts=1), ran("api", HEALTHY)])
        assert restarted.changed_jobs == {"web"}
        web = (await store.job_executions("web"))["n1"]
        assert (web.since, web.updated_at, web.restarts) == (at(3), at(4), 1)
        assert (await store.job_executions("api"))["n1"].since == at(1)

    async def test_a_new_version_starts_a_new_since(self, store: Store) -> None:
        """The same state of another version (or generation) is a new run: ``since`` resets."""
        await report(store, 1, [ran("web", HEALTHY)])
        await report(store, 2, [ran("web", HEALTHY, version=2)])
        assert (await store.job_executions("web"))["n1"].since == at(2)
        await report(store, 3, [ran("web", HEALTHY, version=2, generation=1)])
        assert (await store.job_executions("web"))["n1"].since == at(3)

    async def test_a_repeated_execution_keeps_updated_at_beside_a_changed_one(
        self, store: Store
    ) -> None:
        """An execution the report repeats keeps ``updated_at`` even when another job of the
        same report changed."""
        await report(store, 1, [ran("web", STARTING), ran("api", HEALTHY)])
        await report(store, 2, [ran("web", HEALTHY), ran("api", HEALTHY)])
        assert (await store.job_executions("api"))["n1"].updated_at == at(1)

    async def test_a_job_not_reported_is_removed(self, store: Store) -> None:
        """A job missing from an accepted report loses its execution and counts as changed."""
        await report(store, 1, [ran("web", HEALTHY), ran("api", HEALTHY)])
        outcome = await report(store, 2, [ran("web", HEALTHY)])
        assert outcome.changed_jobs == {"api"}
        assert await store.job_executions("api") == {}
        assert set(await store.job_executions("web")) == {"n1"}
        emptied = await report(store, 3, [])
        assert emptied.changed_jobs == {"web"}
        assert await store.job_executions("web") == {}

    async def test_a_report_makes_the_node_ready(self, store: Store) -> None:
        """``status_changed`` says when a report found the node other than ready."""
        first = await report(store, 1, [])
        assert first.status_changed
        assert (await stored_node(store)).status == NodeStatus.READY
        assert not (await report(store, 2, [])).status_changed
        await store.set_node_status("n1", NodeStatus.DOWN)
        back = await report(store, 3, [])
        assert back.status_changed
        assert (await stored_node(store)).status == NodeStatus.READY

    async def test_conditions_are_replaced(self, store: Store) -> None:
        """Each accepted report's conditions replace the node's; an empty list clears them."""
        full = NodeCondition(type=DATA_DIR_UNWRITABLE, message="disk full", since=at(0))
        read_only = NodeCondition(type=DATA_DIR_UNWRITABLE, message="read-only", since=at(0))
        await report(store, 1, [], conditions=[full])
        assert (await stored_node(store)).conditions == [full]
        await report(store, 2, [], conditions=[full])
        assert (await stored_node(store)).conditions == [full]
        await report(store, 3, [], conditions=[read_only])
        assert (await stored_node(store)).conditions == [read_only]
        await report(store, 4, [])
        assert (await stored_node(store)).conditions == []

    async def test_resources_are_replaced_when_reported(self, store: Store) -> None:
        """Reported resources replace the node's; a report without them keeps them."""
        await report(store, 1, [], resources=Resources(cpu_count=8))
        await report(store, 2, [])
        assert (await stored_node(store)).resources == Resources(cpu_count=8)

    async def test_a_heartbeat_only_report_is_accepted(self, store: Store) -> None:
        """A report that repeats everything moves liveness only: seq, heartbeat and load."""
        await report(store, 1, [ran("web", HEALTHY)])
        before = await store.job_executions("web")
        beat = await report(store, 2, [ran("web", HEALTHY)])
        assert beat.accepted
        assert (beat.last_seq, beat.status_changed, beat.changed_jobs) == (2, False, frozenset())
        after = await stored_node(store)
        assert (after.last_seq, after.last_heartbeat, after.load) == (
            2,
            at(2),
            Load(cpu_percent=2.0),
        )
        assert await store.job_executions("web") == before

    async def test_the_outcome_carries_the_assign_index(self, store: Store) -> None:
        """A report answers with the node's current assignment index."""
        web = first_job()
        await store.save_job(web, expected_revision=None, new_version=None)
        await plan(store, engine_step(web), [AssignmentChange("n1", 1)], expected=web)
        assert (await report(store, 1, [])).assign_index == 2


class TestTokens:
    async def test_a_token_reads_back_by_id_hash_and_in_the_list(self, store: Store) -> None:
        """Tokens read back by id and secret hash, listed by creation time."""
        ci, oncall = token(CI_ID, "ci", created_at=at(2)), token(ONCALL_ID, "oncall")
        await store.insert_token(ci)
        await store.insert_token(oncall)
        assert await store.get_token(CI_ID) == ci
        assert await store.token_by_hash(f"secret-{ONCALL_ID}") == oncall
        assert await store.token_by_hash("nope") is None
        assert await store.get_token(JOIN_ID) is None
        assert await store.list_tokens() == [oncall, ci]

    async def test_a_usable_token_keeps_its_name(self, store: Store) -> None:
        """A token named like a usable one raises Conflict; once that one is revoked or has
        expired, the name is free."""
        await store.insert_token(token(CI_ID, "ci"))
        with pytest.raises(Conflict):
            await store.insert_token(token(ONCALL_ID, "ci", created_at=at(1)))
        assert await store.get_token(ONCALL_ID) is None
        await store.revoke_token(CI_ID, at(2))
        await store.insert_token(token(ONCALL_ID, "ci", created_at=at(3), expires_at=at(10)))
        await store.insert_token(token(JOIN_ID, "ci", created_at=at(10)))
        assert [t.id for t in await store.list_tokens()] == [CI_ID, ONCALL_ID, JOIN_ID]

    async def test_revocation_is_idempotent(self, store: Store) -> None:
        """Revoking again keeps the first time; an unknown token answers None."""
        await store.insert_token(token())
        first = await store.revoke_token(CI_ID, at(1))
        assert first is not None
        assert first.revoked_at == at(1)
        assert await store.revoke_token(CI_ID, at(2)) == first
        assert await store.get_token(CI_ID) == first
        assert await store.token_by_hash(f"secret-{CI_ID}") == first
        assert await store.revoke_token(ONCALL_ID, at(3)) is None


def audit(
    n: int,
    *,
    token_id: str = CI_ID,
    name: str = "ci",
    job: str = "",
    status: int = 200,
    t: float = 0,
) -> AuditEntry:
    return AuditEntry(
        time=at(t),
        token_id=token_id,
        token_name=name,
        method="POST",
        path=f"/v1/x/{n}",
        job=job,
        status=status,
    )


class TestAudit:
    async def test_entries_read_back_with_increasing_ids(self, store: Store) -> None:
        """Written entries get increasing ids and read back oldest first."""
        entries = [audit(i) for i in range(3)]
        ids = await store.write_audit(entries, [])
        assert ids == sorted(set(ids))
        more = await store.write_audit([audit(3)], [])
        assert more[0] > ids[-1]
        stored = [e.model_copy(update={"id": i}) for e, i in zip(entries, ids, strict=True)]
        assert await store.list_audit() == [*stored, audit(3).model_copy(update={"id": more[0]})]

    async def test_outcomes_complete_earlier_entries(self, store: Store) -> None:
        """An outcome sets the status and fills in what only the handler learned; empty
        fields keep what the entry had; an unknown entry id is ignored."""
        unanswered = audit(0, token_id="", name="", status=0).model_copy(update={"node": "n9"})
        [first, second] = await store.write_audit([unanswered, audit(1, status=0)], [])
        [third] = await store.write_audit(
            [audit(2)],
            [
                AuditOutcome(entry_id=first, status=201, token_id=CI_ID, token_name="ci"),
                AuditOutcome(entry_id=second, status=404, node="n1"),
                AuditOutcome(entry_id=10**6, status=500),
            ],
        )
        assert await store.list_audit() == [
            unanswered.model_copy(
                update={"id": first, "status": 201, "token_id": CI_ID, "token_name": "ci"}
            ),
            audit(1).model_copy(update={"id": second, "status": 404, "node": "n1"}),
            audit(2).model_copy(update={"id": third}),
        ]

    async def test_pages_between_after_and_before(self, store: Store) -> None:
        """``after`` and ``before`` are excluded; ``limit`` keeps the oldest of the range, or
        with ``newest_first`` the newest, newest first."""
        ids = await store.write_audit([audit(i) for i in range(10)], [])
        page = await store.list_audit(after=ids[1], before=ids[8], limit=3)
        assert [e.id for e in page] == ids[2:5]
        newest = await store.list_audit(after=ids[1], before=ids[8], limit=3, newest_first=True)
        assert [e.id for e in newest] == [ids[7], ids[6], ids[5]]
        assert [e.id for e in await store.list_audit(newest_first=True)] == ids[::-1]
        assert await store.list_audit(after=ids[-1]) == []

    async def test_filters_by_job_and_by_token_name_or_id(self, store: Store) -> None:
        """``job`` matches the entry's job; ``token`` its token's id when shaped like one,
        else its name."""
        entries = [
            audit(0, job="web"),
            audit(1, token_id=ONCALL_ID, name="oncall", job="web"),
            audit(2, token_id=ONCALL_ID, name="oncall", job="api"),
            audit(3, token_id="", name="", status=401),
            audit(4, token_id="bootstrap-admin", name="bootstrap-admin", job="web"),
        ]
        ids = await store.write_audit(entries, [])

        async def found(**query: Any) -> list[int]:
            return [ids.index(e.id) for e in await store.list_audit(**query)]

        assert await found(job="web") == [0, 1, 4]
        assert await found(token="oncall") == [1, 2]
        assert await found(token=ONCALL_ID) == [1, 2]
        assert await found(token=ONCALL_ID.upper()) == []
        assert await found(token="bootstrap-admin") == [4]
        assert await found(token="ci", job="web") == [0]
        assert await found(token=ONCALL_ID, job="web", newest_first=True) == [1]
        assert await found(token=JOIN_ID) == []
        assert await found(job="nope") == []

    async def test_prune_by_age(self, store: Store) -> None:
        """Entries older than ``before`` go; the count of dropped entries is returned."""
        ids = await store.write_audit([audit(i, t=i) for i in range(5)], [])
        assert await store.prune_audit(before=at(2), keep_rows=100) == 2
        assert [e.id for e in await store.list_audit()] == ids[2:]

    async def test_prune_by_age_compares_instants(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        """An entry a quarter second older than ``before`` goes, one a quarter second newer
        stays (whole and fractional seconds compared as times)."""
        ids = await store.write_audit([audit(0, t=1), audit(1, t=1.5), audit(2, t=2)], [])
        assert await store.prune_audit(before=at(1.25), keep_rows=100) == 1
        assert [e.id for e in await store.list_audit()] == ids[1:]
        assert await store.prune_audit(before=at(1.75), keep_rows=100) == 1
        assert [e.id for e in await store.list_audit()] == ids[2:]

    async def test_prune_keeps_the_newest_rows(self, store: Store) -> None:
        """Beyond ``keep_rows``, the oldest entries go."""
        ids = await store.write_audit([audit(i) for i in range(6)], [])
        assert await store.prune_audit(before=NOW, keep_rows=4) == 2
        assert [e.id for e in await store.list_audit()] == ids[2:]
        assert await store.prune_audit(before=NOW, keep_rows=0) == 4
        assert await store.list_audit() == []

    async def test_prune_caps_anonymous_refusals_apart(self, store: Store) -> None:
        """Refusals without a valid token beyond the newest ``keep_anonymous`` go; token
        holders' entries and anonymous non-refusals stay."""
        entries = [
            audit(0, token_id="", name="", status=401),
            audit(1),
            audit(2, token_id="", name="", status=403),
            audit(3, token_id="", name="", status=200),
            audit(4, token_id="", name="", status=401),
            audit(5, status=403),
        ]
        ids = await store.write_audit(entries, [])
        assert await store.prune_audit(before=NOW, keep_rows=100, keep_anonymous=1) == 2
        assert [ids.index(e.id) for e in await store.list_audit()] == [1, 3, 4, 5]

    async def test_keep_rows_counts_what_the_other_rules_left(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        """``keep_rows`` keeps the newest entries that survive age and the anonymous cap."""
        entries = [audit(i) for i in range(4)]
        entries.insert(2, audit(9, token_id="", name="", status=401))
        ids = await store.write_audit(entries, [])
        await store.prune_audit(before=NOW, keep_rows=3, keep_anonymous=0)
        assert [ids.index(e.id) for e in await store.list_audit()] == [1, 3, 4]


class TestPlans:
    @pytest.fixture(autouse=True)
    async def fleet(self, store: Store) -> None:
        for node_id in ("n1", "n2", "n3"):
            await store.insert_node(node(node_id))
        web = first_job()
        await store.save_job(web, expected_revision=None, new_version=None)

    async def test_a_plan_sets_and_removes_assignments(self, store: Store) -> None:
        """Assignments are set with the plan's time and removed; the job is saved and each
        changed node's assignment index moves by one per plan."""
        web = first_job()
        step1 = engine_step(web)
        changes = [AssignmentChange("n1", 1), AssignmentChange("n2", 1)]
        assert await plan(store, step1, changes, expected=web, t=1) == {"n1": 2, "n2": 2}
        assert await store.get_job("web") == step1
        assigned = AssignmentRecord(node_id="n1", job="web", version=1, assigned_at=at(1))
        assert await store.node_assignments("n1") == (2, [assigned])
        assert set(await store.job_assignments("web")) == {"n1", "n2"}

        step2 = engine_step(step1, generation=2)
        changes = [AssignmentChange("n1", 2, generation=2), AssignmentChange("n2", None)]
        assert await plan(store, step2, changes, expected=step1, t=2) == {"n1": 3, "n2": 3}
        moved = AssignmentRecord(
            node_id="n1", job="web", version=2, generation=2, assigned_at=at(2)
        )
        assert await store.job_assignments("web") == {"n1": moved}
        assert await store.node_assignments("n1") == (3, [moved])
        assert await store.node_assignments("n2") == (3, [])
        assert await store.node_assignments("n3") == (1, [])
        assert (await stored_node(store, "n3")).assign_index == 1
        assert (await stored_node(store, "n1")).assign_index == 3

    async def test_a_node_lists_its_assignments_by_job(self, store: Store) -> None:
        """A node's assignments of several jobs are listed by job name."""
        web, api = first_job(), first_job("api")
        await store.save_job(api, expected_revision=None, new_version=None)
        await plan(store, engine_step(web), [AssignmentChange("n1", 1)], expected=web)
        await plan(store, engine_step(api), [AssignmentChange("n1", 1)], expected=api)
        index, assignments = await store.node_assignments("n1")
        assert index == 3
        assert [a.job for a in assignments] == ["api", "web"]

    async def test_a_plan_stores_its_events(self, store: Store) -> None:
        """The plan's events are stored in order with increasing ids."""
        web = first_job()
        events = [event("wave_started", t=1), event("assigned", node_id="n1", t=1)]
        await plan(store, engine_step(web), [AssignmentChange("n1", 1)], events, expected=web)
        stored = await store.list_events()
        ids = [e.id for e in stored]
        assert ids == sorted(set(ids))
        assert ids[0] > 0
        assert stored == [e.model_copy(update={"id": i}) for e, i in zip(events, ids, strict=True)]
        assert await store.last_event_id() == ids[-1]

    async def test_a_stale_plan_writes_nothing(self, store: Store) -> None:
        """A plan whose expected revision is stale raises Conflict; the job, assignments,
        assignment indexes and events are as before, and no listener is called."""
        web = first_job()
        step1 = engine_step(web)
        await plan(store, step1, [AssignmentChange("n1", 1)], [event("one")], expected=web)
        calls: list[None] = []
        store.on_events(lambda: calls.append(None))
        last = await store.last_event_id()
        with pytest.raises(Conflict):
            await plan(
                store,
                engine_step(step1, generation=2),
                [AssignmentChange("n1", None), AssignmentChange("n2", 1)],
                [event("two")],
                expected=web,
            )
        assert await store.get_job("web") == step1
        assert set(await store.job_assignments("web")) == {"n1"}
        assert await store.node_assignments("n2") == (1, [])
        assert (await store.node_assignments("n1"))[0] == 2
        assert await store.last_event_id() == last
        assert [e.kind for e in await store.list_events()] == ["one"]
        assert calls == []

    async def test_a_plan_for_a_job_not_stored_conflicts(self, store: Store) -> None:
        """A plan for a job that is not stored raises Conflict and writes nothing."""
        ghost = first_job("ghost")
        with pytest.raises(Conflict):
            await plan(store, engine_step(ghost), [AssignmentChange("n1", 1)], expected=ghost)
        assert await store.get_job("ghost") is None
        assert await store.node_assignments("n1") == (1, [])


class TestEvents:
    async def test_no_events_yet(self, store: Store) -> None:
        """An empty store has no events and a last event id of 0."""
        assert await store.last_event_id() == 0
        assert await store.list_events() == []

    async def test_appended_events_list_by_job_after_and_limit(self, store: Store) -> None:
        """Events read back in order with increasing ids, filtered by job, after an id, and
        cut at ``limit``."""
        await store.append_events([event("a", job="web"), event("b", job="api")])
        await store.append_events([event("c", job="web"), event("d", job="")])
        stored = await store.list_events()
        assert [e.kind for e in stored] == ["a", "b", "c", "d"]
        ids = [e.id for e in stored]
        assert ids == sorted(set(ids))
        assert await store.last_event_id() == ids[-1]
        assert stored[1] == event("b", job="api").model_copy(update={"id": ids[1]})
        assert [e.kind for e in await store.list_events(job="web")] == ["a", "c"]
        assert [e.kind for e in await store.list_events(after=ids[1])] == ["c", "d"]
        assert [e.kind for e in await store.list_events(job="web", after=ids[0])] == ["c"]
        assert [e.kind for e in await store.list_events(limit=2)] == ["a", "b"]
        assert [e.kind for e in await store.list_events(after=ids[0], limit=1)] == ["b"]
        assert await store.list_events(after=ids[-1]) == []

    async def test_listeners_hear_of_each_commit_that_stored_events(self, store: Store) -> None:
        """Every listener is called once per write that stored events, and not for writes
        without events."""
        web = first_job()
        await store.save_job(web, expected_revision=None, new_version=None)
        calls: list[str] = []
        store.on_events(lambda: calls.append("first"))
        store.on_events(lambda: calls.append("second"))
        await store.append_events([event("a"), event("b")])
        assert calls == ["first", "second"]
        await store.append_events([])
        step = engine_step(web)
        await plan(store, step, [], expected=web)
        assert calls == ["first", "second"]
        await plan(store, engine_step(step), [], [event("c")], expected=step)
        assert calls == ["first", "second"] * 2
