"""Blocking queries on watch keys: woken by a bump, answered at their deadline, and
leaving nothing behind (one future per waiter, deadlines shared per tick)."""

from __future__ import annotations

import asyncio

from coordinator.watch import FEED, Deadlines, Watches


class Counter:
    """An index that a test moves, read the way a handler reads its store."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        return self.value


async def wait_until_blocked(watches: Watches, key: str) -> None:
    async with asyncio.timeout(5):
        while not watches._waiters.get(key):  # noqa: ASYNC110 - one loop step at a time
            await asyncio.sleep(0)


class TestBlock:
    async def test_a_bump_wakes_the_query_with_the_new_value(self) -> None:
        """A query waiting past index 0 returns the new index once its key is bumped."""
        watches, index = Watches(), Counter()
        query = asyncio.create_task(watches.block("node:a", index.read, lambda v: v > 0, 60))
        await wait_until_blocked(watches, "node:a")
        index.value = 1
        watches.bump("node:a")
        assert await asyncio.wait_for(query, 5) == 1
        assert watches._waiters == {}

    async def test_a_bump_of_another_key_does_not_answer(self) -> None:
        """Bumping one node's key re-reads nothing for a query on another key."""
        watches, index = Watches(), Counter()
        query = asyncio.create_task(watches.block("node:a", index.read, lambda v: v > 0, 60))
        await wait_until_blocked(watches, "node:a")
        watches.bump("node:b")
        await asyncio.sleep(0)
        assert not query.done()
        assert index.reads == 1
        query.cancel()

    async def test_the_deadline_answers_with_a_fresh_read(self) -> None:
        """Past its wait, the query returns what it reads then, not ready or not."""
        watches, index = Watches(), Counter()
        value = await watches.block("node:a", index.read, lambda v: v > 0, 0.05)
        assert value == 0
        assert index.reads == 2
        assert watches._waiters == {}

    async def test_a_value_ready_at_once_does_not_wait(self) -> None:
        """A query whose first read is ready returns it without waiting."""
        watches, index = Watches(), Counter()
        index.value = 3
        assert await watches.block("node:a", index.read, lambda v: v > 0, 60) == 3
        assert watches._waiters == {}

    async def test_a_cancelled_query_is_forgotten(self) -> None:
        """A client that goes away leaves no waiter on its key."""
        watches, index = Watches(), Counter()
        query = asyncio.create_task(watches.block("node:a", index.read, lambda v: v > 0, 60))
        await wait_until_blocked(watches, "node:a")
        query.cancel()
        await asyncio.gather(query, return_exceptions=True)
        assert watches._waiters == {}

    async def test_a_job_bump_wakes_the_feed_and_bump_all_wakes_everyone(self) -> None:
        """A job's bump also bumps the event feed; bump_all answers every open query."""
        watches, index = Watches(), Counter()
        feed = watches.event(FEED)
        query = asyncio.create_task(watches.block("node:a", index.read, lambda v: v > 0, 60))
        await wait_until_blocked(watches, "node:a")
        watches.bump("job:web")
        assert feed.is_set()
        index.value = 1
        watches.bump_all()
        assert await asyncio.wait_for(query, 5) == 1


class TestDeadlines:
    async def test_futures_of_one_tick_share_a_timer_and_expire_together(self) -> None:
        """Futures due within one tick resolve False together; one resolved earlier keeps
        its result."""
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(tick=0.05)
        now = loop.time()
        early, late = loop.create_future(), loop.create_future()
        deadlines.add(early, now + 0.01)
        deadlines.add(late, now + 0.01)
        assert len(deadlines._due) == 1
        early.set_result(True)
        assert await asyncio.wait_for(late, 5) is False
        assert early.result() is True
        assert deadlines._due == {}
