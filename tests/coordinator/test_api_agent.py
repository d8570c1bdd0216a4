"""The agent protocol through the real app: what reports change on the node."""

from __future__ import annotations

import asyncio
from typing import Any

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
    async def test_a_huge_seq_is_400_and_fails_no_other_report(self, harness: Harness) -> None:
        """A seq beyond what the store can keep (2^63 and up) is refused naming the field,
        while another node's report sent at the same moment is stored as usual."""
        _, bad = await harness.register("a")
        _, good = await harness.register("b")

        async def send(token: str, seq: int) -> Any:
            return await harness.client.post(
                "/v1/agent/report",
                json={"seq": seq},
                headers={"Authorization": f"Bearer {token}"},
            )

        huge, fine = await asyncio.gather(send(bad, 2**63), send(good, 1))
        assert huge.status == 400
        fields = [e["field"] for e in (await huge.json())["error"]["details"]["errors"]]
        assert fields == ["seq"]
        assert fine.status == 200
        assert (await fine.json())["accepted"] is True

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


FULL_DISK = {
    "type": "data_dir_unwritable",
    "message": "cannot write /var/lib/fleetwave-agent: [Errno 28] No space left on device",
    "since": "2026-01-01T00:00:00Z",
}


class TestConditions:
    async def report(self, harness: Harness, token: str, seq: int, conditions: Any) -> Any:
        resp = await harness.client.post(
            "/v1/agent/report",
            json={"seq": seq, "executions": [], "conditions": conditions},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def node(self, harness: Harness, node_id: str) -> Any:
        resp = await harness.client.get(f"/v1/nodes/{node_id}", headers=harness.admin())
        assert resp.status == 200
        return await resp.json()

    async def condition_events(self, harness: Harness) -> list[tuple[str, str, str]]:
        events = await harness.store.list_events()
        return [(e.old, e.new, e.reason) for e in events if e.kind == "node_condition"]

    async def test_reported_conditions_are_shown_and_recorded(self, harness: Harness) -> None:
        """A condition a report carries is shown on the node (list and detail) and recorded
        as an event when it appears and when a later report clears it; repeating it, or a
        replay, changes nothing."""
        node_id, token = await harness.register("a")
        await self.report(harness, token, 1, [])
        await self.report(harness, token, 2, [FULL_DISK])
        assert (await self.node(harness, node_id))["conditions"] == [FULL_DISK]
        resp = await harness.client.get("/v1/nodes", headers=harness.admin())
        assert [n["conditions"] for n in (await resp.json())["nodes"]] == [[FULL_DISK]]
        assert (await self.node(harness, node_id))["status"] == "ready"

        await self.report(harness, token, 3, [FULL_DISK])  # still there: no new event
        replay = await self.report(harness, token, 3, [])  # ignored: clears nothing
        assert replay["accepted"] is False
        assert (await self.node(harness, node_id))["conditions"] == [FULL_DISK]
        assert await self.condition_events(harness) == [
            ("", "data_dir_unwritable", FULL_DISK["message"])
        ]

        await self.report(harness, token, 4, [])
        assert (await self.node(harness, node_id))["conditions"] == []
        assert await self.condition_events(harness) == [
            ("", "data_dir_unwritable", FULL_DISK["message"]),
            ("data_dir_unwritable", "", "cleared"),
        ]

    async def test_an_older_agent_reports_none(self, harness: Harness) -> None:
        """A report without the field says there are none (and clears earlier ones)."""
        node_id, token = await harness.register("a")
        await self.report(harness, token, 1, [FULL_DISK])
        await harness.report(token, 2, [])  # no "conditions" key at all
        assert (await self.node(harness, node_id))["conditions"] == []

    async def test_message_is_cleaned_of_control_characters(self, harness: Harness) -> None:
        """Terminal escapes and newlines in a message never reach an operator's screen."""
        node_id, token = await harness.register("a")
        await self.report(harness, token, 1, [FULL_DISK | {"message": "disk\x1b[2J\nfull"}])
        (condition,) = (await self.node(harness, node_id))["conditions"]
        assert condition["message"] == "disk [2J full"

    @pytest.mark.parametrize(
        "conditions",
        [
            [FULL_DISK | {"type": f"c{i}"} for i in range(9)],  # more than 8
            [FULL_DISK, FULL_DISK],  # one type twice
            [FULL_DISK | {"message": "x" * 501}],
            [FULL_DISK | {"type": "Not Snake"}],
        ],
    )
    async def test_bad_conditions_are_400(self, harness: Harness, conditions: Any) -> None:
        """Count, uniqueness, message length and type are checked, naming the field."""
        _, token = await harness.register("a")
        resp = await harness.client.post(
            "/v1/agent/report",
            json={"seq": 1, "conditions": conditions},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert fields
        assert all(f.startswith("conditions") for f in fields), fields


def execution(**fields: Any) -> dict[str, Any]:
    return {"job": "web", "version": 1, "state": "healthy", **fields}


class TestLimits:
    """Every number and length an agent sends is bounded: a 400 naming the field, for the
    sender only."""

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"executions": [execution(version=2**62 + 1)]}, "executions[0].version"),
            ({"executions": [execution(version=0)]}, "executions[0].version"),
            ({"executions": [execution(generation=2**63)]}, "executions[0].generation"),
            ({"executions": [execution(restarts=-1)]}, "executions[0].restarts"),
            ({"executions": [execution(restarts=2**64)]}, "executions[0].restarts"),
            ({"executions": [execution(exit_code=2**31 + 1)]}, "executions[0].exit_code"),
            ({"executions": [execution(exit_code=-(2**31) - 1)]}, "executions[0].exit_code"),
            ({"executions": [execution(pid=0)]}, "executions[0].pid"),
            ({"executions": [execution(pid=2**31)]}, "executions[0].pid"),
            ({"executions": [execution(message="x" * 2001)]}, "executions[0].message"),
            ({"executions": [execution(job=f"j{i}") for i in range(1001)]}, "executions"),
            ({"resources": {"cpu_count": 2**20 + 1}}, "resources.cpu_count"),
            ({"resources": {"memory_bytes": 2**63}}, "resources.memory_bytes"),
            ({"resources": {"disk_bytes": -1}}, "resources.disk_bytes"),
            ({"load": {"memory_used_bytes": 2**62 + 1}}, "load.memory_used_bytes"),
            ({"load": {"cpu_percent": float("inf")}}, "load.cpu_percent"),
            ({"load": {"load1": float("nan")}}, "load.load1"),
        ],
    )
    async def test_an_out_of_range_report_is_400_and_fails_no_other_report(
        self, harness: Harness, body: dict[str, Any], field: str
    ) -> None:
        """The bad report is refused naming the field and stores nothing (its seq is still
        free); another node's report sent at the same moment is accepted."""
        bad_id, bad = await harness.register("a")
        _, good = await harness.register("b")

        async def send(token: str, payload: dict[str, Any]) -> Any:
            return await harness.client.post(
                "/v1/agent/report", json=payload, headers={"Authorization": f"Bearer {token}"}
            )

        refused, fine = await asyncio.gather(
            send(bad, {"seq": 1, **body}), send(good, {"seq": 1, "executions": [execution()]})
        )
        assert refused.status == 400
        fields = [e["field"] for e in (await refused.json())["error"]["details"]["errors"]]
        assert fields == [field]
        assert fine.status == 200
        assert (await fine.json())["accepted"] is True
        assert bad_id not in await harness.store.job_executions("web")
        assert (await harness.report(bad, 1, []))["accepted"] is True

    async def test_a_float_too_big_for_a_double_is_400(self, harness: Harness) -> None:
        """``1e400`` parses as infinity, which JSON cannot store: refused like it."""
        _, token = await harness.register("a")
        resp = await harness.client.post(
            "/v1/agent/report",
            data='{"seq": 1, "load": {"load1": 1e400}}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert fields == ["load.load1"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "n" * 64}, "name"),
            ({"name": "a b"}, "name"),
            ({"name": "-a"}, "name"),
            ({"name": "nœud"}, "name"),
            ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
            ({"labels": {"zone": "v" * 256}}, "labels"),
            ({"labels": {"k" * 64: "v"}}, "labels"),
            ({"join_token": "t" * 513}, "join_token"),
            ({"resources": {"cpu_count": -1}}, "resources.cpu_count"),
            ({"resources": {"memory_bytes": 2**62 + 1}}, "resources.memory_bytes"),
            ({"agent_version": "v" * 65}, "agent_version"),
        ],
    )
    async def test_an_out_of_range_registration_is_400(
        self, harness: Harness, body: dict[str, Any], field: str
    ) -> None:
        """Registration bounds the name, labels, token and resources; nothing is stored."""
        resp = await harness.client.post(
            "/v1/agent/register", json={"join_token": JOIN, "name": "a", **body}
        )
        assert resp.status == 400
        fields = [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]
        assert fields == [field]
        assert await harness.store.list_nodes() == []

    async def test_the_limits_themselves_are_accepted(self, harness: Harness) -> None:
        """64 labels of 255 characters, 1000 executions and the largest numbers pass."""
        labels = {f"k{i}": "v" * 255 for i in range(64)}
        node_id, token = await harness.register("n" * 63, **labels)
        top = 2**62
        executions = [
            execution(
                job=f"j{i}",
                version=top,
                generation=top,
                restarts=top,
                exit_code=-(2**31),
                pid=2**31 - 1,
                message="m" * (2000 if i == 0 else 10),
            )
            for i in range(1000)
        ]
        resp = await harness.client.post(
            "/v1/agent/report",
            json={
                "seq": 1,
                "executions": executions,
                "resources": {"cpu_count": 2**20, "memory_bytes": top, "disk_bytes": top},
                "load": {"cpu_percent": 1e300, "load1": 0.0, "memory_used_bytes": top},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200, await resp.text()
        assert (await harness.store.job_executions("j999"))[node_id].version == top
