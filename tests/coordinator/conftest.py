"""Fixtures for coordinator tests: the real app on a real SQLite file, with a fake clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator.api.deps import Deps
from coordinator.app import create_app
from coordinator.engine.driver import JobLocks, NodeMonitor, RolloutDriver
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import Heartbeats
from coordinator.metrics import CoordinatorMetrics
from coordinator.store.sqlite import SqliteStore
from coordinator.watch import Watches
from shared.clock import FakeClock

ADMIN = "fwa_test-admin-token"
JOIN = "fwj_test-join-token"


def node_key_of(name: str) -> str:
    """The node key a test agent named ``name`` keeps (a real agent makes a random one)."""
    return f"test-node-key-{name}".ljust(40, "k")


@dataclass
class Harness:
    """The app's collaborators, so a test can drive the engine step by step."""

    client: TestClient[Any, Any]
    store: SqliteStore
    clock: FakeClock
    driver: RolloutDriver
    monitor: NodeMonitor
    path: Path

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}

    async def register(
        self, name: str, *, key: str | None = None, join: str = JOIN, **labels: str
    ) -> tuple[str, str]:
        """Register ``name`` with the node key ``key`` (default: one per name, as one agent
        keeps one key)."""
        resp = await self.client.post(
            "/v1/agent/register",
            json={
                "join_token": join,
                "name": name,
                "labels": labels,
                "node_key": key or node_key_of(name),
            },
        )
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        return body["node_id"], body["node_token"]

    async def report(self, token: str, seq: int, executions: list[dict[str, Any]]) -> Any:
        resp = await self.client.post(
            "/v1/agent/report",
            json={"seq": seq, "executions": executions},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def put_job(self, spec: dict[str, Any], **headers: str) -> Any:
        return await self.client.put(
            f"/v1/jobs/{spec['name']}", json=spec, headers=self.admin() | headers
        )

    async def status(self, name: str) -> Any:
        resp = await self.client.get(f"/v1/jobs/{name}/status", headers=self.admin())
        assert resp.status == 200, await resp.text()
        return await resp.json()


def web_spec(name: str = "web", **rollout: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"command": ["python3", "-m", "http.server", "${node.label.port}"]},
        "rollout": {"min_healthy_time": "1s", **rollout},
    }


@pytest.fixture
async def harness(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Harness]:
    store = SqliteStore(tmp_path / "fleetwave.db")
    await store.open()
    clock = FakeClock()
    watches = Watches()
    locks = JobLocks()
    metrics = CoordinatorMetrics()
    # The fake clock jumps when a test advances it: that is time passing, not a pause of
    # the coordinator, so this window never sees a gap (its own tests cover gaps).
    window = ObservationWindow(clock, timedelta(0), gap_seconds=math.inf)
    driver = RolloutDriver(store, clock, watches, locks, window, metrics)
    heartbeats = Heartbeats.fixed(10.0)  # TTL 30 s
    monitor = NodeMonitor(store, clock, driver, window, heartbeats)
    deps = Deps(
        store=store,
        clock=clock,
        driver=driver,
        watches=watches,
        locks=locks,
        admin_token=ADMIN,
        join_token=JOIN,
        heartbeats=heartbeats,
        started=True,
        metrics=metrics,
    )
    client = await aiohttp_client(create_app(deps))
    yield Harness(client, store, clock, driver, monitor, tmp_path / "fleetwave.db")
    await store.close()
