"""The heartbeat budget with a real coordinator process on a real SQLite file: the interval
it hands out is sized for the stored fleet from its start, and /metrics says so."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from coordinator.client import ApiClient
from coordinator.demo.fleet import JOIN_TOKEN, LocalFleet
from tests.promtext import parse

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUDGET = {"FLEETWAVE_HEARTBEAT_BUDGET": "0.5"}
"""Half a heartbeat per second: 20 nodes make a 40 s interval."""


def register(fleet: LocalFleet, name: str) -> dict[str, Any]:
    """The register answer for a new node ``name`` (no agent behind it)."""
    body = {"join_token": JOIN_TOKEN, "name": name}
    answer: dict[str, Any] = (
        ApiClient(fleet.url, "", timeout=10).request("POST", "/v1/agent/register", body).body
    )
    return answer


def test_a_restarted_coordinator_hands_out_the_interval_for_the_stored_fleet(
    fleet: LocalFleet,
) -> None:
    """20 nodes registered on a 0.5/s budget (1 s configured): after a restart the next
    registration already gets 40 s plus at most 10 % jitter, and the gauges show the
    interval, the TTL (3 of the longest) and the offered rate."""
    fleet.start_coordinator(env=BUDGET)
    assert 1.0 <= register(fleet, "first")["heartbeat_interval"] <= 1.1
    for index in range(19):
        register(fleet, f"node-{index}")
    proc = fleet.members[0].proc
    assert proc is not None
    fleet.stop(proc)
    fleet.start_coordinator(env=BUDGET)
    assert 40.0 <= register(fleet, "late")["heartbeat_interval"] <= 44.0
    with urllib.request.urlopen(f"{fleet.url}/metrics", timeout=10) as resp:
        metrics = parse(resp.read().decode())
    assert metrics.value("fleetwave_heartbeat_interval_seconds") == 40.0
    assert metrics.value("fleetwave_heartbeat_ttl_seconds") == 132.0
    assert metrics.value("fleetwave_heartbeat_offered_rate") == 0.5
    assert metrics.value("fleetwave_heartbeat_budget") == 0.5
