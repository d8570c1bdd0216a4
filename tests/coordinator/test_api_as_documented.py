"""What schemathesis found where the coordinator and its OpenAPI document disagreed, each held
to the document (the real app on a real SQLite file, a fake clock)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from coordinator.access import BOOTSTRAP_ADMIN_ID, DEFAULT_JOIN_ID, looks_like_an_id
from shared.nodes import ID_SHAPE_PATTERN
from shared.tokens import RESERVED_NAMES
from tests.coordinator.conftest import JOIN, Harness, web_spec


async def post(harness: Harness, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else harness.admin()
    return await harness.client.post(path, json=body, headers=headers)


async def error_fields(resp: Any) -> list[str]:
    return [e["field"] for e in (await resp.json())["error"]["details"]["errors"]]


class TestServerErrors:
    async def test_an_object_for_eligibility_is_a_400(self, harness: Harness) -> None:
        """``{"eligibility": {}}`` was a 500 (an unhashable value in a set lookup)."""
        node_id, _ = await harness.register("n1")
        resp = await post(harness, f"/v1/nodes/{node_id}/eligibility", {"eligibility": {}})
        assert resp.status == 400, await resp.text()
        assert await error_fields(resp) == ["eligibility"]

    @pytest.mark.parametrize("path", ["/v1/jobs/web/rollback", "/v1/tokens", "/v1/jobs/web"])
    async def test_a_number_of_5000_digits_in_a_body_is_a_400(
        self, harness: Harness, path: str
    ) -> None:
        """int() refuses more than 4,300 digits with a ValueError that was a 500."""
        await harness.put_job(web_spec())
        body = b'{"to_version": 1' + b"0" * 5000 + b"}"
        method = "PUT" if path == "/v1/jobs/web" else "POST"
        resp = await harness.client.request(
            method, path, data=body, headers=harness.admin() | {"Content-Type": "application/json"}
        )
        assert resp.status == 400, await resp.text()
        assert "too many digits" in (await resp.json())["error"]["message"]


class TestNumbersAsJsonSchemaReadsThem:
    async def test_a_whole_number_with_a_fraction_is_an_integer(self, harness: Harness) -> None:
        """JSON Schema's integer includes 2.0 (as the document's clients send it); 2.5 is not."""
        await harness.put_job(web_spec())
        await harness.put_job(web_spec(waves=2))
        resp = await post(harness, "/v1/jobs/web/rollback", {"to_version": 1.0})
        assert resp.status == 200, await resp.text()
        resp = await post(harness, "/v1/jobs/web/rollback", {"to_version": 1.5})
        assert resp.status == 400

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/v1/jobs/web/rollback", {"to_version": "1"}),
            ("/v1/jobs/web/rollback", {"to_version": True}),
            ("/v1/jobs/web/rollout/promote", {"full": 1}),
            ("/v1/jobs/web/rollout/promote", {"full": "true"}),
        ],
    )
    async def test_no_coercion(self, harness: Harness, path: str, body: dict[str, Any]) -> None:
        """A string is not a number and 1 is not true: the document says integer, boolean."""
        await harness.put_job(web_spec())
        resp = await post(harness, path, body)
        assert resp.status == 400, await resp.text()

    async def test_a_spec_with_strings_for_numbers_is_refused(self, harness: Harness) -> None:
        """``"max_parallel": "2"`` was taken as 2 (pydantic's lax mode)."""
        resp = await harness.put_job(web_spec(max_parallel="2"))
        assert resp.status == 400
        assert await error_fields(resp) == ["rollout.max_parallel"]

    async def test_agent_reports_read_numbers_as_the_document_does(self, harness: Harness) -> None:
        """A report's seq of 1.0 is the integer 1; "2" is refused."""
        _, token = await harness.register("n1")
        resp = await post(harness, "/v1/agent/report", {"seq": 1.0}, token)
        assert resp.status == 200, await resp.text()
        resp = await post(harness, "/v1/agent/report", {"seq": "2"}, token)
        assert resp.status == 400
        assert await error_fields(resp) == ["seq"]

    @pytest.mark.parametrize("query", ["after=1000000000000000000", "limit=1001"])
    async def test_audit_bounds_are_the_documented_ones(self, harness: Harness, query: str) -> None:
        """``after`` above 10^18 - 1 was accepted up to 2^62 by the message, never by the parser."""
        resp = await harness.client.get(f"/v1/audit?{query}", headers=harness.admin())
        assert resp.status == 400


class TestStatusesAsDocumented:
    async def test_rolling_back_to_a_version_the_job_lacks_is_a_409(self, harness: Harness) -> None:
        """A well-formed version the job does not have (yet) conflicts with its state: not 400."""
        await harness.put_job(web_spec())
        resp = await post(harness, "/v1/jobs/web/rollback", {"to_version": 7})
        assert resp.status == 409, await resp.text()
        assert (await resp.json())["error"]["details"] == {"to_version": 7, "latest": 1}

    async def test_another_method_on_registration_is_a_405_without_a_token(
        self, harness: Harness
    ) -> None:
        """Registration is open, so a wrong method there is a 405 for anyone, not a 401."""
        resp = await harness.client.request("TRACE", "/v1/agent/register")
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"

    async def test_tokens_self_allows_get_only(self, harness: Harness) -> None:
        """``/v1/tokens/self`` is not a token id: DELETE there is a 405 naming GET alone."""
        resp = await harness.client.delete("/v1/tokens/self", headers=harness.admin())
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET,HEAD"
        resp = await post(harness, "/v1/tokens", {"name": "self", "role": "viewer"})
        assert resp.status == 400
        assert await error_fields(resp) == ["name"]

    async def test_a_redirect_carries_its_request_id(self, harness: Harness) -> None:
        """Every answer has X-Request-Id, the dashboard's redirect too."""
        resp = await harness.client.get("/ui", allow_redirects=False)
        assert resp.status == 302
        assert len(resp.headers["X-Request-Id"]) == 32


class TestInputTheDocumentForbids:
    @pytest.mark.parametrize(
        ("field", "rollout", "task"),
        [
            ("task.command", {}, {"command": ["\u2003", "x"]}),  # a blank program
            ("task.env", {}, {"command": ["x"], "env": {"A\n": "1"}}),  # re.match's $
            ("target.selector", {}, None),
            ("rollout.canary", {"canary": " 10%"}, None),  # once stripped
            ("rollout.canary", {"canary": "\u0661\u0660%"}, None),  # Arabic-Indic digits
            ("rollout.min_healthy_time", {"min_healthy_time": "10s "}, None),
        ],
    )
    async def test_spec_fields(
        self,
        harness: Harness,
        field: str,
        rollout: dict[str, Any],
        task: dict[str, Any] | None,
    ) -> None:
        """Each was accepted although the document's pattern refuses it."""
        spec = web_spec(**rollout)
        if task is not None:
            spec["task"] = task
        if field == "target.selector":
            spec["target"] = {"selector": {"zone\n": "a"}}
        resp = await harness.put_job(spec)
        assert resp.status == 400, await resp.text()
        assert await error_fields(resp) == [field]

    @pytest.mark.parametrize("since", [0, "2026-12-01", "2026-12-01T10:00:00"])
    async def test_report_condition_times_are_rfc3339(self, harness: Harness, since: Any) -> None:
        """A number, a date or a time without an offset was taken as a time."""
        _, token = await harness.register("n1")
        condition = {"type": "data_dir_unwritable", "since": since}
        resp = await post(harness, "/v1/agent/report", {"seq": 1, "conditions": [condition]}, token)
        assert resp.status == 400, await resp.text()

    @pytest.mark.parametrize(
        "headers",
        [{"Last-Event-ID": "x"}, {"Last-Event-ID": "1", "X-Query": "after=x"}],
    )
    async def test_event_page_checks_every_resume_point(
        self, harness: Harness, headers: dict[str, str]
    ) -> None:
        """A page checks Last-Event-ID (once ignored) and ``after`` (once ignored when
        Last-Event-ID was given)."""
        query = headers.pop("X-Query", "")
        resp = await harness.client.get(
            f"/v1/events?{query}",
            headers=harness.admin() | headers | {"Accept": "application/json"},
        )
        assert resp.status == 400, await resp.text()

    async def test_event_page_resumes_after_last_event_id(self, harness: Harness) -> None:
        """Last-Event-ID is where a page starts, as for a stream."""
        await harness.register("n1")
        await harness.register("n2")
        resp = await harness.client.get(
            "/v1/events?after=0",
            headers=harness.admin() | {"Accept": "application/json", "Last-Event-ID": "1"},
        )
        ids = [e["id"] for e in (await resp.json())["events"]]
        assert ids[:1] == [2]

    async def test_if_match_takes_the_documented_forms(self, harness: Harness) -> None:
        """``"1"``, ``W/"1"`` and ``1`` name revision 1; a stray quote is a 400."""
        await harness.put_job(web_spec())
        for value in ('"1"', 'W/"1"', "1"):
            resp = await harness.put_job(web_spec(), **{"If-Match": value})
            assert resp.status == 200, (value, await resp.text())
        resp = await harness.put_job(web_spec(), **{"If-Match": '"1'})
        assert resp.status == 400

    async def test_register_labels_keys_are_label_keys(self, harness: Harness) -> None:
        """An empty label key was refused while the document allowed it; now it says so."""
        resp = await harness.client.post(
            "/v1/agent/register", json={"join_token": JOIN, "name": "n1", "labels": {"": "x"}}
        )
        assert resp.status == 400
        document = await (await harness.client.get("/openapi.json")).json()
        labels = document["components"]["schemas"]["RegisterRequest"]["properties"]["labels"]
        assert labels["propertyNames"]["pattern"].startswith("^[A-Za-z0-9]")
        assert labels["maxProperties"] == 64


class TestReservedNames:
    def test_the_document_reserves_what_access_refuses(self) -> None:
        """The configured tokens' names are reserved, and the id shape is looks_like_an_id's."""
        assert {BOOTSTRAP_ADMIN_ID, DEFAULT_JOIN_ID} <= set(RESERVED_NAMES)
        for name in (str(uuid.uuid4()), str(uuid.uuid4()).upper(), "node-1", "a" * 36):
            assert looks_like_an_id(name) == bool(re.fullmatch(ID_SHAPE_PATTERN, name)), name

    @pytest.mark.parametrize(
        "name", ["self", "bootstrap-admin", "default-join", str(uuid.UUID(int=1))]
    )
    async def test_reserved_token_names_are_400(self, harness: Harness, name: str) -> None:
        """Each is refused by the model, as the document's ``not`` says."""
        resp = await post(harness, "/v1/tokens", {"name": name, "role": "viewer"})
        assert resp.status == 400
        assert await error_fields(resp) == ["name"]
