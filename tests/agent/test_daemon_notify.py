"""The agent's systemd notifications, received on a real AF_UNIX datagram socket.

The coordinator is the fake one from ``fake_coordinator.py`` (our own seam), over real HTTP.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from agent.backoff import BackoffPolicy
from agent.daemon import Agent
from agent.notify import SystemdNotifier
from tests.agent.factories import assignment, free_port, job_spec, settings
from tests.agent.fake_coordinator import FakeCoordinator
from tests.helpers import eventually
from tests.shared.test_sdnotify import NotifySocket

JOIN_TOKEN = "join-secret"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify"))
    yield sock
    sock.sock.close()


@pytest.fixture
async def coordinator(aiohttp_server: Any) -> tuple[FakeCoordinator, str]:
    coord = FakeCoordinator(join_token=JOIN_TOKEN)
    server: TestServer = await aiohttp_server(coord.app(), host="127.0.0.1")
    return coord, str(server.make_url("")).rstrip("/")


class Received:
    """Collects datagrams from the socket as they are polled."""

    def __init__(self, sock: NotifySocket) -> None:
        self._sock = sock
        self.messages: list[str] = []

    def has(self, predicate: Callable[[str], bool]) -> bool:
        self.messages.extend(self._sock.messages())
        return any(predicate(m) for m in self.messages)


@pytest.fixture
async def start_agent(
    tmp_path: Path, notify_socket: NotifySocket
) -> AsyncIterator[Callable[..., Any]]:
    agents: list[Agent] = []

    async def start(url: str, **env: str) -> Agent:
        environ = {"NOTIFY_SOCKET": notify_socket.address, **env}
        agent = Agent(
            settings(tmp_path / "data", coordinators=[url]),
            join_token=JOIN_TOKEN,
            backoff=BackoffPolicy(base=0.05, cap=0.2),
            report_debounce=0.02,
            poll_margin=2.0,
            notifier=SystemdNotifier(environ, pid=os.getpid()),
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.shutdown()


class TestReadiness:
    async def test_ready_after_registration_and_first_sync(
        self,
        coordinator: tuple[FakeCoordinator, str],
        start_agent: Callable[..., Any],
        notify_socket: NotifySocket,
    ) -> None:
        """READY=1 comes once the node registered and its first poll was answered, with a
        STATUS line naming the node; nothing says ready before that."""
        coord, url = coordinator
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        agent = await start_agent(url)
        received = Received(notify_socket)
        await eventually(lambda: received.has(lambda m: m.startswith("READY=1")))
        ready = next(m for m in received.messages if m.startswith("READY=1"))
        assert ready.startswith("READY=1\nSTATUS=node node-1; synced at index ")
        assert agent.sync.attempted.is_set()
        assert coord.registrations, "ready before registering"

    async def test_ready_when_the_coordinator_is_unreachable(
        self, start_agent: Callable[..., Any], notify_socket: NotifySocket
    ) -> None:
        """An unreachable coordinator still lets the agent report ready (it keeps running its
        last assignments), with a STATUS saying that sync is failing."""
        await start_agent(f"http://127.0.0.1:{free_port()}")
        received = Received(notify_socket)
        await eventually(lambda: received.has(lambda m: m.startswith("READY=1")))
        ready = next(m for m in received.messages if m.startswith("READY=1"))
        assert "STATUS=not registered; sync failing (1 attempts in a row)" in ready

    async def test_status_follows_job_states(
        self,
        coordinator: tuple[FakeCoordinator, str],
        start_agent: Callable[..., Any],
        notify_socket: NotifySocket,
    ) -> None:
        """A new job shows up in a later STATUS= line."""
        coord, url = coordinator
        await start_agent(url)
        received = Received(notify_socket)
        await eventually(lambda: received.has(lambda m: "no jobs" in m))
        coord.assign("node-1", [assignment(job_spec("sleeper"))])
        await eventually(lambda: received.has(lambda m: "1 healthy" in m), timeout=15)

    async def test_stopping_on_shutdown(
        self,
        coordinator: tuple[FakeCoordinator, str],
        start_agent: Callable[..., Any],
        notify_socket: NotifySocket,
    ) -> None:
        """Shutdown begins with STOPPING=1."""
        _, url = coordinator
        agent = await start_agent(url)
        await agent.shutdown(stop_workloads=False)
        received = Received(notify_socket)
        assert received.has(lambda m: m.startswith("STOPPING=1\nSTATUS=stopping; workloads keep"))


class TestWatchdog:
    async def test_pings_at_half_the_watchdog_interval(
        self,
        coordinator: tuple[FakeCoordinator, str],
        start_agent: Callable[..., Any],
        notify_socket: NotifySocket,
    ) -> None:
        """With WATCHDOG_USEC for this pid the event loop keeps sending WATCHDOG=1."""
        _, url = coordinator
        await start_agent(url, WATCHDOG_USEC="100000", WATCHDOG_PID=str(os.getpid()))
        received = Received(notify_socket)
        await eventually(
            lambda: received.messages.count("WATCHDOG=1") >= 3 or received.has(lambda m: False)
        )

    async def test_no_pings_for_another_pid(
        self,
        coordinator: tuple[FakeCoordinator, str],
        start_agent: Callable[..., Any],
        notify_socket: NotifySocket,
    ) -> None:
        """WATCHDOG_PID naming another process means the watchdog is not ours to feed."""
        _, url = coordinator
        agent = await start_agent(url, WATCHDOG_USEC="100000", WATCHDOG_PID="1")
        received = Received(notify_socket)
        await eventually(lambda: received.has(lambda m: m.startswith("READY=1")))
        await agent.shutdown()
        received.has(lambda m: False)
        assert "WATCHDOG=1" not in received.messages
