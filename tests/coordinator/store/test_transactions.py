"""Transactions that cannot lie: memory follows only a COMMIT that succeeded, a storage
failure is StoreUnavailable naming the database, and the store notices when writes work
again. Real SqliteStore on a real file; the failures are real SQLite errors (faults.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator.domain.records import AssignmentChange, Event, JobRecord, NodeRecord
from coordinator.store.sqlite import SqliteStore
from coordinator.submit import revise
from shared.clock import FakeClock
from shared.errors import Conflict, StoreError, StoreUnavailable
from shared.nodes import Load
from shared.protocol import ExecutionReport, ExecutionState
from shared.spec import parse_job_spec
from tests.coordinator.store.faults import commit_faults, fill_disk, free_disk
from tests.helpers import eventually

CLOCK = FakeClock()


def spec(version: int, pad: int = 0) -> dict[str, Any]:
    """Version ``version`` of a job spec; ``pad`` bytes of environment make it need new
    database pages."""
    env = {"PAD": "x" * pad} if pad else {}
    return {"name": "web", "task": {"command": ["sleep", str(version)], "env": env}}


def revised(job: JobRecord | None, pad: int = 0) -> JobRecord:
    """The next version of ``job`` (its first when None), as a submission makes it."""
    version = job.status.version + 1 if job else 1
    new = revise(job, parse_job_spec(spec(version, pad)), CLOCK.now())
    assert new is not None
    return new


async def save(store: SqliteStore, job: JobRecord, previous: JobRecord | None) -> None:
    await store.save_job(
        job,
        expected_revision=previous.status.revision if previous else None,
        new_version=None,
    )


async def on_disk(store: SqliteStore) -> SqliteStore:
    """A second store opened on the same file: what the database holds."""
    other = SqliteStore(store.path)
    await other.open()
    return other


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "fleetwave.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def v1(store: SqliteStore) -> JobRecord:
    job = revised(None)
    await save(store, job, None)
    return job


async def node(store: SqliteStore, node_id: str = "n1") -> NodeRecord:
    record = NodeRecord(
        id=node_id, name=node_id, token_hash="h" + node_id, registered_at=CLOCK.now()
    )
    await store.insert_node(record)
    return record


async def report(store: SqliteStore, seq: int, state: ExecutionState) -> bool:
    outcome = await store.record_report(
        "n1",
        seq=seq,
        load=Load(cpu_percent=float(seq)),
        resources=None,
        executions=[ExecutionReport(job="web", version=1, state=state)],
        now=CLOCK.now() + timedelta(seconds=seq),
    )
    return outcome.accepted


class TestFailedCommit:
    async def test_memory_stays_at_the_committed_state(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """A COMMIT that fails raises StoreUnavailable and the job reads as before, in memory
        and on disk."""
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable, match="could not save job 'web': interrupted"):
            await save(store, revised(v1), v1)
        assert await store.get_job("web") == v1
        other = await on_disk(store)
        try:
            assert await other.get_job("web") == v1
        finally:
            await other.close()

    async def test_the_same_write_succeeds_afterwards_without_a_conflict(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """Retrying the write with the same expected revision commits (no 409 loop)."""
        faults = await commit_faults(store)
        faults.failing = 1
        v2 = revised(v1)
        with pytest.raises(StoreUnavailable):
            await save(store, v2, v1)
        await save(store, v2, v1)
        assert await store.get_job("web") == v2
        other = await on_disk(store)
        try:
            assert await other.get_job("web") == v2
        finally:
            await other.close()

    async def test_the_next_transaction_does_not_apply_the_failed_one(
        self, store: SqliteStore
    ) -> None:
        """What a failed transaction would have put in memory never gets there, also not when
        the next transaction commits."""
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable):
            await save(store, revised(None), None)
        await node(store)
        assert await store.get_job("web") is None
        assert await store.list_jobs() == []

    async def test_failed_events_wake_no_listener(self, store: SqliteStore) -> None:
        """Event listeners hear only of events that were committed."""
        woken: list[int] = []
        store.on_events(lambda: woken.append(1))
        faults = await commit_faults(store)
        faults.failing = 1
        event = Event(time=CLOCK.now(), job="web", kind="rollout_started")
        with pytest.raises(StoreUnavailable):
            await store.append_events([event])
        await node(store)
        assert woken == []
        assert await store.last_event_id() == 0

    async def test_a_failed_plan_changes_no_assignment(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """apply_plan that fails to commit leaves job, assignments and node index as they
        were, and applying the same plan again works."""
        await node(store)
        faults = await commit_faults(store)
        faults.failing = 1
        later = v1.model_copy(
            update={"status": v1.status.model_copy(update={"revision": v1.status.revision + 1})}
        )

        async def apply() -> None:
            await store.apply_plan(
                later,
                expected_revision=v1.status.revision,
                changes=[AssignmentChange(node_id="n1", version=1)],
                events=[],
                now=CLOCK.now(),
            )

        with pytest.raises(StoreUnavailable):
            await apply()
        assert await store.job_assignments("web") == {}
        assert await store.node_assignments("n1") == (1, [])
        await apply()
        assert (await store.node_assignments("n1"))[0] == 2
        assert await store.get_job("web") == later

    async def test_a_failed_registration_leaves_no_node(self, store: SqliteStore) -> None:
        """insert_node that fails to commit leaves no node behind in memory."""
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable, match="register node 'n1'"):
            await node(store)
        assert await store.get_node("n1") is None
        await node(store)
        assert await store.get_node("n1") is not None

    async def test_a_cancelled_commit_that_commits_reaches_memory(self, store: SqliteStore) -> None:
        """A caller cancelled while its COMMIT runs still leaves memory equal to the file:
        the COMMIT completes in SQLite's thread, so memory takes the write too."""
        faults = await commit_faults(store)
        faults.hold = True
        task = asyncio.create_task(save(store, revised(None), None))
        await eventually(faults.reached.is_set)
        task.cancel()
        await asyncio.sleep(0)
        faults.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        other = await on_disk(store)
        try:
            assert await other.get_job("web") is not None
        finally:
            await other.close()
        assert await store.get_job("web") is not None


class TestReportsAndLiveness:
    async def test_a_failed_group_commit_fails_its_reports_and_keeps_memory(
        self, store: SqliteStore
    ) -> None:
        """Every report of a group commit that fails gets StoreUnavailable, the node keeps
        its seq and executions, and the agent's next seq is accepted."""
        await node(store)
        assert await report(store, 1, ExecutionState.STARTING)
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable, match="record 1 reports"):
            await report(store, 2, ExecutionState.HEALTHY)
        stored = await store.get_node("n1")
        assert stored is not None
        assert stored.last_seq == 1
        assert (await store.job_executions("web"))["n1"].state == ExecutionState.STARTING
        assert await report(store, 3, ExecutionState.HEALTHY)
        assert (await store.job_executions("web"))["n1"].state == ExecutionState.HEALTHY

    async def test_a_failed_liveness_flush_is_retried(self, store: SqliteStore) -> None:
        """Heartbeats a failed flush did not write stay pending; the next flush writes them."""
        await node(store)
        assert await report(store, 1, ExecutionState.HEALTHY)
        assert await report(store, 2, ExecutionState.HEALTHY)
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable, match="write the heartbeats of 1 nodes"):
            await store.flush_liveness()
        await store.flush_liveness()
        other = await on_disk(store)
        try:
            stored = await other.get_node("n1")
            assert stored is not None
            assert stored.load.cpu_percent == 2.0
        finally:
            await other.close()


class TestFullDisk:
    async def test_a_full_disk_is_store_unavailable_naming_the_database(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """SQLITE_FULL raises StoreUnavailable that says so and names the file; the job
        stays as committed and the same write works once there is room."""
        await fill_disk(store)
        v2 = revised(v1, pad=32 * 1024)
        with pytest.raises(StoreUnavailable) as failed:
            await save(store, v2, v1)
        assert "database or disk is full" in failed.value.message
        assert store.path in failed.value.message
        assert await store.get_job("web") == v1
        await free_disk(store)
        await save(store, v2, v1)
        assert await store.get_job("web") == v2


class TestWriteHealth:
    async def test_a_failed_write_makes_the_store_unhealthy_until_one_commits(
        self, store: SqliteStore
    ) -> None:
        """write_health names the last failure and counts it; a committed write clears it."""
        assert store.write_health().failing is None
        faults = await commit_faults(store)
        faults.failing = 1
        with pytest.raises(StoreUnavailable):
            await node(store)
        health = store.write_health()
        assert health.failing is not None
        assert "register node 'n1'" in health.failing
        assert health.failures == 1
        await node(store)
        assert store.write_health().failing is None
        assert store.write_health().failures == 1

    async def test_conflicts_and_bugs_are_not_storage_failures(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """A stale revision is a Conflict and a broken constraint a StoreError (500): neither
        makes the store unhealthy."""
        with pytest.raises(Conflict):
            await save(store, revised(v1), revised(v1))
        first = await node(store)
        with pytest.raises(StoreError) as duplicate:  # the same id under another name
            await store.insert_node(first.model_copy(update={"name": "other", "token_hash": "h2"}))
        assert not isinstance(duplicate.value, StoreUnavailable)
        with pytest.raises(Conflict) as taken:  # a name belongs to one node
            await store.insert_node(first.model_copy(update={"id": "n2", "token_hash": "h3"}))
        assert "belongs to node n1" in taken.value.message
        assert store.write_health().failures == 0

    async def test_check_writable_probes_once_a_second_and_recovers(
        self, store: SqliteStore, v1: JobRecord
    ) -> None:
        """While writes fail, check_writable tries a real write at most once a second; once
        the disk has room again it succeeds and the store is healthy without other writes."""
        await fill_disk(store)
        with pytest.raises(StoreUnavailable):
            await save(store, revised(v1, pad=32 * 1024), v1)
        failing = store.write_health().failing
        assert failing is not None
        assert await store.check_writable(100.0) is not None
        assert store.write_health().failures == 2  # the probe failed too
        await free_disk(store)
        assert await store.check_writable(100.5) is not None  # too soon to probe again
        assert await store.check_writable(101.0) is None
        assert store.write_health().failing is None

    async def test_a_healthy_store_does_not_probe(self, store: SqliteStore) -> None:
        """check_writable writes nothing while writes commit."""
        faults = await commit_faults(store)
        faults.failing = 1  # a probe would fail
        assert await store.check_writable(0.0) is None
        assert faults.failing == 1
