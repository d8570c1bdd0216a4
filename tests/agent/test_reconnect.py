"""How an agent comes back to a coordinator that restarted or sheds load: its first retry
is spread over ``reconnect_spread`` (so a fleet dropped at one instant does not return at
one instant), and a ``Retry-After`` is waited out, by the poll and by the report alike.

Real: SyncLoop, ReportLoop, CoordinatorClient. Fakes (our own seams): the clock, and
stand-ins for the session, the execution manager and the coordinator client's answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.backoff import BackoffPolicy
from agent.client import CoordinatorClient
from agent.errors import CoordinatorUnavailable
from agent.report import ReportLoop
from agent.sync import SyncLoop
from agent.transport import StreamTransport
from shared.clock import FakeClock
from shared.nodes import Load, Resources
from shared.protocol import AssignmentsResponse
from tests.agent.factories import data_dir_writes

RAND = 0.6


class Session:
    """The node session as the loops use it; ``last_contact`` None: never heard."""

    heartbeat_interval = 10.0
    identity = SimpleNamespace(node_id="node-1", node_token="t")
    index = 0

    def __init__(self, last_contact: float | None) -> None:
        self.last_contact = last_contact
        self.repoll = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.unreachable = 0

    async def ensure_identity(self) -> Any:
        return self.identity

    def mark_contact(self, now: float) -> None:
        self.last_contact = now

    def mark_unreachable(self, now: float) -> None:
        self.unreachable += 1

    def node_info(self) -> Any:
        return None


class FailingClient:
    """A coordinator that answers no call; the error says how long to wait, if at all."""

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        self.calls = 0

    async def assignments(self, token: str, index: int, wait: float) -> AssignmentsResponse:
        self.calls += 1
        raise CoordinatorUnavailable("down", retry_after=self.retry_after)

    async def report(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise CoordinatorUnavailable("down", retry_after=self.retry_after)


def sync_loop(clock: FakeClock, session: Session, client: FailingClient) -> SyncLoop:
    return SyncLoop(
        session=session,  # type: ignore[arg-type]
        client=client,  # type: ignore[arg-type]
        manager=SimpleNamespace(),  # type: ignore[arg-type]
        clock=clock,
        rand=lambda: RAND,
        poll_wait=30.0,
        backoff=BackoffPolicy(),
    )


async def waits(clock: FakeClock, step: asyncio.Future[None], seconds: float) -> bool:
    """Whether ``step`` is still waiting just before ``seconds`` have passed and is done
    just after."""
    for _ in range(20):
        await asyncio.sleep(0)
    clock.advance(seconds - 0.01)
    for _ in range(20):
        await asyncio.sleep(0)
    early = step.done()
    clock.advance(0.02)
    async with asyncio.timeout(5):
        await step
    return not early


class TestSyncRetry:
    async def test_the_first_retry_after_losing_the_coordinator_is_spread(self) -> None:
        """An agent that was in contact waits ``rand * reconnect_spread`` (0.6 * 5 s) before
        its first retry, not the 0.25-0.5 s of the backoff's first step."""
        clock = FakeClock()
        loop = sync_loop(clock, Session(last_contact=clock.monotonic()), FailingClient(None))
        assert await waits(clock, asyncio.ensure_future(loop.step()), 3.0)
        assert loop.failures == 1

    async def test_later_retries_follow_the_backoff(self) -> None:
        """After the spread first retry, the next ones are the equal-jitter backoff again."""
        clock = FakeClock()
        loop = sync_loop(clock, Session(last_contact=clock.monotonic()), FailingClient(None))
        loop.failures = 1
        assert await waits(clock, asyncio.ensure_future(loop.step()), 0.5 + 0.5 * RAND)

    async def test_an_agent_never_heard_backs_off_as_before(self) -> None:
        """Before any contact (an agent starting), the first retry is the backoff's first
        step: nothing is spread that was never in lockstep."""
        clock = FakeClock()
        loop = sync_loop(clock, Session(last_contact=None), FailingClient(None))
        assert await waits(clock, asyncio.ensure_future(loop.step()), 0.25 + 0.25 * RAND)

    async def test_a_retry_after_is_waited_out(self) -> None:
        """A 503 with ``Retry-After: 4`` makes the poll wait 4 s where its backoff says 0.4."""
        clock = FakeClock()
        session = Session(last_contact=None)
        loop = sync_loop(clock, session, FailingClient(4.0))
        assert await waits(clock, asyncio.ensure_future(loop.step()), 4.0)
        assert session.unreachable == 1


class TestReportRetry:
    async def test_a_retry_after_is_waited_out(self) -> None:
        """A report refused with ``Retry-After: 4`` is sent again after 4 s, not after the
        report backoff's 0.4 s."""
        clock = FakeClock()
        session = Session(last_contact=clock.monotonic())
        client = FailingClient(4.0)
        loop = ReportLoop(
            session=session,  # type: ignore[arg-type]
            client=client,  # type: ignore[arg-type]
            manager=SimpleNamespace(reports=list),  # type: ignore[arg-type]
            store=SimpleNamespace(load_seq=lambda: 0, save_seq=lambda seq: None),  # type: ignore[arg-type]
            writes=data_dir_writes(Path("data"), clock),
            host=SimpleNamespace(load=Load, resources=Resources),  # type: ignore[arg-type]
            clock=clock,
            rand=lambda: RAND,
            debounce=0.0,
        )
        exc = CoordinatorUnavailable("shedding", retry_after=4.0)
        assert await waits(clock, asyncio.ensure_future(loop._failed("report_failed", exc)), 4.0)


class TestClientRetryAfter:
    async def test_the_shortest_retry_after_of_the_coordinators_is_kept(
        self, aiohttp_server: Any
    ) -> None:
        """Every coordinator answered 503: the error carries the shortest ``Retry-After``
        any of them sent (a 503 without one, or a 500, adds none)."""

        def shedding(retry_after: str | None, status: int = 503) -> web.Application:
            async def handle(request: web.Request) -> web.Response:
                headers = {"Retry-After": retry_after} if retry_after else None
                return web.json_response({}, status=status, headers=headers)

            app = web.Application()
            app.router.add_post("/v1/agent/report", handle)
            return app

        servers: list[TestServer] = [
            await aiohttp_server(shedding(value, status))
            for value, status in (("3", 503), ("1.5", 503), (None, 503), ("0.5", 500))
        ]
        urls = [str(s.make_url("")) for s in servers]
        async with StreamTransport() as http:
            client = CoordinatorClient(urls, http)
            with pytest.raises(CoordinatorUnavailable) as caught:
                await client.report("t", _report())
            assert caught.value.retry_after == 1.5
            client = CoordinatorClient(urls[2:3], http)
            with pytest.raises(CoordinatorUnavailable) as caught:
                await client.report("t", _report())
            assert caught.value.retry_after is None


def _report() -> Any:
    from shared.protocol import ReportRequest

    return ReportRequest(seq=1, load=Load(), executions=[])
