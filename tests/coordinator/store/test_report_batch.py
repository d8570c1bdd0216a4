"""Group commit: a report that cannot be stored fails alone; the rest of its batch commits.

The reports are queued together with ``asyncio.gather``: each is appended before the writer
task first runs, so they share one transaction.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.domain.records import NodeRecord
from coordinator.store.sqlite import SqliteStore
from shared.errors import BadRequest
from shared.nodes import Load
from shared.protocol import ExecutionReport, ExecutionState
from tests.coordinator.store.conftest import CLOCK


def healthy(message: str = "") -> ExecutionReport:
    return ExecutionReport(job="web", version=1, state=ExecutionState.HEALTHY, message=message)


def poisoned_message() -> ExecutionReport:
    """A report no HTTP body can carry (a lone surrogate): it fails while being encoded."""
    return ExecutionReport.model_construct(
        job="web",
        version=1,
        generation=0,
        state=ExecutionState.FAILED,
        message="\ud800",
        restarts=0,
        exit_code=None,
        pid=None,
    )


async def report(store: SqliteStore, node_id: str, seq: int, execution: ExecutionReport) -> object:
    return await store.record_report(
        node_id, seq=seq, load=Load(), resources=None, executions=[execution], now=CLOCK.now()
    )


@pytest.fixture
async def three(store: SqliteStore) -> SqliteStore:
    """The store with nodes n1 (from the fixture), n2 and n3."""
    for node_id in ("n2", "n3"):
        await store.insert_node(
            NodeRecord(
                id=node_id, name=node_id, token_hash="h" + node_id, registered_at=CLOCK.now()
            )
        )
    return store


@pytest.mark.parametrize(
    ("seq", "execution"),
    [(2**63, healthy()), (1, poisoned_message())],
    ids=["seq-beyond-64-bits", "unencodable-message"],
)
async def test_a_poisoned_report_fails_alone(
    three: SqliteStore, tmp_path: Path, seq: int, execution: ExecutionReport
) -> None:
    """n2's report cannot be stored: it gets a BadRequest, while n1's and n3's, committed
    in the same transaction, are durable (they survive a reopen) and n2 is unchanged."""
    outcomes = await asyncio.gather(
        report(three, "n1", 1, healthy("one")),
        report(three, "n2", seq, execution),
        report(three, "n3", 1, healthy("three")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], BadRequest)
    assert outcomes[1].message.startswith("the report cannot be stored: ")
    assert [getattr(o, "accepted", None) for o in (outcomes[0], outcomes[2])] == [True, True]
    await three.close()

    again = SqliteStore(tmp_path / "fleetwave.db")
    await again.open()
    try:
        runs = await again.job_executions("web")
        assert {node: run.message for node, run in runs.items()} == {"n1": "one", "n3": "three"}
        n2 = await again.get_node("n2")
        assert n2 is not None
        assert n2.last_seq == 0
        assert (await report(again, "n2", 1, healthy("two"))).accepted  # type: ignore[attr-defined]
    finally:
        await again.close()


async def test_a_node_whose_second_report_is_poisoned_keeps_its_first(
    store: SqliteStore,
) -> None:
    """Two reports of one node in one batch: the poisoned second fails, the first stands."""
    first, second = await asyncio.gather(
        report(store, "n1", 1, healthy("first")),
        report(store, "n1", 2, poisoned_message()),
        return_exceptions=True,
    )
    assert getattr(first, "accepted", None) is True
    assert isinstance(second, BadRequest)
    node = await store.get_node("n1")
    assert node is not None
    assert node.last_seq == 1
    assert (await store.job_executions("web"))["n1"].message == "first"
