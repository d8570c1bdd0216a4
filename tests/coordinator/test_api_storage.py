"""When the coordinator's storage fails: every write answers 503 with Retry-After (never 500),
reads show the last committed state, /readyz turns 503 and recovers by itself, and the same
request works once the storage does. The real app on a real SQLite file; the failures are
real SQLite errors on the store's writer connection."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.coordinator.conftest import JOIN, Harness, web_spec
from tests.coordinator.store.faults import commit_faults, fill_disk, free_disk, writer
from tests.coordinator.test_metrics import scrape
from tests.coordinator.test_openapi import check, fetch_document, operation_for


async def read_only(harness: Harness, on: bool) -> None:
    """Make every write of the store fail with SQLITE_READONLY, or work again."""
    await writer(harness.store).execute(f"PRAGMA query_only = {int(on)}")


async def assert_unavailable(resp: ClientResponse, *, says: str) -> None:
    body = await resp.json()
    assert resp.status == 503, body
    assert resp.headers["Retry-After"] == "2"
    assert body["error"]["code"] == "store_unavailable"
    assert says in body["error"]["message"]


async def readyz(harness: Harness) -> tuple[int, dict[str, Any]]:
    resp = await harness.client.get("/readyz")
    body: dict[str, Any] = await resp.json()
    if resp.status == 503:
        assert resp.headers["Retry-After"] == "2"
    return resp.status, body


def big_spec() -> dict[str, Any]:
    """Version 2 of ``web``: large enough to need new database pages."""
    spec = web_spec(canary=0, waves=1)
    spec["task"]["env"] = {"PAD": "x" * 32 * 1024}
    return spec


class TestFullDisk:
    async def test_put_answers_503_and_the_same_put_works_once_there_is_room(
        self, harness: Harness
    ) -> None:
        """A full disk: PUT answers 503 with Retry-After, the job reads as before, /readyz is
        503 until a probe write succeeds, then the same If-Match PUT works and the engine
        rolls the new version out without a conflict."""
        node_id, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        created = await harness.put_job(web_spec(canary=0, waves=1))
        assert created.status == 201
        await harness.driver.step()
        before = await harness.client.get("/v1/jobs/web", headers=harness.admin())
        etag = before.headers["ETag"]

        await fill_disk(harness.store)
        failed = await harness.put_job(big_spec(), **{"If-Match": etag})
        await assert_unavailable(failed, says="database or disk is full")
        assert harness.store.path in (await failed.json())["error"]["message"]
        after = await harness.client.get("/v1/jobs/web", headers=harness.admin())
        assert after.headers["ETag"] == etag
        assert (await after.json())["status"]["version"] == 1
        status, body = await readyz(harness)
        assert (status, body["status"]) == (503, "storage_failing")
        assert "database or disk is full" in body["error"]
        _, metrics = await scrape(harness)
        assert metrics.value("fleetwave_store_write_failing") == 1
        assert metrics.value("fleetwave_store_write_failures_total") == 2  # PUT and probe

        await free_disk(harness.store)
        assert (await readyz(harness))[0] == 503  # probed less than a second ago
        harness.clock.advance(1.0)
        assert await readyz(harness) == (200, {"status": "ready", "role": "leader"})
        _, metrics = await scrape(harness)
        assert metrics.value("fleetwave_store_write_failing") == 0

        retried = await harness.put_job(big_spec(), **{"If-Match": etag})
        assert retried.status == 200, await retried.text()
        assert (await retried.json())["version"] == 2
        await harness.driver.step()  # raises on a Conflict
        assignments = await harness.store.job_assignments("web")
        assert assignments[node_id].version == 2


def register_body(name: str) -> dict[str, Any]:
    return {"join_token": JOIN, "name": name, "labels": {"port": "1"}}


class TestEveryWriteAnswers503:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("PUT", "/v1/jobs/web"),
            ("POST", "/v1/jobs/web/rollout/pause"),
            ("POST", "/v1/jobs/web/stop"),
            ("DELETE", "/v1/jobs/web"),
            ("POST", "/v1/nodes/a/drain"),
            ("POST", "/v1/nodes/a/eligibility"),
        ],
    )
    async def test_operator_writes(self, harness: Harness, method: str, path: str) -> None:
        """Operator writes on a read-only database answer 503 with Retry-After."""
        _, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        assert (await harness.put_job(web_spec())).status == 201
        await harness.driver.step()  # a rollout in progress, to pause
        await read_only(harness, True)
        body: dict[str, Any] = {}
        if path.endswith("eligibility"):
            body = {"eligibility": "ineligible"}
        elif method == "PUT":
            body = web_spec(canary=1)
        resp = await harness.client.request(method, path, json=body, headers=harness.admin())
        await assert_unavailable(resp, says="readonly")

    async def test_register_and_report(self, harness: Harness) -> None:
        """Registering and a report that must be written answer 503; after recovery both
        work, and the agent's report is accepted with the seq it sent."""
        _, token = await harness.register("a", port="1")
        await read_only(harness, True)
        resp = await harness.client.post("/v1/agent/register", json=register_body("b"))
        await assert_unavailable(resp, says="audit")  # recorded before it runs: it did not
        report = {"seq": 1, "executions": []}
        auth = {"Authorization": f"Bearer {token}"}
        resp = await harness.client.post("/v1/agent/report", json=report, headers=auth)
        await assert_unavailable(resp, says="record 1 reports")
        await read_only(harness, False)
        assert (await harness.report(token, 1, []))["accepted"] is True
        await harness.register("b", port="1")


class TestAFollowUpWriteFails:
    async def test_a_rollout_action_and_its_reaction_commit_together_or_not_at_all(
        self, harness: Harness
    ) -> None:
        """stop and the engine's reaction to it (removing the assignment) are one write: when
        it fails the answer is 503 and nothing changed; the same request then does both."""
        node_id, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        assert (await harness.put_job(web_spec(canary=0, waves=1))).status == 201
        await harness.driver.step()
        assert node_id in await harness.store.job_assignments("web")
        faults = await commit_faults(harness.store)
        faults.passing, faults.failing = 1, 1  # the audit record; then the plan
        resp = await harness.client.post("/v1/jobs/web/stop", headers=harness.admin())
        await assert_unavailable(resp, says="apply a plan")
        assert (await harness.status("web"))["state"]["state_type"] != "stopped"
        assert node_id in await harness.store.job_assignments("web")
        resp = await harness.client.post("/v1/jobs/web/stop", headers=harness.admin())
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"]["state"]["state_type"] == "stopped"
        assert node_id not in await harness.store.job_assignments("web")

    async def test_a_node_action_and_its_event_commit_together_or_not_at_all(
        self, harness: Harness
    ) -> None:
        """drain and its event are one write: when it fails the answer is 503 and neither is
        stored; the same request then stores both (a client may resend it safely)."""
        node_id, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        before = await harness.store.last_event_id()
        faults = await commit_faults(harness.store)
        faults.passing, faults.failing = 1, 1  # the audit record; then the drain
        resp = await harness.client.post("/v1/nodes/a/drain", headers=harness.admin())
        await assert_unavailable(resp, says="change the scheduling of node")
        node = await harness.store.get_node(node_id)
        assert node is not None
        assert not node.drain
        assert await harness.store.last_event_id() == before
        resp = await harness.client.post("/v1/nodes/a/drain", headers=harness.admin())
        assert resp.status == 200, await resp.text()
        events = await harness.store.list_events(after=before)
        assert [(e.kind, e.new) for e in events] == [("node_drain", "true")]

    async def test_a_committed_report_reaches_the_engine_when_a_follow_up_fails(
        self, harness: Harness
    ) -> None:
        """A report of a healthy execution is committed, but recording the agent's new
        version is not: the agent gets a 503, and the engine still counts the node."""
        _, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        assert (await harness.put_job(web_spec(canary=0, waves=1))).status == 201
        await harness.driver.step()
        faults = await commit_faults(harness.store)
        faults.passing, faults.failing = 1, 1
        report = {
            "seq": 2,
            "executions": [{"job": "web", "version": 1, "state": "healthy"}],
            "agent_version": "9.9.9",
        }
        auth = {"Authorization": f"Bearer {token}"}
        resp = await harness.client.post("/v1/agent/report", json=report, headers=auth)
        await assert_unavailable(resp, says="set the agent version")
        harness.clock.advance(2.0)  # past min_healthy_time
        await harness.driver.step()
        assert (await harness.status("web"))["rollout"]["updated_nodes"] == 1


class TestDocumented:
    async def test_503_answers_match_the_openapi_document(self, harness: Harness) -> None:
        """The 503 of a write and of /readyz validate against the document, which names
        Retry-After for both."""
        document = await fetch_document(harness)
        await read_only(harness, True)
        await check(harness, document, "PUT", "/v1/jobs/web", 503, json=web_spec())
        await check(harness, document, "GET", "/readyz", 503, token=None)
        for method, path in (("PUT", "/v1/jobs/{name}"), ("GET", "/readyz")):
            reply = operation_for(document, method, path)["responses"]["503"]
            if "$ref" in reply:
                reply = document["components"]["responses"][reply["$ref"].rsplit("/", 1)[1]]
            assert "Retry-After" in reply["headers"]


class TestReadsFail:
    async def test_a_failed_read_answers_503_and_works_again(self, harness: Harness) -> None:
        """A read the database cannot answer (here SQLite interrupts every statement of the
        store's reader connection, as it reports an I/O error) is a 503 with Retry-After,
        not a 500; the same request works once the database answers again."""
        assert (await harness.put_job(web_spec())).status == 201
        reader = harness.store._reader
        assert reader is not None
        await reader.set_progress_handler(lambda: 1, 1)  # a non-zero answer interrupts
        resp = await harness.client.get("/v1/jobs/web/versions", headers=harness.admin())
        await assert_unavailable(resp, says="read the database")
        await reader.set_progress_handler(None, 1)
        resp = await harness.client.get("/v1/jobs/web/versions", headers=harness.admin())
        assert resp.status == 200
