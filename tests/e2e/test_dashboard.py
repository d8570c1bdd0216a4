"""The dashboard in headless Chromium against a real coordinator and real agents.

Uses Debian's ``chromium`` through Playwright (no browser download; see ``browser.py``).
Screenshots go to ``$FLEETWAVE_TEST_ARTIFACTS`` (default ``<repo>/.artifacts/``) for a human
to look at.
"""

from __future__ import annotations

import fnmatch
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.access import ROLE_RIGHTS, Principal, Right, rule_for
from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, free_port
from shared.tokens import Role
from tests.e2e.browser import artifacts_dir, playwright_sync_api, sign_in
from tests.helpers import JOBS_AS_PYTEST_USER

pytestmark = [pytest.mark.slow, pytest.mark.integration]

expect = playwright_sync_api().expect


def job_spec(greeting: str, **rollout: Any) -> dict[str, Any]:
    """The demo HTTP service with a health check; a canary, then waves spread by zone."""
    return {
        "name": "web",
        "task": {
            "command": [
                sys.executable,
                "-m",
                "coordinator.demo.service",
                "--port",
                "${node.label.port}",
                "--version",
                "${job.version}",
            ],
            "env": {"GREETING": greeting},
            "kill_timeout": "3s",
        },
        "health": {
            "checks": [
                {
                    "type": "http",
                    "url": "http://127.0.0.1:${node.label.port}/",
                    "interval": "200ms",
                    "timeout": "1s",
                    "failure_threshold": 2,
                }
            ]
        },
        "rollout": {
            "canary": 1,
            "waves": 2,
            "spread_by": "zone",
            "min_healthy_time": "500ms",
            "healthy_deadline": "15s",
            "progress_deadline": "1m",
            **rollout,
        },
    }


def create_token(fleet: LocalFleet, name: str, role: str, **fields: Any) -> str:
    """A new operator token's secret."""
    body = {"name": name, "role": role, **fields}
    secret: str = fleet.api.request("POST", "/v1/tokens", body).body["secret"]
    return secret


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """A coordinator and five agents over three zones, running v1 of ``web``."""
    fleet = LocalFleet(
        tmp_path_factory.mktemp("dashboard"),
        heartbeat_interval="1s",
        heartbeat_ttl="10s",
        policy=JOBS_AS_PYTEST_USER,
    )
    try:
        fleet.start_coordinator()
        for i in range(1, 6):
            fleet.start_agent(f"node-{i}", {"port": str(free_port()), "zone": f"zone-{i % 3}"})
        fleet.wait_nodes_ready(5)
        fleet.api.request("PUT", "/v1/jobs/web", job_spec("v1"))
        fleet.wait_state("web", "running", timeout=60)
        yield fleet
    finally:
        fleet.close()


def test_sign_in_refuses_a_wrong_token_then_lists_jobs(fleet: LocalFleet, page: Any) -> None:
    """The sign-in form names a 401 for a wrong token and shows the job list for the right one,
    and who is signed in."""
    page.goto(f"{fleet.url}/ui")
    sign_in(page, "fwa_not-the-token")
    expect(page.get_by_role("alert")).to_contain_text("refused the token (401)")
    page.screenshot(path=str(artifacts_dir() / "dashboard-sign-in.png"))
    sign_in(page, ADMIN_TOKEN)
    expect(page.locator("#whoami .whoami-name")).to_have_text("bootstrap-admin")
    expect(page.locator("#whoami .whoami-role")).to_have_text("admin")
    row = page.locator('tr[data-job="web"]')
    expect(row).to_contain_text("Running")
    expect(row).to_contain_text("v1")
    page.screenshot(path=str(artifacts_dir() / "dashboard-jobs.png"), full_page=True)


def test_nodes_page_lists_every_node(fleet: LocalFleet, page: Any) -> None:
    """The node list shows every registered node with its status and labels."""
    page.goto(f"{fleet.url}/ui/#token={ADMIN_TOKEN}")
    page.get_by_role("link", name="Nodes").click()
    expect(page.locator("tr[data-node]")).to_have_count(5)
    expect(page.locator('tr[data-node="node-1"]')).to_contain_text("Ready")
    expect(page.locator('tr[data-node="node-1"]')).to_contain_text("zone=zone-1")
    page.screenshot(path=str(artifacts_dir() / "dashboard-nodes.png"), full_page=True)


SSE_PARSER_PROBE = """
async () => {
  const { SseParser } = await import("/ui/stream.js");
  const seen = [];
  const parser = new SseParser((msg) => seen.push(msg));
  const text = "retry: 2000\\n\\n: keepalive\\n\\nid: 7\\r\\nevent: node_status\\r\\n"
    + "data: {\\"a\\":\\n"
    + "data: 1}\\r\\n\\r\\nevent: status\\ndata:{\\"job\\":\\"web\\"}\\n\\n";
  for (let i = 0; i < text.length; i += 3) parser.push(text.slice(i, i + 3));
  return seen;
}
"""


def test_event_stream_parser_reassembles_split_messages(fleet: LocalFleet, page: Any) -> None:
    """The SSE parser joins chunks split anywhere, CRLF or LF, multi-line data, skips comments."""
    page.goto(f"{fleet.url}/ui/")
    assert page.evaluate(SSE_PARSER_PROBE) == [
        {"id": "7", "event": "node_status", "data": '{"a":\n1}'},
        {"id": None, "event": "status", "data": '{"job":"web"}'},
    ]


RENDER_PROBE = """
async () => {
  const views = await import("/ui/views.js");
  const { availableActions } = await import("/ui/actions.js");
  const { jobState } = await import("/ui/states.js");
  const zero = "0001-01-01T00:00:00Z";
  const node = (i, extra) => ({
    id: `id-${i}`, name: `n${i}`, node_status: "ready", assigned_version: 2,
    execution: "healthy", running_version: 2, message: "", restarts: 0,
    result: "updated", reason: "", ...extra,
  });
  const many = (from, count, extra) => [...Array(count)].map((_, i) => node(from + i, extra));
  const view = {
    type: "update", phase: "canary", target_version: 2, stable_version: 1, from_version: 1,
    gate: "canary", halted_reason: "", cause: "", rolled_back_from: 0, current_wave: 0,
    total_waves: 2, next_wave_at: null, started_at: "2026-01-01T00:00:00Z",
    completed_at: zero, can_retry: false,
    canary: { promoted: false, state: "active", nodes: many(0, 2) },
    waves: [
      { wave: 1, state: "pending", nodes: many(2, 30, { running_version: 1, result: "waiting" }) },
      { wave: 2, state: "pending", nodes: many(32, 30, { running_version: 1, result: "waiting" }) },
    ],
  };
  const rollout = {
    type: "update", canary_nodes: [], canary_promoted: false, current_wave: 0, total_waves: 2,
    total_nodes: 62, updated_nodes: 2, failed_nodes: 0, rollback_to_version: 1,
    started_at: "2026-01-01T00:00:00Z", completed_at: zero,
  };
  const status = {
    version: 2, revision: 9, created_at: zero, updated_at: zero, rollout,
    state: { state_type: "rollout_paused", message: "waiting for `rollout promote`", details: {} },
  };
  const summary = { name: "web", type: "service", stable_version: 1, status };
  const page = views.renderJob({ summary, view, events: [] }, document.createElement("div"));
  const rollingBack = {
    ...status,
    state: { ...status.state, state_type: "deploying" },
    rollout: { ...rollout, type: "rollback" },
  };
  return {
    compactGrids: page.querySelectorAll(".tiles.compact").length,
    onTarget: page.querySelectorAll(".tile.on-target").length,
    canaryBadge: page.querySelector('[data-phase="canary"] .badge').textContent,
    canaryTone: page.querySelector('[data-phase="canary"]').classList.contains("tone-paused"),
    code: page.querySelector(".job-message code").textContent,
    enabled: availableActions(summary, view).filter((a) => a.enabled).map((a) => a.id),
    paused: jobState(status),
    rollingBack: jobState(rollingBack),
  };
}
"""


def test_render_functions_map_states_to_words_and_colours(fleet: LocalFleet, page: Any) -> None:
    """The job view (fed a synthetic rollout) names states in words and tones, compacts big grids,
    and enables only the actions that apply at a canary gate."""
    page.goto(f"{fleet.url}/ui/")
    assert page.evaluate(RENDER_PROBE) == {
        "compactGrids": 3,
        "onTarget": 2,
        "canaryBadge": "Waiting for promotion",
        "canaryTone": True,
        "code": "rollout promote",
        "enabled": ["promote", "abort", "rollback"],
        "paused": ["Paused", "paused"],
        "rollingBack": ["Rolling back", "warn"],
    }


NODES_PROBE = """
async () => {
  const views = await import("/ui/views.js");
  const zero = "0001-01-01T00:00:00Z";
  const node = (name, conditions) => ({
    id: `id-${name}`, name, status: "ready", eligibility: "eligible", drain: false, labels: {},
    resources: {}, load: {}, last_heartbeat: zero, registered_at: zero, agent_version: "",
    conditions,
  });
  const full = {
    type: "data_dir_unwritable", since: "2026-01-01T00:00:00Z",
    message: "cannot write /var/lib/fleetwave-agent: [Errno 28] No space left on device",
  };
  const page = views.renderNodes([node("n1", [full]), node("n2", [])]);
  return {
    count: page.querySelector(".count").textContent,
    flagged: [...page.querySelectorAll("tr[data-node] li[data-condition]")].map((li) => [
      li.closest("tr").dataset.node,
      li.dataset.condition,
      li.textContent.includes("[Errno 28]"),
    ]),
  };
}
"""


def test_nodes_page_shows_conditions(fleet: LocalFleet, page: Any) -> None:
    """A node whose agent reports a condition shows it (type and message) under its status."""
    page.goto(f"{fleet.url}/ui/")
    assert page.evaluate(NODES_PROBE) == {
        "count": "2 of 2 nodes ready · 1 with conditions",
        "flagged": [["n1", "data_dir_unwritable", True]],
    }


ACCESS_PROBE = """
async ({ globs, tokens, jobs }) => {
  const { ROLE_RIGHTS, Permissions, globMatch } = await import("/ui/access.js");
  return {
    rights: Object.fromEntries(Object.entries(ROLE_RIGHTS).map(([k, v]) => [k, [...v].sort()])),
    globs: globs.map(([name, glob]) => globMatch(name, glob)),
    tokens: tokens.map((token) => {
      const can = new Permissions(token);
      return [jobs.map((job) => can.mayChangeJob(job)), can.mayActOnNodes, can.mayReadAudit];
    }),
  };
}
"""


def glob_cases() -> list[tuple[str, str]]:
    """Corners of sets, ranges and negation, then random names and globs over a small alphabet."""
    corners = [
        ("web-a", "web-*"), ("web", "web-*"), ("api", "web-*"), ("x", "*"), ("", "*"),
        ("a", "[!a]"), ("b", "[!a]"), ("-", "[a-]"), ("-", "[-a]"), ("]", "[]]"), ("]", "[!]]"),
        ("[", "["), ("[]", "[]"), ("b", "[z-a]"), ("b", "[!z-a]"),
        ("c", "[a-c-e]"), ("-", "[a-c-e]"),
        ("web-b2", "web-[a-c][0-9]"), ("web-d2", "web-[a-c][0-9]"), ("ab", "a*?b"), ("aab", "a*?b"),
    ]  # fmt: skip
    rng = random.Random(11)  # noqa: S311 - test data, not secrets
    randoms = [
        (
            "".join(rng.choice("ab-c") for _ in range(rng.randint(0, 6))),
            "".join(rng.choice("ab-c*?[]!") for _ in range(rng.randint(1, 7))),
        )
        for _ in range(3000)
    ]
    return corners + randoms


def test_the_dashboard_mirrors_the_coordinators_roles_and_scopes(
    fleet: LocalFleet, page: Any
) -> None:
    """The dashboard's rights table is the coordinator's, its job globs match as fnmatchcase
    does, and what it lets each token do is what coordinator/access.py allows."""
    page.goto(f"{fleet.url}/ui/")
    scopes = [
        (Role.VIEWER, ["*"]),
        (Role.DEPLOYER, ["web-*"]),
        (Role.DEPLOYER, ["api", "w?b-[!a]"]),
        (Role.OPERATOR, ["*"]),
        (Role.ADMIN, ["*"]),
    ]
    tokens = [
        {"name": f"t{i}", "role": role.value, "jobs": jobs} for i, (role, jobs) in enumerate(scopes)
    ]
    jobs = ["web-a", "web-b", "web", "api", "wab-a"]
    globs = glob_cases()
    seen = page.evaluate(ACCESS_PROBE, {"globs": globs, "tokens": tokens, "jobs": jobs})

    assert seen["rights"] == {
        role.value: sorted(r.value for r in rights if r is not Right.SELF)
        for role, rights in ROLE_RIGHTS.items()
    }
    mismatches = [
        (name, glob)
        for (name, glob), matched in zip(globs, seen["globs"], strict=True)
        if matched != fnmatch.fnmatchcase(name, glob)
    ]
    assert mismatches == []

    def allowed(principal: Principal, method: str, route: str, job: str | None) -> bool:
        rule = rule_for(method, route)
        assert rule is not None
        return principal.missing(rule, job) is None

    expected = []
    for role, scope in scopes:
        who = Principal(token_id="t", name="t", role=role, jobs=tuple(scope))
        expected.append(
            [
                [allowed(who, "POST", "/v1/jobs/{name}/rollback", job) for job in jobs],
                allowed(who, "POST", "/v1/nodes/{node}/revoke", None),
                allowed(who, "GET", "/v1/audit", None),
            ]
        )
    assert seen["tokens"] == expected


AUDIT_READER_PROBE = """
async ({ total, pruned, refusedEvery, rareEvery }) => {
  const { AuditReader, isRefused } = await import("/ui/audit.js");
  const log = [];
  const add = (id) => log.push({
    id, job: id % rareEvery === 0 ? "rare" : "web", status: id % refusedEvery === 0 ? 403 : 200,
  });
  for (let id = pruned + 1; id <= total; id += 1) add(id);
  // GET /v1/audit as coordinator/api/audit.py answers it (after, before, order, limit, job).
  const answer = (job, { after = 0, before = Infinity, order = "asc", limit, ...rest }) => {
    const valid = ["asc", "desc"].includes(order) && limit >= 1 && limit <= 1000;
    if (Object.keys(rest).length || !valid) {
      throw new Error(`bad query ${JSON.stringify(rest)} ${order} ${limit}`);
    }
    const inside = log.filter((e) => e.id > after && e.id < before && (!job || e.job === job));
    const entries = order === "desc" ? inside.reverse().slice(0, limit) : inside.slice(0, limit);
    const empty = order === "desc" ? (before === Infinity ? 0 : before) : after;
    return { entries, last_id: entries.length ? entries[entries.length - 1].id : empty };
  };
  const open = (job, keep) => {
    const stats = { requests: 0, perLoad: [] };
    const reader = new AuditReader(async (query) => {
      stats.requests += 1;
      return answer(job, query);
    }, { keep, shown: 50 });
    const load = async (work) => {
      const before = stats.requests;
      await work();
      stats.perLoad.push(stats.requests - before);
    };
    return { reader, stats, load, ids: () => reader.entries.map((e) => e.id) };
  };
  const untilStart = async (r) => {
    while (!r.reader.atStart) await r.load(() => r.reader.older());
    return r.ids();
  };

  const plain = open(null, undefined);
  await plain.load(() => plain.reader.refresh());
  const first = plain.ids();
  await plain.load(() => plain.reader.older());
  const second = plain.ids();
  const oldestRead = plain.reader.bottom;
  add(total + 1);
  add(total + 2);
  await plain.load(() => plain.reader.refresh());

  const refused = open(null, isRefused);
  await refused.load(() => refused.reader.refresh());
  const rare = open("rare", undefined);
  await rare.load(() => rare.reader.refresh());
  const empty = open("none", undefined);
  await empty.load(() => empty.reader.refresh());
  return {
    first, second, oldestRead, newer: plain.ids().slice(0, 3), plainLoads: [...plain.stats.perLoad],
    plainToStart: (await untilStart(plain)).length, plainLoadsToStart: plain.stats.perLoad.length,
    refused: await untilStart(refused), refusedLoads: refused.stats.perLoad,
    rare: await untilStart(rare), rareRequests: rare.stats.requests,
    empty: { ids: empty.ids(), atStart: empty.reader.atStart, requests: empty.stats.requests },
  };
}
"""


def test_audit_reader_lists_the_newest_first_and_pages_back(fleet: LocalFleet, page: Any) -> None:
    """Over a log of 20,000 entries (the oldest pruned), the audit view's reader shows the
    newest 50 with one newest-first request, pages back 50 at a time with one request per
    load (before=), picks up new entries, and finds every refused or rarely matching entry."""
    page.goto(f"{fleet.url}/ui/")
    total, pruned, refused_every, rare_every = 20_000, 700, 97, 3001
    seen = page.evaluate(
        AUDIT_READER_PROBE,
        {"total": total, "pruned": pruned, "refusedEvery": refused_every, "rareEvery": rare_every},
    )
    newest_first = range(total, pruned, -1)
    assert seen["first"] == list(newest_first[:50])
    assert seen["second"] == list(newest_first[:100])
    assert seen["oldestRead"] == newest_first[99]
    assert seen["newer"] == [total + 2, total + 1, total]
    assert seen["plainLoads"] == [1, 1, 1]
    assert seen["plainToStart"] == len(newest_first) + 2
    # The three loads above, one per 50 older entries, then an empty page: the start.
    assert seen["plainLoadsToStart"] == 3 + (len(newest_first) - 100) // 50 + 1
    assert seen["refused"] == [i for i in newest_first if i % refused_every == 0]
    assert max(seen["refusedLoads"]) <= 5
    assert seen["rare"] == [i for i in newest_first if i % rare_every == 0]
    assert seen["rareRequests"] == 1
    assert seen["empty"] == {"ids": [], "atStart": True, "requests": 1}


def test_a_viewer_and_a_scoped_deployer_see_only_their_actions(
    fleet: LocalFleet, page: Any
) -> None:
    """A viewer sees jobs and nodes but no action button and no audit log; a deployer scoped
    to web-* gets the rollout actions of web-a but not of api, and no node actions."""
    viewer = create_token(fleet, "ops-viewer", "viewer")
    deployer = create_token(fleet, "ci-web", "deployer", jobs=["web-*"])
    nowhere = {"selector": {"zone": "nowhere"}}  # no node runs them: they only queue
    for name in ("web-a", "api"):
        fleet.api.request(
            "PUT", f"/v1/jobs/{name}", {**job_spec("v1"), "name": name, "target": nowhere}
        )
    actions = page.get_by_role("group", name="Rollout actions")
    node_buttons = page.locator("tr[data-node] button")

    def open_job(name: str) -> None:
        page.evaluate("(name) => { window.location.hash = `#/jobs/${name}`; }", name)
        expect(page.locator("h1")).to_have_text(name)
        expect(page.locator("#job-state")).to_be_visible()

    def open_nodes() -> None:
        page.get_by_role("link", name="Nodes").click()
        expect(page.locator("tr[data-node]")).to_have_count(5)

    page.goto(f"{fleet.url}/ui/#token={viewer}")
    expect(page.locator("#whoami .whoami-name")).to_have_text("ops-viewer")
    expect(page.locator("#whoami .whoami-role")).to_have_text("viewer")
    expect(page.locator('tr[data-job="web-a"]')).to_be_visible()
    expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    open_job("web-a")
    expect(actions).to_have_count(0)
    expect(page.locator(".read-only")).to_contain_text("can look but not change jobs")
    page.screenshot(path=str(artifacts_dir() / "dashboard-viewer-job.png"), full_page=True)
    open_nodes()
    expect(node_buttons).to_have_count(0)
    page.evaluate("window.location.hash = '#/audit'")
    expect(page.get_by_role("alert")).to_contain_text("The audit log needs an admin token")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, deployer)
    expect(page.locator("#whoami .whoami-role")).to_have_text("deployer · web-*")
    open_job("web-a")
    expect(actions).to_be_visible()
    expect(page.get_by_role("button", name="Roll back the rollout of web-a")).to_have_count(1)
    open_job("api")
    expect(page.locator(".read-only")).to_contain_text("only jobs matching web-*")
    expect(actions).to_have_count(0)
    page.screenshot(
        path=str(artifacts_dir() / "dashboard-deployer-out-of-scope.png"), full_page=True
    )
    open_nodes()
    expect(node_buttons).to_have_count(0)


def test_promote_moves_a_gated_rollout_on_live(fleet: LocalFleet, page: Any) -> None:
    """A v2 rollout shows up live at its canary gate; Promote (confirmed) moves it on to running,
    and the audit view shows the promotion with the admin token that made it."""
    admin = create_token(fleet, "ops-alice", "admin")
    page.goto(f"{fleet.url}/ui/#token={admin}")
    expect(page).not_to_have_url(f"{fleet.url}/ui/#token={admin}")  # the token is dropped
    page.locator('a.job-link:text-is("web")').click()
    expect(page.locator("#job-state")).to_have_text("Running")
    expect(page.locator("#conn-text")).to_have_text("Live")
    page.evaluate("window.__sameDocument = true")

    fleet.api.request("PUT", "/v1/jobs/web", job_spec("v2", auto_promote=False))
    canary = page.locator('[data-phase="canary"]')
    expect(canary.locator(".phase-head .badge")).to_have_text("Waiting for promotion")
    expect(page.locator("#job-state")).to_have_text("Paused")
    expect(canary.locator(".tile")).to_have_count(1)
    expect(canary.locator(".tile")).to_contain_text("v2")
    expect(canary.locator(".tile")).to_contain_text("healthy")
    expect(page.locator('[data-phase="wave-1"] .phase-head .badge')).to_have_text("Pending")
    started = page.locator(".events li", has_text="rollout started")
    expect(started).to_contain_text("by bootstrap-admin")  # fleet.api submitted version 2
    page.screenshot(path=str(artifacts_dir() / "dashboard-canary-gate.png"), full_page=True)

    page.get_by_role("button", name="Promote the rollout of web").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Promote the rollout of web?")
    expect(dialog).to_contain_text("wave 1")
    page.screenshot(path=str(artifacts_dir() / "dashboard-confirm.png"))
    dialog.get_by_role("button", name="Promote").click()

    expect(canary.locator(".phase-head .badge")).to_have_text("Passed")
    expect(page.locator("#job-state")).to_have_text("Running")
    expect(page.locator(".tile")).to_have_count(5)
    expect(page.locator('.tile[data-result="updated"]')).to_have_count(5)
    expect(page.locator(".overview")).to_contain_text("5 of 5 updated")
    assert page.evaluate("window.__sameDocument") is True  # updated without a reload
    page.screenshot(path=str(artifacts_dir() / "dashboard-rollout.png"), full_page=True)
    assert fleet.status("web")["rollout"]["canary_promoted"] is True
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("button", name="Roll back the rollout of web")).to_be_visible()
    page.screenshot(path=str(artifacts_dir() / "dashboard-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    with pytest.raises(ApiError):  # a refused request, for the audit log
        ApiClient(fleet.url, "fwo_not-a-token", timeout=10).request("GET", "/v1/jobs")
    page.get_by_role("link", name="Audit").click()
    rows = page.locator("table.audit tbody tr")
    expect(rows.first).to_contain_text("401 refused")
    promote = rows.filter(has_text="POST /v1/jobs/web/rollout/promote")
    expect(promote).to_have_count(1)
    expect(promote).to_contain_text("ops-alice")
    expect(promote).to_contain_text("admin")
    expect(promote).to_contain_text("job web")
    expect(promote).to_contain_text("200")
    page.screenshot(path=str(artifacts_dir() / "dashboard-audit.png"), full_page=True)
    page.get_by_label("Refused only").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"#/audit\?refused=1$"))
    expect(promote).to_have_count(0)
    expect(rows.first).to_contain_text("401 refused")
    page.get_by_label("Refused only").uncheck()
    page.get_by_label("Token", exact=True).fill("ops-alice")
    page.get_by_role("button", name="Apply").click()
    expect(promote).to_have_count(1)
    expect(rows.filter(has_not_text="ops-alice")).to_have_count(0)


def test_a_stopped_coordinator_is_named_and_the_page_recovers(tmp_path: Path, page: Any) -> None:
    """A stopped coordinator is named; once back, the stream resumes with Last-Event-ID."""
    fleet = LocalFleet(
        tmp_path, heartbeat_interval="1s", heartbeat_ttl="10s", policy=JOBS_AS_PYTEST_USER
    )
    resumed_from: list[str] = []

    def record(request: Any) -> None:
        if request.url.endswith("/v1/events") and "last-event-id" in request.headers:
            resumed_from.append(request.headers["last-event-id"])

    page.on("request", record)
    try:
        fleet.start_coordinator()
        page.goto(f"{fleet.url}/ui/#token={ADMIN_TOKEN}")
        expect(page.get_by_text("No jobs yet.")).to_be_visible()
        expect(page.locator("#conn-text")).to_have_text("Live")
        fleet.api.request("PUT", "/v1/jobs/web", job_spec("v1"))  # no nodes: it queues
        expect(page.locator('tr[data-job="web"]')).to_contain_text("Queued")
        last_id = fleet.api.request("GET", "/v1/events", query={"limit": "1000"}).body["last_id"]
        assert fleet.coordinator is not None
        fleet.stop(fleet.coordinator)
        expect(page.locator("#conn-text")).to_have_text("Coordinator unreachable")
        expect(page.locator("#banner")).to_contain_text("The coordinator does not answer")
        page.screenshot(path=str(artifacts_dir() / "dashboard-unreachable.png"))
        fleet.start_coordinator()
        expect(page.locator("#conn-text")).to_have_text("Live")
        expect(page.locator("#banner")).to_be_hidden()
        assert resumed_from, "the stream never reconnected with Last-Event-ID"
        assert resumed_from[-1] == str(last_id)
    finally:
        fleet.close()


NODE_STATUS_PROBE = """
async () => {
  const views = await import("/ui/views.js");
  const { nodeActions } = await import("/ui/actions.js");
  const zero = "0001-01-01T00:00:00Z";
  const node = (name, status) => ({
    id: `id-${name}`, name, status, eligibility: "eligible", drain: false, labels: {},
    resources: {}, load: {}, last_heartbeat: zero, registered_at: zero, agent_version: "",
    conditions: [],
  });
  const nodes = ["pending", "ready", "down", "revoked"].map((s) => node(`n-${s}`, s));
  const actions = (n) => nodeActions(n).map((a) => document.createTextNode(a.id + ";"));
  const page = views.renderNodes(nodes, actions);
  return {
    count: page.querySelector(".count").textContent,
    rows: [...page.querySelectorAll("tr[data-node]")].map((tr) => [
      tr.dataset.node,
      tr.querySelector(".badge").textContent,
      [...tr.querySelector(".badge").classList].find((c) => c.startsWith("tone-")),
      tr.querySelector(".row-actions").textContent,
    ]),
  };
}
"""


def test_node_statuses_have_their_own_badges_and_actions(fleet: LocalFleet, page: Any) -> None:
    """Pending and revoked nodes read as such in their own tones; each status offers only
    the node actions that apply to it."""
    page.goto(f"{fleet.url}/ui/")
    assert page.evaluate(NODE_STATUS_PROBE) == {
        "count": "1 of 4 nodes ready · 1 pending approval",
        "rows": [
            ["n-down", "Down", "tone-bad", "revoke;purge;"],
            ["n-pending", "Pending approval", "tone-paused", "approve;revoke;"],
            ["n-ready", "Ready", "tone-ok", "revoke;"],
            ["n-revoked", "Revoked", "tone-revoked", "purge;"],
        ],
    }


def test_a_pending_node_is_approved_then_revoked_from_the_nodes_page(
    tmp_path: Path, page: Any
) -> None:
    """A node enrolled with a manual-approval join token shows as pending; Approve
    (confirmed) lets it in, and Revoke (confirmed) shuts it out for good."""
    # Runs no job, so the default host policy ({}) will do.
    fleet = LocalFleet(tmp_path, heartbeat_interval="1s", heartbeat_ttl="10s", policy={})
    try:
        fleet.start_coordinator()
        join = {"name": "rack-7", "kind": "join", "approval": "manual", "labels": {"rack": "7"}}
        secret = fleet.api.request("POST", "/v1/tokens", join).body["secret"]
        fleet.start_agent("node-7", {"zone": "zone-a"}, extra=["--join-token", secret])
        page.goto(f"{fleet.url}/ui/#token={ADMIN_TOKEN}")
        page.get_by_role("link", name="Nodes").click()
        row = page.locator('tr[data-node="node-7"]')
        expect(row.locator(".badge")).to_have_text("Pending approval")
        expect(row).to_contain_text("rack=7")  # the join token's bound label
        expect(page.locator(".count")).to_contain_text("1 pending approval")
        page.screenshot(path=str(artifacts_dir() / "dashboard-node-pending.png"), full_page=True)

        row.get_by_role("button", name="Approve node node-7").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Approve node node-7?")
        expect(dialog).to_contain_text("rack=7")
        dialog.get_by_role("button", name="Approve").click()
        expect(row.locator(".badge")).to_have_text("Ready")
        expect(row.get_by_role("button", name="Approve node node-7")).to_have_count(0)
        assert [n["status"] for n in fleet.nodes()] == ["ready"]

        row.get_by_role("button", name="Revoke node node-7").click()
        expect(dialog).to_contain_text("This cannot be undone")
        page.screenshot(path=str(artifacts_dir() / "dashboard-node-revoke.png"))
        dialog.get_by_role("button", name="Revoke node").click()
        expect(row.locator(".badge")).to_have_text("Revoked")
        expect(row.get_by_role("button", name="Purge node node-7")).to_be_visible()
        assert [n["status"] for n in fleet.nodes()] == ["revoked"]
        page.screenshot(path=str(artifacts_dir() / "dashboard-node-revoked.png"), full_page=True)
    finally:
        fleet.close()
