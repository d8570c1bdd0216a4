"""A workload crash loop while its agent is killed with SIGKILL again and again.

One agent runs a version that exits with code 1 after 400 ms, under ``on-failure`` with
``max_restarts = 6``. Meanwhile the agent is killed and started again several times at
seeded random points. Whatever the agent's own restarts, the workload must be started
exactly once more than the restarts its execution reports, and no more often than the
policy allows; then the execution is ``failed`` and stays so.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from coordinator.demo.fleet import wait_for
from tests.faults.events import parse_time
from tests.faults.harness import FaultFleet

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MAX_RESTARTS = 6
AGENT_KILLS = 4
POLICY = {
    "policy": "on-failure",
    "max_restarts": MAX_RESTARTS,
    "window": "5m",
    "delay": "300ms",
    "max_delay": "1500ms",
}


def test_a_crash_loop_counts_every_start_across_agent_kills(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """Starts of the crashing workload = 1 + its reported restarts <= 1 + max_restarts,
    with the agent killed with SIGKILL four times during the loop."""
    node = "n1"
    faults.start(1)
    spec = faults.spec(
        crash_after_ms=400,
        restart=POLICY,
        canary=0,
        waves=1,
        healthy_deadline="2m",
        progress_deadline="3m",
    )
    version = faults.deploy(spec)
    for _ in range(AGENT_KILLS):
        time.sleep(faults.rng.uniform(0.3, 1.5))  # a random point of the loop
        killed_at = time.time()
        faults.fleet.stop(faults.fleet.agents[node], signal.SIGKILL)
        outage = faults.outage_begins(node)
        faults.fleet.start_agent(node)
        wait_for(
            "the agent to report again",
            lambda at=killed_at: parse_time(faults.fleet.nodes()[0]["last_heartbeat"]) > at,
            timeout=30,
        )
        outage[1] = time.time()

    def execution() -> dict[str, Any]:
        found: dict[str, Any] = faults.job_nodes()[node]["execution"] or {}
        return found

    failed = wait_for(
        "the restart policy to give up",
        lambda: (e := execution()).get("state") == "failed" and e,
        timeout=60,
    )
    # Two more heartbeats: a start that was still to come would have been reported by then.
    seen = time.time()
    wait_for(
        "two more heartbeats",
        lambda: parse_time(faults.fleet.nodes()[0]["last_heartbeat"]) > seen + 1.0,
        timeout=30,
    )
    final = execution()
    starts = [s for s in faults.lives() if s.node == node and s.version == version]
    figures.update(
        agent_kills=AGENT_KILLS,
        workload_starts=len(starts),
        reported_restarts=final["restarts"],
        max_restarts=MAX_RESTARTS,
    )
    problems = []
    if len(starts) != 1 + final["restarts"]:
        problems.append(
            f"{len(starts)} starts of the workload but the execution reports"
            f" {final['restarts']} restarts ({final['message']})"
        )
    if final["restarts"] > MAX_RESTARTS or len(starts) > 1 + MAX_RESTARTS:
        problems.append(
            f"max_restarts = {MAX_RESTARTS} not honoured: {len(starts)} starts,"
            f" {final['restarts']} restarts reported"
        )
    if final["state"] != "failed" or final["restarts"] != failed["restarts"]:
        problems.append(f"the failed execution did not stay failed: {failed} -> {final}")
    problems += faults.violations()
    assert not problems, "\n".join(problems)
