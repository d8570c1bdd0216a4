"""``fleetwave audit`` against the real app on a real SQLite file (the real CLI in a thread)."""

from __future__ import annotations

import json

from tests.coordinator.conftest import Harness, web_spec
from tests.coordinator.test_api_audit import last
from tests.coordinator.test_api_tokens import bearer, create_token
from tests.coordinator.test_cli_tokens import run


async def test_audit_lists_filters_and_prints_json(harness: Harness) -> None:
    deployer = await create_token(harness, name="ci-web", role="deployer")
    viewer = await create_token(harness, name="dash", role="viewer")
    resp = await harness.client.put(
        "/v1/jobs/web", json=web_spec(), headers=bearer(deployer["secret"])
    )
    assert resp.status == 201
    resp = await harness.client.post("/v1/jobs/web/stop", headers=bearer(viewer["secret"]))
    assert resp.status == 403
    await last(harness)  # statuses written

    result = await run(harness, "audit")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "TOKEN", "ROLE", "REMOTE", "REQUEST", "STATUS"]
    assert any("ci-web" in line and "PUT /v1/jobs/web" in line and "201" in line for line in lines)
    assert any(
        "dash" in line and "POST /v1/jobs/web/stop" in line and "403" in line for line in lines
    )

    refused = await run(harness, "audit", "--refused", "--json")
    entries = json.loads(refused.stdout)["entries"]
    assert [(e["token_name"], e["status"]) for e in entries] == [("dash", 403)]

    mine = await run(harness, "audit", "--token", "ci-web", "--json")
    assert {e["path"] for e in json.loads(mine.stdout)["entries"]} == {"/v1/jobs/web"}


async def test_audit_needs_an_admin_token(harness: Harness) -> None:
    operator = await create_token(harness, name="oncall", role="operator")
    result = await run(harness, "audit", token=operator["secret"])
    assert result.exit_code == 2
    assert "audit:read" in result.stderr
