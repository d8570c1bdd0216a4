"""``fleetwave audit`` against the real app on a real SQLite file (the real CLI in a thread)."""

from __future__ import annotations

import json

from click.testing import Result

from coordinator.api.deps import DEPS
from coordinator.domain.records import AuditEntry
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


def audit_reads(harness: Harness) -> int:
    """How many GET /v1/audit requests the app has answered with 200."""
    app = harness.client.app
    assert app is not None
    count = app[DEPS].metrics.registry.get_sample_value(
        "fleetwave_http_request_duration_seconds_count",
        {"method": "GET", "route": "/v1/audit", "status": "200"},
    )
    return int(count or 0)


async def seed(harness: Harness, count: int) -> list[int]:
    """``count`` entries, every 100th a 403 of token dash, the others 200s of ci-web."""
    entries = [
        AuditEntry(
            time=harness.clock.now(),
            token_name="dash" if i % 100 == 0 else "ci-web",
            method="POST",
            path=f"/v1/jobs/web{i}/stop",
            status=403 if i % 100 == 0 else 200,
        )
        for i in range(count)
    ]
    return await harness.store.write_audit(entries, [])


def shown_ids(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [e["id"] for e in json.loads(result.stdout)["entries"]]


async def test_newest_entries_come_in_one_request_oldest_first(harness: Harness) -> None:
    """Without --after the newest --limit entries are read with one newest-first request
    (however long the log) and printed oldest first, as the table shows them too."""
    ids = await seed(harness, 1500)
    reads = audit_reads(harness)
    result = await run(harness, "audit", "--limit", "3", "--json")
    assert shown_ids(result) == ids[-3:]
    assert json.loads(result.stdout)["last_id"] == ids[-1]
    assert audit_reads(harness) == reads + 1

    table = await run(harness, "audit", "--limit", "2")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == [str(i) for i in ids[-2:]]
    assert audit_reads(harness) == reads + 2

    every = await run(harness, "audit", "--limit", "1200", "--json")
    assert shown_ids(every) == ids[-1200:]
    assert audit_reads(harness) == reads + 4  # 1000, then 200 before the first


async def test_refused_reads_back_only_as_far_as_needed(harness: Harness) -> None:
    """--refused shows the newest --limit refusals, reading back page by page until it has
    them (the coordinator does not filter refusals), and all of them when there are fewer."""
    ids = await seed(harness, 2500)
    refused = [i for n, i in enumerate(ids) if n % 100 == 0]
    reads = audit_reads(harness)
    result = await run(harness, "audit", "--refused", "--limit", "12", "--json")
    assert shown_ids(result) == refused[-12:]
    assert audit_reads(harness) == reads + 2  # the newest 1000 hold 10 of them
    everything = await run(harness, "audit", "--refused", "--limit", "100", "--json")
    assert shown_ids(everything) == refused
    assert audit_reads(harness) == reads + 5


async def test_after_pages_forwards_from_an_entry(harness: Harness) -> None:
    """--after ID shows the first --limit entries after it, oldest first, and last_id is the
    newest shown (to pass as the next --after); past the end it is the --after given."""
    ids = await seed(harness, 1500)
    result = await run(harness, "audit", "--after", str(ids[10]), "--limit", "1100", "--json")
    assert shown_ids(result) == ids[11:1111]
    assert json.loads(result.stdout)["last_id"] == ids[1110]
    refused = await run(harness, "audit", "--after", str(ids[150]), "--refused", "--json")
    assert shown_ids(refused) == [i for n, i in enumerate(ids) if n > 150 and n % 100 == 0]
    past = await run(harness, "audit", "--after", str(ids[-1]), "--json")
    assert json.loads(past.stdout) == {"entries": [], "last_id": ids[-1]}
