"""Wake-ups for blocking queries: waiters on a key wake when its index is bumped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FEED = "feed"
"""Bumped whenever events are stored or any job changes: what event streams wait on."""


class Watches:
    """One event per key, replaced on every bump so each waiter sees each bump once."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        """The event to wait on; take it *before* reading the index to not miss a bump."""
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    def bump(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()
        if key.startswith("job:"):
            self.bump(FEED)

    def bump_all(self) -> None:
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()

    async def block(
        self,
        key: str,
        read: Callable[[], Awaitable[T]],
        ready: Callable[[T], bool],
        seconds: float,
    ) -> T:
        """Re-read until ``ready`` or ``seconds`` pass (a blocking query); return the last read."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    event = self.event(key)  # before reading, so no bump is missed
                    value = await read()
                    if ready(value):
                        return value
                    await event.wait()
        except TimeoutError:
            return await read()
