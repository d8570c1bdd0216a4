"""systemd's ``sd_notify`` protocol for ``Type=notify`` units, without libsystemd.

A daemon started by systemd finds ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket, ``@`` for
the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` in
its environment. Each message is one datagram of ``KEY=VALUE`` lines: ``READY=1``,
``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

import structlog

from shared.clock import Clock

log = structlog.get_logger("shared.sdnotify")

SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""What systemd hands the daemon itself; children must never see them."""


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None.

    None when no watchdog is configured, or when ``WATCHDOG_PID`` names another process
    (the variables were inherited, so the watchdog is not ours to feed).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2e6


class SystemdNotifier:
    """Sends notifications to ``$NOTIFY_SOCKET``; does nothing when not started by systemd.

    ``environ`` defaults to ``os.environ`` and ``pid`` to this process (tests pass both).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written '@name' and addressed with a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = watchdog_interval(env, os.getpid() if pid is None else pid)
        """Seconds between watchdog pings, or None when systemd expects none from us."""

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (the process runs as a ``Type=notify`` unit)."""
        return bool(self._address)

    def notify(self, message: str) -> bool:
        """Send ``message`` (newline-separated assignments); False if it could not be sent."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify_failed", message=message, error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1``: start-up is finished (with an optional status line)."""
        return self.notify(_with_status("READY=1", status))

    def stopping(self, status: str = "") -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(_with_status("STOPPING=1", status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the process is alive and its event loop turns."""
        return self.notify("WATCHDOG=1")

    def status(self, status: str) -> bool:
        """``STATUS=...``: the one-line state ``systemctl status`` shows."""
        return self.notify(_with_status("", status))


def _with_status(message: str, status: str) -> str:
    # A status is one line: systemd stops at the first newline anyway.
    line = " ".join(status.split())
    if not line:
        return message
    return f"{message}\nSTATUS={line}" if message else f"STATUS={line}"


def unset_systemd_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Drop ``NOTIFY_SOCKET`` and ``WATCHDOG_*`` so no child process can inherit them."""
    env = os.environ if environ is None else environ
    for name in SYSTEMD_VARIABLES:
        env.pop(name, None)


async def feed_watchdog(notifier: SystemdNotifier, clock: Clock) -> None:
    """Send ``WATCHDOG=1`` at the notifier's interval, forever (run it as a task).

    It runs on the daemon's event loop, so a blocked loop stops the pings.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await clock.sleep(interval)
