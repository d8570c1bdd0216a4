"""The event stream (server-sent events) through the real app on a real SQLite file."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from coordinator.api.deps import DEPS
from coordinator.watch import FEED
from tests.coordinator.conftest import Harness
from tests.coordinator.test_api_rollouts import gated_rollout, post

READ_TIMEOUT = 10.0


class Stream:
    """Reads one SSE response message by message (comments and the retry hint skipped)."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp

    async def message(self) -> dict[str, Any]:
        while True:
            raw = await self.resp.content.readuntil(b"\n\n")
            fields: dict[str, Any] = {}
            for line in raw.decode().splitlines():
                if not line or line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                fields[key] = value
            if "event" in fields:
                fields["data"] = json.loads(fields["data"])
                return fields

    async def until(self, event: str) -> dict[str, Any]:
        """The next message of kind ``event`` (others are skipped)."""
        while True:
            msg = await self.message()
            if msg["event"] == event:
                return msg


async def open_stream(harness: Harness, query: str = "", **headers: str) -> Stream:
    resp = await harness.client.get(
        f"/v1/events{query}",
        headers=harness.admin() | headers,
        timeout=READ_TIMEOUT,  # type: ignore[arg-type]
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return Stream(resp)


class TestStream:
    async def test_replays_from_after_then_streams_live_transitions(self, harness: Harness) -> None:
        """?after=0 replays stored events with their ids, then a pause arrives live."""
        await gated_rollout(harness)
        stream = await open_stream(harness, "?after=0&job=web")
        started = await stream.until("rollout_started")
        assert started["data"]["job"] == "web"
        assert int(started["id"]) == started["data"]["id"]
        status = await stream.until("status")
        assert status["data"] == {
            "job": "web",
            "revision": (await harness.status("web"))["revision"],
        }
        assert (await post(harness, "/v1/jobs/web/rollout/pause"))[0] == 200
        paused = await stream.until("rollout_paused")
        assert int(paused["id"]) > int(started["id"])
        bumped = await stream.until("status")
        assert bumped["data"]["revision"] > status["data"]["revision"]

    async def test_last_event_id_resumes_after_that_event(self, harness: Harness) -> None:
        """A reconnect with Last-Event-ID gets exactly the events after it, in order."""
        await gated_rollout(harness)
        await post(harness, "/v1/jobs/web/rollout/pause")
        await post(harness, "/v1/jobs/web/rollout/resume")
        stored = [e.id for e in await harness.store.list_events(job="web")]
        stream = await open_stream(harness, "?job=web", **{"Last-Event-ID": str(stored[-3])})
        ids = [int((await stream.message())["id"]) for _ in range(2)]
        assert ids == stored[-2:]

    async def test_without_after_only_new_events_are_sent(self, harness: Harness) -> None:
        """A fresh subscriber starts at the present: the first numbered event is a new one."""
        await gated_rollout(harness)
        newest = await harness.store.last_event_id()
        stream = await open_stream(harness)
        await stream.until("status")  # the current revision of each job comes first
        await harness.register("late")
        registered = await stream.until("node_registered")
        assert int(registered["id"]) > newest
        assert registered["data"]["new"] == "late"

    async def test_job_filter_leaves_out_other_jobs_and_nodes(self, harness: Harness) -> None:
        """With ?job=, node events and other jobs' events are not sent."""
        await gated_rollout(harness)
        stream = await open_stream(harness, "?job=web")
        await stream.until("status")
        await harness.register("late")
        await post(harness, "/v1/jobs/web/rollout/pause")
        msg = await stream.message()
        assert msg["event"] == "rollout_paused"

    async def test_stream_ends_when_the_coordinator_closes(self, harness: Harness) -> None:
        """At shutdown (closing + a feed bump) open streams end instead of holding it up."""
        stream = await open_stream(harness)
        deps = harness.client.app[DEPS]  # type: ignore[index]
        deps.closing = True
        deps.watches.bump(FEED)
        await stream.resp.content.read()  # returns only once the server ended the response
        assert stream.resp.content.at_eof()

    @pytest.mark.parametrize(
        ("query", "headers", "field"),
        [
            ("?after=-1", {}, "after"),
            (f"?after={2**63}", {}, "after"),
            ("", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
            ("", {"Last-Event-ID": str(2**64)}, "Last-Event-ID"),
        ],
    )
    async def test_bad_resume_point_is_400_naming_it(
        self, harness: Harness, query: str, headers: dict[str, str], field: str
    ) -> None:
        """A malformed resume point is rejected with the field named."""
        resp = await harness.client.get(f"/v1/events{query}", headers=harness.admin() | headers)
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["details"]["errors"][0]["field"] == field

    async def test_json_page_when_asked_for_json(self, harness: Harness) -> None:
        """Accept: application/json gives the paged list the CLI uses."""
        await gated_rollout(harness)
        resp = await harness.client.get(
            "/v1/events?limit=2", headers=harness.admin() | {"Accept": "application/json"}
        )
        body = await resp.json()
        assert len(body["events"]) == 2
        assert body["last_id"] == body["events"][-1]["id"]
        resp = await harness.client.get(
            f"/v1/events?after={2**70}", headers=harness.admin() | {"Accept": "application/json"}
        )
        assert resp.status == 400  # beyond SQLite's integers: a clear 400, not a 500
