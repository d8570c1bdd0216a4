"""A leader paused past its lease (SIGSTOP) applies nothing once it runs again (SIGCONT).

The proof is read from the database: the PostgreSQL store writes the leader's epoch on
every engine write (``jobs``, ``assignments``, ``events``, ``nodes``), so a row carrying
the old epoch that was not there at the takeover would be a write the fencing let through.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import time
from typing import Any

import asyncpg
import pytest

from coordinator.demo.fleet import wait_for
from coordinator.store.lease import LeaseState
from coordinator.store.postgres import PostgresStore
from shared.errors import StoreError, StoreUnavailable
from tests.faults.harness import ended_running
from tests.ha.harness import HaFleet, active_group, wait_for_group
from tests.pg import pg_store

AGENT_REQUEST_TIMEOUT = 10.0  # agent/client.py: how long a call may hang before failover

# What identifies each table's row and what an engine write changes in it.
ENGINE_ROWS = {
    "jobs": "SELECT name, revision, record::text FROM jobs WHERE epoch = $1",
    "assignments": "SELECT node_id, job, version, generation, assigned_at::text"
    " FROM assignments WHERE epoch = $1",
    "events": "SELECT id, time::text, kind, job, node, new FROM events WHERE epoch = $1",
    "nodes": "SELECT id, record::text, assign_index FROM nodes WHERE epoch = $1",
}


def rows_of_epoch(url: str, epoch: int) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of ``ENGINE_ROWS`` that carries ``epoch``, by table."""

    async def read() -> dict[str, set[tuple[Any, ...]]]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return {
                table: {tuple(row) for row in await conn.fetch(sql, epoch)}
                for table, sql in ENGINE_ROWS.items()
            }
        finally:
            await conn.close()

    return asyncio.run(read())


def log_events(ha: HaFleet, member: int, since: float) -> list[str]:
    """The event names coordinator ``member`` logged from wall time ``since`` on."""
    path = ha.fleet.base_dir / "logs" / f"{ha.fleet.members[member].log_name}.log"
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        stamp = entry.get("timestamp", "")
        if stamp and calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) < since:
            continue
        found.append(str(entry.get("event", "")))
    return found


@pytest.mark.slow
@pytest.mark.integration
def test_a_paused_leader_applies_nothing_after_the_takeover(ha: HaFleet, ha_database: str) -> None:
    """SIGSTOP the leader mid-rollout past its lease, let another take over, SIGCONT it:
    no row carries its epoch that was not there at the takeover, it reports follower, and
    the rollout completes under the new leader."""
    # An agent whose call hangs on the stopped coordinator moves on after its 10 s request
    # timeout, so nodes get a TTL above that here (this test is about fencing).
    ha.ttl = AGENT_REQUEST_TIMEOUT + 5
    ha.fleet.heartbeat_ttl = f"{ha.ttl:g}s"
    ha.start(4)
    version = ha.deploy(ha.spec(min_healthy_time="2s"))
    assert wait_for_group(ha, version, 0) is not None, "the rollout ended before the pause"
    old = ha.fleet.leader()
    old_epoch = ha.epoch(old)
    paused_at = ha.fleet.pause_coordinator(old)
    new = ha.fleet.leader(timeout=30, besides=old)
    new_epoch = ha.epoch(new)
    assert new_epoch > old_epoch
    taken_over = time.time()
    at_takeover = rows_of_epoch(ha_database, old_epoch)
    print(
        f"c{old + 1} (epoch {old_epoch}) paused; c{new + 1} leads with epoch {new_epoch}"
        f" after {taken_over - paused_at:.2f}s; rows of epoch {old_epoch}:"
        f" { {t: len(r) for t, r in at_takeover.items()} }"
    )
    # The new leader moves the rollout on while the old one is stopped: the old one's view
    # of it is stale when it wakes, so its engine has decisions to try.
    group = active_group(ha.rollout_view())
    if group is not None:
        wait_for_group(ha, version, group + 1)
    ha.fleet.resume_coordinator(old)
    wait_for("the old leader to follow", lambda: ha.fleet.role(old) == "follower", 10)
    assert not ended_running(ha, version, timeout=60)
    assert ha.fleet.role(old) == "follower"
    assert ha.fleet.leader(besides=old) == new
    after = rows_of_epoch(ha_database, old_epoch)
    written = {table: sorted(after[table] - at_takeover[table]) for table in ENGINE_ROWS}
    assert not any(written.values()), f"written with epoch {old_epoch} after takeover: {written}"
    events = log_events(ha, old, paused_at)
    print(f"c{old + 1} after SIGCONT logged: {sorted(set(events))}")
    assert "leader_stepped_down" in events
    assert not ha.violations()


async def lead_within(store: PostgresStore, member: str, seconds: float) -> LeaseState:
    """Try for the lease as ``member`` until it is held; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, StoreError):
            state = await asyncio.wait_for(store.try_lease(member, "http://b", 1.0), 0.5)
            if state.held:
                return state
    raise AssertionError(f"{member} did not take the lease within {seconds}s")


async def test_a_leader_stopped_inside_a_write_does_not_hold_up_the_election(
    pg_url: str,
) -> None:
    """A leader stopped in the middle of a fenced write holds the lease row (FOR SHARE)
    until the database ends its session: another member still takes over soon after the
    lease expires, and the stopped write fails when it resumes."""
    async with pg_store(pg_url, "a") as a, pg_store(pg_url, "b") as b:
        lease = await a.try_lease("a", "http://a", 1.0)
        assert lease.held
        began = time.monotonic()
        write = a._tx("an engine write", epoch=lease.epoch)
        await write.__aenter__()  # the process is stopped here, its transaction open
        state = await lead_within(b, "b", 10)
        print(f"b took the lease {time.monotonic() - began:.2f}s after a stopped in its write")
        assert state.epoch > lease.epoch
        with pytest.raises(StoreUnavailable):  # an outage (503): its session is gone
            await write.__aexit__(None, None, None)
