"""An agent with two coordinators that share one state (HA): it fails over at once when one
dies or answers 503, resumes its long-poll at the same index on the other, sticks to the one
that works, and never stops or restarts a workload because a coordinator went away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp.test_utils import TestServer

from agent.backoff import BackoffPolicy
from agent.client import CoordinatorClient
from agent.daemon import Agent
from agent.transport import StreamTransport
from shared.protocol import ReportRequest
from tests.agent.factories import assignment, job_spec, settings
from tests.agent.fake_coordinator import FakeCoordinator, FakeNode
from tests.helpers import eventually

JOIN_TOKEN = "join-secret"
NEVER = BackoffPolicy(base=600.0, cap=600.0)
"""A backoff no test outlives: an agent that backs off instead of trying the next
coordinator at once makes the test time out."""
FAST = BackoffPolicy(base=0.05, cap=0.2)


class Pair:
    """One coordinator state served as replicas ``a`` and ``b`` on their own ports."""

    def __init__(self, coord: FakeCoordinator, a: TestServer, b: TestServer) -> None:
        self.coord = coord
        self.servers = {"a": a, "b": b}

    def url(self, replica: str) -> str:
        return str(self.servers[replica].make_url("")).rstrip("/")


@pytest.fixture
async def pair(aiohttp_server: Any) -> Pair:
    coord = FakeCoordinator(join_token=JOIN_TOKEN)
    # A stopped replica ends its open long-polls at once, as a killed process would.
    a = await aiohttp_server(coord.app("a"), host="127.0.0.1", shutdown_timeout=0.1)
    b = await aiohttp_server(coord.app("b"), host="127.0.0.1", shutdown_timeout=0.1)
    return Pair(coord, a, b)


@pytest.fixture
async def make_agent(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    agents: list[Agent] = []

    async def make(urls: list[str], *, backoff: BackoffPolicy, **overrides: Any) -> Agent:
        agent = Agent(
            settings(tmp_path / "data", coordinators=urls, **overrides),
            join_token=JOIN_TOKEN,
            backoff=backoff,
            report_debounce=0.02,
            poll_margin=2.0,
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.shutdown()


def sleeper_pid(agent: Agent) -> int | None:
    supervisor = agent.manager.supervisors.get("sleeper")
    reports = [r for r in agent.manager.reports() if r.job == "sleeper"]
    return reports[0].pid if supervisor is not None and reports else None


class TestFailover:
    async def test_a_coordinator_dying_mid_long_poll_moves_the_poll_to_the_other(
        self, pair: Pair, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """Replica a dies while the agent long-polls it: the poll goes on at b at once with
        the same index, the next assignment arrives through b, and the running workload is
        neither stopped nor restarted."""
        coord = pair.coord
        agent = await make_agent([pair.url("a"), pair.url("b")], backoff=NEVER, poll_wait="30s")
        await eventually(lambda: coord.node("node-1") is not None, timeout=10)
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: sleeper_pid(agent), timeout=10)
        pid = sleeper_pid(agent)
        index = agent.session.index
        await eventually(lambda: coord.poll_log[-1] == ("a", index), timeout=10)

        await pair.servers["a"].close()
        coord.assign("node-1", [assignment(job_spec("sleeper")), assignment(job_spec("other"))])

        await eventually(lambda: "other" in agent.manager.supervisors, timeout=10)
        assert ("b", index) in coord.poll_log  # resumed where a left off, not from 0
        assert agent.client.current_url == pair.url("b")
        assert sleeper_pid(agent) == pid
        assert agent.session.offline_since is None  # b answered: never "unreachable"

    async def test_a_503_moves_on_at_once_and_the_agent_sticks_to_the_other(
        self, pair: Pair, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """Replica a answers 503 (its database is down): the agent registers, polls and
        reports through b without backing off, and stays on b once a is back."""
        coord = pair.coord
        coord.unavailable.add("a")
        agent = await make_agent([pair.url("a"), pair.url("b")], backoff=NEVER)
        await eventually(lambda: agent.sync.synced.is_set(), timeout=10)
        assert agent.client.current_url == pair.url("b")
        coord.unavailable.clear()
        served_a = coord.served["a"]
        reports = len(coord.reports)
        await eventually(lambda: len(coord.reports) >= reports + 5, timeout=10)
        assert coord.served["a"] == served_a
        assert agent.client.current_url == pair.url("b")

    async def test_only_a_full_round_of_failures_backs_off_and_workloads_keep_running(
        self, pair: Pair, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """Both replicas fail: the agent backs off and keeps its workload as it is; when b
        answers again it catches up through b, with the same process still running."""
        coord = pair.coord
        agent = await make_agent([pair.url("a"), pair.url("b")], backoff=FAST)
        await eventually(lambda: coord.node("node-1") is not None, timeout=10)
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: sleeper_pid(agent), timeout=10)
        pid = sleeper_pid(agent)

        coord.unavailable.update({"a", "b"})
        await pair.servers["a"].close()
        await eventually(lambda: agent.session.offline_since is not None, timeout=10)
        reports = len(coord.reports)
        coord.unavailable.clear()
        await eventually(lambda: len(coord.reports) > reports, timeout=10)

        # (A poll that failed just before b came back may still count as an outage.)
        await eventually(lambda: agent.session.offline_since is None, timeout=10)
        assert agent.client.current_url == pair.url("b")
        assert sleeper_pid(agent) == pid
        assert psutil.pid_exists(pid)  # type: ignore[arg-type]

    async def test_a_paused_coordinator_costs_a_report_two_heartbeats_and_moves_the_poll(
        self, pair: Pair, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """Replica a is paused (it holds every request without answering): the next report
        gives up on it after two heartbeats (never a whole request timeout) and goes to b,
        and the long-poll a still holds is asked again of b at once, so an assignment made
        meanwhile arrives long before the poll's 30 s wait would have ended."""
        coord = pair.coord
        coord.heartbeat_interval = 0.5
        agent = await make_agent([pair.url("a"), pair.url("b")], backoff=NEVER, poll_wait="30s")
        await eventually(lambda: coord.node("node-1") is not None, timeout=10)
        node = coord.node("node-1")
        assert node is not None
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: sleeper_pid(agent), timeout=10)
        index = agent.session.index
        await eventually(lambda: coord.poll_log[-1] == ("a", index), timeout=10)

        coord.frozen.add("a")
        reports = len(coord.reports)
        # A paused replica answers nothing, not even the poll it already holds.
        coord.assign(
            "node-1", [assignment(job_spec("sleeper")), assignment(job_spec("other"))], wake=False
        )
        await eventually(lambda: len(coord.reports) > reports, timeout=15)  # via b
        await eventually(lambda: "other" in agent.manager.supervisors, timeout=15)
        assert any(replica == "b" for replica, _ in coord.poll_log)
        assert agent.client.current_url == pair.url("b")
        assert agent.session.offline_since is None
        coord.frozen.clear()


class TestPausedCoordinator:
    """The client alone, against replica a paused (it takes requests and never answers) and
    b serving: what a paused coordinator may cost, with a request timeout of 60 s."""

    @pytest.fixture
    async def client(self, pair: Pair) -> AsyncIterator[tuple[CoordinatorClient, str]]:
        node = FakeNode(node_id="node-1", name="n1", token="token-1")
        pair.coord.nodes[node.token] = node
        async with StreamTransport() as session:
            yield (
                CoordinatorClient(
                    [pair.url("a"), pair.url("b")], session, request_timeout=60, poll_margin=5
                ),
                node.token,
            )

    async def test_a_report_gives_up_on_it_after_its_deadline(
        self, pair: Pair, client: tuple[CoordinatorClient, str]
    ) -> None:
        api, token = client
        pair.coord.frozen.add("a")
        async with asyncio.timeout(20):  # far below the 60 s request timeout
            answer = await api.report(token, ReportRequest(seq=1), deadline=0.5)
        assert answer.accepted
        assert api.current_url == pair.url("b")

    async def test_a_poll_it_holds_moves_when_another_call_fails_over(
        self, pair: Pair, client: tuple[CoordinatorClient, str]
    ) -> None:
        api, token = client
        poll = asyncio.ensure_future(api.assignments(token, pair.coord.index, wait=60))
        await eventually(lambda: pair.coord.poll_log == [("a", pair.coord.index)], timeout=10)
        pair.coord.frozen.add("a")
        pair.coord.assign("n1", [assignment(job_spec("other"))], wake=False)
        await api.report(token, ReportRequest(seq=1), deadline=0.5)  # fails over to b
        async with asyncio.timeout(20):  # the held poll would wait 60 s
            answer = await poll
        assert [a.job for a in answer.assignments] == ["other"]
        assert pair.coord.poll_log[-1] == ("b", pair.coord.index - 1)
