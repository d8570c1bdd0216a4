"""The audit log of a real coordinator process: changes and refusals made over real sockets are
there with the token's name, survive a restart of the coordinator, and hold no secret."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, JOIN_TOKEN, LocalFleet, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_changes_and_refusals_are_audited_durably(fleet: LocalFleet) -> None:
    fleet.start_coordinator()
    created = fleet.api.request(
        "POST", "/v1/tokens", {"name": "ci-web", "role": "deployer", "jobs": ["web"]}
    ).body
    ci = ApiClient(fleet.url, created["secret"])
    spec: dict[str, Any] = {
        "name": "web",
        "task": {"command": ["sleep", "60"], "env": {"DB_PASSWORD": "hunter2-secret"}},
    }
    submitted = ci.request("PUT", "/v1/jobs/web", spec)
    with pytest.raises(ApiError) as refused:
        ci.request("PUT", "/v1/jobs/api", spec | {"name": "api"})
    assert refused.value.status == 403

    def entries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = fleet.api.request("GET", "/v1/audit").body["entries"]
        return found

    def recorded() -> list[dict[str, Any]] | None:
        mine = [e for e in entries() if e["token_name"] == "ci-web"]
        return mine if len(mine) == 2 and all(e["status"] for e in mine) else None

    mine = wait_for("both requests in the audit log", recorded)
    assert [(e["method"], e["path"], e["status"]) for e in mine] == [
        ("PUT", "/v1/jobs/web", 201),
        ("PUT", "/v1/jobs/api", 403),
    ]
    assert mine[0]["request_id"] == submitted.headers["X-Request-Id"]

    assert fleet.coordinator is not None
    fleet.stop(fleet.coordinator)
    fleet.start_coordinator()
    after = entries()
    assert [e["id"] for e in after if e["token_name"] == "ci-web"] == [e["id"] for e in mine]
    text = repr(after)
    for secret in (created["secret"], ADMIN_TOKEN, JOIN_TOKEN, "hunter2-secret"):
        assert secret not in text
