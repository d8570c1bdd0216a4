"""The time seam: every decision takes ``now`` from a Clock, never from the system directly."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero time; JSON encodes it as ``0001-01-01T00:00:00Z``."""


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix, second precision when there are no fractions."""
    value = value.astimezone(UTC)
    if value == ZERO_TIME:
        return "0001-01-01T00:00:00Z"
    text = value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return text.replace(".000000Z", "Z")


class Clock(Protocol):
    """Wall time for timestamps and deadlines, monotonic time for intervals, and sleeping."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock; the only place that reads system time or sleeps for timing."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SteadyClock(SystemClock):
    """Wall time that moves only with the monotonic clock: a wall-clock step changes nothing.

    It reads the wall clock once, when created, and from then on adds monotonic time to
    that reading. Every timestamp the coordinator stores and every deadline it judges is
    taken from it, so an NTP step or an operator's ``date -s`` neither fires deadlines
    early (+1 h) nor stalls them (-1 h) while the process runs. ``floor`` is the newest
    time already stored: a clock that stepped back across a restart must not make stored
    times lie in the future, so the reading never starts before it. The price is that
    timestamps are off by the size of a step until the next restart.
    """

    def __init__(self, floor: datetime = ZERO_TIME) -> None:
        self._anchor = max(datetime.now(UTC), floor)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._anchor + timedelta(seconds=time.monotonic() - self._mono)


class FakeClock:
    """A clock that only moves when told to; sleepers wake when ``advance`` passes their time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + seconds, fut))
        await fut

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        self._now += timedelta(seconds=step)
        self._mono += step
        due = [(t, f) for t, f in self._sleepers if t <= self._mono]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._mono]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
