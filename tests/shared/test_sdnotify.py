"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.clock import FakeClock
from shared.sdnotify import (
    SystemdNotifier,
    feed_watchdog,
    unset_systemd_environment,
    watchdog_interval,
)
from tests.helpers import eventually


class NotifySocket:
    """A bound datagram socket like the one systemd passes in ``NOTIFY_SOCKET``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        """Every datagram received so far, decoded."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify"))
    yield sock
    sock.sock.close()


class TestNotifier:
    def test_sends_datagrams_to_the_socket(self, notify_socket: NotifySocket) -> None:
        """READY, STATUS, WATCHDOG and STOPPING arrive as one datagram each."""
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})
        assert notifier.enabled
        assert notifier.ready("up\nand running")
        assert notifier.status("2 jobs")
        assert notifier.watchdog()
        assert notifier.stopping()
        assert notify_socket.messages() == [
            "READY=1\nSTATUS=up and running",
            "STATUS=2 jobs",
            "WATCHDOG=1",
            "STOPPING=1",
        ]

    def test_abstract_socket_address(self) -> None:
        """An '@name' address is the abstract socket 'name'."""
        sock = NotifySocket(f"@fleetwave-test-{uuid.uuid4().hex}")
        try:
            assert SystemdNotifier({"NOTIFY_SOCKET": sock.address}).ready()
            assert sock.messages() == ["READY=1"]
        finally:
            sock.sock.close()

    def test_without_systemd_does_nothing(self) -> None:
        """With no NOTIFY_SOCKET nothing is sent and no watchdog is expected."""
        notifier = SystemdNotifier({})
        assert not notifier.enabled
        assert not notifier.ready()
        assert notifier.watchdog_interval is None

    def test_gone_socket_is_not_an_error(self, tmp_path: Path) -> None:
        """A socket path nobody listens on makes notify return False, not raise."""
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
        assert not notifier.ready()


class TestWatchdogInterval:
    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            ({"WATCHDOG_USEC": "30000000"}, 15.0),
            ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "42"}, 2.0),
            ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "43"}, None),
            ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "x"}, None),
            ({"WATCHDOG_USEC": "0"}, None),
            ({"WATCHDOG_USEC": "soon"}, None),
            ({}, None),
        ],
    )
    def test_half_of_watchdog_usec_for_our_pid(
        self, environ: dict[str, str], expected: float | None
    ) -> None:
        """Pings are due at half of WATCHDOG_USEC, and only when WATCHDOG_PID is ours."""
        assert watchdog_interval(environ, pid=42) == expected

    def test_notifier_uses_this_process_by_default(self) -> None:
        """Without an explicit pid the notifier compares WATCHDOG_PID with os.getpid()."""
        env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        assert SystemdNotifier(env).watchdog_interval == 1.0

    async def test_feed_watchdog_pings_every_interval(self, notify_socket: NotifySocket) -> None:
        """feed_watchdog sends WATCHDOG=1 at once and then every interval of the clock."""
        clock = FakeClock()
        env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}
        task = asyncio.create_task(feed_watchdog(SystemdNotifier(env), clock))
        received: list[str] = []

        def pinged(n: int) -> bool:
            received.extend(notify_socket.messages())
            return len(received) >= n

        await eventually(lambda: pinged(1))
        clock.advance(1.0)
        await eventually(lambda: pinged(2))
        task.cancel()
        await asyncio.wait([task])
        assert received == ["WATCHDOG=1", "WATCHDOG=1"]

    async def test_feed_watchdog_without_watchdog_returns(self) -> None:
        """With no watchdog configured the feeder ends at once."""
        await feed_watchdog(SystemdNotifier({}), FakeClock())


def test_unset_systemd_environment() -> None:
    """NOTIFY_SOCKET and WATCHDOG_* are removed, everything else stays."""
    env = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1", "PATH": "/bin"}
    unset_systemd_environment(env)
    assert env == {"PATH": "/bin"}
