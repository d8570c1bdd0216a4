"""Bad input gets a clear 4xx naming the problem, and nothing stored changes (real app + SQLite)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.coordinator.conftest import ADMIN, JOIN, Harness, web_spec


async def snapshot(harness: Harness) -> Any:
    """Everything an operator can read about the job and nodes, plus the raw job rows."""
    out = []
    for path in ("/v1/jobs/web", "/v1/jobs/web/versions", "/v1/nodes"):
        resp = await harness.client.get(path, headers=harness.admin())
        out.append(await resp.json())
    with sqlite3.connect(harness.path) as conn:
        out.append(conn.execute("SELECT * FROM jobs ORDER BY name").fetchall())
        out.append(conn.execute("SELECT * FROM job_versions ORDER BY job, version").fetchall())
    return out


def with_(path: str, value: Any) -> dict[str, Any]:
    spec = web_spec()
    keys = path.split(".")
    target = spec
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return spec


BAD_SPECS = [
    ("name", with_("name", "Web")),
    ("name", with_("name", "-web")),
    ("name", with_("name", "w" * 64)),
    ("bogus", with_("bogus", 1)),
    ("task.bogus", with_("task.bogus", 1)),
    ("task.command", with_("task.command", [])),
    ("task.command", with_("task.command", ["run", "${foo}"])),
    ("task.env", with_("task.env", {"X": "${node.nope}"})),
    ("rollout.min_healthy_time", with_("rollout.min_healthy_time", "10x")),
    ("rollout.healthy_deadline", with_("rollout.healthy_deadline", "")),
    ("rollout.healthy_deadline", with_("rollout.healthy_deadline", "-1s")),
    ("rollout.progress_deadline", with_("rollout.progress_deadline", 5)),
    ("target.selector", with_("target.selector", {"bad key!": "x"})),
    ("rollout.canary", with_("rollout.canary", "200%")),
    ("rollout.canary", with_("rollout.canary", -1)),
    ("rollout.waves", with_("rollout.waves", 0)),
    ("rollout.waves", with_("rollout.waves", [])),
    ("rollout.waves", with_("rollout.waves", ["50%", "20%", "100%"])),
    ("rollout", with_("rollout.healthy_deadline", "1s")),
    ("health.checks[0].url", {**web_spec(), "health": {"checks": [{"type": "http", "url": "x"}]}}),
    (
        "health.checks[0].url",
        {**web_spec(), "health": {"checks": [{"type": "http", "url": "http://h/${bad}"}]}},
    ),
]


class TestJobInput:
    @pytest.mark.parametrize(("field", "spec"), BAD_SPECS)
    async def test_invalid_spec_names_the_field(
        self, harness: Harness, field: str, spec: dict[str, Any]
    ) -> None:
        """An invalid spec is a 400 listing the field, and the stored job is unchanged."""
        await harness.put_job(web_spec())
        before = await snapshot(harness)
        resp = await harness.client.put("/v1/jobs/web", json=spec, headers=harness.admin())
        if spec.get("name") not in (None, "web"):
            resp = await harness.client.put(
                f"/v1/jobs/{spec['name']}", json=spec, headers=harness.admin()
            )
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["code"] == "validation_failed"
        fields = [e["field"] for e in body["error"]["details"]["errors"]]
        assert field in fields, fields
        assert await snapshot(harness) == before

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"{not json", "malformed JSON"),
            (b"", "empty"),
            (b"[1, 2]", "JSON object"),
            (b"\xff\xfe", "malformed JSON"),
        ],
    )
    async def test_malformed_bodies_are_400(
        self, harness: Harness, body: bytes, fragment: str
    ) -> None:
        """Bodies that are not a JSON object get a 400 saying what is wrong."""
        await harness.put_job(web_spec())
        before = await snapshot(harness)
        resp = await harness.client.put("/v1/jobs/web", data=body, headers=harness.admin())
        assert resp.status == 400
        assert fragment in json.dumps(await resp.json())
        assert await snapshot(harness) == before

    async def test_name_mismatch_is_400(self, harness: Harness) -> None:
        """The body's name must equal the path's."""
        resp = await harness.client.put("/v1/jobs/other", json=web_spec(), headers=harness.admin())
        assert resp.status == 400
        assert (await resp.json())["error"]["details"]["errors"][0]["field"] == "name"

    async def test_two_mib_body_is_413(self, harness: Harness) -> None:
        """A body over the 1 MiB limit is refused with 413 and stores nothing."""
        await harness.put_job(web_spec())
        before = await snapshot(harness)
        spec = with_("task.env", {"BIG": "x" * (2 * 1024 * 1024)})
        resp = await harness.client.put(
            "/v1/jobs/web", data=io.BytesIO(json.dumps(spec).encode()), headers=harness.admin()
        )
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
        assert await snapshot(harness) == before

    async def test_a_body_arriving_in_pieces_is_read_whole(self, harness: Harness) -> None:
        """A 500 KB spec sent in 64 KB chunks, each flushed on its own (chunked transfer),
        is read whole and stored, not refused as malformed JSON."""
        spec = with_("task.env", {"BIG": "x" * (500 * 1024)})
        raw = json.dumps(spec).encode()

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), 64 * 1024):
                yield raw[start : start + 64 * 1024]
                await asyncio.sleep(0)  # the next piece is sent separately

        resp = await harness.client.put("/v1/jobs/web", data=pieces(), headers=harness.admin())
        assert resp.status == 201, await resp.text()
        stored = await harness.client.get("/v1/jobs/web", headers=harness.admin())
        assert len((await stored.json())["spec"]["task"]["env"]["BIG"]) == 500 * 1024

    @pytest.mark.parametrize(
        ("query", "field"), [("index=abc", "index"), ("index=1&wait=forever", "wait")]
    )
    async def test_bad_blocking_parameters(self, harness: Harness, query: str, field: str) -> None:
        """Blocking query parameters are validated and named."""
        await harness.put_job(web_spec())
        resp = await harness.client.get(f"/v1/jobs/web/status?{query}", headers=harness.admin())
        assert resp.status == 400
        assert (await resp.json())["error"]["details"]["errors"][0]["field"] == field

    async def test_bad_if_match_is_400(self, harness: Harness) -> None:
        """If-Match must be a quoted revision."""
        resp = await harness.put_job(web_spec(), **{"If-Match": "yesterday"})
        assert resp.status == 400


class TestUnknownThings:
    @pytest.mark.parametrize(
        "path",
        [
            "/v1/jobs/nope",
            "/v1/jobs/nope/status",
            "/v1/jobs/nope/versions",
            "/v1/jobs/nope/versions/1",
            "/v1/jobs/nope/nodes",
            "/v1/jobs/nope/rollout",
            "/v1/nodes/nope",
            "/v1/nothing-here",
        ],
    )
    async def test_unknown_is_404_json(self, harness: Harness, path: str) -> None:
        """Unknown jobs, nodes and routes are 404 with an error body."""
        resp = await harness.client.get(path, headers=harness.admin())
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"

    async def test_unknown_version_and_bad_version(self, harness: Harness) -> None:
        """A missing version is 404; one that is not a plain in-range integer is 400 (also
        digits of other scripts, which Python's int() would take, and 80-bit numbers)."""
        await harness.put_job(web_spec())
        resp = await harness.client.get("/v1/jobs/web/versions/9", headers=harness.admin())
        assert resp.status == 404
        for bad in ("abc", "0", "\u00b2", "\u0663", "-1", "+1", " 1", str(2**80), "1" * 5000):
            resp = await harness.client.get(f"/v1/jobs/web/versions/{bad}", headers=harness.admin())
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["details"]["errors"][0]["field"] == "version"

    async def test_wrong_method_is_405(self, harness: Harness) -> None:
        """A wrong method is 405 naming the allowed ones."""
        resp = await harness.client.post("/v1/jobs", headers=harness.admin())
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


class TestAuth:
    @pytest.mark.parametrize(
        "header", [None, "Bearer", "Basic abc", f"Bearer {ADMIN}x", f"Bearer {JOIN}"]
    )
    async def test_missing_or_bad_token_is_401(self, harness: Harness, header: str | None) -> None:
        """Operator endpoints refuse missing, malformed and wrong tokens with 401."""
        headers = {"Authorization": header} if header else {}
        for path in ("/v1/jobs", "/v1/nodes", "/v1/events"):
            resp = await harness.client.get(path, headers=headers)
            assert resp.status == 401, path
        resp = await harness.client.put("/v1/jobs/web", json=web_spec(), headers=headers)
        assert resp.status == 401
        assert await harness.store.get_job("web") is None

    async def test_node_token_on_operator_endpoint_is_403(self, harness: Harness) -> None:
        """A node token cannot call operator endpoints."""
        _, token = await harness.register("a")
        resp = await harness.client.put(
            "/v1/jobs/web", json=web_spec(), headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 403
        assert await harness.store.get_job("web") is None

    async def test_admin_token_on_agent_endpoints_is_403(self, harness: Harness) -> None:
        """The operator token cannot act as a node."""
        resp = await harness.client.get("/v1/agent/assignments", headers=harness.admin())
        assert resp.status == 403
        resp = await harness.client.post(
            "/v1/agent/report", json={"seq": 1}, headers=harness.admin()
        )
        assert resp.status == 403

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
    async def test_open_endpoints(self, harness: Harness, path: str) -> None:
        """Health and metrics need no token."""
        assert (await harness.client.get(path)).status == 200


class TestAgentInput:
    async def test_register_bad_join_token_is_401(self, harness: Harness) -> None:
        """Registration needs the join token."""
        resp = await harness.client.post(
            "/v1/agent/register", json={"join_token": "nope", "name": "a"}
        )
        assert resp.status == 401
        assert await harness.store.list_nodes() == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [({"name": "bad name"}, "name"), ({"name": "a", "labels": {"bad key!": "x"}}, "labels")],
    )
    async def test_register_invalid_fields_are_400(
        self, harness: Harness, body: dict[str, Any], field: str
    ) -> None:
        """An invalid node name or label key is named."""
        resp = await harness.client.post("/v1/agent/register", json={"join_token": JOIN, **body})
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert field in fields

    @pytest.mark.parametrize("state", ["initializing", "ready", "down"])
    async def test_register_a_held_name_without_its_key_is_409(
        self, harness: Harness, state: str
    ) -> None:
        """A name belongs to its node whatever its status: another agent (another node key,
        or none) gets 409 and the holder's token works on."""
        _, token = await harness.register("a")
        if state != "initializing":
            await harness.report(token, 1, [])
        if state == "down":
            harness.clock.advance(timedelta(hours=1))
            assert await harness.monitor.tick()
        for key in ("another-agent-key".ljust(40, "x"), None):
            body: dict[str, Any] = {"join_token": JOIN, "name": "a"}
            if key:
                body["node_key"] = key
            resp = await harness.client.post("/v1/agent/register", json=body)
            assert resp.status == 409
            details = (await resp.json())["error"]["details"]
            assert details["name"] == "a"
            assert details["status"] == state
        assert len(await harness.store.list_nodes()) == 1
        await harness.report(token, 2, [])

    async def test_register_again_with_its_key_renews_the_token(self, harness: Harness) -> None:
        """An agent whose registration answer was lost (or whose token expired) asks again
        with its node key: it gets the same node with a new token, and the old token
        stops working."""
        node_id, first = await harness.register("a", zone="z1")
        again, second = await harness.register("a", zone="z2")
        assert again == node_id
        assert second != first
        (node,) = await harness.store.list_nodes()
        assert node.labels == {"zone": "z2"}
        resp = await harness.client.post(
            "/v1/agent/report", json={"seq": 1}, headers={"Authorization": f"Bearer {first}"}
        )
        assert resp.status == 401
        await harness.report(second, 1, [])

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"seq": 0}, "seq"),
            (
                {"seq": 1, "executions": [{"job": "web", "version": 1, "state": "great"}]},
                "executions[0].state",
            ),
        ],
    )
    async def test_bad_reports_are_400(
        self, harness: Harness, body: dict[str, Any], field: str
    ) -> None:
        """Reports are validated field by field."""
        _, token = await harness.register("a")
        resp = await harness.client.post(
            "/v1/agent/report", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert field in fields

    async def test_replayed_report_is_ignored(self, harness: Harness) -> None:
        """A report whose seq is not above the last one changes nothing."""
        node_id, token = await harness.register("a")
        await harness.report(token, 5, [{"job": "web", "version": 1, "state": "healthy"}])
        body = await harness.report(token, 3, [{"job": "web", "version": 1, "state": "failed"}])
        assert body == {**body, "accepted": False, "last_seq": 5}
        executions = await harness.store.job_executions("web")
        assert executions[node_id].state == "healthy"


class TestHardening:
    """Input that once gave a 500: digits of other scripts and numbers beyond 64 bits in
    query parameters and headers, and JSON nested deeper than 64 levels."""

    @pytest.mark.parametrize("bad", ["\u00b2", "\u0663", "9" * 5000, "-1", "1e3", "0x10"])
    async def test_malformed_numbers_are_400(self, harness: Harness, bad: str) -> None:
        _, token = await harness.register("a")
        await harness.put_job(web_spec())
        node = {"Authorization": f"Bearer {token}"}
        checks = [
            ("/v1/jobs/web/status", {"index": bad}, harness.admin(), "index"),
            ("/v1/agent/assignments", {"index": bad}, node, "index"),
            (
                "/v1/events",
                {"after": bad},
                harness.admin() | {"Accept": "application/json"},
                "after",
            ),
            (
                "/v1/events",
                {"limit": bad},
                harness.admin() | {"Accept": "application/json"},
                "limit",
            ),
            ("/v1/audit", {"after": bad}, harness.admin(), "after"),
        ]
        for path, query, headers, field in checks:
            resp = await harness.client.get(path, params=query, headers=headers)
            assert resp.status == 400, (path, query, await resp.text())
            fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
            assert field in fields
        resp = await harness.client.put(
            "/v1/jobs/web", json=web_spec(), headers=harness.admin() | {"If-Match": f'"{bad}"'}
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["details"]["header"] == "If-Match"

    @pytest.mark.parametrize("depth", [65, 30_000])
    async def test_deeply_nested_json_is_400(self, harness: Harness, depth: int) -> None:
        """Also 30,000 levels (60 KB, under registration's 64 KB limit): json.loads alone
        would raise RecursionError there."""
        _, token = await harness.register("a")
        deep = "[" * depth + "]" * depth
        bodies = [
            ("PUT", "/v1/jobs/web", harness.admin(), f'{{"name": "web", "task": {deep}}}'),
            ("POST", "/v1/agent/register", {}, f'{{"join_token": "x", "labels": {deep}}}'),
            (
                "POST",
                "/v1/agent/report",
                {"Authorization": f"Bearer {token}"},
                f'{{"seq": 1, "executions": {deep}}}',
            ),
            ("POST", "/v1/tokens", harness.admin(), f'{{"name": "x", "jobs": {deep}}}'),
        ]
        for method, path, headers, body in bodies:
            resp = await harness.client.request(
                method, path, data=body, headers=headers | {"Content-Type": "application/json"}
            )
            assert resp.status == 400, (path, await resp.text())
            assert "nested deeper than 64" in (await resp.json())["error"]["message"]
        assert await harness.store.get_job("web") is None

    async def test_sixty_four_levels_are_fine(self, harness: Harness) -> None:
        spec = web_spec()
        nested: object = "v"
        for _ in range(60):
            nested = [nested]
        spec["meta"] = nested
        resp = await harness.put_job(spec)
        assert resp.status == 400  # an unknown field, not a depth problem
        assert "nested deeper" not in await resp.text()
