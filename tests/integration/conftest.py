"""Integration fixtures: a real coordinator process and real agent processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.demo.fleet import LocalFleet
from tests.helpers import JOBS_AS_PYTEST_USER


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A coordinator (1 s heartbeats; a node is down after 10 s of silence, so a loaded
    machine does not make one look lost) with no agents yet; everything is stopped afterwards."""
    fleet = LocalFleet(
        tmp_path, heartbeat_interval="1s", heartbeat_ttl="10s", policy=JOBS_AS_PYTEST_USER
    )
    try:
        yield fleet
    finally:
        fleet.close()
        assert not fleet.workload_processes(), "a workload outlived the fleet"


def print_logs_on_failure(fleet: LocalFleet) -> str:
    out = []
    for path in sorted((fleet.base_dir / "logs").glob("*.log")):
        out.append(f"==> {path.name}\n{path.read_text()[-3000:]}")
    return "\n".join(out)
