"""kill -9 of the leading coordinator in the middle of canary + 3-wave rollouts, 20 times.

Three coordinators share one PostgreSQL database; six agents know all three. Each rollout
(one canary, three waves, 1 s of minimum health) is interrupted up to twice: the leader is
killed after a seeded random delay into the canary or wave 1 (seeded), then into whichever
group runs once the killed coordinator is back; a follower must take over. Each killed
coordinator is started again, so there are three at every kill. The takeover times go to
the HA report (``.ha-report.json``, section ``failover``) for docs/benchmarks.md.

    .venv/bin/pytest tests/ha/test_leader_kill.py -s
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from tests.faults.harness import ended_running
from tests.ha.harness import (
    LEASE_TTL,
    HaFleet,
    active_group,
    spread,
    wait_for_group,
    write_report,
)

# (~3 min on 2 cores; above the suite's 300 s default so a loaded machine fails on the
# kill budget with figures, not on the timeout)
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(420)]

AGENTS = 6
KILLS = 20
KILLS_PER_ROLLOUT = 2
TAKEOVER_WITHIN = 5.0  # seconds from kill -9 to the new leader's engine running (DESIGN §8)
BUDGET = 240.0  # seconds: no new rollout starts after this (a stuck engine must not eat CI)


def membership(view: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The node ids of the rollout's canary and of each wave, as the view shows them."""
    return (
        tuple(n["id"] for n in view["canary"]["nodes"]),
        *(tuple(n["id"] for n in wave["nodes"]) for wave in view["waves"]),
    )


def touched(ha: HaFleet, version: int) -> set[str]:
    """Nodes (by name) whose workload has started ``version``."""
    return {life.node for life in ha.lives() if life.version == version}


def kill_mid_group(ha: HaFleet, version: int, group: int) -> list[str]:
    """Once ``group`` of ``version``'s rollout is being updated, kill the leader; check the
    takeover and that the rollout goes on where it was. What went wrong, as sentences."""
    if wait_for_group(ha, version, group) is None:
        return []  # (it ended before: nothing to interrupt)
    time.sleep(ha.rng.uniform(0.0, 0.6))  # the random kill point within the group: the fault
    for member in range(len(ha.fleet.members)):
        ha.fleet.wait_ready(member=member)  # three coordinators at every kill (restarted)
    before = ha.rollout_view()
    at = active_group(before)
    if before["target_version"] != version or at is None:
        return []
    names = ha.names()
    rollout = ha.rollouts[version]
    allowed = {names[n] for g in rollout.groups[: at + 1] for n in g}
    problems = [
        f"version {version}: {node} started it while group {at} was being updated"
        for node in sorted(touched(ha, version) - allowed)
    ]
    failover = ha.failover()
    print(
        f"kill {len(ha.failovers):2}: v{version} group {at}:"
        f" c{failover.killed + 1} (epoch {failover.old_epoch}) ->"
        f" c{failover.leader + 1} (epoch {failover.new_epoch}) in {failover.seconds:.2f}s"
    )
    if failover.seconds > TAKEOVER_WITHIN:
        problems.append(f"takeover {len(ha.failovers)} took {failover.seconds:.2f}s")
    if failover.new_epoch <= failover.old_epoch:
        problems.append(f"epoch {failover.old_epoch} -> {failover.new_epoch}: not higher")
    after = ha.fleet.api_of(failover.leader).request("GET", "/v1/jobs/web/rollout").body
    now = active_group(after)
    same = (after["target_version"], after["started_at"], membership(after))
    if same != (version, before["started_at"], membership(before)):
        problems.append(f"v{version}: the new leader's rollout is another one: {after}")
    elif now is not None and now < at:
        problems.append(f"v{version}: group {at} was being updated, the new leader is at {now}")
    return problems


def rollout_with_kills(ha: HaFleet) -> list[str]:
    """One rollout of a new version with its kills; it must complete, each member having
    started the version exactly once. The first kill comes in the canary or wave 1 (seeded),
    the next ones in whatever group runs once the killed coordinator is back."""
    version = ha.deploy(ha.spec())
    rollout = ha.rollouts[version]
    problems = []
    group = ha.rng.choice((0, 1))
    for _ in range(KILLS_PER_ROLLOUT):
        if len(ha.failovers) >= KILLS:
            break
        problems += kill_mid_group(ha, version, group)
        group = 0  # (the next kill: wherever the rollout is by then)
    problems += ended_running(ha, version, timeout=60)
    if problems:
        return problems
    ha.wait_all_run(version)
    names = ha.names()
    starts = collections.Counter(life.node for life in ha.lives() if life.version == version)
    for node in rollout.members:
        if starts[names[node]] != 1:
            problems.append(f"{names[node]} started v{version} {starts[names[node]]} times")
    return problems


def test_kill_9_of_the_leader_mid_rollout_20_times(ha: HaFleet) -> None:
    """Each of 20 leader kills mid-rollout: another coordinator leads with a higher epoch
    within 5 s, the rollout goes on from the same wave and completes, every node starts the
    new version once, and no node outside the wave being updated is touched."""
    ha.start(AGENTS)
    problems: list[str] = []
    began = time.monotonic()
    while len(ha.failovers) < KILLS and time.monotonic() - began < BUDGET:
        problems += rollout_with_kills(ha)
        if problems:
            break  # a rollout that went wrong leaves nothing sound to go on from
    problems += ha.violations()
    seconds = [f.seconds for f in ha.failovers]
    if seconds:
        figures = {
            "kills": len(seconds),
            "rollouts": len(ha.rollouts),
            "agents": AGENTS,
            "coordinators": len(ha.fleet.members),
            "lease_ttl": LEASE_TTL,
            "heartbeat": ha.heartbeat,
            "takeover_s": spread(seconds),
            "takeovers_s": [round(s, 3) for s in seconds],
            "test_seconds": round(time.monotonic() - began, 1),
        }
        write_report("failover", figures)
        print(f"failover over {len(seconds)} kills: {figures['takeover_s']}")
    if len(ha.failovers) < KILLS:
        problems.append(f"only {len(ha.failovers)} kills were made in {BUDGET:.0f}s")
    assert not problems, "\n".join(problems)
