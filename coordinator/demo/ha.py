"""``fleetwave demo --ha``: three coordinators on one PostgreSQL database lose their leader.

The demo creates its own database on a local PostgreSQL server, starts three coordinators
sharing it and agents that know all three, rolls out version 1 at once, then version 2
through a canary and three waves spread by zone; in the middle of wave 2 it kills the
leader with SIGKILL and narrates the takeover: who leads now, with which epoch, how long
it took, and that the same rollout goes on from the same wave. The killed coordinator is
started again and rejoins as a follower. Everything it started is stopped at the end, and
its database dropped, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import click

from coordinator.cli_jobs import render_status
from coordinator.client import ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, free_port
from coordinator.demo.runner import (
    JOB,
    ZONES,
    _on_signal,
    _say,
    _show_answers,
    _show_logs,
    _signals_ignored,
    _Stopped,
    demo_policy,
    demo_spec,
)
from coordinator.store.pg_errors import describe, redact

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
"""Where ``fleetwave demo --ha`` creates its database unless told (a local trust login)."""
NOT_YET = "0001-01-01T00:00:00Z"
"""A timestamp not set yet, as the API writes it (``completed_at`` of a running rollout)."""
WAVES = 3
KILL_IN_WAVE = 2


class DemoDatabaseError(Exception):
    """The PostgreSQL server cannot be reached, or refuses to create the demo's database."""


def database_url(server: str, name: str) -> str:
    """``server``'s URL with database ``name`` (user, host, port and parameters kept)."""
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(server: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(server, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise DemoDatabaseError(
            f"cannot reach PostgreSQL at {redact(server)}: {describe(exc)}.\n"
            "The HA demo needs a PostgreSQL server where it may create a database: start one"
            " (Debian: pg_ctlcluster <version> main start), or name another with"
            " --database-url or FLEETWAVE_DEMO_PG."
        ) from None


async def _create_database(server: str, name: str) -> None:
    conn = await _admin(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise DemoDatabaseError(
            f"PostgreSQL at {redact(server)} refused to create database {name}: {describe(exc)}"
        ) from None
    finally:
        await conn.close()


async def _drop_database(server: str, name: str) -> None:
    conn = await _admin(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run_ha_demo(server: str = DEFAULT_SERVER, agents: int = 9, keep: bool = False) -> int:
    """Run the HA demo against ``server``; the process exit code. Everything started is
    stopped at the end and the demo's database dropped."""
    name = f"fleetwave_demo_{secrets.token_hex(4)}"
    try:
        asyncio.run(_create_database(server, name))
    except DemoDatabaseError as exc:
        click.echo(f"Demo failed: {exc}", err=True)
        return 1
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="fleetwave-demo-ha-") as tmp:
            fleet = LocalFleet(
                Path(tmp),
                heartbeat_interval="1s",
                policy=demo_policy(sys.executable),
                database_url=database_url(server, name),
                coordinators=3,
            )
            _say(f"Created database {name} on {redact(server)}")
            try:
                return _run(fleet, agents, keep)
            except _Stopped as exc:
                click.echo(f"\nInterrupted ({exc}); stopping everything the demo started.")
                return 128 + exc.signum
            except (ApiError, TimeoutError, RuntimeError) as exc:
                click.echo(f"Demo failed: {exc}", err=True)
                _show_logs(fleet)
                return 1
            finally:
                with _signals_ignored():
                    fleet.close()
                    click.echo("Stopped the coordinators, the agents and their workloads.")
                    try:
                        asyncio.run(_drop_database(server, name))
                        click.echo(f"Dropped database {name}.")
                    except (DemoDatabaseError, asyncpg.PostgresError) as exc:
                        click.echo(f"Could not drop database {name}: {exc}", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _member(fleet: LocalFleet, index: int) -> str:
    return fleet.members[index].member_id


def _run(fleet: LocalFleet, agents: int, keep: bool) -> int:
    started = time.monotonic()
    _say("Starting 3 coordinators on that one database")
    leader = fleet.start_coordinators()
    for index, url in enumerate(fleet.urls):
        click.echo(f"  {_member(fleet, index)}: {url}  (dashboard: {url}/ui/#token={ADMIN_TOKEN})")
    epoch = fleet.cluster(leader)["epoch"]
    followers = [_member(fleet, i) for i in range(len(fleet.members)) if i != leader]
    click.echo(
        f"  {_member(fleet, leader)} leads (epoch {epoch}): it alone runs the rollout engine."
        f" {' and '.join(followers)} follow; every one serves the API and the agents."
    )
    ports = {}
    for i in range(agents):
        node = f"node-{i + 1}"
        ports[node] = free_port()
        fleet.start_agent(node, {"zone": ZONES[i % len(ZONES)], "port": str(ports[node])})
    _say(f"Starting {agents} agents over {len(ZONES)} zones; each knows all 3 coordinators")
    fleet.wait_nodes_ready(agents, timeout=60)

    _say("\nRolling out version 1: deployed to every node at once")
    _put(fleet, demo_spec(fleet.python, "hello from version 1"), {"canary": 0, "waves": 1})
    fleet.wait_state(JOB, "running", timeout=120)
    _show_answers(ports)

    _say(
        f"\nRolling out version 2: one canary, then {WAVES} waves spread across zones;"
        f" the leader is killed in wave {KILL_IN_WAVE}"
    )
    rollout = {"canary": 1, "spread_by": "zone", "waves": WAVES}
    previous = fleet.api.request("GET", f"/v1/jobs/{JOB}/rollout").body["started_at"]
    version = _put(fleet, demo_spec(fleet.python, "hello from version 2"), rollout)
    story = _Watch(fleet, version, previous, started=time.monotonic())
    story.run()
    _show_answers(ports)

    _say("\nThe cluster now (GET /v1/cluster):")
    leader = fleet.leader()
    view = fleet.cluster(leader)
    click.echo(f"  epoch {view['epoch']}, leader {view['leader']['id']}")
    for member in view["members"]:
        click.echo(f"  {member['id']:<4} {member['role']:<9} {member['address']}")
    status = fleet.status(JOB)
    _say("\nFinal JobStatus:")
    click.echo(render_status(JOB, status))
    if story.takeover is not None:
        click.echo(
            f"\nThe leader died in wave {KILL_IN_WAVE} of {WAVES}; {story.takeover.leader} took"
            f" over with epoch {story.takeover.epoch} {story.takeover.seconds:.1f}s later and"
            " finished the same rollout."
        )
    _say(f"\nDemo finished in {time.monotonic() - started:.0f}s.")
    ok = status["state"]["state_type"] == "running" and story.takeover is not None
    if keep and ok:
        _say("\nEverything keeps running. Press Ctrl-C to stop.")
        click.echo(f"  export FLEETWAVE_ADDR={','.join(fleet.urls)} FLEETWAVE_TOKEN={ADMIN_TOKEN}")
        while True:
            time.sleep(3600)
    return 0 if ok else 1


def _put(fleet: LocalFleet, spec: dict[str, Any], rollout: dict[str, Any]) -> int:
    spec["rollout"].update(rollout)
    body = fleet.api.request("PUT", f"/v1/jobs/{JOB}", spec).body
    click.echo(f"  PUT /v1/jobs/{JOB}: version {body['version']} (revision {body['revision']})")
    return int(body["version"])


@dataclass(frozen=True)
class Takeover:
    killed: str
    leader: str
    epoch: int
    seconds: float


class _Watch:
    """Narrates the rollout of ``version`` and kills the leader in wave ``KILL_IN_WAVE``."""

    def __init__(self, fleet: LocalFleet, version: int, previous: str, started: float) -> None:
        self.fleet = fleet
        self.version = version
        self.previous = previous  # when the rollout before began
        self.started = started
        self.takeover: Takeover | None = None
        self._said = ""
        self._stage = ""
        self._stage_since = 0.0
        self._killed: int | None = None
        self._rejoined = False

    def say(self, text: str) -> None:
        click.echo(f"  [{time.monotonic() - self.started:5.1f}s] {text}")

    def run(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self._view()
            if view is not None and self._is_mine(view) and self._progress(view):
                return
            self._check_rejoined()
            time.sleep(0.1)  # the narration's refresh rate, not a wait for a condition
        raise TimeoutError(f"the rollout of version {self.version} did not end in {timeout:.0f}s")

    def _is_mine(self, view: dict[str, Any]) -> bool:
        """Whether ``view`` is our rollout (not yet the one before, still shown at first)."""
        return bool(view["target_version"] == self.version and view["started_at"] != self.previous)

    def _view(self) -> dict[str, Any] | None:
        """The rollout as any coordinator that answers shows it (the database is shared)."""
        for index, member in enumerate(self.fleet.members):
            if member.running:
                try:
                    view: dict[str, Any] = (
                        self.fleet.api_of(index, 2).request("GET", f"/v1/jobs/{JOB}/rollout").body
                    )
                    return view
                except ApiError:
                    continue
        return None

    def _progress(self, view: dict[str, Any]) -> bool:
        """Say what changed; kill the leader once wave KILL_IN_WAVE runs. True once over."""
        nodes = [*view["canary"]["nodes"], *(n for w in view["waves"] for n in w["nodes"])]
        updated = sum(n["result"] == "updated" for n in nodes)
        stage = _stage(view)
        line = f"{stage}: {updated}/{len(nodes)} nodes on version {self.version}"
        if line != self._said:
            self._said = line
            self.say(line)
        if stage != self._stage:
            self._stage, self._stage_since = stage, time.monotonic()
        if view["completed_at"] != NOT_YET:
            return True
        in_wave = stage.startswith(f"wave {KILL_IN_WAVE} ")
        if self._killed is None and in_wave and time.monotonic() - self._stage_since > 1:
            self._kill_leader(view)  # a second into the wave: its nodes are being updated
        return False

    def _kill_leader(self, before: dict[str, Any]) -> None:
        fleet = self.fleet
        old = fleet.leader()
        proc = fleet.members[old].proc
        pid = proc.popen.pid if proc is not None else 0
        old_epoch = fleet.cluster(old)["epoch"]
        click.secho(
            f"  ** kill -9 {_member(fleet, old)}, the leader (pid {pid}, epoch {old_epoch}),"
            f" in the middle of wave {KILL_IN_WAVE} **",
            fg="red",
            bold=True,
        )
        killed_at = time.monotonic()
        fleet.kill_coordinator(old)
        self._killed = old
        self.say("the other two wait for its lease to expire (--lease-ttl, 3s)...")
        new = fleet.leader(timeout=30, besides=old)
        seconds = time.monotonic() - killed_at
        epoch = int(fleet.cluster(new)["epoch"])
        self.takeover = Takeover(_member(fleet, old), _member(fleet, new), epoch, seconds)
        click.secho(
            f"  ** {_member(fleet, new)} took over as leader with epoch {epoch},"
            f" {seconds:.1f}s after the kill **",
            fg="green",
            bold=True,
        )
        after = fleet.api_of(new).request("GET", f"/v1/jobs/{JOB}/rollout").body
        same = after["started_at"] == before["started_at"] and after["current_wave"] >= 1
        self.say(
            f"{_member(fleet, new)} goes on with the same rollout (started {after['started_at']}),"
            f" {_stage(after)}" + ("" if same else " -- NOT the same rollout!")
        )
        fleet.start_coordinator(wait=False, member=old)
        self.say(f"{_member(fleet, old)} is started again on its data dir")

    def _check_rejoined(self) -> None:
        if self._killed is None or self._rejoined:
            return
        if self.fleet.role(self._killed, timeout=0.5) == "follower":
            self._rejoined = True
            self.say(f"{_member(self.fleet, self._killed)} is back, as a follower")


def _stage(view: dict[str, Any]) -> str:
    """Where the rollout is: the canary, wave N of M, or done."""
    if view["completed_at"] != NOT_YET:
        return "done"
    if view["canary"]["nodes"] and view["canary"]["state"] == "active":
        return "canary"
    active = [w["wave"] for w in view["waves"] if w["state"] == "active"]
    if active:
        return f"wave {active[0]} of {len(view['waves'])}"
    return "starting"
