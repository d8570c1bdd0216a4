"""The OpenAPI document and the /docs page, through the real app (SQLite store, fake clock)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from coordinator.access import ROLE_RIGHTS, RULES, Right
from coordinator.api.catalog import ROUTE_DOCS, TAGS
from coordinator.api.docs import ASSETS, live_routes, openapi_document
from coordinator.openapi import (
    Auth,
    LiveRoute,
    Media,
    Param,
    Reply,
    RouteDoc,
    build_openapi,
    json_reply,
    undocumented,
    unrouted,
)
from shared.spec import JobSpec
from shared.tokens import Role
from tests.coordinator.conftest import ADMIN, JOIN, Harness, web_spec

URL = re.compile(r"https?://", re.IGNORECASE)


def served_operations(harness: Harness) -> set[tuple[str, str]]:
    return {(r.method, r.path) for r in live_routes(harness.client.app)}


async def fetch_document(harness: Harness) -> dict[str, Any]:
    resp = await harness.client.get("/openapi.json")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    document: dict[str, Any] = await resp.json()
    return document


def operation_for(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The operation whose path template matches the concrete ``path``."""
    path = path.partition("?")[0]
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"no operation for {method} {path} in the document")


def response_schema(
    document: dict[str, Any], method: str, path: str, status: int, media: str
) -> dict[str, Any]:
    responses = operation_for(document, method, path)["responses"]
    assert str(status) in responses, f"{method} {path} does not document status {status}"
    response = responses[str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    assert media in response["content"], f"{method} {path} {status} does not document {media}"
    # The schema's "#/components/..." references resolve against this root.
    return {**response["content"][media]["schema"], "components": document["components"]}


async def check(
    harness: Harness,
    document: dict[str, Any],
    method: str,
    path: str,
    status: int,
    token: str | None = ADMIN,
    **kwargs: Any,
) -> Any:
    """Send a request, assert its status, and validate its JSON body against the document."""
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    resp = await harness.client.request(method, path, headers=headers, **kwargs)
    body = await resp.json()
    assert resp.status == status, body
    schema = response_schema(document, method, path, status, "application/json")
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{method} {path} -> {status}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )
    return body


class TestRoutesAndDocument:
    async def test_document_lists_exactly_the_served_routes(self, harness: Harness) -> None:
        """Every served (method, path) is in the document and the document lists nothing else."""
        document = await fetch_document(harness)
        documented = {
            (method.upper(), path) for path, item in document["paths"].items() for method in item
        }
        assert documented == served_operations(harness)

    async def test_every_route_has_a_description_and_every_description_a_route(
        self, harness: Harness
    ) -> None:
        """The registry and the route table name the same routes (no stubs, no leftovers)."""
        routes = live_routes(harness.client.app)
        assert undocumented(routes, ROUTE_DOCS) == []
        assert unrouted(routes, ROUTE_DOCS) == []

    async def test_document_is_valid_openapi_3_1(self, harness: Harness) -> None:
        """openapi-spec-validator accepts the document as OpenAPI 3.1."""
        document = await fetch_document(harness)
        assert document["openapi"].startswith("3.1")
        validate_openapi(document)

    async def test_open_endpoints_declare_no_security(self, harness: Harness) -> None:
        """Open endpoints say ``security: []``; every /v1 endpoint but register needs a token,
        an operator token for operator endpoints and a node token for the agent's."""
        document = await fetch_document(harness)
        for path, item in document["paths"].items():
            for method, operation in item.items():
                is_open = not path.startswith("/v1/") or path == "/v1/agent/register"
                if is_open:
                    assert operation["security"] == [], (method, path)
                    continue
                scheme = "nodeToken" if path.startswith("/v1/agent/") else "operatorToken"
                assert operation["security"] == [{scheme: []}], (method, path)
                assert {"401", "403", "503"} <= operation["responses"].keys(), (method, path)

    async def test_every_operation_names_the_right_access_py_checks(self, harness: Harness) -> None:
        """``x-fleetwave-right`` is the route's rule in coordinator/access.py; the description
        names it and the roles that have it, and the catalog's auth agrees with the rule."""
        document = await fetch_document(harness)
        auth_of = {
            Right.OPEN: Auth.OPEN,
            Right.REGISTER: Auth.JOIN,
            Right.AGENT: Auth.NODE,
        }
        for path, item in document["paths"].items():
            for method, operation in item.items():
                rule = RULES[(method.upper(), path)]
                assert operation["x-fleetwave-right"] == rule.right.value, (method, path)
                doc = ROUTE_DOCS[(method.upper(), path)]
                assert doc.auth == auth_of.get(rule.right, Auth.OPERATOR), (method, path)
                if doc.auth == Auth.OPERATOR:
                    text = operation["description"]
                    assert f"**Right:** `{rule.right.value}`" in text, (method, path)
                    least = next(r for r in Role if rule.right in ROLE_RIGHTS[r])
                    assert least.value in text, (method, path)

    async def test_operator_token_scheme_lists_every_role(self, harness: Harness) -> None:
        """The operatorToken scheme says which rights each role has (DESIGN §11)."""
        document = await fetch_document(harness)
        schemes = document["components"]["securitySchemes"]
        assert set(schemes) == {"operatorToken", "nodeToken"}
        text = schemes["operatorToken"]["description"]
        for role, rights in ROLE_RIGHTS.items():
            line = next(line for line in text.splitlines() if line.startswith(f"- `{role}`"))
            assert all(f"`{right.value}`" in line for right in rights), line

    async def test_document_needs_no_token(self, harness: Harness) -> None:
        """/openapi.json answers without an Authorization header."""
        resp = await harness.client.get("/openapi.json")
        assert resp.status == 200

    async def test_component_schemas_are_the_pydantic_models(self, harness: Harness) -> None:
        """Components carry the models' schemas, durations defaulting as written ("10s")."""
        document = await fetch_document(harness)
        schemas = document["components"]["schemas"]
        assert {"JobSpec", "JobStatus", "ErrorBody", "Node", "RegisterRequest"} <= schemas.keys()
        assert schemas["Task"]["properties"]["kill_timeout"]["default"] == "10s"
        assert schemas["RolloutPolicy"]["properties"]["min_healthy_time"]["default"] == "10s"
        status = schemas["JobStatus"]["properties"]
        assert set(status) == {
            "created_at",
            "revision",
            "rollout",
            "state",
            "updated_at",
            "version",
        }


class TestResponsesMatchTheDocument:
    async def test_operator_responses_match_their_schemas(self, harness: Harness) -> None:
        """Real answers of the job, rollout, node and event endpoints validate against the spec."""
        document = await fetch_document(harness)
        node_id, node_token = await harness.register("node-1", zone="a")
        await harness.register("node-2", zone="b")
        await check(harness, document, "PUT", "/v1/jobs/web", 201, json=web_spec())
        await harness.driver.evaluate("web")
        await harness.report(
            node_token,
            1,
            [{"job": "web", "version": 1, "state": "healthy", "message": "ok", "pid": 42}],
        )
        await check(harness, document, "PUT", "/v1/jobs/web", 200, json=web_spec())
        await check(harness, document, "GET", "/v1/jobs", 200)
        await check(harness, document, "GET", "/v1/jobs/web", 200)
        await check(harness, document, "GET", "/v1/jobs/web/status", 200)
        await check(harness, document, "GET", "/v1/jobs/web/status?index=0&wait=1s", 200)
        await check(harness, document, "GET", "/v1/jobs/web/versions", 200)
        await check(harness, document, "GET", "/v1/jobs/web/versions/1", 200)
        await check(harness, document, "GET", "/v1/jobs/web/nodes", 200)
        await check(harness, document, "GET", "/v1/jobs/web/rollout", 200)
        await check(
            harness, document, "POST", "/v1/jobs/web/plan", 200, json=web_spec(waves=2, canary=1)
        )
        await check(harness, document, "POST", "/v1/jobs/web/rollout/pause", 200)
        await check(harness, document, "POST", "/v1/jobs/web/rollout/resume", 200)
        await check(
            harness,
            document,
            "GET",
            "/v1/events?after=0",
            200,
            headers={"Accept": "application/json"},
        )
        await check(harness, document, "GET", "/v1/nodes", 200)
        await check(harness, document, "GET", f"/v1/nodes/{node_id}", 200)
        await check(harness, document, "GET", "/v1/nodes/node-2", 200)
        await check(harness, document, "POST", "/v1/nodes/node-2/drain", 200, json={})
        await check(
            harness,
            document,
            "POST",
            "/v1/nodes/node-2/eligibility",
            200,
            json={"eligibility": "ineligible"},
        )
        await check(harness, document, "POST", "/v1/jobs/web/stop", 200)
        await check(harness, document, "DELETE", "/v1/jobs/web", 200)

    async def test_agent_and_system_responses_match_their_schemas(self, harness: Harness) -> None:
        """Register, assignments, report, /healthz and /readyz answer as documented."""
        document = await fetch_document(harness)
        body = await check(
            harness,
            document,
            "POST",
            "/v1/agent/register",
            201,
            token=None,
            json={"join_token": JOIN, "name": "node-9", "labels": {"zone": "a"}},
        )
        node_token = body["node_token"]
        await harness.put_job(web_spec())
        await harness.driver.evaluate("web")
        await check(harness, document, "GET", "/v1/agent/assignments", 200, token=node_token)
        await check(
            harness,
            document,
            "POST",
            "/v1/agent/report",
            200,
            token=node_token,
            json={"seq": 1, "executions": [{"job": "web", "version": 1, "state": "starting"}]},
        )
        await check(harness, document, "GET", "/healthz", 200, token=None)
        await check(harness, document, "GET", "/readyz", 200, token=None)

    async def test_error_bodies_match_their_schemas(self, harness: Harness) -> None:
        """400, 401, 403, 404, 409, 412 and 413 answers are the documented ErrorBody."""
        document = await fetch_document(harness)
        _, node_token = await harness.register("node-1")
        await harness.report(node_token, 1, [])  # a live node: its name is taken (409 below)
        bad_spec = web_spec() | {"rollout": {"canary": "lots"}}
        await check(harness, document, "PUT", "/v1/jobs/web", 400, json=bad_spec)
        await check(harness, document, "GET", "/v1/jobs/web/status?index=x", 400)
        await check(harness, document, "GET", "/v1/jobs", 401, token=None)
        await check(harness, document, "GET", "/v1/jobs", 403, token=node_token)
        await check(harness, document, "GET", "/v1/jobs/nope/status", 404)
        await check(harness, document, "GET", "/v1/nodes/nope", 404)
        await check(harness, document, "PUT", "/v1/jobs/web", 201, json=web_spec())
        await check(harness, document, "POST", "/v1/jobs/web/rollout/promote", 409, json={})
        await check(
            harness,
            document,
            "PUT",
            "/v1/jobs/web",
            412,
            json=web_spec(waves=2),
            headers={"If-Match": '"99"'},
        )
        await check(
            harness,
            document,
            "POST",
            "/v1/jobs/web/plan",
            413,
            data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"),
            headers={"Content-Type": "application/json"},
        )
        await check(
            harness,
            document,
            "POST",
            "/v1/agent/register",
            409,
            token=None,
            json={"join_token": JOIN, "name": "node-1"},
        )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


class TestDocsPage:
    async def test_page_and_assets_are_local_and_served(self, harness: Harness) -> None:
        """/docs loads only same-origin assets, each served open, none naming an http(s) URL."""
        resp = await harness.client.get("/docs")
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
        assert not URL.search(page)
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        parser = _Links()
        parser.feed(page)
        assets = [link for link in parser.links if link.startswith("/docs/assets/")]
        assert len(assets) >= 2
        for link in parser.links:
            assert link.startswith(("/", "#", "data:")), link
        shipped = {f.name for f in ASSETS.iterdir() if f.name != "index.html"}
        assert {a.rsplit("/", 1)[1] for a in assets} == shipped
        for asset in assets:
            got = await harness.client.get(asset)
            assert got.status == 200, asset
            assert got.content_type in ("text/css", "text/javascript")
            text = await got.text()
            assert not URL.search(text), asset
            assert "//cdn" not in text

    async def test_script_reads_the_document_from_the_coordinator(self, harness: Harness) -> None:
        """The renderer fetches /openapi.json from the same origin."""
        resp = await harness.client.get("/docs/assets/docs.js")
        assert '"/openapi.json"' in await resp.text()

    @pytest.mark.parametrize("name", ["nope.js", "index.html", "..", "docs.py", ".hidden.css"])
    async def test_unknown_assets_are_404(self, harness: Harness, name: str) -> None:
        """Only the shipped CSS and JS files are served under /docs/assets/."""
        resp = await harness.client.get(f"/docs/assets/{name}")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


class _Ping(BaseModel):
    pong: bool


class TestBuildOpenapi:
    """The pure generator on a hand-made route table and registry."""

    def test_undescribed_route_gets_a_stub_and_unrouted_description_is_left_out(self) -> None:
        """A route without a description is still listed; a description without one is not."""
        routes = [LiveRoute("GET", "/a", "handle_a"), LiveRoute("GET", "/b", "handle_b")]
        docs = {
            ("GET", "/a"): RouteDoc("A", "t", {200: json_reply("ok", _Ping)}),
            ("GET", "/c"): RouteDoc("C", "t", {200: Reply("ok")}),
        }
        document = build_openapi(routes, docs, {"t": "T"}, "1")
        assert set(document["paths"]) == {"/a", "/b"}
        assert document["paths"]["/b"]["get"]["tags"] == ["undocumented"]
        assert undocumented(routes, docs) == [("GET", "/b")]
        assert unrouted(routes, docs) == [("GET", "/c")]
        validate_openapi(document)

    def test_implied_error_responses(self) -> None:
        """A body implies 400/408/413, a path parameter 404, a token 401/403/503 (a refusal is
        audited before the answer)."""
        routes = [LiveRoute("POST", "/v1/x/{id}", "handle_x")]
        docs = {
            ("POST", "/v1/x/{id}"): RouteDoc(
                "X",
                "t",
                {200: json_reply("ok", _Ping)},
                params=(Param("id", "path", "the id"),),
                body=JobSpec,
                errors=(409,),
            )
        }
        operation = build_openapi(routes, docs, {"t": "T"}, "1")["paths"]["/v1/x/{id}"]["post"]
        assert set(operation["responses"]) == {
            "200",
            "400",
            "401",
            "403",
            "404",
            "408",
            "409",
            "413",
            "503",
        }
        assert operation["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/JobSpec"
        }

    def test_non_json_media_and_duplicate_handler_names(self) -> None:
        """Literal schemas describe non-JSON bodies; clashing handler names fall back to paths."""
        routes = [LiveRoute("GET", "/m", "handle_x"), LiveRoute("GET", "/n", "handle_x")]
        text = Reply("text", (Media("text/plain", schema={"type": "string"}),))
        docs = {
            ("GET", "/m"): RouteDoc("M", "t", {200: text}),
            ("GET", "/n"): RouteDoc("N", "t", {200: text}),
        }
        document = build_openapi(routes, docs, TAGS, "1")
        ids = {document["paths"][p]["get"]["operationId"] for p in ("/m", "/n")}
        assert ids == {"x", "get_n"}
        assert document["paths"]["/m"]["get"]["responses"]["200"]["content"] == {
            "text/plain": {"schema": {"type": "string"}}
        }

    async def test_document_helper_matches_the_endpoint(self, harness: Harness) -> None:
        """openapi_document(app) is what GET /openapi.json serves."""
        assert openapi_document(harness.client.app) == await fetch_document(harness)
