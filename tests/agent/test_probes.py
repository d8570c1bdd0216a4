"""Tests for the health probes against real listeners, and the monitor loop on a fake clock."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.health import HealthState, HealthVerdict
from agent.probes import HealthMonitor, probe_exec, probe_http, probe_tcp
from agent.runtime.users import RunAs
from shared.clock import FakeClock
from shared.spec import ExecCheck, HttpCheck, TcpCheck
from tests.agent.factories import free_port
from tests.helpers import eventually


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    """A local HTTP server whose /status/N answers N, and /slow answers after 5 s."""

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener; yields its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def http_check(url: str, **extra: object) -> HttpCheck:
    return HttpCheck.model_validate({"type": "http", "url": url, "timeout": "1s", **extra})


class TestHttpProbe:
    @pytest.mark.parametrize(
        ("code", "expect", "ok"),
        [(200, [], True), (302, [], True), (404, [], False), (500, [], False), (404, [404], True)],
    )
    async def test_status(
        self,
        server: TestServer,
        http: aiohttp.ClientSession,
        code: int,
        expect: list[int],
        ok: bool,
    ) -> None:
        """2xx/3xx pass by default; expect_status replaces that rule."""
        url = str(server.make_url(f"/status/{code}"))
        result = await probe_http(http_check(url, expect_status=expect), http)
        assert result.ok is ok
        if not ok:
            assert result.error == f"HTTP status {code}"

    async def test_timeout(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        """A response slower than the timeout fails the probe."""
        check = http_check(str(server.make_url("/slow")), timeout="100ms")
        result = await probe_http(check, http)
        assert not result.ok
        assert "timed out" in result.error

    async def test_refused(self, http: aiohttp.ClientSession) -> None:
        """Nothing listening fails the probe."""
        result = await probe_http(http_check(f"http://127.0.0.1:{free_port()}/"), http)
        assert not result.ok


class TestTcpProbe:
    async def test_open_and_closed(self, listener: int) -> None:
        """A listening port passes, a closed one fails."""
        check = TcpCheck(type="tcp", address=f"127.0.0.1:{listener}")
        assert (await probe_tcp(check)).ok
        closed = TcpCheck(type="tcp", address=f"127.0.0.1:{free_port()}")
        assert not (await probe_tcp(closed)).ok


class TestExecProbe:
    ENV = {"PATH": os.environ["PATH"]}

    async def test_exit_codes(self) -> None:
        """Exit 0 passes, anything else fails with the code."""
        check = ExecCheck(type="exec", command=["true"])
        assert (await probe_exec(check, env=self.ENV, run_as=None)).ok
        exit_2 = ExecCheck(type="exec", command=["sh", "-c", "exit 2"])
        result = await probe_exec(exit_2, env={}, run_as=None)
        assert result.error == "exited with code 2"

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent (CI runs as root)")
    async def test_runs_as_the_given_user_and_groups(self) -> None:
        """With ``run_as`` the check runs with exactly that uid, gid and groups (a check
        that passes only as nobody passes); without, it runs as the agent."""
        entry = pwd.getpwnam("nobody")
        creds = RunAs(uid=entry.pw_uid, gid=entry.pw_gid, groups=(entry.pw_gid,))
        expected = (
            f'[ "$(id -u) $(id -g) $(id -G)" = "{entry.pw_uid} {entry.pw_gid} {entry.pw_gid}" ]'
        )
        check = ExecCheck(type="exec", command=["sh", "-c", expected])
        assert (await probe_exec(check, env=self.ENV, run_as=creds)).ok
        assert not (await probe_exec(check, env=self.ENV, run_as=None)).ok

    async def test_timeout_kills(self) -> None:
        """A command that outlives its timeout fails and is killed."""
        check = ExecCheck.model_validate(
            {"type": "exec", "command": ["sleep", "30"], "timeout": "100ms"}
        )
        result = await probe_exec(check, env=self.ENV, run_as=None)
        assert not result.ok
        assert "timed out" in result.error


class TestHealthMonitor:
    async def test_thresholds_over_time(self, listener: int, http: aiohttp.ClientSession) -> None:
        """Driven by a fake clock: healthy after success_threshold probes, unhealthy after
        failure_threshold failures, healthy again on recovery."""
        check = TcpCheck.model_validate(
            {
                "type": "tcp",
                "address": f"127.0.0.1:{listener}",
                "interval": "10s",
                "success_threshold": 2,
                "failure_threshold": 2,
            }
        )
        seen: list[HealthVerdict] = []
        clock = FakeClock()
        monitor = HealthMonitor(
            [check],
            clock=clock,
            session=http,
            env={},
            cwd=None,
            run_as=None,
            on_change=seen.append,
        )
        assert (await monitor.step(0)).state is HealthState.STARTING
        assert (await monitor.step(0)).state is HealthState.HEALTHY
        monitor.checks[0] = check.model_copy(update={"address": f"127.0.0.1:{free_port()}"})
        assert (await monitor.step(0)).state is HealthState.HEALTHY
        assert (await monitor.step(0)).state is HealthState.UNHEALTHY
        monitor.checks[0] = check
        assert (await monitor.step(0)).state is HealthState.UNHEALTHY
        assert (await monitor.step(0)).state is HealthState.HEALTHY
        states = [v.state for i, v in enumerate(seen) if i == 0 or seen[i - 1].state != v.state]
        assert states == [
            HealthState.HEALTHY,
            HealthState.UNHEALTHY,
            HealthState.HEALTHY,
        ]

    async def test_run_probes_at_interval(self, listener: int, http: aiohttp.ClientSession) -> None:
        """The loop probes once per interval of the injected clock."""
        check = TcpCheck.model_validate(
            {"type": "tcp", "address": f"127.0.0.1:{listener}", "interval": "10s"}
        )
        clock = FakeClock()
        monitor = HealthMonitor(
            [check],
            clock=clock,
            session=http,
            env={},
            cwd=None,
            run_as=None,
            on_change=lambda v: None,
        )
        task = asyncio.create_task(monitor.run())
        try:
            await eventually(lambda: monitor.counts[0].successes == 1)
            clock.advance(10)
            await eventually(lambda: monitor.counts[0].successes == 2)
            clock.advance(5)
            await asyncio.sleep(0)
            assert monitor.counts[0].successes == 2
        finally:
            task.cancel()
            await asyncio.wait([task])
