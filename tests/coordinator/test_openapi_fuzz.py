"""Schemathesis with every check against a real coordinator process: the OpenAPI document says
exactly what the coordinator accepts and answers, for operators, agents and open endpoints.

The run is schemathesis' own engine (``st run``'s phases: coverage, fuzzing, stateful) with a
fixed seed, one worker (CPython 3.11's ``ast.parse`` is not thread-safe, and schemathesis calls
it while it builds strategies) and every check it has. What JSON Schema cannot state is listed
below, each with the reason, and excused exactly there and nowhere else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from coordinator.demo.fleet import ADMIN_TOKEN, JOIN_TOKEN, LocalFleet
from shared.durations import DURATION_PATTERN, MAX_DURATION_CHARS
from shared.spec import NAME_PATTERN
from tests.coordinator.conftest import Harness, web_spec

SEED = 20261204
EXAMPLES = 25
"""Per operation and phase; ~45 operations run in about 30-60 s on two cores."""

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
)

BLOCKING = frozenset({"/v1/jobs/{name}/status", "/v1/agent/assignments"})
"""Blocking queries: a ``wait`` the document allows is sent as ``0s`` (else each valid one holds
the request for up to 5 minutes). One the document forbids is sent as generated."""

SPEC_IN_BODY = frozenset({"/v1/jobs/{name}", "/v1/jobs/{name}/plan"})
"""The body's ``name`` must equal the path's: JSON Schema cannot relate a body to a path, so
where both are valid names the body takes the path's."""

UNSTATABLE = frozenset(
    {
        # Durations compared with each other.
        ("rollout", "healthy_deadline must be longer than min_healthy_time"),
        ("rollout", "progress_deadline must not be shorter than healthy_deadline"),
        # Items compared with each other, and the last item's value.
        ("rollout.waves", "percentages must be cumulative and strictly increasing"),
        ("rollout.waves", "the last wave must be '100%'"),
        # The sum of a duration's parts (``1s`` to ``87600h``): no pattern can add.
        ("ttl", "must be between 1s and 87600h (ten years)"),
        # Unique by one property of each item (uniqueItems compares whole items).
        ("conditions", "each condition type may appear only once"),
    }
)
"""Rules JSON Schema cannot state; each is in the document's descriptions instead. A valid
request refused with a 400 naming only these (field, message) pairs is no finding."""

POSITIVE_STATUSES = ["2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]
"""What positive_data_acceptance allows by default (a 5xx fails not_a_server_error)."""


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[LocalFleet]:
    fleet = LocalFleet(tmp_path, policy={})  # no agents
    try:
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def seed(fleet: LocalFleet) -> str:
    """A live node and a job, so generated names hit existing objects; the node's token."""
    registered = fleet.api.request(
        "POST", "/v1/agent/register", {"join_token": JOIN_TOKEN, "name": "fuzz-node"}, headers={}
    ).body
    token: str = registered["node_token"]
    fleet.api.request(
        "POST", "/v1/agent/report", {"seq": 1}, headers={"Authorization": f"Bearer {token}"}
    )
    fleet.api.request("PUT", "/v1/jobs/web", {"name": "web", "task": {"command": ["sleep", "60"]}})
    return token


def config(node_token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "request-timeout": 20,
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True},
            },
            "auth": {
                "openapi": {
                    "operatorToken": {"bearer": ADMIN_TOKEN},
                    "nodeToken": {"bearer": node_token},
                }
            },
            # Registration takes the join token in its body: mostly the real one.
            "dictionaries": {"join": {"values": [JOIN_TOKEN]}, "jobs": {"values": ["web"]}},
            "parameters": {
                "body.join_token": {"dictionary": "join", "probability": 0.9},
                "path.name": {"dictionary": "jobs", "probability": 0.5},
            },
            "operations": [
                # A stream never ends: /v1/events is fuzzed as its JSON page.
                {"include-path": "/v1/events", "headers": {"Accept": "application/json"}},
                # If-Match names a revision: a valid one that is stale is the documented 412.
                {
                    "include-path": "/v1/jobs/{name}",
                    "include-method": "PUT",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, 412]}
                    },
                },
            ],
        }
    )


def _is_name(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(NAME_PATTERN, value) is not None


def _is_documented_wait(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_DURATION_CHARS
        and re.fullmatch(DURATION_PATTERN, value) is not None
    )


def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """What the document cannot say, done to the generated request (see the constants)."""
    path = case.operation.path
    if path in BLOCKING and isinstance(case.query, dict):
        wait = case.query.get("wait")
        if wait is None or _is_documented_wait(wait):
            case.query["wait"] = "0s"
    if path in SPEC_IN_BODY and isinstance(case.body, dict):
        name = (case.path_parameters or {}).get("name")
        if _is_name(name) and _is_name(case.body.get("name")):
            case.body["name"] = name
    return case


def filter_failure(
    context: schemathesis.HookContext,
    failure: Any,
    case: schemathesis.Case,
    response: schemathesis.Response,
) -> bool:
    """Keep every failure but a valid request refused for UNSTATABLE rules alone."""
    if "positive_data_acceptance" not in type(failure).checks or response.status_code != 400:
        return True
    errors = response.json()["error"]["details"].get("errors", [])
    return not errors or not all((e["field"], e["message"]) in UNSTATABLE for e in errors)


def run(url: str, node_token: str) -> tuple[list[str], list[str], set[str]]:
    """Failures (one per operation and kind), errors, and the operations that got a 2xx."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config(node_token))
    schema.hook(map_case)
    schema.hook(filter_failure)
    failures: dict[tuple[str, str], str] = {}
    errors: list[str] = []
    answered: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                interaction = recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                if response is not None and response.status_code < 300:
                    answered.add(recorder.cases[case_id].value.operation.label)
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    failures.setdefault(
                        (recorder.label, failure.title),
                        f"{recorder.label}: {check.name}: {failure.title}\n{failure.message}\n"
                        f"{check.failure_info.code_sample}",
                    )
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError | events.Interrupted):
            errors.append(repr(event))
    return sorted(failures.values()), errors, answered


@pytest.mark.slow
def test_schemathesis_with_every_check_finds_nothing(coordinator: LocalFleet) -> None:
    """Every operation, operator ones with the admin token and agent ones with a node token,
    passes every schemathesis check: valid requests are accepted, invalid ones refused with a
    4xx, and every answer's status, headers, content type and body are the documented ones."""
    node_token = seed(coordinator)
    started = time.monotonic()
    failures, errors, answered = run(coordinator.url, node_token)
    elapsed = time.monotonic() - started
    assert not errors, "\n\n".join(errors[:10])
    assert not failures, f"{len(failures)} kinds of failure:\n\n" + "\n\n".join(failures[:15])
    # The run reached the handlers, not only the authentication in front of them.
    for operation in (
        "PUT /v1/jobs/{name}",
        "POST /v1/jobs/{name}/plan",
        "POST /v1/tokens",
        "POST /v1/agent/register",
        "POST /v1/agent/report",
        "GET /v1/agent/assignments",
        "GET /v1/events",
        "GET /v1/audit",
    ):
        assert operation in answered, f"{operation} never answered 2xx"
    assert elapsed < 240, f"the run took {elapsed:.0f} s"


async def test_overlong_duration_is_a_400_naming_the_field(harness: Harness) -> None:
    """A duration past timedelta's range (found by schemathesis) is a 400, not a 500."""
    spec = web_spec() | {"task": {"command": ["true"], "kill_timeout": "99999999999999999999h"}}
    resp = await harness.put_job(spec)
    assert resp.status == 400, await resp.text()
    errors = (await resp.json())["error"]["details"]["errors"]
    assert errors[0]["field"] == "task.kill_timeout"
    assert "too long" in errors[0]["message"]
