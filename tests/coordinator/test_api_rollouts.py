"""Rollout controls, plan, rollout view, events and node scheduling through the real app."""

from __future__ import annotations

from typing import Any

from tests.coordinator.conftest import Harness, web_spec


async def gated_rollout(harness: Harness) -> list[str]:
    """Two nodes, a create rollout with one canary waiting at the promotion gate."""
    tokens = []
    for name in ("a", "b"):
        _, token = await harness.register(name, port="1")
        await harness.report(token, 1, [])
        tokens.append(token)
    await harness.put_job(web_spec(canary=1, auto_promote=False))
    await harness.driver.step()
    return tokens


async def post(harness: Harness, path: str, body: Any = None) -> Any:
    resp = await harness.client.post(path, json=body, headers=harness.admin())
    return resp.status, await resp.json()


class TestControls:
    async def test_pause_and_resume_change_the_state(self, harness: Harness) -> None:
        """pause puts the rollout in rollout_paused; resume takes it back to deploying."""
        await gated_rollout(harness)
        status, body = await post(harness, "/v1/jobs/web/rollout/pause")
        assert status == 200
        assert body["status"]["state"]["state_type"] == "rollout_paused"
        status, body = await post(harness, "/v1/jobs/web/rollout/resume")
        assert body["status"]["state"]["state_type"] == "deploying"

    async def test_promote_passes_the_canary_gate(self, harness: Harness) -> None:
        """A canary that passed its gate waits for promote, which moves the rollout on."""
        tokens = await gated_rollout(harness)
        view = await (
            await harness.client.get("/v1/jobs/web/rollout", headers=harness.admin())
        ).json()
        canary = view["canary"]["nodes"][0]["name"]
        token = tokens[0] if canary == "a" else tokens[1]
        await harness.report(token, 2, [{"job": "web", "version": 1, "state": "healthy"}])
        harness.clock.advance(2)
        await harness.driver.step()
        assert (await harness.status("web"))["state"]["state_type"] == "rollout_paused"
        status, body = await post(harness, "/v1/jobs/web/rollout/promote", {"full": False})
        assert status == 200
        assert body["status"]["rollout"]["canary_promoted"] is True
        assert body["status"]["state"]["state_type"] == "deploying"

    async def test_promote_rejects_unknown_fields(self, harness: Harness) -> None:
        """promote takes only {"full": bool}."""
        await gated_rollout(harness)
        status, body = await post(harness, "/v1/jobs/web/rollout/promote", {"fully": True})
        assert status == 400
        assert body["error"]["details"]["errors"][0]["field"] == "fully"

    async def test_abort_of_a_create_stops_the_job(self, harness: Harness) -> None:
        """Aborting a first rollout leaves nothing assigned and says it was aborted."""
        await gated_rollout(harness)
        status, body = await post(harness, "/v1/jobs/web/rollout/abort")
        assert status == 200
        assert "aborted" in body["status"]["state"]["message"]
        assert await harness.store.job_assignments("web") == {}

    async def test_controls_without_rollout_are_409(self, harness: Harness) -> None:
        """retry of a rollout that did not fail is refused with a reason."""
        await gated_rollout(harness)
        status, body = await post(harness, "/v1/jobs/web/rollout/retry")
        assert status == 409
        assert "did not fail" in body["error"]["message"]

    async def test_stop_and_delete(self, harness: Harness) -> None:
        """stop unassigns everything; delete leaves a tombstone whose status says deleted."""
        await gated_rollout(harness)
        _, body = await post(harness, "/v1/jobs/web/stop")
        assert body["status"]["state"]["state_type"] == "stopped"
        assert await harness.store.job_assignments("web") == {}
        resp = await harness.client.delete("/v1/jobs/web", headers=harness.admin())
        assert (await resp.json())["status"]["state"]["state_type"] == "deleted"
        assert (await harness.status("web"))["state"]["state_type"] == "deleted"


class TestViews:
    async def test_plan_shows_diff_and_waves_without_storing(self, harness: Harness) -> None:
        """The dry run lists changed fields and the wave plan, and stores nothing."""
        await gated_rollout(harness)
        before = await harness.status("web")
        spec = web_spec(canary=1, auto_promote=False)
        spec["task"]["env"] = {"X": "1"}
        status, plan = await post(harness, "/v1/jobs/web/plan", spec)
        assert status == 200
        assert plan["changed"] is True
        assert plan["next_version"] == 2
        assert [d["field"] for d in plan["diff"]] == ["task.env.X"]
        assert len(plan["rollout"]["canary"]) == 1
        assert sum(len(w) for w in plan["rollout"]["waves"]) == 1
        assert await harness.status("web") == before

    async def test_rollout_view_and_events(self, harness: Harness) -> None:
        """The rollout view has canary and waves with per-node results; events list them."""
        await gated_rollout(harness)
        resp = await harness.client.get("/v1/jobs/web/rollout", headers=harness.admin())
        view = await resp.json()
        assert view["type"] == "create"
        assert view["canary"]["nodes"][0]["result"] == "in_progress"
        assert view["waves"][0]["state"] == "pending"
        resp = await harness.client.get(
            "/v1/events?job=web", headers=harness.admin() | {"Accept": "application/json"}
        )
        kinds = [e["kind"] for e in (await resp.json())["events"]]
        assert "rollout_started" in kinds
        assert "job_state" in kinds


class TestNodes:
    async def test_drain_and_eligibility_by_name(self, harness: Harness) -> None:
        """Nodes are drained and made ineligible by name; the engine reacts."""
        await gated_rollout(harness)
        status, body = await post(harness, "/v1/nodes/a/drain", {"enable": True})
        assert (status, body["drain"]) == (200, True)
        status, body = await post(harness, "/v1/nodes/b/eligibility", {"eligibility": "ineligible"})
        assert (status, body["eligibility"]) == (200, "ineligible")
        status, body = await post(harness, "/v1/nodes/b/eligibility", {"eligibility": "maybe"})
        assert status == 400
        assert body["error"]["details"]["errors"][0]["field"] == "eligibility"
