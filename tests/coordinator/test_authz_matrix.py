"""The authorization matrix: every route the app serves, called by every kind of caller, against
the real app on a real SQLite file (fake clock only).

``EXPECTED`` is written out here, independently of ``coordinator/access.py``: a new route
that is not in it fails this test (and a route without an access rule stops the app), so no
endpoint ships without someone deciding who may call it. The same table is published in
docs/security.md (``test_the_table_is_published`` keeps the two equal; regenerate it with
``python -m tests.coordinator.test_authz_matrix``).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from coordinator.demo.fleet import ADMIN_TOKEN as FLEET_ADMIN_TOKEN
from coordinator.demo.fleet import JOIN_TOKEN as FLEET_JOIN_TOKEN
from coordinator.demo.fleet import LocalFleet
from tests.coordinator.conftest import ADMIN, JOIN, Harness, node_key_of, web_spec
from tests.coordinator.test_api_tokens import bearer

# Who may call each route: the least role (viewer < deployer < operator < admin), or
# "open" (no token), "join" (the join token in the body), "node" (a node token, about
# itself), "any" (any operator token). "deployer*" means deployers only in their job scope.
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "open",
    ("GET", "/readyz"): "open",
    ("GET", "/metrics"): "open",
    ("GET", "/openapi.json"): "open",
    ("GET", "/docs"): "open",
    ("GET", "/docs/assets/{name}"): "open",
    ("GET", "/ui"): "open",
    ("GET", "/ui/"): "open",
    ("GET", "/ui/{path}"): "open",
    ("POST", "/v1/agent/register"): "join",
    ("GET", "/v1/agent/assignments"): "node",
    ("POST", "/v1/agent/report"): "node",
    ("POST", "/v1/agent/token"): "node",
    ("GET", "/v1/jobs"): "viewer",
    ("GET", "/v1/jobs/{name}"): "viewer",
    ("GET", "/v1/jobs/{name}/status"): "viewer",
    ("GET", "/v1/jobs/{name}/versions"): "viewer",
    ("GET", "/v1/jobs/{name}/versions/{version}"): "viewer",
    ("GET", "/v1/jobs/{name}/nodes"): "viewer",
    ("GET", "/v1/jobs/{name}/rollout"): "viewer",
    ("GET", "/v1/nodes"): "viewer",
    ("GET", "/v1/nodes/{node}"): "viewer",
    ("GET", "/v1/events"): "viewer",
    ("PUT", "/v1/jobs/{name}"): "deployer*",
    ("DELETE", "/v1/jobs/{name}"): "deployer*",
    ("POST", "/v1/jobs/{name}/plan"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollout/pause"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollout/resume"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollout/promote"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollout/abort"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollout/retry"): "deployer*",
    ("POST", "/v1/jobs/{name}/rollback"): "deployer*",
    ("POST", "/v1/jobs/{name}/restart"): "deployer*",
    ("POST", "/v1/jobs/{name}/stop"): "deployer*",
    ("POST", "/v1/nodes/{node}/drain"): "operator",
    ("POST", "/v1/nodes/{node}/eligibility"): "operator",
    ("POST", "/v1/nodes/{node}/approve"): "operator",
    ("POST", "/v1/nodes/{node}/revoke"): "operator",
    ("DELETE", "/v1/nodes/{node}"): "operator",
    ("GET", "/v1/tokens/self"): "any",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{id}"): "admin",
    ("GET", "/v1/cluster"): "any",
    ("GET", "/v1/audit"): "admin",
}

ROLES = ["viewer", "deployer", "operator", "admin"]
CALLERS = [
    "none",
    "garbage",
    "expired",
    "revoked",
    "viewer",
    "deployer (in scope)",
    "deployer (out of scope)",
    "operator",
    "admin",
    "bootstrap admin",
    "join token",
    "node A",
    "node B",
]
ALLOWED, UNAUTHORIZED, FORBIDDEN = "allowed", "401", "403"


def expected(rule: str, caller: str) -> str:
    """What ``caller`` gets on a route whose rule is ``rule``."""
    if rule in ("open", "join"):
        return ALLOWED  # no bearer token is looked at
    if caller in ("none", "garbage", "expired", "revoked"):
        return UNAUTHORIZED
    if rule == "node":
        return ALLOWED if caller.startswith("node") else FORBIDDEN
    if caller.startswith("node") or caller == "join token":
        return FORBIDDEN
    role = "admin" if caller == "bootstrap admin" else caller.split(" ")[0]
    if rule == "any":
        return ALLOWED
    least = rule.rstrip("*")
    if ROLES.index(role) < ROLES.index(least):
        return FORBIDDEN
    if rule.endswith("*") and caller == "deployer (out of scope)":
        return FORBIDDEN
    return ALLOWED


def concrete(path: str) -> str:
    """A path to call for a route template: objects that exist where that matters little,
    throwaway names where a call would change something others rely on."""
    values = {
        "name": "web-matrix",
        "version": "1",
        "node": "nobody-here",
        "id": "no-such-token",
        "path": "index.html",
    }
    if path == "/docs/assets/{name}":
        return "/docs/assets/redoc.standalone.js"
    out = path
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    if "{" in out:
        raise AssertionError(f"no value for a parameter of {path}")
    return out


def body_for(method: str, path: str, seq: itertools.count[int]) -> Any:
    if path == "/v1/agent/register":
        return {"join_token": JOIN_SECRET[0], "name": f"m-{next(seq)}", "node_key": "k" * 40}
    if path == "/v1/agent/report":
        return {"seq": next(seq)}
    if (path == "/v1/jobs/{name}" and method == "PUT") or path.endswith("/plan"):
        return web_spec("web-matrix")
    if path == "/v1/tokens":
        return {"name": f"t-{next(seq)}", "role": "viewer"}
    if path.endswith("/eligibility"):
        return {"eligibility": "eligible"}
    return None


class Api(Protocol):
    async def __call__(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]: ...


async def callers(
    api: Api, admin: str, expire: Callable[[dict[str, str]], Awaitable[None]]
) -> dict[str, Any]:
    """The Authorization header of each caller, made through the API with ``admin``;
    ``expire`` lets the short-lived token expire."""
    boss = bearer(admin)

    async def token(**body: Any) -> dict[str, Any]:
        status, created = await api("POST", "/v1/tokens", json=body, headers=boss)
        assert status == 201, created
        return dict(created)

    headers: dict[str, dict[str, str]] = {
        "none": {},
        "garbage": {"Authorization": "Bearer fwo_not-a-real-token"},
        "bootstrap admin": boss,
    }
    for role in ROLES:
        extra = {"jobs": ["web-*"]} if role == "deployer" else {}
        secret = (await token(name=f"m-{role}", role=role, **extra))["secret"]
        headers["deployer (in scope)" if role == "deployer" else role] = bearer(secret)
    outside = await token(name="m-out", role="deployer", jobs=["api-*"])
    headers["deployer (out of scope)"] = bearer(outside["secret"])
    expired = await token(name="m-expired", role="admin", ttl="1s")
    revoked = await token(name="m-revoked", role="admin")
    await api("DELETE", f"/v1/tokens/{revoked['id']}", headers=boss)
    headers["expired"], headers["revoked"] = bearer(expired["secret"]), bearer(revoked["secret"])
    join = await token(name="m-join", kind="join")
    headers["join token"] = bearer(join["secret"])
    for name in ("A", "B"):
        body = {"join_token": JOIN_SECRET[0], "name": f"node-{name.lower()}"}
        status, registered = await api(
            "POST", "/v1/agent/register", json=body | {"node_key": node_key_of(name)}
        )
        assert status == 201, registered
        headers[f"node {name}"] = bearer(registered["node_token"])
    status, _ = await api("PUT", "/v1/jobs/web-matrix", json=web_spec("web-matrix"), headers=boss)
    assert status == 201
    await expire(headers["expired"])
    status, _ = await api("GET", "/v1/jobs", headers=headers["expired"])
    assert status == 401
    return headers


async def mismatches(api: Api, headers: dict[str, dict[str, str]]) -> list[str]:
    """Every (route, caller) whose answer is not what EXPECTED says."""
    seq = itertools.count(1)
    found = []
    for (method, path), rule in sorted(EXPECTED.items()):
        url = concrete(path)
        for caller in CALLERS:
            want = expected(rule, caller)
            extra = {"Accept": "application/json"} if path == "/v1/events" else {}
            status, body = await api(
                method,
                url,
                json=body_for(method, path, seq),
                headers=headers[caller] | extra,
                params={"wait": "0s"} if path == "/v1/agent/assignments" else None,
            )
            got = str(status) if status in (401, 403) else ALLOWED
            if got != want:
                found.append(f"{caller:>24} {method} {url}: want {want}, got {status}")
            if status == 403 and not body["error"]["message"]:
                found.append(f"{caller:>24} {method} {url}: a 403 without a message")
    return found


def api_over(request: Callable[..., Any], base: str = "") -> Api:
    """The matrix's view of a client: ``request`` is an aiohttp session's (or test
    client's) ``request``, ``base`` the coordinator's URL."""

    async def api(
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with request(method, base + path, json=json, headers=headers, params=params) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, body

    return api


JOIN_SECRET = [JOIN]
"""The default join token of the coordinator under test."""


def served_routes(harness: Harness) -> set[tuple[str, str]]:
    app = harness.client.app
    assert app is not None
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


async def test_every_route_is_in_the_matrix(harness: Harness) -> None:
    served = served_routes(harness)
    assert served - EXPECTED.keys() == set(), "routes nobody decided on: add them to EXPECTED"
    assert EXPECTED.keys() - served == set(), "EXPECTED names routes the app does not serve"


async def test_every_caller_on_every_route(harness: Harness) -> None:
    """In-process: the real app on a real SQLite file, a fake clock."""

    api = api_over(harness.client.request)

    async def expire(_: dict[str, str]) -> None:
        harness.clock.advance(timedelta(seconds=2))

    headers = await callers(api, ADMIN, expire)
    found = await mismatches(api, headers)
    assert not found, "\n".join(found)


@pytest.mark.slow
@pytest.mark.integration
async def test_every_caller_on_every_route_of_a_real_coordinator(tmp_path: Path) -> None:
    """The same matrix against a real coordinator process over real sockets."""
    fleet = LocalFleet(tmp_path, policy={})
    try:
        fleet.start_coordinator()
        async with aiohttp.ClientSession() as session:
            api = api_over(session.request, fleet.url)

            async def expire(expiring: dict[str, str]) -> None:
                """The real coordinator's clock cannot be advanced: wait for the expiry."""
                deadline = time.monotonic() + 30
                while (await api("GET", "/v1/jobs", headers=expiring))[0] != 401:
                    assert time.monotonic() < deadline, "the 1 s token never expired"
                    await asyncio.sleep(0.1)

            JOIN_SECRET[0] = FLEET_JOIN_TOKEN
            try:
                headers = await callers(api, FLEET_ADMIN_TOKEN, expire)
                found = await mismatches(api, headers)
            finally:
                JOIN_SECRET[0] = JOIN
        assert not found, "\n".join(found)
    finally:
        fleet.close()


def render_table() -> str:
    """EXPECTED as the markdown table docs/security.md publishes."""
    columns = ["viewer", "deployer", "operator", "admin", "node token", "join token", "none"]
    mark = {ALLOWED: "yes", UNAUTHORIZED: "401", FORBIDDEN: "403"}
    lines = [
        "| route | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    as_caller = {
        "viewer": "viewer",
        "deployer": "deployer (in scope)",
        "operator": "operator",
        "admin": "admin",
        "node token": "node A",
        "join token": "join token",
        "none": "none",
    }
    for (method, path), rule in sorted(EXPECTED.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = [mark[expected(rule, as_caller[c])] for c in columns]
        if rule.endswith("*"):
            cells[1] = "in its `jobs`"
        lines.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SECURITY_DOC = Path(__file__).parents[2] / "docs" / "security.md"
MARKERS = ("<!-- authz-matrix:start -->", "<!-- authz-matrix:end -->")


def test_the_table_is_published() -> None:
    text = SECURITY_DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(MARKERS[0]) + r"\n(.*?)\n" + re.escape(MARKERS[1]), text, re.S)
    assert match is not None, f"docs/security.md lacks the {MARKERS} section"
    assert match.group(1) == render_table(), (
        "docs/security.md's matrix is stale: python -m tests.coordinator.test_authz_matrix"
    )


def _publish() -> None:
    text = SECURITY_DOC.read_text(encoding="utf-8")
    start, end = text.index(MARKERS[0]), text.index(MARKERS[1])
    SECURITY_DOC.write_text(
        text[: start + len(MARKERS[0])] + "\n" + render_table() + "\n" + text[end:],
        encoding="utf-8",
    )


if __name__ == "__main__":  # regenerate docs/security.md's table
    _publish()
    sys.exit(0)
