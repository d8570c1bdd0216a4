"""Operator actions go through the driver: the action and the engine's reaction to it are
one plan, written in one transaction with the action's events.

The store is MemoryStore (our fast fake of the Store port, held to the same contract as
SQLite and PostgreSQL by tests/coordinator/store/test_contract.py), wrapped to count the
transactions; the driver, planner and actions are the real ones, on a FakeClock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from coordinator.domain.records import AssignmentChange, Event, JobRecord
from coordinator.engine import actions
from coordinator.engine.driver import JobLocks, RolloutDriver
from coordinator.engine.observation import ObservationWindow
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.memory import MemoryStore
from coordinator.submit import submit_job
from coordinator.watch import Watches
from shared.clock import FakeClock
from shared.errors import Conflict, NotFound
from shared.nodes import Load
from shared.protocol import ExecutionReport, ExecutionState
from shared.spec import JobSpec
from tests.coordinator.engine.fixtures import make_node


class CountingStore(MemoryStore):
    """MemoryStore that records every plan it is asked to write."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[tuple[JobRecord, list[AssignmentChange], list[Event]]] = []

    async def apply_plan(
        self,
        job: JobRecord,
        *,
        expected_revision: int,
        changes: Sequence[AssignmentChange],
        events: Sequence[Event],
        now: datetime,
        epoch: int | None = None,
    ) -> Mapping[str, int]:
        indexes = await super().apply_plan(
            job,
            expected_revision=expected_revision,
            changes=changes,
            events=events,
            now=now,
            epoch=epoch,
        )
        self.plans.append((job, list(changes), list(events)))
        return indexes


def spec(version_env: str, **rollout: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "web",
            "task": {"command": ["run"], "env": {"V": version_env}},
            "rollout": {"min_healthy_time": "1s", "healthy_deadline": "1m", **rollout},
        }
    )


class Fleet:
    def __init__(self) -> None:
        self.store = CountingStore()
        self.clock = FakeClock()
        window = ObservationWindow(self.clock, timedelta(0), gap_seconds=math.inf)
        self.locks = JobLocks()
        self.driver = RolloutDriver(
            self.store, self.clock, Watches(), self.locks, window, CoordinatorMetrics()
        )
        self.seq: dict[str, int] = {}

    async def start(self, nodes: int) -> None:
        for i in range(1, nodes + 1):
            await self.store.insert_node(make_node(f"n{i}"))

    async def submit(self, job_spec: JobSpec) -> None:
        await submit_job(self.store, self.locks, job_spec, None, self.clock.now())
        await self.driver.evaluate(job_spec.name)

    async def report_assigned(self) -> None:
        """Every node reports its assigned version healthy (as its agent would)."""
        for node in await self.store.list_nodes():
            _, assigned = await self.store.node_assignments(node.id)
            self.seq[node.id] = self.seq.get(node.id, 0) + 1
            await self.store.record_report(
                node.id,
                seq=self.seq[node.id],
                load=Load(),
                resources=None,
                executions=[
                    ExecutionReport(
                        job=a.job,
                        version=a.version,
                        generation=a.generation,
                        state=ExecutionState.HEALTHY,
                    )
                    for a in assigned
                ],
                now=self.clock.now(),
            )

    async def settle(self, rounds: int = 6) -> None:
        """Agents report, time passes, the engine evaluates: a few rounds of a live fleet."""
        for _ in range(rounds):
            await self.report_assigned()
            self.clock.advance(2)
            await self.driver.evaluate("web")

    async def versions(self) -> dict[str, int]:
        return {n: a.version for n, a in (await self.store.job_assignments("web")).items()}


async def test_promote_writes_the_action_and_the_next_wave_in_one_plan() -> None:
    fleet = Fleet()
    await fleet.start(nodes=4)
    await fleet.submit(spec("1"))
    await fleet.settle()
    await fleet.submit(spec("2", canary=1, auto_promote=False, waves=1))
    await fleet.settle()
    job = await fleet.store.get_job("web")
    assert job is not None
    assert job.rollout.gate.value == "canary"
    assert sorted((await fleet.versions()).values()) == [1, 1, 1, 2]

    fleet.store.plans.clear()
    acted = await fleet.driver.act(
        "web", lambda j: actions.promote(j, fleet.clock.now(), full=False), by="alice"
    )

    assert len(fleet.store.plans) == 1, "the action and the engine's reaction are one write"
    written, changes, events = fleet.store.plans[0]
    assert events[0].kind == "rollout_promoted"
    assert events[0].by == "alice"
    assert len(changes) == 3  # the one wave: every node but the canary
    assert {c.version for c in changes} == {2}
    assert acted == written == await fleet.store.get_job("web")
    assert sorted((await fleet.versions()).values()) == [2, 2, 2, 2]


async def test_an_action_that_does_not_apply_writes_nothing() -> None:
    fleet = Fleet()
    await fleet.start(nodes=2)
    await fleet.submit(spec("1"))
    await fleet.settle()
    fleet.store.plans.clear()
    events_before = await fleet.store.last_event_id()
    with pytest.raises(Conflict, match="no rollout is in progress"):
        await fleet.driver.act("web", lambda j: actions.pause(j, fleet.clock.now()))
    assert fleet.store.plans == []
    assert await fleet.store.last_event_id() == events_before
    with pytest.raises(NotFound):
        await fleet.driver.act("nope", lambda j: actions.pause(j, fleet.clock.now()))


async def test_an_action_on_a_stale_record_changes_nothing() -> None:
    """The plan is a compare-and-set on the revision the action was decided on: a job that
    changed meanwhile (another coordinator's engine wrote it) makes it a Conflict."""
    fleet = Fleet()
    await fleet.start(nodes=2)
    await fleet.submit(spec("1"))
    await fleet.submit(spec("2", canary=1, auto_promote=False))
    stored = await fleet.store.get_job("web")
    assert stored is not None

    def racing_pause(job: JobRecord) -> tuple[JobRecord, list[Event]]:
        # Someone else writes the job between the action's read and its write.
        fleet.store._state.put_job(
            job.model_copy(update={"status": job.status.model_copy(update={"revision": 99})})
        )
        return actions.pause(job, fleet.clock.now())

    events_before = await fleet.store.last_event_id()
    with pytest.raises(Conflict, match="changed concurrently"):
        await fleet.driver.act("web", racing_pause)
    assert await fleet.store.last_event_id() == events_before
    after = await fleet.store.get_job("web")
    assert after is not None
    assert after.rollout.gate == stored.rollout.gate
