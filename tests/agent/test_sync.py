"""End-to-end tests of an in-process agent against a fake coordinator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.backoff import BackoffPolicy
from agent.daemon import Agent
from shared.clock import FakeClock
from shared.protocol import ExecutionReport, ExecutionState
from tests.agent.factories import PYTHON, assignment, free_port, job_spec, settings
from tests.agent.fake_coordinator import FakeCoordinator
from tests.helpers import eventually

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
FAST = BackoffPolicy(base=0.05, cap=0.2)
JOIN_TOKEN = "join-secret"


@pytest.fixture
async def coordinator(aiohttp_server: Any) -> tuple[FakeCoordinator, str]:
    coord = FakeCoordinator(join_token=JOIN_TOKEN)
    server: TestServer = await aiohttp_server(coord.app(), host="127.0.0.1")
    return coord, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def make_agent(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Starts agents on ``tmp_path/<name>`` and shuts every one down after the test."""
    agents: list[Agent] = []

    async def make(url: str, *, join_token: str = JOIN_TOKEN, **overrides: Any) -> Agent:
        values = {"coordinators": [url], **overrides}
        agent = Agent(
            settings(tmp_path / "data", **values),
            join_token=join_token,
            backoff=FAST,
            report_debounce=0.02,
            poll_margin=2.0,
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.shutdown()


def execution(coord: FakeCoordinator, job: str) -> ExecutionReport | None:
    """The job's execution in the latest report of any node."""
    if not coord.reports:
        return None
    _, report = coord.reports[-1]
    return next((e for e in report.executions if e.job == job), None)


def is_running(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def http_service(port_label: str = "${node.label.port}") -> Any:
    return job_spec(
        "web",
        command=[PYTHON, "-m", "http.server", "--bind", "127.0.0.1", port_label],
        health={
            "checks": [
                {"type": "http", "url": "http://127.0.0.1:${node.label.port}/", "interval": "100ms"}
            ]
        },
    )


class TestSyncLoop:
    async def test_full_cycle(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
        tmp_path: Path,
    ) -> None:
        """register → assignment → process started → report HEALTHY → assignment removed →
        process stopped; then after a 401 the node registers again and persists it."""
        coord, url = coordinator
        port = free_port()
        agent = await make_agent(url, labels={"port": str(port), "zone": "z1"})
        await eventually(lambda: coord.node("node-1") is not None)
        registration = coord.registrations[0]
        assert registration.labels == {"port": str(port), "zone": "z1"}
        assert registration.resources.cpu_count > 0
        identity_file = tmp_path / "data" / "identity.json"
        # Saved (atomically) once the agent has read the coordinator's answer.
        await eventually(
            lambda: (
                identity_file.exists()
                and json.loads(identity_file.read_text())["node_id"] == "node-1"
            )
        )

        coord.assign("node-1", [assignment(http_service(), version=1)])
        await eventually(
            lambda: (e := execution(coord, "web")) is not None and e.state == "healthy"
        )
        healthy = execution(coord, "web")
        assert healthy is not None
        assert (healthy.version, healthy.generation) == (1, 0)
        assert is_running(healthy.pid)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200
        _, report = coord.reports[-1]
        assert report.load.memory_used_bytes > 0
        assert report.resources is not None
        assert report.resources.disk_bytes > 0

        coord.assign("node-1", [])
        await eventually(lambda: not is_running(healthy.pid))
        await eventually(lambda: execution(coord, "web") is None)
        assert not list((tmp_path / "data" / "executions").iterdir())

        coord.forget_nodes()
        await eventually(lambda: coord.node("node-1") is not None)
        assert coord.node("node-1").node_id == "node-2"  # type: ignore[union-attr]
        await eventually(lambda: json.loads(identity_file.read_text())["node_id"] == "node-2")
        await eventually(lambda: coord.last_report("node-2") is not None)
        assert agent.session.identity is not None
        assert agent.session.identity.node_id == "node-2"

    async def test_new_version_replaces_and_generation_restarts(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """A new version replaces the process; a new generation restarts the same version."""
        coord, url = coordinator
        await make_agent(url)
        await eventually(lambda: coord.node("node-1") is not None)
        spec = job_spec("sleeper", command=["sleep", "300"])
        pids: list[int] = []
        for version, generation in [(1, 0), (2, 0), (2, 1)]:
            coord.assign("node-1", [assignment(spec, version=version, generation=generation)])

            def running(v: int = version, g: int = generation) -> bool:
                e = execution(coord, "sleeper")
                return e is not None and (e.version, e.generation, e.state) == (v, g, "healthy")

            await eventually(running)
            report = execution(coord, "sleeper")
            assert report is not None
            assert report.pid is not None
            pids.append(report.pid)
        assert len(set(pids)) == 3
        assert [is_running(pid) for pid in pids] == [False, False, True]

    async def test_keeps_running_while_coordinator_down(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """Workloads keep running through coordinator errors and reports resume afterwards."""
        coord, url = coordinator
        agent = await make_agent(url)
        await eventually(lambda: coord.node("node-1") is not None)
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: (e := execution(coord, "sleeper")) is not None and e.pid)
        pid = execution(coord, "sleeper").pid  # type: ignore[union-attr]
        coord.fail_with = 503
        await eventually(lambda: agent.sync.failures >= 2 and agent.reporter.failures >= 2)
        assert is_running(pid)
        sent = len(coord.reports)
        coord.fail_with = None
        await eventually(lambda: len(coord.reports) > sent)
        assert is_running(pid)
        await eventually(lambda: agent.sync.failures == 0)

    async def test_report_index_triggers_prompt_repoll(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """A report answer with a newer index cuts the long poll short and fetches at once."""
        coord, url = coordinator
        agent = await make_agent(url, poll_wait="60s")
        await eventually(lambda: agent.sync.synced.is_set() and coord.polls >= 2)
        coord.assign("node-1", [assignment(job_spec("sleeper"))], wake=False)
        await eventually(lambda: "sleeper" in agent.manager.supervisors)

    async def test_backoff_runs_on_the_injected_clock(
        self, coordinator: tuple[FakeCoordinator, str], tmp_path: Path
    ) -> None:
        """While the coordinator fails, retries wait on the agent's clock: each retry needs
        the fake clock to pass the jittered backoff delay (a 500: no Retry-After to wait out)."""
        coord, url = coordinator
        coord.fail_with = 500
        clock = FakeClock()
        agent = Agent(
            settings(tmp_path / "data", coordinators=[url]),
            join_token=JOIN_TOKEN,
            clock=clock,
            rand=lambda: 0.0,
            backoff=BackoffPolicy(base=2.0, cap=60.0),
        )
        await agent.start()
        try:
            await eventually(lambda: agent.sync.failures == 1)
            for failures, delay in [(2, 1.0), (3, 2.0), (4, 4.0)]:
                clock.advance(delay)
                await eventually(lambda f=failures: agent.sync.failures == f)  # type: ignore[misc]
            coord.fail_with = None
            clock.advance(60)
            await eventually(lambda: coord.node("node-1") is not None)
        finally:
            await agent.shutdown()

    async def test_seq_recovered_when_coordinator_saw_more(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """accepted=false sets the counter to last_seq+1 and the report is resent."""
        coord, url = coordinator
        await make_agent(url)
        await eventually(lambda: coord.node("node-1") is not None and coord.reports)
        node = coord.node("node-1")
        assert node is not None
        node.last_seq = 500
        await eventually(lambda: coord.reports[-1][1].seq > 500)
        assert coord.reports[-1][1].seq == 501

    async def test_completed_batch_not_rerun_after_agent_restart(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
        tmp_path: Path,
    ) -> None:
        """A batch job that completed is remembered across an agent restart, not run again."""
        coord, url = coordinator
        marker = tmp_path / "runs"
        spec = job_spec("once", command=["sh", "-c", f"echo run >> {marker}"], type="batch")
        first = await make_agent(url)
        await eventually(lambda: coord.node("node-1") is not None)
        coord.assign("node-1", [assignment(spec)])
        await eventually(
            lambda: (e := execution(coord, "once")) is not None and e.state == "completed"
        )
        await first.shutdown()
        second = await make_agent(url)
        await eventually(lambda: second.sync.synced.is_set())
        await eventually(lambda: second.reporter.sent > 0)
        reports = second.manager.reports()
        assert [(r.job, r.state) for r in reports] == [("once", ExecutionState.COMPLETED)]
        assert marker.read_text() == "run\n"

    async def test_workloads_left_running_are_adopted_on_next_start(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """A workload left running by shutdown(stop_workloads=False) is adopted by the next
        agent run: same pid, still running, never started a second time."""
        coord, url = coordinator
        first = await make_agent(url)
        await eventually(lambda: coord.node("node-1") is not None)
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: (e := execution(coord, "sleeper")) is not None and e.pid)
        old_pid = execution(coord, "sleeper").pid  # type: ignore[union-attr]
        child = first.manager.supervisors["sleeper"]._handle
        assert child is not None
        await first.shutdown(stop_workloads=False)
        assert is_running(old_pid)
        second = await make_agent(url)
        assert is_running(old_pid)
        assert second.manager.reports()[0].pid == old_pid
        await eventually(lambda: second.sync.synced.is_set())
        assert [r.pid for r in second.manager.reports()] == [old_pid]
        await eventually(lambda: execution(coord, "sleeper").pid == old_pid)  # type: ignore[union-attr]
        await second.shutdown()  # stops the adopted workload...
        await child.wait()  # ...which only this process, its parent, can reap

    async def test_rotates_past_dead_coordinator(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """With the first URL unreachable the agent registers through the second."""
        coord, url = coordinator
        dead = f"http://127.0.0.1:{free_port()}"
        agent = await make_agent(dead, coordinators=[dead, url])
        await eventually(lambda: coord.node("node-1") is not None)
        assert agent.client.current_url == url

    async def test_local_endpoints(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """/healthz, /readyz and /metrics answer on the local listen address."""
        _, url = coordinator
        agent = await make_agent(url, listen="127.0.0.1:0")
        await eventually(lambda: agent.sync.synced.is_set())
        base = f"http://127.0.0.1:{agent.local_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                body = await r.json()
                assert (r.status, body["registered"], body["node_id"]) == (200, True, "node-1")
            async with http.get(base + "/metrics") as r:
                text = await r.text()
        assert "fleetwave_agent_registered 1.0" in text
        assert 'fleetwave_agent_executions{state="healthy"} 0.0' in text
