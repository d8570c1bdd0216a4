"""Schemathesis against a real coordinator process: generated operator requests never get a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from coordinator.demo.fleet import ADMIN_TOKEN, JOIN_TOKEN, LocalFleet
from tests.coordinator.conftest import Harness, web_spec

# Per operation; ~30 operator operations keep the whole run well under a minute.
EXAMPLES = 15

# A stream never ends, so /v1/events is fuzzed as its JSON page (Accept: application/json).
STREAMS = {"/v1/events"}


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalFleet]:
    fleet = LocalFleet(tmp_path, policy={})  # no agents
    try:
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def seed(fleet: LocalFleet) -> None:
    """A node and a job, so some generated names hit existing objects."""
    fleet.api.request(
        "POST", "/v1/agent/register", {"join_token": JOIN_TOKEN, "name": "node-1"}, headers={}
    )
    fleet.api.request("PUT", "/v1/jobs/web", {"name": "web", "task": {"command": ["sleep", "60"]}})


@pytest.mark.slow
def test_generated_operator_requests_get_no_server_error(coordinator: LocalFleet) -> None:
    """Every operator operation answers schemathesis' generated requests with a status below 500."""
    seed(coordinator)
    schema = schemathesis.openapi.from_url(f"{coordinator.url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith("/v1/") and not result.ok().path.startswith("/v1/agent/")
    ]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = "0s"  # blocking queries would otherwise hold for minutes
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            if case.path in STREAMS:
                headers["Accept"] = "application/json"
            response = case.call(base_url=coordinator.url, headers=headers, timeout=10)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}"
                    f" -> {response.status_code} {response.text[:300]}"
                )

        call()
    assert not failures, "\n".join(failures[:20])


async def test_overlong_duration_is_a_400_naming_the_field(harness: Harness) -> None:
    """A duration past timedelta's range (found by the run above) is a 400, not a 500."""
    spec = web_spec() | {"task": {"command": ["true"], "kill_timeout": "99999999999999999999h"}}
    resp = await harness.put_job(spec)
    assert resp.status == 400, await resp.text()
    errors = (await resp.json())["error"]["details"]["errors"]
    assert errors[0]["field"] == "task.kill_timeout"
    assert "too long" in errors[0]["message"]
