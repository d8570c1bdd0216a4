"""The driver's incremental plans, fed by the store's change log, equal full re-plans.

Real app, real SqliteStore on a real file, real driver and node monitor; the clock is a
FakeClock. Agents register and report through the HTTP API, operators drain nodes, mark
them ineligible, purge them, pause, promote and submit new versions, nodes fall silent,
all at random (seeded). The one seam: the driver's ``plan_rollout`` is wrapped so that every
evaluation also plans from a copy of the same inputs without the index and without the
change log, and the two plans must be equal. A change the store does not log (or logs
wrongly) would make the indexed plan miss it and differ.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from coordinator.engine import driver as driver_module
from coordinator.engine.planner import RolloutPlan, plan_rollout
from tests.coordinator.conftest import Harness, web_spec

NODES = 16


class Compared:
    """Wraps plan_rollout: each call is checked against a plan from scratch."""

    def __init__(self) -> None:
        self.with_log = 0
        self.total = 0

    def __call__(self, job: Any, nodes: Mapping[str, Any], *args: Any) -> RolloutPlan:
        assignments, executions, now, observation, index, changed = args
        full = plan_rollout(job, dict(nodes), dict(assignments), dict(executions), now, observation)
        plan = plan_rollout(job, nodes, assignments, executions, now, observation, index, changed)
        assert (plan.job, plan.changes, plan.events, plan.wake_at) == (
            full.job,
            full.changes,
            full.events,
            full.wake_at,
        )
        self.total += 1
        self.with_log += changed is not None
        return plan


class Fleet:
    """Agents that report what they were assigned, with a state picked at random."""

    def __init__(self, harness: Harness, rng: random.Random) -> None:
        self.harness = harness
        self.rng = rng
        self.tokens: dict[str, str] = {}
        self.seq: dict[str, int] = {}

    async def register(self, count: int) -> None:
        for i in range(count):
            zone = f"z{i % 3}"
            node_id, token = await self.harness.register(f"n{i:02d}", zone=zone, port="80")
            self.tokens[node_id] = token
            self.seq[node_id] = 0

    async def report(self, node_id: str, state: str) -> None:
        client = self.harness.client
        token = self.tokens[node_id]
        resp = await client.get(
            "/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"}
        )
        if resp.status != 200:
            return  # purged or revoked
        assigned = (await resp.json())["assignments"]
        self.seq[node_id] += 1
        executions = [
            {
                "job": a["job"],
                "version": a["version"],
                "generation": a.get("generation", 0),
                "state": state,
            }
            for a in assigned
        ]
        resp = await client.post(
            "/v1/agent/report",
            json={"seq": self.seq[node_id], "executions": executions},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status in (200, 401, 403), await resp.text()


@pytest.mark.parametrize("seed", range(4))
async def test_indexed_plans_equal_full_plans(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Over 200 random steps of agents, operators and time, every evaluation's plan from
    the index and the change log equals the plan from scratch."""
    compared = Compared()
    monkeypatch.setattr(driver_module, "plan_rollout", compared)
    rng = random.Random(seed)  # noqa: S311 - a seeded history, not a secret
    fleet = Fleet(harness, rng)
    await fleet.register(NODES)
    admin = harness.admin()
    client = harness.client
    build = 0
    resp = await harness.put_job(web_spec(canary=2, waves=3, max_parallel=rng.choice([0, 2])))
    assert resp.status in (200, 201), await resp.text()
    await harness.driver.step()
    for _ in range(200):
        roll = rng.random()
        node_id = rng.choice(sorted(fleet.tokens))
        if roll < 0.1:
            for each in sorted(fleet.tokens):  # every agent says healthy
                await fleet.report(each, "healthy")
        elif roll < 0.45:
            state = rng.choice(["healthy"] * 6 + ["starting", "failed", "unhealthy"])
            await fleet.report(node_id, state)
        elif roll < 0.55:
            await client.post(
                f"/v1/nodes/{node_id}/drain", json={"enable": rng.random() < 0.6}, headers=admin
            )
        elif roll < 0.62:
            eligibility = rng.choice(["eligible", "eligible", "ineligible"])
            await client.post(
                f"/v1/nodes/{node_id}/eligibility",
                json={"eligibility": eligibility},
                headers=admin,
            )
        elif roll < 0.64 and len(fleet.tokens) > 4:
            await client.delete(f"/v1/nodes/{node_id}", headers=admin)
            del fleet.tokens[node_id]
        elif roll < 0.72:
            harness.clock.advance(rng.choice([1, 2, 5, 15, 40]))
            await harness.monitor.tick()
        elif roll < 0.77:
            action = rng.choice(["pause", "resume", "promote", "abort", "retry"])
            await client.post(f"/v1/jobs/web/rollout/{action}", headers=admin)
        elif roll < 0.80:
            build += 1
            spec = web_spec(canary=rng.choice([0, 1, 2]), waves=rng.choice([1, 2, 4]))
            spec["task"]["env"] = {"BUILD": str(build)}
            await harness.put_job(spec)
        await harness.driver.step()
    assert compared.total > 50
    assert compared.with_log > compared.total // 2  # the change log, not the fallback


async def test_a_change_log_that_no_longer_reaches_back_rebuilds_the_index(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store's change log has dropped what a job's index has not read yet, the
    next evaluation plans from scratch, not from an index that missed those changes."""
    compared = Compared()
    monkeypatch.setattr(driver_module, "plan_rollout", compared)
    fleet = Fleet(harness, random.Random(7))  # noqa: S311 - a seeded history, not a secret
    await fleet.register(6)
    resp = await harness.put_job(web_spec(canary=1, waves=2))
    assert resp.status in (200, 201), await resp.text()
    await harness.driver.step()
    for node_id in sorted(fleet.tokens):
        await fleet.report(node_id, "healthy")
    await harness.driver.step()
    log = harness.store.live().changes
    drained = sorted(fleet.tokens)[0]
    await harness.client.post(
        f"/v1/nodes/{drained}/drain", json={"enable": True}, headers=harness.admin()
    )
    log._base = log.end + 1  # as if the log had been trimmed past this job's cursor
    await harness.driver.step()
    assignments = await harness.store.job_assignments("web")
    assert drained not in assignments  # the drain was seen: its assignment is gone
    assert compared.total >= 3
