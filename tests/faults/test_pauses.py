"""SIGSTOP/SIGCONT of the coordinator and of single agents during rollouts.

Five agents, one canary and three waves, heartbeats every 0.5 s and a node down after
4 s of silence. A paused coordinator hears nothing while it is stopped: when it
continues it must not blame the nodes for its own pause (no node marked down, no good
version failed). A paused agent is silent for real: shorter than the TTL nothing may
happen; past the TTL the rollout may skip it (on_unreachable = skip), but only
explicitly (a ``node_skipped`` event), and it catches up when it continues.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from coordinator.demo.fleet import wait_for
from tests.faults.harness import FaultFleet, ended_running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

AGENTS = 5


def test_a_paused_coordinator_blames_no_node(faults: FaultFleet, figures: dict[str, Any]) -> None:
    """A coordinator stopped for 5 s, and for three TTLs, at a random point of a rollout
    continues it: no node marked down or failed, gates held, the rollout completes."""
    faults.start(AGENTS)
    problems = ended_running(faults, faults.deploy(faults.spec()))
    for seconds in (5.0, 3 * faults.ttl):
        version = faults.deploy(faults.spec())
        time.sleep(faults.rng.uniform(0.3, 3.0))  # a random point of the rollout
        faults.pause(faults.coordinator, seconds)
        problems += ended_running(faults, version)
    problems += faults.violations()
    assert not problems, "\n".join(problems)


def test_a_paused_agent_is_waited_for_or_skipped_explicitly(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """An agent stopped for 1 s changes nothing; one stopped past the TTL is skipped with a
    node_skipped event (never failed) and runs the new version once it continues."""
    faults.start(AGENTS)
    problems = ended_running(faults, faults.deploy(faults.spec()))
    names = faults.names()

    version = faults.deploy(faults.spec())
    short = names[faults.rng.choice(faults.rollouts[version].waves[1])]
    time.sleep(faults.rng.uniform(0.2, 2.0))
    faults.pause(faults.fleet.agents[short], 1.0, node=short)
    problems += ended_running(faults, version)
    for event in faults.segment(version).events:
        if names.get(event.node) == short and event.kind in ("node_skipped", "node_status"):
            problems.append(f"a 1 s pause of {short}'s agent made a difference: {event}")

    version = faults.deploy(faults.spec())
    long = names[faults.rng.choice(faults.rollouts[version].waves[-1])]
    time.sleep(faults.rng.uniform(0.0, 1.0))
    outage = faults.freeze_agent(long)
    try:
        wait_for(
            f"the rollout of version {version} to get past {long}, stopped",
            lambda: faults.rollout_ended(version),
            timeout=45,
        )
        # The fault lasts two TTLs at least, also when the rollout got past it sooner.
        time.sleep(max(0.0, (outage[0] or 0) + 2 * faults.ttl - time.time()))
    except TimeoutError as exc:
        problems.append(f"{exc}: a node down past the TTL was not skipped (on_unreachable=skip)")
    finally:
        faults.thaw_agent(long, outage)
    # Completed while a member is down: degraded until it is back (max_failed_nodes = 0).
    problems += ended_running(faults, version, also=("degraded",))
    long_id = next(i for i, n in names.items() if n == long)
    if faults.segment(version).cleared(long_id) is None:
        problems.append(f"{long} was stopped past the TTL; it neither passed nor was skipped")
    try:
        faults.wait_all_run(version)
        faults.fleet.wait_state("web", "running", timeout=30)
    except TimeoutError as exc:
        problems.append(f"{long} did not catch up after it continued: {exc}")
    problems += faults.violations()
    assert not problems, "\n".join(problems)
