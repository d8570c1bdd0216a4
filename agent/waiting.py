"""Waiting on the injected clock that an event can cut short."""

from __future__ import annotations

import asyncio

from shared.clock import Clock


async def sleep_or_event(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``event`` is set first; True when it was."""
    if event.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([sleeper, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            task.cancel()
        await asyncio.wait([sleeper, waiter])
    return event.is_set()
