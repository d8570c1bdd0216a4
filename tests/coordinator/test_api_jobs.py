"""Job endpoints through the real app on a real SQLite file (the clock is fake)."""

from __future__ import annotations

import asyncio

from tests.coordinator.conftest import Harness, web_spec


class TestSubmit:
    async def test_create_returns_201_with_version_1(self, harness: Harness) -> None:
        """A new job is created as version 1, revision 1, pending."""
        resp = await harness.put_job(web_spec())
        assert resp.status == 201
        body = await resp.json()
        assert body["version"] == 1
        assert body["revision"] == 1
        assert body["changed"] is True
        assert body["status"]["state"]["state_type"] == "pending"

    async def test_identical_resubmission_changes_nothing(self, harness: Harness) -> None:
        """Resubmitting the same spec (defaults spelled out or not) keeps version and revision."""
        await harness.put_job(web_spec())
        before = await harness.status("web")
        spec = web_spec()
        spec["type"] = "service"  # the default, written out
        resp = await harness.put_job(spec)
        assert resp.status == 200
        body = await resp.json()
        assert body["changed"] is False
        assert await harness.status("web") == before

    async def test_update_bumps_version_and_revision(self, harness: Harness) -> None:
        """A changed spec is version 2 with a higher revision, and both versions are kept."""
        await harness.put_job(web_spec())
        spec = web_spec()
        spec["task"]["env"] = {"GREETING": "v2"}
        resp = await harness.put_job(spec)
        assert resp.status == 200
        body = await resp.json()
        assert body["version"] == 2
        assert body["revision"] >= 2
        versions = await harness.client.get("/v1/jobs/web/versions", headers=harness.admin())
        assert [v["version"] for v in (await versions.json())["versions"]] == [1, 2]
        v2 = await harness.client.get("/v1/jobs/web/versions/2", headers=harness.admin())
        assert (await v2.json())["spec"]["task"]["env"] == {"GREETING": "v2"}

    async def test_stale_if_match_is_412_and_stores_nothing(self, harness: Harness) -> None:
        """If-Match with an old revision is refused with 412 and the job is unchanged."""
        await harness.put_job(web_spec())
        before = await harness.status("web")
        spec = web_spec()
        spec["task"]["env"] = {"X": "1"}
        resp = await harness.put_job(spec, **{"If-Match": '"99"'})
        assert resp.status == 412
        body = await resp.json()
        assert body["error"]["details"]["current_revision"] == before["revision"]
        assert await harness.status("web") == before

    async def test_matching_if_match_is_accepted(self, harness: Harness) -> None:
        """If-Match naming the current revision lets the update through."""
        await harness.put_job(web_spec())
        revision = (await harness.status("web"))["revision"]
        spec = web_spec()
        spec["task"]["env"] = {"X": "1"}
        resp = await harness.put_job(spec, **{"If-Match": f'"{revision}"'})
        assert resp.status == 200

    async def test_if_match_zero_means_must_not_exist(self, harness: Harness) -> None:
        """If-Match "0" creates a new job but refuses to overwrite an existing one."""
        assert (await harness.put_job(web_spec(), **{"If-Match": '"0"'})).status == 201
        spec = web_spec()
        spec["task"]["env"] = {"X": "1"}
        assert (await harness.put_job(spec, **{"If-Match": '"0"'})).status == 412


class TestRead:
    async def test_list_and_get(self, harness: Harness) -> None:
        """Jobs are listed in a wrapped object and readable one by one with spec and status."""
        await harness.put_job(web_spec("a"))
        await harness.put_job(web_spec("b"))
        resp = await harness.client.get("/v1/jobs", headers=harness.admin())
        assert [j["name"] for j in (await resp.json())["jobs"]] == ["a", "b"]
        resp = await harness.client.get("/v1/jobs/a", headers=harness.admin())
        body = await resp.json()
        assert body["spec"]["name"] == "a"
        assert resp.headers["ETag"] == f'"{body["status"]["revision"]}"'

    async def test_status_has_etag_and_supports_if_none_match(self, harness: Harness) -> None:
        """The status ETag is the revision; If-None-Match with it answers 304."""
        await harness.put_job(web_spec())
        resp = await harness.client.get("/v1/jobs/web/status", headers=harness.admin())
        etag = resp.headers["ETag"]
        assert etag == f'"{(await resp.json())["revision"]}"'
        resp = await harness.client.get(
            "/v1/jobs/web/status", headers=harness.admin() | {"If-None-Match": etag}
        )
        assert resp.status == 304

    async def test_blocking_status_returns_at_once_when_behind(self, harness: Harness) -> None:
        """A blocking query for an older revision returns immediately."""
        await harness.put_job(web_spec())
        resp = await harness.client.get(
            "/v1/jobs/web/status?index=0&wait=30s", headers=harness.admin()
        )
        assert (await resp.json())["revision"] == 1

    async def test_blocking_status_wakes_on_change(self, harness: Harness) -> None:
        """A blocking query waiting past the current revision wakes when the job changes."""
        await harness.put_job(web_spec())
        waiter = asyncio.create_task(
            harness.client.get("/v1/jobs/web/status?index=1&wait=60s", headers=harness.admin())
        )
        await asyncio.sleep(0)  # let the request start; the change below must wake it
        spec = web_spec()
        spec["task"]["env"] = {"X": "1"}
        await harness.put_job(spec)
        resp = await asyncio.wait_for(waiter, 10)
        assert (await resp.json())["revision"] > 1

    async def test_blocking_status_times_out_with_same_revision(self, harness: Harness) -> None:
        """Without a change the query returns the same revision after `wait`."""
        await harness.put_job(web_spec())
        resp = await harness.client.get(
            "/v1/jobs/web/status?index=1&wait=50ms", headers=harness.admin()
        )
        assert resp.status == 200
        assert (await resp.json())["revision"] == 1
