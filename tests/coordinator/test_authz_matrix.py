"""The authorization matrix: every route the app serves, called by every kind of caller, against
the real app on a real SQLite file (fake clock only).

``EXPECTED`` is written out here, independently of ``coordinator/access.py``: a new route
that is not in it fails this test (and a route without an access rule stops the app), so no
endpoint ships without someone deciding who may call it. The same table is published in
docs/security.md (``test_the_table_is_published`` keeps the two equal; regenerate it with
``python -m tests.coordinator.test_authz_matrix``).
"""

from __future__ import annotations

import itertools
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.coordinator.conftest import ADMIN, JOIN, Harness, node_key_of, web_spec
from tests.coordinator.test_api_tokens import bearer, create_token

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
        return {"join_token": JOIN, "name": f"m-{next(seq)}", "node_key": "k" * 40}
    if path == "/v1/agent/report":
        return {"seq": next(seq)}
    if (path == "/v1/jobs/{name}" and method == "PUT") or path.endswith("/plan"):
        return web_spec("web-matrix")
    if path == "/v1/tokens":
        return {"name": f"t-{next(seq)}", "role": "viewer"}
    if path.endswith("/eligibility"):
        return {"eligibility": "eligible"}
    return None


async def callers(harness: Harness) -> dict[str, dict[str, str]]:
    """The Authorization header of each caller."""
    headers: dict[str, dict[str, str]] = {
        "none": {},
        "garbage": {"Authorization": "Bearer fwo_not-a-real-token"},
        "bootstrap admin": {"Authorization": f"Bearer {ADMIN}"},
    }
    for role in ROLES:
        extra = {"jobs": ["web-*"]} if role == "deployer" else {}
        secret = (await create_token(harness, name=f"m-{role}", role=role, **extra))["secret"]
        headers["deployer (in scope)" if role == "deployer" else role] = bearer(secret)
    outside = await create_token(harness, name="m-out", role="deployer", jobs=["api-*"])
    headers["deployer (out of scope)"] = bearer(outside["secret"])
    expired = await create_token(harness, name="m-expired", role="admin", ttl="1m")
    revoked = await create_token(harness, name="m-revoked", role="admin")
    await harness.client.delete(f"/v1/tokens/{revoked['id']}", headers=harness.admin())
    headers["expired"], headers["revoked"] = bearer(expired["secret"]), bearer(revoked["secret"])
    join = await create_token(harness, name="m-join", kind="join")
    headers["join token"] = bearer(join["secret"])
    for name in ("A", "B"):
        _, token = await harness.register(f"node-{name.lower()}", key=node_key_of(name))
        headers[f"node {name}"] = bearer(token)
    harness.clock.advance(timedelta(minutes=2))  # past the expired token's ttl
    return headers


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
    headers = await callers(harness)
    assert (await harness.put_job(web_spec("web-matrix"))).status == 201
    seq = itertools.count(1)
    mismatches = []
    for (method, path), rule in sorted(EXPECTED.items()):
        url = concrete(path)
        for caller in CALLERS:
            want = expected(rule, caller)
            extra = {"Accept": "application/json"} if path == "/v1/events" else {}
            resp = await harness.client.request(
                method,
                url,
                json=body_for(method, path, seq),
                headers=headers[caller] | extra,
                params={"wait": "0s"} if path == "/v1/agent/assignments" else None,
            )
            got = str(resp.status) if resp.status in (401, 403) else ALLOWED
            if got != want:
                mismatches.append(f"{caller:>24} {method} {url}: want {want}, got {resp.status}")
            if resp.status == 403:
                # A 403 names the right that is missing.
                error = (await resp.json())["error"]
                assert error["message"], (method, url, caller)
            resp.release()
    assert not mismatches, "\n".join(mismatches)


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
