"""The dashboard's view of the cluster, and what it does when its coordinator is lost: headless
Chromium against real coordinators, two of them on a fresh PostgreSQL database.

The page may talk only to its own origin, so a lost coordinator is named, retried, and each
other member's dashboard is linked (the user signs in there again).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet
from tests.e2e.browser import artifacts_dir, playwright_sync_api, sign_in
from tests.pg import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.integration]

expect = playwright_sync_api().expect

# No node will run it: a job that only has to be listed.
JOB = {"name": "web", "task": {"command": ["run"]}}


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test (``tests/pg.py``). Its event loop runs in a
    thread of its own: Playwright's synchronous API keeps one running in this thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="database", daemon=True)
    thread.start()
    try:
        manager = fresh_database()
        url = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result()
        try:
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """One coordinator on its own SQLite file, no agents."""
    fleet = LocalFleet(tmp_path_factory.mktemp("single"), policy={})
    try:
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def test_a_lost_coordinator_is_named_with_links_to_the_others(
    database: str, tmp_path: Path, page: Any
) -> None:
    """Signed in on A, the footer lists A and B; once A is killed (-9) the banner names A as
    lost and links B's dashboard, which (after signing in there) shows the jobs."""
    fleet = LocalFleet(tmp_path, policy={}, database_url=database, coordinators=2)
    try:
        fleet.start_coordinators()
        a, b = (m.member_id for m in fleet.members)
        a_url, b_url = fleet.urls
        fleet.api_of(1).request("PUT", "/v1/jobs/web", JOB)  # no nodes: it queues
        page.goto(f"{a_url}/ui/#/jobs")
        sign_in(page, ADMIN_TOKEN)
        expect(page.locator('tr[data-job="web"]')).to_contain_text("Queued")
        footer = page.locator("#cluster")
        expect(footer.locator(".cluster-this")).to_contain_text(f"Coordinator {a} (")
        expect(footer.locator("li[data-member]")).to_have_count(2)
        expect(footer.locator(f'li[data-member="{b}"]')).to_be_visible()
        expect(footer.locator('li[data-role="leader"]')).to_have_count(1)
        expect(page.locator("#banner")).to_be_hidden()

        fleet.kill_coordinator(0)
        banner = page.locator("#banner")
        expect(banner).to_contain_text(f"Lost coordinator {a} ({a_url})")
        expect(banner).to_contain_text(f"keeps retrying {a} by itself")
        expect(page.locator("#conn-text")).to_have_text("Coordinator unreachable")
        expect(footer.locator(".cluster-this")).to_contain_text("lost")
        link = banner.get_by_role("link", name=f"Open the dashboard on coordinator {b}")
        expect(link).to_have_attribute("href", f"{b_url}/ui/#/jobs")
        expect(banner.get_by_role("link")).to_have_count(1)  # A itself is not offered
        expect(page.locator('tr[data-job="web"]')).to_be_visible()  # the last data received
        page.screenshot(path=str(artifacts_dir() / "dashboard-coordinator-lost.png"))

        link.click()
        expect(page.get_by_label("Token", exact=True)).to_be_visible()  # B has no token yet
        assert page.url == f"{b_url}/ui/#/jobs"
        sign_in(page, ADMIN_TOKEN)
        expect(page.locator('tr[data-job="web"]')).to_contain_text("Queued")
        expect(footer.locator(".cluster-this")).to_contain_text(f"Coordinator {b} (")
        expect(page.locator("#banner")).to_be_hidden()
    finally:
        fleet.close()


def test_a_single_coordinator_shows_one_member_and_no_banner(single: LocalFleet, page: Any) -> None:
    """On SQLite the footer names the one coordinator, which leads, and no banner shows."""
    member = single.cluster(0)["member"]
    page.goto(f"{single.url}/ui/#token={ADMIN_TOKEN}")
    expect(page.get_by_text("No jobs yet.")).to_be_visible()
    footer = page.locator("#cluster")
    expect(footer.locator(".cluster-this")).to_have_text(f"Coordinator {member} (leader)")
    expect(footer).to_contain_text("1 member:")
    expect(footer.locator("li[data-member]")).to_have_count(1)
    expect(footer.locator(f'li[data-member="{member}"]')).to_have_attribute("data-role", "leader")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#conn-text")).to_have_text("Live")
    page.screenshot(path=str(artifacts_dir() / "dashboard-cluster-single.png"), full_page=True)


CLUSTER_PROBE = """
async () => {
  const c = await import("/ui/cluster.js");
  const member = (id, role, address) => ({ id, role, address, last_seen: "2026-01-01T00:00:00Z" });
  const cluster = {
    leader: { id: "c3", address: "http://10.0.0.3:7400" }, epoch: 4, member: "c1",
    members: [
      member("c1", "follower", "http://10.0.0.1:7400"),
      member("c2", "follower", "https://c2.example:7400/"),
      member("c3", "leader", "http://10.0.0.3:7400"),
      member("c4", "follower", "javascript:alert(1)"),
      member("c5", "follower", ""),
    ],
  };
  let link = c.LINK_OK;
  const seen = [];
  for (const [outcome, reason] of [
    ["unavailable", "database unavailable"], ["unavailable", "database unavailable"],
    ["unavailable", "database unavailable"], ["answered"], ["unreachable"], ["answered"],
  ]) {
    link = c.nextLink(link, outcome, reason);
    seen.push(link.lost);
  }
  return {
    lostAfter: seen,
    others: c.otherMembers(cluster, "#/jobs/web").map((m) => [m.id, m.role, m.url]),
    noToken: c.dashboardUrl("http://10.0.0.3:7400", "#token=fwa_secret"),
    unknown: c.thisMember(null, "http://127.0.0.1:7400"),
  };
}
"""


def test_the_link_and_the_alternatives_are_decided_as_documented(
    single: LocalFleet, page: Any
) -> None:
    """Three 503s in a row or one unreachable request lose the coordinator, any answer finds it
    again; the other members are offered leader first, only at http(s) addresses, on the same
    page and never with a token."""
    page.goto(f"{single.url}/ui/")
    assert page.evaluate(CLUSTER_PROBE) == {
        "lostAfter": [False, False, True, False, True, False],
        "others": [
            ["c3", "leader", "http://10.0.0.3:7400/ui/#/jobs/web"],
            ["c2", "follower", "https://c2.example:7400/ui/#/jobs/web"],
        ],
        "noToken": "http://10.0.0.3:7400/ui/",
        "unknown": {"id": "", "address": "http://127.0.0.1:7400"},
    }
