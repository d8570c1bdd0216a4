"""``ApiClient`` with several coordinators, against stand-ins on loopback: which failures move
a request on to the next coordinator, that a change is never sent twice, that the client
sticks to the coordinator that answered, and that the event stream resumes at the next one."""

from __future__ import annotations

import time

import pytest

from coordinator.client import ApiClient, ApiError
from coordinator.follow import RolloutFollower
from tests.coordinator.standins import refusing, standin


class TestRequests:
    def test_refused_and_store_down_are_passed_over_for_reads_and_changes(self) -> None:
        """A refused connection and a coordinator whose database is down (503
        store_unavailable: nothing changed) are passed over, for a GET and for a POST."""
        with standin("503") as down, standin("ok") as good:
            client = ApiClient([refusing(), down.url, good.url], None)
            assert client.request("GET", "/v1/jobs").body["method"] == "GET"
            client = ApiClient([refusing(), down.url, good.url], None)
            assert client.request("POST", "/v1/jobs/web/restart").body["method"] == "POST"
            assert down.methods() == ["GET /v1/jobs", "POST /v1/jobs/web/restart"]

    def test_a_read_whose_connection_broke_is_sent_to_the_next(self) -> None:
        """A GET that got no answer is sent again to the next coordinator."""
        with standin("break") as broken, standin("ok") as good:
            body = ApiClient([broken.url, good.url], None).request("GET", "/v1/jobs").body
            assert body["method"] == "GET"
            assert broken.methods() == ["GET /v1/jobs"]
            assert good.methods() == ["GET /v1/jobs"]

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
    def test_a_change_whose_connection_broke_is_not_sent_again(self, method: str) -> None:
        """A change whose connection broke after it was sent stops with "may or may not
        have been applied", naming the coordinator; the next coordinator never sees it."""
        with standin("break") as broken, standin("ok") as good:
            client = ApiClient([broken.url, good.url], None)
            with pytest.raises(ApiError) as caught:
                client.request(method, "/v1/jobs/web", {"name": "web"})
            assert caught.value.code == "outcome_unknown"
            assert f"{method} /v1/jobs/web may or may not have been applied" in str(caught.value)
            assert broken.url in caught.value.message
            assert good.seen == []

    def test_a_503_that_is_not_a_coordinators_stops_a_change(self) -> None:
        """A 503 without the coordinator's store_unavailable code (a proxy's) may have come
        after the change was made: a POST stops there; a GET goes on."""
        with standin("proxy503") as proxy, standin("ok") as good:
            client = ApiClient([proxy.url, good.url], None)
            with pytest.raises(ApiError) as caught:
                client.request("POST", "/v1/jobs/web/restart")
            assert proxy.url in caught.value.message
            assert good.seen == []
            assert client.request("GET", "/v1/jobs").status == 200

    def test_sticks_to_the_coordinator_that_answered(self) -> None:
        """After one call moved on, the next calls start at the coordinator that answered."""
        with standin("503") as down, standin("ok") as good:
            client = ApiClient([down.url, good.url], None)
            for _ in range(3):
                client.request("GET", "/v1/jobs")
            assert len(down.seen) == 1
            assert len(good.seen) == 3
            assert client.addr == good.url

    def test_every_address_failing_names_each_and_what_it_said(self) -> None:
        """When none serves the request the error lists each address with its reason."""
        dead = refusing()
        with standin("503") as down, pytest.raises(ApiError) as caught:
            ApiClient([dead, down.url], None).request("GET", "/v1/jobs")
        message = caught.value.message
        assert f"{dead}: connection refused" in message
        assert f"{down.url}: 503 store_unavailable: could not record the request" in message
        assert "FLEETWAVE_ADDR (or --addr)" in message
        assert [a["addr"] for a in caught.value.details["attempts"]] == [dead, down.url]

    def test_one_address_keeps_the_single_coordinator_message(self) -> None:
        """With one address the error is what it said, as before HA."""
        dead = refusing()
        with pytest.raises(ApiError) as caught:
            ApiClient(dead, None).request("GET", "/v1/jobs")
        assert f"is the coordinator running at {dead}?" in caught.value.message
        with standin("503") as down, pytest.raises(ApiError) as caught:
            ApiClient(down.url, None).request("POST", "/v1/jobs/web/stop")
        assert (caught.value.status, caught.value.code) == (503, "store_unavailable")


class TestEventStream:
    def test_a_broken_stream_resumes_at_the_next_coordinator_after_the_last_event(self) -> None:
        """The stream of the first coordinator ends after events 1-3: the follower opens
        the next coordinator's stream with Last-Event-ID 3 and gets what follows."""
        with standin("events", events=(1, 2, 3)) as first, standin("events", events=(4,)) as nxt:
            client = ApiClient([first.url, nxt.url], None)
            ids: list[int] = []
            with RolloutFollower(client, "web") as follower:
                deadline = time.monotonic() + 10
                while 4 not in ids and time.monotonic() < deadline:
                    ids += [m.id for m in follower._take(0.1) if m.id is not None]
            assert ids[:4] == [1, 2, 3, 4]
            assert nxt.seen[0].path == "/v1/events?job=web"
            assert nxt.seen[0].headers.get("Last-Event-ID") == "3"
