"""Enrollment and node identity through the real app on a real SQLite file (fake clock only):
managed join tokens, manual approval, revocation, purge, node token expiry and rotation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.coordinator.conftest import JOIN, Harness, node_key_of, web_spec
from tests.coordinator.test_api_tokens import bearer, create_token


async def register_raw(harness: Harness, name: str, join: str, **extra: Any) -> Any:
    body = {"join_token": join, "name": name, "node_key": node_key_of(name), **extra}
    return await harness.client.post("/v1/agent/register", json=body)


async def assignments(harness: Harness, token: str, **query: str) -> Any:
    return await harness.client.get("/v1/agent/assignments", params=query, headers=bearer(token))


async def node_status(harness: Harness, node_id: str) -> str:
    resp = await harness.client.get(f"/v1/nodes/{node_id}", headers=harness.admin())
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["status"])


class TestJoinTokens:
    async def test_used_up_token_is_401_and_counts_only_enrollments(self, harness: Harness) -> None:
        join = await create_token(harness, name="two-hosts", kind="join", max_uses=2)
        await harness.register("a", join=join["secret"])
        await harness.register("b", join=join["secret"])
        await harness.register("a", join=join["secret"])  # a renewal is no new enrollment
        resp = await register_raw(harness, "c", join["secret"])
        assert resp.status == 401
        assert "used up (2 of 2 uses)" in (await resp.json())["error"]["message"]
        assert sorted(n.name for n in await harness.store.list_nodes()) == ["a", "b"]
        (token,) = await harness.store.list_tokens()
        assert token.uses == 2

    async def test_expired_and_revoked_tokens_are_401(self, harness: Harness) -> None:
        short = await create_token(harness, name="short", kind="join", ttl="10m")
        gone = await create_token(harness, name="gone", kind="join")
        await harness.client.delete(f"/v1/tokens/{gone['id']}", headers=harness.admin())
        harness.clock.advance(timedelta(minutes=11))
        for secret, why in ((short["secret"], "expired"), (gone["secret"], "revoked")):
            resp = await register_raw(harness, "a", secret)
            assert resp.status == 401
            assert why in (await resp.json())["error"]["message"]
        assert await harness.store.list_nodes() == []

    async def test_bound_labels_override_what_the_agent_declares(self, harness: Harness) -> None:
        join = await create_token(
            harness, name="eu", kind="join", labels={"zone": "eu-1", "tier": "web"}
        )
        node_id, _ = await harness.register("a", join=join["secret"], zone="us-1", rack="r7")
        node = await harness.store.get_node(node_id)
        assert node is not None
        assert node.labels == {"zone": "eu-1", "tier": "web", "rack": "r7"}


class TestManualApproval:
    async def test_a_pending_node_gets_nothing_until_approved(self, harness: Harness) -> None:
        join = await create_token(harness, name="review", kind="join", approval="manual")
        pending_id, pending_token = await harness.register("p", join=join["secret"])
        _, ready_token = await harness.register("r")
        await harness.report(pending_token, 1, [])
        await harness.report(ready_token, 1, [])
        assert await node_status(harness, pending_id) == "pending"
        assert (await harness.put_job(web_spec(canary=0, waves=1))).status == 201
        await harness.driver.evaluate("web")
        body = await (await assignments(harness, pending_token)).json()
        assert body["assignments"] == []
        ready = await (await assignments(harness, ready_token)).json()
        assert [a["job"] for a in ready["assignments"]] == ["web"]

        # Heartbeats and silence do not change it: only an operator does.
        harness.clock.advance(timedelta(minutes=5))
        await harness.monitor.tick()
        await harness.report(pending_token, 2, [])
        assert await node_status(harness, pending_id) == "pending"

        resp = await harness.client.post(f"/v1/nodes/{pending_id}/approve", headers=harness.admin())
        assert resp.status == 200
        assert (await resp.json())["status"] == "ready"
        await harness.driver.evaluate("web")
        body = await (await assignments(harness, pending_token)).json()
        assert [a["job"] for a in body["assignments"]] == ["web"]


class TestRevoke:
    async def test_revoke_ends_the_open_long_poll_and_refuses_the_token(
        self, harness: Harness
    ) -> None:
        node_id, token = await harness.register("a")
        await harness.report(token, 1, [])
        first = await (await assignments(harness, token)).json()
        poll = asyncio.ensure_future(
            assignments(harness, token, index=str(first["index"]), wait="5m")
        )
        await asyncio.sleep(0)  # let it start waiting
        assert not poll.done()
        resp = await harness.client.post(f"/v1/nodes/{node_id}/revoke", headers=harness.admin())
        assert resp.status == 200
        assert (await resp.json())["status"] == "revoked"
        answer = await asyncio.wait_for(poll, timeout=1.0)
        assert answer.status == 401
        assert (await answer.json())["error"]["code"] == "node_revoked"
        resp = await harness.client.post("/v1/agent/report", json={"seq": 2}, headers=bearer(token))
        assert resp.status == 401
        # Its agent cannot come back under the name, with or without its key.
        resp = await register_raw(harness, "a", JOIN)
        assert resp.status == 409
        assert (await resp.json())["error"]["details"]["status"] == "revoked"

    async def test_a_revoked_node_loses_its_assignments_and_is_never_targeted(
        self, harness: Harness
    ) -> None:
        ids = {}
        for name in ("a", "b"):
            ids[name], token = await harness.register(name)
            await harness.report(token, 1, [])
        assert (await harness.put_job(web_spec(canary=0, waves=1))).status == 201
        await harness.driver.evaluate("web")
        assert set(await harness.store.job_assignments("web")) == set(ids.values())
        await harness.client.post(f"/v1/nodes/{ids['a']}/revoke", headers=harness.admin())
        await harness.driver.evaluate("web")
        assert set(await harness.store.job_assignments("web")) == {ids["b"]}
        resp = await harness.client.post(f"/v1/nodes/{ids['a']}/approve", headers=harness.admin())
        assert resp.status == 409

    async def test_purge_only_down_or_revoked_and_it_frees_the_name(self, harness: Harness) -> None:
        node_id, token = await harness.register("a")
        await harness.report(token, 1, [])
        resp = await harness.client.delete(f"/v1/nodes/{node_id}", headers=harness.admin())
        assert resp.status == 409
        assert "only a down or revoked node" in (await resp.json())["error"]["message"]
        await harness.client.post(f"/v1/nodes/{node_id}/revoke", headers=harness.admin())
        resp = await harness.client.delete(f"/v1/nodes/{node_id}", headers=harness.admin())
        assert resp.status == 204
        assert await harness.store.list_nodes() == []
        assert (
            await harness.client.get(f"/v1/nodes/{node_id}", headers=harness.admin())
        ).status == 404
        # A fresh host (another key) may enroll under the name now.
        new_id, _ = await harness.register("a", key="a-new-host-key".ljust(40, "z"))
        assert new_id != node_id
        await harness.store.close()
        await harness.store.open()  # the purge is durable
        assert [n.id for n in await harness.store.list_nodes()] == [new_id]


class TestNodeTokens:
    async def test_expiry_rotation_and_renewal(self, harness: Harness) -> None:
        """After 2/3 of its life the report answer asks for rotation; the new token replaces
        the old on its first use; an expired token is 401 and the node key renews it."""
        node_id, token = await harness.register("a")
        assert not (await harness.report(token, 1, []))["rotate_token"]
        harness.clock.advance(timedelta(days=21))  # 30-day tokens in the harness
        assert (await harness.report(token, 2, []))["rotate_token"]
        resp = await harness.client.post("/v1/agent/token", headers=bearer(token))
        assert resp.status == 200
        new = (await resp.json())["node_token"]
        await harness.report(token, 3, [])  # the old one works until the new one is used
        await harness.report(new, 4, [])
        resp = await harness.client.post("/v1/agent/report", json={"seq": 5}, headers=bearer(token))
        assert resp.status == 401
        assert not (await harness.report(new, 6, []))["rotate_token"]

        harness.clock.advance(timedelta(days=31))
        resp = await harness.client.post("/v1/agent/report", json={"seq": 7}, headers=bearer(new))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "node_token_expired"
        again, renewed = await harness.register("a")
        assert again == node_id
        await harness.report(renewed, 8, [])

    async def test_a_token_that_never_expires_is_rotated_onto_one_that_does(
        self, harness: Harness
    ) -> None:
        """A node whose token never expires (issued by an older coordinator, or while
        node_token_ttl was 0) is asked to rotate, and its new token expires."""
        node_id, token = await harness.register("a")
        node = await harness.store.get_node(node_id)
        assert node is not None
        await harness.store.renew_registration(
            node_id,
            token_hash=node.token_hash,
            labels={},
            resources=node.resources,
            agent_version="",
            issued_at=harness.clock.now(),
            expires_at=None,
        )
        assert (await harness.report(token, 1, []))["rotate_token"]
        resp = await harness.client.post("/v1/agent/token", headers=bearer(token))
        new = (await resp.json())["node_token"]
        assert (await resp.json())["node_token_expires_at"] is not None
        await harness.report(new, 2, [])
        renewed = await harness.store.get_node(node_id)
        assert renewed is not None
        assert renewed.token_expires_at is not None
        assert not (await harness.report(new, 3, []))["rotate_token"]
