"""What the coordinator could have heard: its own blind spots, as a value the engine judges by.

A node is silent either because it is gone or because the coordinator was not listening:
it was starting, its process was paused (SIGSTOP, a VM migration), or its event loop was
held. Silence is only evidence after the coordinator has listened for long enough that a
live node would have been heard (Nomad's ``failover_heartbeat_ttl`` serves the same end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from shared.clock import ZERO_TIME, Clock

log = structlog.get_logger("fleetwave.engine")

GAP_SECONDS = 1.5
"""A pause of the coordinator's own loop longer than this is a blind spot.

Heartbeats that arrived meanwhile wait in socket buffers and are only read after it, so
the nodes are given a fresh grace window. The window's ticker runs 6 times as often, so
a healthy loop never comes near it; a loop held this long by load is blind all the same.
"""

TICK_SECONDS = GAP_SECONDS / 6


@dataclass(frozen=True)
class Observation:
    """Since when the coordinator has listened without a gap, and how long a live node may
    take to be heard (the heartbeat TTL).

    The default has listened forever: pure tests that do not care judge at once.
    """

    since: datetime = ZERO_TIME
    grace: timedelta = timedelta(0)
    heartbeat: timedelta = timedelta(0)
    """The longest interval any live agent may be using (0: unknown, as in pure tests); it
    grows with the fleet (coordinator/heartbeats.py). A node's last state is
    believed for about one heartbeat past its last report (the planner's ``_passed_gate``):
    an agent that died right after saying ``healthy`` must not keep counting as healthy
    until the TTL runs out."""

    @property
    def blind_until(self) -> datetime:
        """Before this moment, silence is no evidence that a node is gone or stuck."""
        return self.since + self.grace

    def can_judge_silence(self, now: datetime) -> bool:
        return now >= self.blind_until

    def heard_since(self, last_heard: datetime) -> datetime:
        """The start of the silence the coordinator really observed since ``last_heard``."""
        return max(last_heard, self.since)


ALWAYS_LISTENING = Observation()
"""For callers without blind spots (previews, tests): silence counts at once."""


class ObservationWindow:
    """Tracks the coordinator's blind spots: its start, and any gap in its own event loop.

    ``observe()`` is called by everything that judges silence (the node monitor, each
    engine evaluation) and by its own ticker, so a gap is seen by whichever runs first
    after it, before anything is judged.
    """

    def __init__(
        self,
        clock: Clock,
        grace: timedelta,
        gap_seconds: float = GAP_SECONDS,
        on_gap: Callable[[], None] = lambda: None,
        heartbeat: timedelta = timedelta(0),
    ) -> None:
        self._clock = clock
        self._grace = grace
        self._heartbeat = heartbeat
        self._gap = gap_seconds
        self._on_gap = on_gap
        self._since = clock.now()  # a start is a blind spot: nothing was heard before it
        self._last = clock.monotonic()
        self.gaps = 0

    def pace(self, *, heartbeat: timedelta, grace: timedelta) -> None:
        """Agents may now be on intervals up to ``heartbeat`` and silent for ``grace``: the
        heartbeat interval follows the fleet's size (coordinator/heartbeats.py)."""
        self._heartbeat = heartbeat
        self._grace = grace

    def observe(self) -> Observation:
        mono = self._clock.monotonic()
        gap = mono - self._last
        self._last = mono
        if gap > self._gap:
            self._since = self._clock.now()
            self.gaps += 1
            self._on_gap()
            log.warning(
                "coordinator_resumed",
                blind_seconds=round(gap, 3),
                grace_seconds=self._grace.total_seconds(),
            )
        return Observation(since=self._since, grace=self._grace, heartbeat=self._heartbeat)

    def restart(self, reason: str) -> None:
        """Start listening afresh now: this coordinator has just taken over the engine (it
        became leader), and heartbeats went to whoever led before. No node is judged on
        silence that happened before now (Nomad's ``failover_heartbeat_ttl`` lesson)."""
        self._since = self._clock.now()
        self._last = self._clock.monotonic()
        log.info("observation_restarted", reason=reason, grace_seconds=self._grace.total_seconds())

    async def run(self) -> None:
        """Look at the loop often enough that a gap is noticed as soon as it ends."""
        while True:
            self.observe()
            await self._clock.sleep(TICK_SECONDS)
