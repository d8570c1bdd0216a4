"""GET /metrics through the real app: state gauges, request histograms, engine and agent counters.

The app runs on a real SQLite store with a FakeClock (our clock seam), so durations are 0s;
the tests assert on counts and labels, never on timings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.coordinator.conftest import Harness, web_spec
from tests.helpers import eventually
from tests.promtext import Exposition, parse, promtool_check


async def scrape(harness: Harness) -> tuple[str, Exposition]:
    resp = await harness.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    return text, parse(text)


async def deployed(harness: Harness) -> None:
    """Two ready nodes given job ``web`` v1 at once; ``a`` reports healthy, ``b`` unhealthy."""
    tokens = {}
    for name in ("a", "b"):
        _, token = await harness.register(name, port="1")
        await harness.report(token, 1, [])
        tokens[name] = token
    resp = await harness.put_job(web_spec(canary=0, waves=1))
    assert resp.status == 201
    await harness.driver.step()
    await harness.report(tokens["a"], 2, [{"job": "web", "version": 1, "state": "healthy"}])
    await harness.report(tokens["b"], 2, [{"job": "web", "version": 1, "state": "unhealthy"}])
    await harness.report(tokens["b"], 1, [])  # a replayed seq: ignored
    await harness.driver.step()


class TestStateGauges:
    async def test_jobs_nodes_and_rollout_progress_reflect_the_store(
        self, harness: Harness
    ) -> None:
        """After a create and agent reports, the gauges show the job, its nodes and progress."""
        await deployed(harness)
        text, m = await scrape(harness)
        promtool_check(text)
        assert m.value("fleetwave_jobs", state="deploying") == 1
        assert m.value("fleetwave_jobs", state="running") == 0
        assert m.value("fleetwave_nodes", status="ready") == 2
        assert m.value("fleetwave_nodes", status="down") == 0
        assert m.value("fleetwave_job_state", job="web", state="deploying") == 1
        assert m.value("fleetwave_job_state", job="web", state="running") == 0
        assert m.value("fleetwave_job_rollout_phase", job="web", phase="waves") == 1
        assert m.value("fleetwave_job_version", job="web") == 1
        assert m.value("fleetwave_job_desired_nodes", job="web") == 2
        assert m.value("fleetwave_job_placed_nodes", job="web") == 2
        assert m.value("fleetwave_job_healthy_nodes", job="web") == 1
        assert m.value("fleetwave_job_unhealthy_nodes", job="web") == 1
        assert m.value("fleetwave_job_updated_nodes", job="web") == 0
        assert m.value("fleetwave_job_rollout_current_wave", job="web") == 1
        assert m.value("fleetwave_job_rollout_total_waves", job="web") == 1

    async def test_an_empty_coordinator_passes_promtool(self, harness: Harness) -> None:
        """With no job and no node every family is still described, with zero counts."""
        text, m = await scrape(harness)
        promtool_check(text)
        assert m.value("fleetwave_jobs", state="running") == 0
        assert m.types["fleetwave_job_healthy_nodes"] == "gauge"
        assert m.label_values("fleetwave_job_state", "job") == set()


class TestRequestHistogram:
    async def test_requests_are_labelled_by_route_template_and_status(
        self, harness: Harness
    ) -> None:
        """Requests count under their route template and final status, never the raw path."""
        await deployed(harness)
        await harness.status("web")
        missing = await harness.client.get("/v1/jobs/nope/status", headers=harness.admin())
        assert missing.status == 404
        unknown = await harness.client.get("/no/such/path/42")
        assert unknown.status == 404
        _, m = await scrape(harness)
        count = "fleetwave_http_request_duration_seconds_count"
        assert m.types["fleetwave_http_request_duration_seconds"] == "histogram"
        assert m.value(count, method="PUT", route="/v1/jobs/{name}", status="201") == 1
        assert m.value(count, method="GET", route="/v1/jobs/{name}/status", status="200") == 1
        assert m.value(count, method="GET", route="/v1/jobs/{name}/status", status="404") == 1
        assert m.value(count, method="POST", route="/v1/agent/report", status="200") == 5
        assert m.value(count, method="POST", route="/v1/agent/register", status="201") == 2
        assert m.value(count, method="GET", route="(unmatched)", status="404") == 1
        routes = m.label_values(count, "route")
        assert not any("web" in r or "nope" in r or "42" in r for r in routes), routes
        bucket = "fleetwave_http_request_duration_seconds_bucket"
        inf = m.value(bucket, method="PUT", route="/v1/jobs/{name}", status="201", le="+Inf")
        assert inf == 1

    async def test_unauthorized_requests_are_counted_with_their_status(
        self, harness: Harness
    ) -> None:
        """A request rejected by the auth middleware is still timed, under its 401."""
        resp = await harness.client.get("/v1/jobs")
        assert resp.status == 401
        _, m = await scrape(harness)
        count = "fleetwave_http_request_duration_seconds_count"
        assert m.value(count, method="GET", route="/v1/jobs", status="401") == 1


class TestEngineAndAgentCounters:
    async def test_engine_steps_plans_and_reports_are_counted(self, harness: Harness) -> None:
        """Engine steps and applied plans are counted; reports split into accepted and ignored."""
        await deployed(harness)
        _, m = await scrape(harness)
        assert (m.value("fleetwave_engine_step_duration_seconds_count") or 0) >= 2
        assert (m.value("fleetwave_engine_evaluation_duration_seconds_count") or 0) >= 2
        assert (m.value("fleetwave_engine_plans_applied_total") or 0) >= 1
        assert m.value("fleetwave_engine_step_errors_total") == 0
        assert m.value("fleetwave_agent_reports_received_total", result="accepted") == 4
        assert m.value("fleetwave_agent_reports_received_total", result="ignored") == 1

    async def test_open_blocking_queries_are_gauged(self, harness: Harness) -> None:
        """A waiting ``?index=&wait=`` query shows in long_polls_open until it returns."""
        await deployed(harness)
        revision = (await harness.status("web"))["revision"]
        waiting = asyncio.create_task(
            harness.client.get(
                f"/v1/jobs/web/status?index={revision}&wait=30s", headers=harness.admin()
            )
        )

        async def open_polls() -> float | None:
            _, m = await scrape(harness)
            return m.value("fleetwave_long_polls_open", endpoint="job_status")

        async def one_open() -> bool:
            return await open_polls() == 1

        await eventually(one_open)
        pause = await harness.client.post("/v1/jobs/web/rollout/pause", headers=harness.admin())
        assert pause.status == 200
        assert (await waiting).status == 200
        assert await open_polls() == 0


class TestDocs:
    async def test_every_metric_is_documented(self, harness: Harness) -> None:
        """Each fleetwave_ family in the output has HELP text and a row in docs/metrics.md."""
        await deployed(harness)
        _, m = await scrape(harness)
        doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
        names = [n for n in m.types if n.startswith("fleetwave_")]
        assert len(names) > 15
        for name in names:
            assert m.helps[name], name
            shown = name + "_total" if m.types[name] == "counter" else name
            assert f"`{shown}`" in doc, shown
