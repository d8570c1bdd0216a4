"""kill -9 of the coordinator at random points of canary + 3-wave rollouts and rollbacks.

Five agents; each rollout has one canary and three waves. Good and broken versions
alternate in a seeded order; a broken version answers 500 on every node, so its canary
fails its health check and the update must be rolled back by itself. While a rollout
runs, the coordinator is killed with SIGKILL after a seeded random delay and started
again on the same data dir and port, until the rollout is over (at most 8 kills each),
and rollouts follow one another until at least 30 kills were made.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.harness import FaultFleet, ended_running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

AGENTS = 5
MIN_KILLS = 30
MAX_KILLS_PER_ROLLOUT = 8
MAX_ROLLOUTS = 14
BUDGET = 150.0  # seconds: no new rollout starts after this (a stuck engine must not eat CI)
RESUME_WITHIN = 1.0  # seconds from a restarted coordinator being ready to its first evaluation


def run_with_kills(faults: FaultFleet, spec: dict[str, Any]) -> tuple[int, list[str]]:
    """Deploy ``spec`` and kill the coordinator at random points until its rollout ends."""
    version = faults.deploy(spec)
    kills = 0
    while kills < MAX_KILLS_PER_ROLLOUT and not faults.rollout_ended_now(version):
        time.sleep(faults.rng.uniform(0.1, 2.0))  # the random kill point is the fault itself
        faults.restart_coordinator(faults.kill_coordinator())
        kills += 1
    return version, ended_running(faults, version)


def test_kill_9_of_the_coordinator_never_breaks_a_rollout(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """Rollouts survive 30+ coordinator kills: gates hold, no healthy node fails, every
    restart resumes within 1 s, good versions complete and broken ones roll back."""
    faults.start(AGENTS)
    problems: list[str] = []
    pattern = [False, True, False, False, True, False]
    faults.rng.shuffle(pattern)
    stable = 0
    began = time.monotonic()
    try:
        for i in range(MAX_ROLLOUTS):
            if time.monotonic() - began > BUDGET:
                break
            broken = i > 0 and pattern[(i - 1) % len(pattern)]
            version, outcome = run_with_kills(faults, faults.spec(broken=broken))
            problems += outcome
            if outcome:
                break  # a rollout that went wrong leaves nothing sound to go on from
            stable = stable if broken else version
            faults.wait_all_run(stable)
            enough_broken = len(faults.broken) >= 2
            if len(faults.restarts) >= MIN_KILLS and enough_broken and i >= 4:
                break
    except TimeoutError as exc:
        problems.append(f"stuck: {exc}")
    problems += faults.violations()
    figures.update(faults.restart_figures())
    figures["broken_versions"] = len(faults.broken)
    figures["first_event_after_ready_s"] = faults.progress_after_restarts()
    slow = [
        f"{r.resumed_after:.2f}s" if r.resumed_after is not None else ">3s"
        for r in faults.restarts
        if r.resumed_after is None or r.resumed_after > RESUME_WITHIN
    ]
    if slow:
        problems.append(
            f"{len(slow)} of {len(faults.restarts)} restarts took longer than"
            f" {RESUME_WITHIN}s from ready to the first engine evaluation: {slow}"
        )
    if len(faults.restarts) < MIN_KILLS:
        problems.append(f"only {len(faults.restarts)} kills were made in the time budget")
    assert not problems, "\n".join(problems)
