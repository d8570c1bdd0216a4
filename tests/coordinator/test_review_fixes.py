"""Findings of the attacker review of access control, enrollment and the audit log, each held
closed (the real app on a real SQLite file, a fake clock)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from coordinator.api.deps import DEPS
from coordinator.audit import REFUSAL_BUDGET
from tests.coordinator.conftest import JOIN, Harness, web_spec
from tests.coordinator.test_api_tokens import bearer, create_token


async def test_an_offered_token_expires_unused(harness: Harness) -> None:
    """A rotated token that was never used cannot be exchanged after its life."""
    _, token = await harness.register("a")
    resp = await harness.client.post("/v1/agent/token", headers=bearer(token))
    offered = (await resp.json())["node_token"]
    harness.clock.advance(timedelta(days=365))
    resp = await harness.client.post("/v1/agent/token", headers=bearer(offered))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "node_token_expired"


async def test_names_that_look_like_ids_are_refused(harness: Harness) -> None:
    victim, _ = await harness.register("a")
    resp = await harness.client.post(
        "/v1/agent/register", json={"join_token": JOIN, "name": victim, "node_key": "k" * 40}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["details"]["errors"][0]["field"] == "name"
    for name in ("bootstrap-admin", "default-join", victim.upper()):
        error = (await create_token(harness, expect=400, name=name, role="viewer"))["error"]
        assert error["details"]["errors"][0]["field"] == "name"


async def test_bound_labels_stay_bound_whichever_token_renews(harness: Harness) -> None:
    dmz = await create_token(harness, name="dmz", kind="join", labels={"zone": "dmz"})
    node_id, _ = await harness.register("a", join=dmz["secret"])
    again, _ = await harness.register("a", join=JOIN, zone="core")
    assert again == node_id
    node = await harness.store.get_node(node_id)
    assert node is not None
    assert node.labels["zone"] == "dmz"


async def test_a_pending_node_reports_only_liveness(harness: Harness) -> None:
    review = await create_token(harness, name="review", kind="join", approval="manual")
    node_id, token = await harness.register("p", join=review["secret"])
    await harness.report(token, 1, [{"job": "web", "version": 1, "state": "failed"}])
    assert await harness.store.job_executions("web") == {}
    node = await harness.store.get_node(node_id)
    assert node is not None
    assert node.last_seq == 1


async def test_a_revoked_token_gets_no_answer_to_its_long_poll(harness: Harness) -> None:
    assert (await harness.put_job(web_spec())).status == 201
    viewer = await create_token(harness, name="v", role="viewer")
    await harness.client.delete(f"/v1/tokens/{viewer['id']}", headers=harness.admin())
    resp = await harness.client.get(
        "/v1/jobs/web/status", params={"index": "1", "wait": "0s"}, headers=bearer(viewer["secret"])
    )
    assert resp.status == 401


async def test_a_broken_body_is_a_400_not_a_500(harness: Harness) -> None:
    resp = await harness.client.post(
        "/v1/agent/register",
        data=b"this is not gzip at all",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 400, await resp.text()


async def test_register_bodies_are_small(harness: Harness) -> None:
    body = {"join_token": JOIN, "name": "a", "agent_version": "x" * 70_000}
    resp = await harness.client.post("/v1/agent/register", json=body)
    assert resp.status == 413


async def test_a_flood_of_refusals_is_folded_per_address(harness: Harness) -> None:
    """Beyond the per-address budget a minute, refusals become one entry per address."""
    for _ in range(REFUSAL_BUDGET + 40):
        resp = await harness.client.get("/v1/jobs", headers=bearer("fwo_wrong"))
        assert resp.status == 401
    app = harness.client.app
    assert app is not None
    log = app[DEPS].audit
    assert log is not None
    harness.clock.advance(61.0)
    log.flush_aggregates()
    await log.drain()
    entries: list[dict[str, Any]] = (
        await (await harness.client.get("/v1/audit", headers=harness.admin())).json()
    )["entries"]
    single = [e for e in entries if e["method"] == "GET"]
    folded = [e for e in entries if e["method"] == "*"]
    assert len(single) == REFUSAL_BUDGET
    assert len(folded) == 1
    assert folded[0]["path"].startswith("(40 more refused requests from this address")
    assert folded[0]["status"] == 401


async def test_anonymous_refusals_never_push_out_token_holders_entries(
    harness: Harness,
) -> None:
    app = harness.client.app
    assert app is not None
    log = app[DEPS].audit
    assert log is not None
    log.max_rows = 1000
    deployer = await create_token(harness, name="ci", role="deployer")
    await harness.client.put("/v1/jobs/web", json=web_spec(), headers=bearer(deployer["secret"]))
    for _ in range(3):  # three minutes of refusals, each a whole budget's worth
        for _ in range(REFUSAL_BUDGET):
            await harness.client.get("/v1/jobs")
        harness.clock.advance(61.0)
    await log.drain()
    await log.prune()
    entries = (
        await (
            await harness.client.get("/v1/audit", params={"limit": "1000"}, headers=harness.admin())
        ).json()
    )["entries"]
    assert any(e["token_name"] == "ci" and e["path"] == "/v1/jobs/web" for e in entries)
    assert sum(1 for e in entries if e["status"] == 401) <= 1000 // 10
