"""systemd ``sd_notify`` for the agent; the implementation is shared with the coordinator."""

from __future__ import annotations

from shared.sdnotify import SystemdNotifier, unset_systemd_environment, watchdog_interval

__all__ = ["SystemdNotifier", "unset_systemd_environment", "watchdog_interval"]
