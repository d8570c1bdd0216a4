"""The report loop on a data dir it cannot write: heartbeats go on, the node condition
says why, and the writes resume once the data dir takes them.

Real: ReportLoop, NodeSession, CoordinatorClient, IdentityStore, ExecutionManager and the
files in a tmp data dir. Fakes: the coordinator at the transport seam (FakeCoordinator over
real HTTP), the clock and the host probe. The failure is real too: a directory stands where
a file is written (the tests run as root, and modes do not stop root).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from agent.client import CoordinatorClient
from agent.config import HostPolicy
from agent.executions import ExecutionStore
from agent.identity import IdentityStore
from agent.manager import ExecutionManager
from agent.metrics import AgentMetrics
from agent.paths import DataDir
from agent.report import SEQ_BLOCK, ReportLoop, seq_reservation
from agent.session import NodeSession
from agent.transport import StreamTransport
from agent.writes import DataDirWrites
from shared.clock import FakeClock
from shared.nodes import DATA_DIR_UNWRITABLE, Load, Resources
from shared.protocol import ReportRequest
from tests.agent.fake_coordinator import FakeCoordinator

JOIN = "join-secret"


class StillHost:
    """A host probe with nothing to say."""

    def resources(self) -> Resources:
        return Resources(cpu_count=1)

    def load(self) -> Load:
        return Load()


@dataclass
class Node:
    """One agent's report loop and what it writes, against a fake coordinator."""

    coordinator: FakeCoordinator
    data: DataDir
    clock: FakeClock
    metrics: AgentMetrics
    loop: ReportLoop

    async def heartbeat(self) -> ReportRequest:
        """One turn of the loop (as at a heartbeat); the report the coordinator took."""
        sent = len(self.coordinator.reports)
        self.loop.notify()
        await self.loop.step()
        assert self.loop.failures == 0, "the report did not go out"
        assert len(self.coordinator.reports) == sent + 1
        return self.coordinator.reports[-1][1]

    @property
    def seq_file(self) -> Path:
        return self.data.root / "report_seq.json"

    def reserved(self) -> int:
        value: int = json.loads(self.seq_file.read_text())["reserved"]
        return value

    def errors(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "fleetwave_agent_data_dir_write_errors_total", {"kind": kind}
        )
        return value or 0.0


@pytest.fixture
async def node(tmp_path: Path, aiohttp_server: Any) -> AsyncIterator[Node]:
    coordinator = FakeCoordinator(join_token=JOIN)
    server: TestServer = await aiohttp_server(coordinator.app(), host="127.0.0.1")
    data = DataDir(tmp_path / "data")
    data.ensure()
    clock = FakeClock()
    metrics = AgentMetrics()
    writes = DataDirWrites(data.root, clock=clock, metrics=metrics)
    store = IdentityStore(data.root)
    async with StreamTransport() as http:
        client = CoordinatorClient([str(server.make_url("")).rstrip("/")], http)
        session = NodeSession(
            client=client,
            store=store,
            writes=writes,
            name="node-1",
            labels={},
            join_token=JOIN,
            host=StillHost(),
        )
        manager = ExecutionManager(
            runtimes={},
            data_dir=data,
            store=ExecutionStore(data.executions),
            writes=writes,
            clock=clock,
            http=http,
            policy=HostPolicy(),  # runs no job
        )
        loop = ReportLoop(
            session=session,
            client=client,
            manager=manager,
            store=store,
            writes=writes,
            host=StillHost(),
            clock=clock,
            rand=lambda: 0.5,
            debounce=0.0,
            metrics=metrics,
        )
        yield Node(coordinator, data, clock, metrics, loop)


class TestUnwritableDataDir:
    async def test_heartbeats_go_on_and_say_why(self, node: Node) -> None:
        """With the seq file unwritable every report still goes out (also after the
        coordinator refused a seq below its floor), carrying the condition; once the file
        can be written the reservation is saved and the condition clears."""
        first = await node.heartbeat()
        assert (first.seq, first.conditions, node.reserved()) == (1, [], SEQ_BLOCK)
        node.seq_file.unlink()
        node.seq_file.mkdir()  # the data dir stops taking this file
        fake = node.coordinator.node("node-1")
        assert fake is not None
        fake.last_seq = 150  # a restarted coordinator refuses seqs below its floor

        report = await node.heartbeat()  # 2 is refused; 151 needs a reservation: it fails
        assert report.seq == 151
        (condition,) = report.conditions
        assert condition.type == DATA_DIR_UNWRITABLE
        assert condition.message == f"cannot write {node.data.root}: [Errno 21] Is a directory"
        assert condition.since == node.clock.now()
        node.clock.advance(10)
        later = [await node.heartbeat() for _ in range(2)]
        assert [r.seq for r in later] == [152, 153]
        assert [r.conditions for r in later] == [[condition]] * 2  # the same episode
        assert node.errors("report_seq") == 3  # one try per report

        node.seq_file.rmdir()
        recovered = await node.heartbeat()
        assert (recovered.seq, recovered.conditions) == (154, [])
        assert node.reserved() == 154 + SEQ_BLOCK - 1
        assert (await node.heartbeat()).conditions == []

    async def test_identity_kept_in_memory_until_it_can_be_written(self, node: Node) -> None:
        """A node whose identity cannot be saved registers and reports all the same; the
        identity is written (and the condition cleared) at the first report after."""
        identity_file = node.data.root / "identity.json"
        identity_file.mkdir()
        report = await node.heartbeat()
        assert [c.type for c in report.conditions] == [DATA_DIR_UNWRITABLE]
        assert node.errors("identity") == 2  # at registration, and the report's retry
        assert node.reserved() == SEQ_BLOCK  # what could be written was

        identity_file.rmdir()
        report = await node.heartbeat()
        assert report.conditions == []
        assert json.loads(identity_file.read_text())["node_id"] == "node-1"
        assert len(node.coordinator.registrations) == 1
        assert node.reserved() == SEQ_BLOCK  # saving the identity left the seq alone

    async def test_blocks_of_seqs_are_reserved(self, node: Node) -> None:
        """The seq file is written once per block of reports, ahead of the seqs sent."""
        for _ in range(SEQ_BLOCK):
            await node.heartbeat()
        assert node.reserved() == SEQ_BLOCK
        node.seq_file.unlink()
        await node.heartbeat()  # seq SEQ_BLOCK + 1 starts the next block
        assert node.reserved() == 2 * SEQ_BLOCK


@pytest.mark.parametrize(
    ("seq", "reserved", "ceiling"),
    [(1, 0, SEQ_BLOCK), (5, 100, None), (100, 100, None), (101, 100, 100 + SEQ_BLOCK)],
)
def test_seq_reservation(seq: int, reserved: int, ceiling: int | None) -> None:
    """A new block is reserved only when the seq to send is above the reserved one."""
    assert seq_reservation(seq, reserved) == ceiling
