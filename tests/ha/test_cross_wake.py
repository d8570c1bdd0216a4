"""A change made on one coordinator wakes a long-poll held on another (LISTEN/NOTIFY).

The latency is measured and printed (and written to the HA report, section
``cross_wake``, for docs/benchmarks.md), never asserted: a loaded CI machine would make a
timed assertion flaky. What is asserted is that the poll wakes well before its wait ends.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.client import Response
from coordinator.demo.fleet import wait_for
from tests.faults.harness import JOB
from tests.ha.harness import HaFleet, spread, write_report

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WAIT = 30.0  # seconds the long-poll may be held
SAMPLES = 10
HELD = "fleetwave_long_polls_open"


def long_poll(ha: HaFleet, member: int, index: int, answer: dict[str, Any]) -> threading.Thread:
    """GET the job's status on coordinator ``member``, blocking past ``index``, in a thread
    that notes when the answer came (``answer["at"]``) and the answer."""

    def poll() -> None:
        api = ha.fleet.api_of(member, timeout=WAIT + 10)
        query = {"index": str(index), "wait": f"{WAIT:g}s"}
        response: Response = api.request("GET", f"/v1/jobs/{JOB}/status", query=query)
        answer["at"] = time.monotonic()
        answer["response"] = response

    thread = threading.Thread(target=poll, name=f"long-poll-c{member + 1}", daemon=True)
    thread.start()
    return thread


def polls_held(ha: HaFleet, member: int) -> float:
    """How many job status long-polls coordinator ``member`` holds now (its /metrics)."""
    with urllib.request.urlopen(ha.fleet.member_url(member) + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == HELD and sample.labels.get("endpoint") == "job_status":
                return float(sample.value)
    return 0.0


def settled(ha: HaFleet, member: int, version: int) -> int:
    """The job's revision on ``member`` once the engine is done with ``version`` (with no
    nodes it is queued): nothing but our next PUT changes it any more."""

    def queued() -> int | None:
        status = ha.fleet.api_of(member).request("GET", f"/v1/jobs/{JOB}/status").body
        done = status["version"] == version and status["state"]["state_type"] == "queued"
        return int(status["revision"]) if done else None

    return wait_for(f"version {version} to be queued", queued, 10)


def test_a_put_on_one_coordinator_wakes_a_status_long_poll_on_another(ha: HaFleet) -> None:
    """A job status long-poll held on coordinator B answers the new revision soon after a
    PUT on coordinator A, leader and follower either way round."""
    leader = ha.fleet.start_coordinators()
    follower = (leader + 1) % len(ha.fleet.members)
    version = int(ha.put(ha.spec())[2]["version"])
    latencies, from_sent = [], []
    for sample in range(SAMPLES):
        # Alternate: a change on the follower wakes the leader, and the other way round.
        a, b = (follower, leader) if sample % 2 else (leader, follower)
        index = settled(ha, b, version)
        answer: dict[str, Any] = {}
        thread = long_poll(ha, b, index, answer)
        wait_for(f"the long-poll to be held on c{b + 1}", lambda b=b: polls_held(ha, b) > 0, 10)
        put_at = time.monotonic()
        body = ha.fleet.api_of(a).request("PUT", f"/v1/jobs/{JOB}", ha.spec()).body
        version = int(body["version"])
        answered_at = time.monotonic()
        thread.join(WAIT + 15)
        assert "response" in answer, f"the long-poll on c{b + 1} never answered"
        revision = int(answer["response"].body["revision"])
        assert revision > index, f"c{b + 1} answered revision {revision}, not past {index}"
        woke_after = answer["at"] - put_at
        assert woke_after < WAIT / 2, f"c{b + 1}'s poll woke only after {woke_after:.1f}s"
        latencies.append(max(0.0, answer["at"] - answered_at))
        from_sent.append(woke_after)
        print(
            f"PUT v{body['version']} on c{a + 1} ({'leader' if a == leader else 'follower'}):"
            f" c{b + 1}'s long-poll woke {1000 * (answer['at'] - answered_at):.0f} ms after"
            f" the PUT was answered ({1000 * woke_after:.0f} ms after it was sent)"
        )
    figures = {
        "samples": len(latencies),
        "after_put_answered_s": spread(latencies),
        "after_put_sent_s": spread(from_sent),
    }
    write_report("cross_wake", figures)
    print(f"cross-coordinator wake: {figures}")
