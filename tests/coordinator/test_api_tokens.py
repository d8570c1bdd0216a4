"""Managed tokens and roles through the real app on a real SQLite file (fake clock only)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from coordinator.access import RULES, Right, check_rules
from tests.coordinator.conftest import JOIN, Harness, web_spec


async def create_token(harness: Harness, expect: int = 201, **body: Any) -> Any:
    resp = await harness.client.post("/v1/tokens", json=body, headers=harness.admin())
    assert resp.status == expect, await resp.text()
    return await resp.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class TestLifecycle:
    async def test_secret_is_shown_once_and_only_its_hash_is_stored(self, harness: Harness) -> None:
        created = await create_token(harness, name="ci-web", role="deployer", jobs=["web-*"])
        secret = created["secret"]
        assert secret.startswith("fwo_")
        assert created["created_by"] == "bootstrap-admin"
        listed = await (await harness.client.get("/v1/tokens", headers=harness.admin())).text()
        assert secret not in listed
        assert '"secret"' not in listed
        await harness.store.close()  # flush: the file is all there is
        assert secret.encode() not in harness.path.read_bytes()
        await harness.store.open()

    async def test_whoami(self, harness: Harness) -> None:
        created = await create_token(harness, name="viewer-1", role="viewer")
        resp = await harness.client.get("/v1/tokens/self", headers=bearer(created["secret"]))
        assert resp.status == 200
        me = await resp.json()
        assert (me["id"], me["name"], me["role"]) == (created["id"], "viewer-1", "viewer")
        resp = await harness.client.get("/v1/tokens/self", headers=harness.admin())
        assert (await resp.json())["bootstrap"] is True

    async def test_several_admin_tokens_rotate_without_restart(self, harness: Harness) -> None:
        """A second admin token works next to the first; revoking the old one is at once."""
        old = await create_token(harness, name="admin-2025", role="admin")
        new = await create_token(harness, name="admin-2026", role="admin")
        for token in (old, new):
            resp = await harness.client.get("/v1/tokens", headers=bearer(token["secret"]))
            assert resp.status == 200
        resp = await harness.client.delete(f"/v1/tokens/{old['id']}", headers=bearer(new["secret"]))
        assert resp.status == 200
        assert (await resp.json())["revoked_at"] is not None
        resp = await harness.client.get("/v1/jobs", headers=bearer(old["secret"]))
        assert resp.status == 401
        assert "revoked" in (await resp.json())["error"]["message"]
        assert (await harness.client.get("/v1/jobs", headers=bearer(new["secret"]))).status == 200

    async def test_revoking_a_token_ends_its_open_event_stream(self, harness: Harness) -> None:
        created = await create_token(harness, name="dashboard", role="viewer")
        resp = await harness.client.get("/v1/events", headers=bearer(created["secret"]))
        assert resp.status == 200
        assert await resp.content.readline() == b"retry: 2000\n"
        await harness.client.delete(f"/v1/tokens/{created['id']}", headers=harness.admin())
        rest = await asyncio.wait_for(resp.content.read(), timeout=5)  # the stream ends
        assert b"keepalive" not in rest

    async def test_expired_token_is_401(self, harness: Harness) -> None:
        created = await create_token(harness, name="short", role="viewer", ttl="1h")
        assert (await harness.client.get("/v1/jobs", headers=bearer(created["secret"]))).ok
        harness.clock.advance(timedelta(hours=1, seconds=1))
        resp = await harness.client.get("/v1/jobs", headers=bearer(created["secret"]))
        assert resp.status == 401
        assert "expired" in (await resp.json())["error"]["message"]

    async def test_revoke_by_name_and_bootstrap_tokens_are_not_managed(
        self, harness: Harness
    ) -> None:
        await create_token(harness, name="ci", role="viewer")
        resp = await harness.client.delete("/v1/tokens/ci", headers=harness.admin())
        assert resp.status == 200
        for key in ("bootstrap-admin", "default-join"):
            resp = await harness.client.delete(f"/v1/tokens/{key}", headers=harness.admin())
            assert resp.status == 409
        resp = await harness.client.delete("/v1/tokens/nope", headers=harness.admin())
        assert resp.status == 404

    async def test_names_are_unique_among_usable_tokens(self, harness: Harness) -> None:
        first = await create_token(harness, name="ci", role="viewer")
        await create_token(harness, expect=409, name="ci", role="admin")
        await harness.client.delete(f"/v1/tokens/{first['id']}", headers=harness.admin())
        await create_token(harness, name="ci", role="viewer")  # free again once revoked

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "x"}, "role"),
            ({"name": "x", "role": "root"}, "role"),
            ({"name": "x", "role": "viewer", "jobs": ["web"]}, "jobs"),
            ({"name": "x", "role": "deployer", "jobs": []}, "jobs"),
            ({"name": "x", "role": "deployer", "jobs": ["Web/*"]}, "jobs"),
            ({"name": "x", "role": "viewer", "ttl": "forever"}, "ttl"),
            ({"name": "x", "role": "viewer", "ttl": "0"}, "ttl"),
            ({"name": "x", "role": "viewer", "max_uses": 3}, "max_uses"),
            ({"name": "x", "kind": "join", "role": "admin"}, "role"),
            ({"name": "x", "kind": "join", "max_uses": 0}, "max_uses"),
            ({"name": "x", "kind": "join", "labels": {"bad key!": "v"}}, "labels"),
            ({"name": "x", "kind": "join", "approval": "maybe"}, "approval"),
            ({"name": "bad name", "role": "viewer"}, "name"),
            ({"name": "x", "role": "viewer", "secret": "mine"}, "secret"),
        ],
    )
    async def test_bad_requests_name_the_field(
        self, harness: Harness, body: dict[str, Any], field: str
    ) -> None:
        error = (await create_token(harness, expect=400, **body))["error"]
        assert field in [e["field"] for e in error["details"]["errors"]], error
        listed = await (await harness.client.get("/v1/tokens", headers=harness.admin())).json()
        assert [t["name"] for t in listed["tokens"]] == ["bootstrap-admin", "default-join"]


class TestRoles:
    async def token(self, harness: Harness, role: str, **extra: Any) -> dict[str, str]:
        created = await create_token(harness, name=f"t-{role}", role=role, **extra)
        return bearer(created["secret"])

    async def test_viewer_reads_and_cannot_write(self, harness: Harness) -> None:
        viewer = await self.token(harness, "viewer")
        assert (await harness.put_job(web_spec())).status == 201
        for path in ("/v1/jobs", "/v1/jobs/web", "/v1/nodes", "/v1/events"):
            assert (await harness.client.get(path, headers=viewer)).status == 200, path
        resp = await harness.client.put("/v1/jobs/web", json=web_spec(), headers=viewer)
        assert resp.status == 403
        error = (await resp.json())["error"]
        assert error["details"]["right"] == "jobs:write"
        assert "t-viewer" in error["message"]
        assert "deployer" in error["message"]

    async def test_deployer_is_held_to_its_job_globs(self, harness: Harness) -> None:
        deployer = await self.token(harness, "deployer", jobs=["web-*"])
        resp = await harness.client.put(
            "/v1/jobs/web-eu", json=web_spec("web-eu"), headers=deployer
        )
        assert resp.status == 201
        resp = await harness.client.put("/v1/jobs/api", json=web_spec("api"), headers=deployer)
        assert resp.status == 403
        assert "out of its scope" in (await resp.json())["error"]["message"]
        assert await harness.store.get_job("api") is None
        resp = await harness.client.post("/v1/jobs/api/stop", headers=deployer)
        assert resp.status == 403
        resp = await harness.client.post("/v1/jobs/web-eu/stop", headers=deployer)
        assert resp.status == 200

    async def test_node_actions_need_the_operator_role(self, harness: Harness) -> None:
        node_id, _ = await harness.register("a")
        deployer = await self.token(harness, "deployer")
        operator = await self.token(harness, "operator")
        path = f"/v1/nodes/{node_id}/drain"
        resp = await harness.client.post(path, headers=deployer)
        assert resp.status == 403
        assert (await resp.json())["error"]["details"]["right"] == "nodes:write"
        assert (await harness.client.post(path, headers=operator)).status == 200

    async def test_tokens_need_the_admin_role(self, harness: Harness) -> None:
        operator = await self.token(harness, "operator")
        resp = await harness.client.post(
            "/v1/tokens", json={"name": "mine", "role": "admin"}, headers=operator
        )
        assert resp.status == 403
        assert (await resp.json())["error"]["details"]["right"] == "tokens:manage"
        assert (await harness.client.get("/v1/tokens", headers=operator)).status == 403
        assert (await harness.client.get("/v1/tokens/self", headers=operator)).status == 200

    async def test_a_join_token_can_only_register(self, harness: Harness) -> None:
        join = await create_token(harness, name="enroll", kind="join")
        resp = await harness.client.get("/v1/jobs", headers=bearer(join["secret"]))
        assert resp.status == 403
        assert (await harness.client.get("/v1/jobs", headers=bearer(JOIN))).status == 401


class TestRouteRules:
    def test_every_route_has_exactly_the_rules_it_needs(self, harness: Harness) -> None:
        """Each served (method, route) has a rule and each rule a route: no stale rules."""
        app = harness.client.app
        assert app is not None
        served = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
        assert served == set(RULES)

    def test_a_route_without_a_rule_is_refused(self) -> None:
        """``create_app`` runs this over every route it serves: a new route without a rule
        stops the coordinator (and every test) instead of shipping open."""
        with pytest.raises(RuntimeError, match="GET /v1/secret-things"):
            check_rules([("GET", "/v1/jobs"), ("GET", "/v1/secret-things")])
        check_rules([("GET", "/v1/jobs"), ("HEAD", "/v1/jobs")])
        assert RULES[("GET", "/metrics")].right == Right.OPEN


class TestRedaction:
    async def test_viewers_see_env_names_not_values(self, harness: Harness) -> None:
        spec = web_spec()
        spec["task"]["env"] = {"DB_PASSWORD": "hunter2", "MODE": "prod"}
        assert (await harness.put_job(spec)).status == 201
        viewer = bearer((await create_token(harness, name="v", role="viewer"))["secret"])
        deployer = bearer((await create_token(harness, name="d", role="deployer"))["secret"])
        for path in ("/v1/jobs/web", "/v1/jobs/web/versions", "/v1/jobs/web/versions/1"):
            seen = await (await harness.client.get(path, headers=viewer)).text()
            assert "hunter2" not in seen, path
            assert '"DB_PASSWORD":"<redacted>"' in seen.replace(" ", ""), path
            full = await (await harness.client.get(path, headers=deployer)).text()
            assert "hunter2" in full, path
