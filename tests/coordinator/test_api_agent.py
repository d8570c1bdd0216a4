"""The agent protocol through the real app: what reports change on the node."""

from __future__ import annotations

import pytest

from coordinator.api.agent import report_answer
from shared.protocol import Assignment, AssignmentsResponse, ReportResponse
from tests.coordinator.conftest import JOIN, Harness, web_spec


class TestAgentVersion:
    async def test_upgraded_agent_reports_its_new_version(self, harness: Harness) -> None:
        """A node keeps its identity across an agent upgrade; the report updates the version
        shown for it (and records the change), while an ignored replay changes nothing."""
        resp = await harness.client.post(
            "/v1/agent/register",
            json={"join_token": JOIN, "name": "a", "agent_version": "0.1.0"},
        )
        body = await resp.json()
        node_id, token = body["node_id"], body["node_token"]
        auth = {"Authorization": f"Bearer {token}"}
        for seq, version in ((1, "0.2.0"), (1, "9.9.9")):  # the second is a replay
            resp = await harness.client.post(
                "/v1/agent/report",
                json={"seq": seq, "executions": [], "agent_version": version},
                headers=auth,
            )
            assert resp.status == 200
        resp = await harness.client.get(f"/v1/nodes/{node_id}", headers=harness.admin())
        assert (await resp.json())["agent_version"] == "0.2.0"
        events = await harness.store.list_events()
        changes = [(e.old, e.new) for e in events if e.kind == "node_agent_version"]
        assert changes == [("0.1.0", "0.2.0")]

    async def test_overlong_agent_version_is_400(self, harness: Harness) -> None:
        """The version string is bounded; a longer one is rejected naming the field."""
        _, token = await harness.register("a")
        resp = await harness.client.post(
            "/v1/agent/report",
            json={"seq": 1, "agent_version": "x" * 65},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert fields == ["agent_version"]


class TestReports:
    @pytest.mark.parametrize("accepted", [True, False])
    async def test_prebuilt_answer_equals_the_model(self, harness: Harness, accepted: bool) -> None:
        """The report answer, encoded by hand, is exactly what ReportResponse would encode
        (accepted, and a replayed seq that is ignored)."""
        _, token = await harness.register("a")
        await harness.report(token, 5, [])
        resp = await harness.client.post(
            "/v1/agent/report",
            json={"seq": 6 if accepted else 5},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200
        assert resp.content_type == "application/json"
        text = await resp.text()
        expected = ReportResponse(accepted=accepted, last_seq=6 if accepted else 5, index=1)
        assert text == expected.model_dump_json()
        assert (
            report_answer(accepted, 7, 42)
            == ReportResponse(accepted=accepted, last_seq=7, index=42).model_dump_json()
        )


class TestAssignments:
    async def test_prebuilt_body_equals_the_model(self, harness: Harness) -> None:
        """The assignments answer, assembled from cached spec JSON, is exactly what the
        AssignmentsResponse model would encode."""
        node_id, token = await harness.register("a", port="1")
        await harness.report(token, 1, [])
        await harness.put_job(web_spec())
        await harness.driver.step()
        resp = await harness.client.get(
            "/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200
        body = await resp.json()
        version = await harness.store.get_version("web", 1)
        assert version is not None
        index = int(resp.headers["X-Fleetwave-Index"])
        expected = AssignmentsResponse(
            node_id=node_id,
            index=index,
            heartbeat_interval=10.0,
            assignments=[Assignment(job="web", version=1, generation=0, spec=version.spec)],
        )
        assert body == expected.model_dump(mode="json")
        assert AssignmentsResponse.model_validate(body) == expected
