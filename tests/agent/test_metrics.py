"""The agent's /metrics: a real in-process Agent running real exec workloads, scraped over HTTP.

The coordinator is the FakeCoordinator (our seam for the coordinator's HTTP API) on a real
loopback server; the workloads, health probes and local endpoint are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from agent.backoff import BackoffPolicy
from agent.daemon import Agent
from agent.errors import (
    BadResponse,
    CoordinatorUnavailable,
    JoinTokenRejected,
    NameConflict,
    RequestRejected,
    TokenRejected,
)
from agent.metrics import error_kind
from shared.protocol import ExecutionState
from tests.agent.factories import PYTHON, assignment, free_port, job_spec, settings
from tests.agent.fake_coordinator import FakeCoordinator
from tests.helpers import eventually
from tests.promtext import Exposition, parse, promtool_check

JOIN_TOKEN = "join-secret"
FAST = BackoffPolicy(base=0.05, cap=0.2)


@pytest.fixture
async def coordinator(aiohttp_server: Any) -> tuple[FakeCoordinator, str]:
    coord = FakeCoordinator(join_token=JOIN_TOKEN)
    server: TestServer = await aiohttp_server(coord.app(), host="127.0.0.1")
    return coord, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def make_agent(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Starts agents with a local endpoint on a free port; shuts them down after the test."""
    agents: list[Agent] = []

    async def make(*urls: str, **overrides: Any) -> Agent:
        values = {"coordinators": list(urls), "listen": "127.0.0.1:0", **overrides}
        agent = Agent(
            settings(tmp_path / "data", **values),
            join_token=JOIN_TOKEN,
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


async def scrape(agent: Agent) -> tuple[str, Exposition]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{agent.local_port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return text, parse(text)


def states(agent: Agent) -> dict[str, ExecutionState]:
    return {report.job: report.state for report in agent.manager.reports()}


def workloads(port: int) -> list[Any]:
    """A healthy web service, a crasher that exhausts its restarts, a service failing its check."""
    web = job_spec(
        "web",
        command=[PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        health={
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{port}/", "interval": "100ms"}]
        },
    )
    crasher = job_spec(
        "crasher",
        command=[PYTHON, "-c", "raise SystemExit(3)"],
        task={"restart": {"max_restarts": 2, "delay": "10ms", "max_delay": "20ms"}},
    )
    sick = job_spec(
        "sick",
        health={
            "checks": [
                {
                    "type": "exec",
                    "command": ["false"],
                    "interval": "100ms",
                    "failure_threshold": 1,
                }
            ]
        },
    )
    return [assignment(web), assignment(crasher), assignment(sick)]


class TestWorkloadMetrics:
    async def test_executions_restarts_and_checks_are_exposed(
        self,
        coordinator: tuple[FakeCoordinator, str],
        make_agent: Callable[..., Awaitable[Agent]],
    ) -> None:
        """Execution states, restarts and health check results show in a promtool-clean scrape."""
        coord, url = coordinator
        coord.assign("node-1", workloads(free_port()))
        agent = await make_agent(url)
        want = {
            "web": ExecutionState.HEALTHY,
            "crasher": ExecutionState.FAILED,
            "sick": ExecutionState.UNHEALTHY,
        }
        await eventually(lambda: states(agent) == want, timeout=30)

        text, m = await scrape(agent)
        promtool_check(text)
        assert m.value("fleetwave_agent_up") == 1
        assert m.value("fleetwave_agent_registered") == 1
        assert m.value("fleetwave_agent_synced") == 1
        for state in ("healthy", "failed", "unhealthy"):
            assert m.value("fleetwave_agent_executions", state=state) == 1, state
        assert m.value("fleetwave_agent_executions", state="running") is None
        assert m.value("fleetwave_agent_executions", state="starting") == 0
        assert m.value("fleetwave_agent_execution_state", job="web", state="healthy") == 1
        assert m.value("fleetwave_agent_execution_state", job="web", state="starting") == 0
        assert m.value("fleetwave_agent_execution_state", job="crasher", state="failed") == 1
        assert m.value("fleetwave_agent_execution_version", job="web") == 1
        assert m.value("fleetwave_agent_restarts_total", job="crasher") == 2
        assert m.value("fleetwave_agent_execution_restarts", job="crasher") == 2
        assert m.value("fleetwave_agent_restarts_total", job="web") is None

        checks = "fleetwave_agent_health_checks_total"
        assert (m.value(checks, job="web", check_type="http", result="pass") or 0) >= 1
        assert (m.value(checks, job="sick", check_type="exec", result="fail") or 0) >= 1
        assert m.value(checks, job="sick", check_type="exec", result="pass") is None
        assert m.types["fleetwave_agent_health_check_duration_seconds"] == "histogram"
        duration = "fleetwave_agent_health_check_duration_seconds_count"
        assert (m.value(duration, job="web", check_type="http") or 0) >= 1

        assert (m.value("fleetwave_agent_last_successful_sync_timestamp_seconds") or 0) > 1e9
        assert (m.value("fleetwave_agent_reports_sent_total") or 0) >= 1
        assert m.value("fleetwave_agent_consecutive_failures", loop="assignments") == 0
        assert m.label_values("fleetwave_agent_sync_errors_total", "kind") == set()


class TestSyncErrors:
    async def test_an_unreachable_coordinator_counts_sync_errors_by_kind(
        self, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """With no coordinator answering, both loops count ``unavailable`` errors; no sync yet."""
        agent = await make_agent(f"http://127.0.0.1:{free_port()}")

        async def both_failed() -> bool:
            _, m = await scrape(agent)
            errors = "fleetwave_agent_sync_errors_total"
            return all(
                (m.value(errors, loop=loop, kind="unavailable") or 0) >= 1
                for loop in ("assignments", "report")
            )

        await eventually(both_failed)
        text, m = await scrape(agent)
        promtool_check(text)
        assert m.value("fleetwave_agent_registered") == 0
        assert m.value("fleetwave_agent_last_successful_sync_timestamp_seconds") == 0
        assert (m.value("fleetwave_agent_consecutive_failures", loop="report") or 0) >= 1


class TestDocs:
    async def test_every_agent_metric_is_documented(
        self, make_agent: Callable[..., Awaitable[Agent]]
    ) -> None:
        """Each fleetwave_agent_ family has HELP text and a row in docs/metrics.md."""
        agent = await make_agent(f"http://127.0.0.1:{free_port()}")
        _, m = await scrape(agent)
        doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
        names = [n for n in m.types if n.startswith("fleetwave_agent_")]
        assert len(names) >= 14, names
        for name in names:
            assert m.helps[name], name
            shown = name + "_total" if m.types[name] == "counter" else name
            assert f"`{shown}`" in doc, shown


class TestErrorKind:
    @pytest.mark.parametrize(
        ("exc", "kind"),
        [
            (CoordinatorUnavailable("down"), "unavailable"),
            (TokenRejected("401"), "token_rejected"),
            (JoinTokenRejected("401"), "join_token_rejected"),
            (NameConflict("409"), "name_conflict"),
            (RequestRejected("400", status=400), "rejected"),
            (BadResponse("junk"), "bad_response"),
            (ValueError("bug"), "internal"),
        ],
    )
    def test_each_error_maps_to_one_bounded_kind(self, exc: Exception, kind: str) -> None:
        """Every coordinator error class has its own label value; anything else is internal."""
        assert error_kind(exc) == kind
