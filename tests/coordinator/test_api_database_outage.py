"""The API while its PostgreSQL database is unreachable, for what a status code cannot say:
an event stream already answered 200 ends (its client reconnects, and is answered 503 until
the database is back), and /metrics keeps answering so that the outage shows in Prometheus.

The real app on a PostgresStore whose connections go through ``tests.pg.Outage`` (a proxy
that fails like a database host). Whole coordinators through a real server crash:
tests/ha/test_database_outage.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator.api.deps import Deps
from coordinator.app import create_app
from coordinator.engine.driver import JobLocks, RolloutDriver
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.postgres import PostgresStore
from coordinator.watch import FEED, Watches
from shared.clock import FakeClock
from tests.pg import Outage, fresh_database, pg_store
from tests.promtext import parse as parse_metrics

ADMIN = "fwa_outage-test-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class App:
    client: TestClient[Any, Any]
    store: PostgresStore
    watches: Watches
    database: Outage


@pytest.fixture
async def app(aiohttp_client: Any) -> AsyncIterator[App]:
    """The real app on a fresh database reached through an Outage proxy (up)."""
    proxy = Outage()
    await proxy.up()
    try:
        async with fresh_database() as url, pg_store(proxy.url(url), "a") as store:
            clock = FakeClock()
            watches = Watches()
            metrics = CoordinatorMetrics()
            window = ObservationWindow(clock, timedelta(0), gap_seconds=math.inf)
            deps = Deps(
                store=store,
                clock=clock,
                driver=RolloutDriver(store, clock, watches, JobLocks(), window, metrics),
                watches=watches,
                locks=JobLocks(),
                admin_token=ADMIN,
                join_token="fwj_outage-test-join",
                heartbeats=Heartbeats.fixed(10.0),
                started=True,
                metrics=metrics,
            )
            client = await aiohttp_client(create_app(deps))
            yield App(client, store, watches, proxy)
            await proxy.up()  # the store closes cleanly
    finally:
        await proxy.down()


async def test_an_open_event_stream_ends_when_the_database_goes_away(app: App) -> None:
    """A stream woken during the outage cannot answer 503 any more (its 200 is sent): it
    ends, the reconnect is answered 503 with Retry-After, and one after the outage 200."""
    stream = await app.client.get("/v1/events?after=0", headers=AUTH)
    assert stream.status == 200
    assert await stream.content.readline() == b"retry: 2000\n"
    await app.database.down()
    app.watches.bump(FEED)  # what an event committed on another coordinator would do
    rest = await asyncio.wait_for(stream.content.read(), timeout=10)
    assert b"event:" not in rest
    assert stream.content.at_eof()

    again = await app.client.get("/v1/events?after=0", headers=AUTH)
    assert again.status == 503
    assert again.headers["Retry-After"] == "2"
    await app.database.up()
    back = await app.client.get("/v1/events?after=0", headers=AUTH)
    assert back.status == 200
    back.close()


async def test_metrics_answer_during_the_outage_and_say_the_store_fails(app: App) -> None:
    """/metrics answers 200 while the database is down, with the store failing; the stored
    state keeps its last reading (a 503 would hide exactly the metrics of the outage)."""
    before = await app.client.get("/metrics")
    assert before.status == 200
    await app.database.down()
    during = await app.client.get("/metrics")
    assert during.status == 200
    metrics = parse_metrics(await during.text())
    assert metrics.value("fleetwave_store_write_failing") == 1
    assert (metrics.value("fleetwave_store_write_failures_total") or 0) >= 1
    assert metrics.value("fleetwave_nodes", status="ready") == 0  # as last read: no node

    jobs = await app.client.get("/v1/jobs", headers=AUTH)
    assert jobs.status == 503, "the API itself still answers 503"
