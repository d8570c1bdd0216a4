"""Wake-ups for blocking queries: waiters on a key wake when its index is bumped.

Every agent holds a blocking query on its node's key, so at 10,000 nodes 10,000 of them
wait at once: each waits on one future of its own, and their deadlines share a timer per
tenth of a second (``Deadlines``) instead of a timeout and a timer handle each.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FEED = "feed"
"""Bumped whenever events are stored or any job changes: what event streams wait on."""

TICK = 0.1
"""Seconds a blocking query may outlast its wait: deadlines are rounded up to a tick."""


class Deadlines:
    """Futures resolved with False at their deadline (rounded up to a tick), one timer per
    tick that has any; a future resolved before its deadline is left alone."""

    def __init__(self, tick: float = TICK) -> None:
        self._tick = tick
        self._due: dict[int, set[asyncio.Future[bool]]] = {}

    def add(self, future: asyncio.Future[bool], deadline: float) -> None:
        """Resolve ``future`` with False at loop time ``deadline`` unless it is done by then."""
        slot = math.ceil(deadline / self._tick)
        due = self._due.get(slot)
        if due is None:
            due = self._due[slot] = set()
            future.get_loop().call_at(slot * self._tick, self._expire, slot)
        due.add(future)

    def discard(self, future: asyncio.Future[bool], deadline: float) -> None:
        due = self._due.get(math.ceil(deadline / self._tick))
        if due is not None:
            due.discard(future)

    def _expire(self, slot: int) -> None:
        for future in self._due.pop(slot, ()):
            if not future.done():
                future.set_result(False)


class Watches:
    """Waiters per key; a bump wakes each waiter of the key once."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self._deadlines = Deadlines()

    def event(self, key: str) -> asyncio.Event:
        """An event set at the key's next bump (for event streams, which also wait for a
        keepalive); take it *before* reading the index to not miss a bump."""
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    def bump(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(True)
        if key.startswith("job:"):
            self.bump(FEED)

    def bump_all(self) -> None:
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for waiter in futures:
                if not waiter.done():
                    waiter.set_result(True)

    def _waiter(self, key: str, deadline: float) -> asyncio.Future[bool]:
        """A future that turns True at the key's next bump, False at ``deadline``."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        self._deadlines.add(waiter, deadline)
        return waiter

    def _forget(self, key: str, waiter: asyncio.Future[bool], deadline: float) -> None:
        self._deadlines.discard(waiter, deadline)
        waiters = self._waiters.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]

    async def block(
        self,
        key: str,
        read: Callable[[], Awaitable[T]],
        ready: Callable[[T], bool],
        seconds: float,
    ) -> T:
        """Re-read until ``ready`` or ``seconds`` pass (a blocking query); return the last read."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            waiter = self._waiter(key, deadline)  # before reading, so no bump is missed
            try:
                value = await read()
                if ready(value):
                    return value
                if not await waiter:  # the deadline passed
                    return await read()
            finally:
                self._forget(key, waiter, deadline)
