"""Test helpers shared by every suite."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 30.0,  # noqa: ASYNC109 - a polling deadline, not an I/O timeout
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` (or the awaitable it returns) until it is truthy.

    Fails the test when ``timeout`` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
        await asyncio.sleep(interval)


JOBS_AS_PYTEST_USER: dict[str, object] = {"allow_root": True}
"""The host policy of the test fleets (LocalFleet ``policy``): their jobs set no ``user``, so
they run as whoever runs pytest, which is root in CI; the default policy would refuse them.
tests/integration/test_host_policy.py runs fleets under the default policy."""
