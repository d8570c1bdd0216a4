"""The audit log through the real app on a real SQLite file (fake clock only): every changing
request is recorded before it runs, refused requests are recorded, no secret is ever in it,
and it is pruned by age and size."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from coordinator.api.deps import DEPS
from coordinator.audit import AuditLog
from coordinator.domain.records import AuditEntry
from tests.coordinator.conftest import ADMIN, JOIN, Harness, node_key_of, web_spec
from tests.coordinator.store.faults import writer
from tests.coordinator.test_api_tokens import bearer, create_token

SECRET_ENV = "s3cr3t-database-password"


async def audit(harness: Harness, **query: str) -> list[dict[str, Any]]:
    resp = await harness.client.get("/v1/audit", params=query, headers=harness.admin())
    assert resp.status == 200, await resp.text()
    entries: list[dict[str, Any]] = (await resp.json())["entries"]
    return entries


async def last(harness: Harness) -> dict[str, Any]:
    """The newest entry, once the answers' statuses are written (they follow the answer)."""
    app = harness.client.app
    assert app is not None
    log = app[DEPS].audit
    assert log is not None
    await log.drain()
    return (await audit(harness))[-1]


class TestEveryChange:
    async def test_each_changing_call_is_recorded_with_its_token(self, harness: Harness) -> None:
        deployer = await create_token(harness, name="ci-web", role="deployer", jobs=["web"])
        operator = await create_token(harness, name="oncall", role="operator")
        node_id, _ = await harness.register("a", port="1")
        spec = web_spec()
        spec["task"]["env"] = {"DB_PASSWORD": SECRET_ENV}
        calls: list[tuple[dict[str, Any], str, str, dict[str, Any] | None, int]] = [
            (deployer, "PUT", "/v1/jobs/web", spec, 201),
            (deployer, "POST", "/v1/jobs/web/plan", spec, 200),
            (deployer, "POST", "/v1/jobs/web/stop", None, 200),
            (operator, "POST", f"/v1/nodes/{node_id}/drain", None, 200),
            (
                operator,
                "POST",
                f"/v1/nodes/{node_id}/eligibility",
                {"eligibility": "eligible"},
                200,
            ),
            (deployer, "DELETE", "/v1/jobs/web", None, 200),
        ]
        for token, method, path, body, status in calls:
            resp = await harness.client.request(
                method, path, json=body, headers=bearer(token["secret"])
            )
            assert resp.status == status, await resp.text()
            entry = await last(harness)
            assert (entry["method"], entry["path"], entry["status"]) == (method, path, status)
            assert entry["token_name"] == token["name"]
            assert entry["token_id"] == token["id"]
            assert entry["request_id"] == resp.headers["X-Request-Id"]
            assert entry["remote"] == "127.0.0.1"
            if path.startswith("/v1/jobs/"):
                assert entry["job"] == "web"
            else:
                assert entry["node"] == node_id
        assert [e["path"] for e in await audit(harness, token="oncall")] == [
            f"/v1/nodes/{node_id}/drain",
            f"/v1/nodes/{node_id}/eligibility",
        ]
        assert len(await audit(harness, job="web")) == 4

    async def test_registration_names_the_join_token_and_the_node(self, harness: Harness) -> None:
        join = await create_token(harness, name="rack-7", kind="join")
        node_id, _ = await harness.register("a", join=join["secret"])
        entry = await last(harness)
        assert (entry["path"], entry["token_name"], entry["node"]) == (
            "/v1/agent/register",
            "rack-7",
            node_id,
        )

    async def test_rollout_events_name_the_token(self, harness: Harness) -> None:
        deployer = await create_token(harness, name="ci-web", role="deployer")
        _, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        resp = await harness.client.put(
            "/v1/jobs/web", json=web_spec(), headers=bearer(deployer["secret"])
        )
        assert resp.status == 201
        await harness.driver.evaluate("web")
        resp = await harness.client.post(
            "/v1/jobs/web/rollout/pause", headers=bearer(deployer["secret"])
        )
        assert resp.status == 200
        events = await harness.store.list_events(job="web")
        by = {e.kind: e.by for e in events}
        assert by["rollout_started"] == "ci-web"
        assert by["rollout_paused"] == "ci-web"


class TestRefused:
    @pytest.mark.parametrize(
        ("headers", "status"),
        [({}, 401), ({"Authorization": "Bearer nope"}, 401), (None, 403)],
    )
    async def test_refused_requests_are_recorded(
        self, harness: Harness, headers: dict[str, str] | None, status: int
    ) -> None:
        if headers is None:
            viewer = await create_token(harness, name="viewer", role="viewer")
            headers = bearer(viewer["secret"])
        resp = await harness.client.get("/v1/tokens", headers=headers)
        assert resp.status == status
        entry = await last(harness)
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/v1/tokens", status)
        assert entry["token_name"] == ("viewer" if status == 403 else "")

    async def test_reads_are_not_recorded(self, harness: Harness) -> None:
        await harness.client.get("/v1/jobs", headers=harness.admin())
        assert await audit(harness) == []

    async def test_only_admins_read_it_and_bad_filters_are_400(self, harness: Harness) -> None:
        operator = await create_token(harness, name="oncall", role="operator")
        resp = await harness.client.get("/v1/audit", headers=bearer(operator["secret"]))
        assert resp.status == 403
        for query in ({"after": "²"}, {"limit": "0"}, {"limit": "9" * 5000}, {"job": "A B"}):
            resp = await harness.client.get("/v1/audit", params=query, headers=harness.admin())
            assert resp.status == 400, query


class TestPaging:
    async def seed(self, harness: Harness, count: int) -> list[AuditEntry]:
        """``count`` entries, every third about job api and by token oncall, the rest web/ci."""
        entries = [
            AuditEntry(
                time=harness.clock.now(),
                token_id="",
                token_name="oncall" if i % 3 == 0 else "ci",
                method="POST",
                path=f"/v1/x/{i}",
                job="api" if i % 3 == 0 else "web",
                status=200,
            )
            for i in range(count)
        ]
        ids = await harness.store.write_audit(entries, [])
        return [e.model_copy(update={"id": i}) for e, i in zip(entries, ids, strict=True)]

    async def page(self, harness: Harness, **query: str) -> dict[str, Any]:
        resp = await harness.client.get("/v1/audit", params=query, headers=harness.admin())
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def test_newest_first_with_the_smallest_id_as_last_id(self, harness: Harness) -> None:
        """``order=desc`` answers the newest ``limit`` entries, newest first; ``last_id`` is
        the smallest id in the page; the default order is still oldest first."""
        log = await self.seed(harness, 12)
        ids = [e.id for e in log]
        newest = await self.page(harness, order="desc", limit="5")
        assert [e["id"] for e in newest["entries"]] == ids[::-1][:5]
        assert newest["last_id"] == ids[-5]
        oldest = await self.page(harness, limit="5")
        assert [e["id"] for e in oldest["entries"]] == ids[:5]
        assert oldest["last_id"] == ids[4]
        explicit = await self.page(harness, order="asc", limit="5")
        assert explicit == oldest

    async def test_before_pages_back_across_a_filter(self, harness: Harness) -> None:
        """Passing each page's ``last_id`` as ``before`` reads every entry of a job (or token)
        once, newest first, ending with a short page; a page past the end is empty and
        keeps ``before`` as its ``last_id``."""
        log = await self.seed(harness, 40)
        for query in ({"job": "web"}, {"token": "oncall"}, {"job": "api", "token": "oncall"}):
            seen: list[int] = []
            cursor: dict[str, str] = {}
            while True:
                body = await self.page(harness, order="desc", limit="4", **query, **cursor)
                seen += [e["id"] for e in body["entries"]]
                cursor = {"before": str(body["last_id"])}
                if len(body["entries"]) < 4:
                    break
            wanted = [
                e.id
                for e in reversed(log)
                if e.job == query.get("job", e.job)
                and e.token_name == query.get("token", e.token_name)
            ]
            assert seen == wanted, query
            past = await self.page(harness, order="desc", before=str(wanted[-1]), **query)
            assert past == {"entries": [], "last_id": wanted[-1]}

    async def test_before_bounds_an_oldest_first_page_too(self, harness: Harness) -> None:
        """With the default order, ``after`` and ``before`` bound the page on both sides."""
        ids = [e.id for e in await self.seed(harness, 10)]
        body = await self.page(harness, after=str(ids[2]), before=str(ids[6]))
        assert [e["id"] for e in body["entries"]] == ids[3:6]
        empty = await self.page(harness, order="desc", job="nope")
        assert empty == {"entries": [], "last_id": 0}

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ({"order": "DESC"}, "order"),
            ({"order": ""}, "order"),
            ({"order": "newest"}, "order"),
            ({"before": ""}, "before"),
            ({"before": "-1"}, "before"),
            ({"before": "1.0"}, "before"),
            ({"before": " 1"}, "before"),
            ({"before": "²"}, "before"),
            ({"before": "1" * 19}, "before"),
            ({"order": "desc", "before": "x"}, "before"),
            ({"order": "desc", "limit": "1001"}, "limit"),
        ],
    )
    async def test_bad_values_are_400_naming_the_field(
        self, harness: Harness, query: dict[str, str], field: str
    ) -> None:
        """An order other than asc or desc, or a before that is not a plain integer from 0 to
        10^18 - 1, is a 400 naming the parameter."""
        resp = await harness.client.get("/v1/audit", params=query, headers=harness.admin())
        assert resp.status == 400, query
        errors = (await resp.json())["error"]["details"]["errors"]
        assert [e["field"] for e in errors] == [field]


class TestNoSecrets:
    async def test_no_secret_reaches_the_audit_log_or_the_events(self, harness: Harness) -> None:
        created = await create_token(harness, name="ci", role="admin")
        join = await create_token(harness, name="enroll", kind="join")
        _, node_token = await harness.register("a", join=join["secret"])
        spec = web_spec()
        spec["task"]["env"] = {"DB_PASSWORD": SECRET_ENV}
        await harness.client.put("/v1/jobs/web", json=spec, headers=bearer(created["secret"]))
        await harness.client.get("/v1/jobs", headers={"Authorization": "Bearer " + SECRET_ENV})
        await last(harness)
        secrets = [created["secret"], join["secret"], node_token, ADMIN, JOIN, SECRET_ENV]
        secrets.append(node_key_of("a"))
        rows = await writer(harness.store).execute_fetchall("SELECT * FROM audit")
        events = await writer(harness.store).execute_fetchall("SELECT * FROM events")
        dumped = repr(list(rows)) + repr(list(events))
        assert len(list(rows)) >= 5
        for secret in secrets:
            assert secret not in dumped


class TestDurability:
    async def test_a_change_that_cannot_be_recorded_does_not_happen(self, harness: Harness) -> None:
        await writer(harness.store).execute("PRAGMA query_only = 1")
        resp = await harness.put_job(web_spec())
        assert resp.status == 503
        assert "audit" in (await resp.json())["error"]["message"]
        await writer(harness.store).execute("PRAGMA query_only = 0")
        assert await harness.store.get_job("web") is None
        assert (await harness.put_job(web_spec())).status == 201


class TestRetention:
    async def test_pruned_by_age_and_by_size(self, harness: Harness) -> None:
        log = AuditLog(harness.store, harness.clock, retention=timedelta(days=1), max_rows=3)
        old = harness.clock.now()
        for i in range(2):
            await log.record(AuditEntry(time=old, method="POST", path=f"/v1/old/{i}"))
        harness.clock.advance(timedelta(days=2))
        for i in range(5):
            await log.record(
                AuditEntry(time=harness.clock.now(), method="POST", path=f"/v1/new/{i}")
            )
        assert await log.prune() == 4  # 2 too old, then 2 over the 3 newest
        assert [e["path"] for e in await audit(harness)] == [
            "/v1/new/2",
            "/v1/new/3",
            "/v1/new/4",
        ]
