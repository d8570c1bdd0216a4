"""High-availability benchmarks: several coordinators on one PostgreSQL database.

``python -m bench.run ha`` (see docs/benchmarks.md, "High availability"):

- ``failover``: ``kill -9`` of the leader, over and over, until a survivor's engine runs;
- ``wake``: a change made on coordinator A wakes a long-poll held on coordinator B, against
  the same wake on one coordinator (local) and on a single SQLite coordinator;
- ``fleet``: N simulated agents spread over 3 coordinators on PostgreSQL, against the same
  N on one SQLite coordinator, in the same run (held fleet, rollout, reaction).

Each scenario creates its own database on the server at ``FLEETWAVE_BENCH_PG`` (default:
trust auth as ``postgres`` on 127.0.0.1:5432) and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from bench.harness import Admin, Server, coordinator, job_spec
from bench.scenarios import rollout_and_reaction
from bench.simulator import SimConfig, SimFleet, percentile
from coordinator.demo.fleet import JOIN_TOKEN

PG_SERVER = os.environ.get("FLEETWAVE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MS = 1000.0
PROBE_INTERVAL = 0.02
"""How often the failover scenario asks the survivors for their role (its resolution)."""


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q) * MS, 1)


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": _ms(values, 50), "p99": _ms(values, 99), "max": _ms(values, 100)}


# --- a database and coordinators on it ------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new database on PG_SERVER, dropped (its connections ended) on exit."""
    admin = await asyncpg.connect(PG_SERVER, timeout=5)
    name = f"fw_bench_{secrets.token_hex(4)}"
    base = PG_SERVER.rpartition("/")[0]
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{base}/{name}"
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def pg_coordinators(workdir: Path, url: str, count: int = 3, lease_ttl: str = "3s") -> list[Server]:
    """``count`` coordinators (not started) sharing the database at ``url``."""
    servers = []
    for i in range(count):
        member = f"c{i + 1}"
        server = coordinator(
            workdir / member, "--database", url, "--member-id", member, "--lease-ttl", lease_ttl
        )
        server.name = member
        servers.append(server)
    return servers


def database_processes(url: str) -> Callable[[], list[psutil.Process]]:
    """The PostgreSQL server's processes working for ``url``'s database: its backends and the
    server's background writers (shared with any other database on the server)."""
    database = url.rpartition("/")[2]

    def processes() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] != "postgres" and not cmdline.startswith("postgres"):
                continue
            backend = "127.0.0.1(" in cmdline or "[local]" in cmdline
            if not backend or f" {database} " in cmdline:
                found.append(proc)
        return found

    return processes


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[list[Server]]:
    try:
        for server in servers:
            server.start("/readyz")
        yield list(servers)
    finally:
        for server in servers:
            server.close()


async def role(session: aiohttp.ClientSession, server: Server) -> str | None:
    """What ``/readyz`` says this coordinator is (None: not ready, or not answering)."""
    try:
        async with session.get(server.url + "/readyz", timeout=aiohttp.ClientTimeout(1)) as resp:
            if resp.status != 200:
                return None
            return str((await resp.json())["role"])
    except (aiohttp.ClientError, TimeoutError):
        return None


async def sole_leader(
    session: aiohttp.ClientSession, servers: Sequence[Server], deadline: float = 60.0
) -> Server:
    """The leader, once every server is ready and exactly one leads."""
    async with asyncio.timeout(deadline):
        while True:
            roles = await asyncio.gather(*(role(session, s) for s in servers))
            if None not in roles and roles.count("leader") == 1:
                return servers[roles.index("leader")]
            await asyncio.sleep(0.1)


# --- failover ---------------------------------------------------------------------------


async def failover(workdir: Path, *, kills: int, lease_ttl: float, seed: int = 1) -> dict[str, Any]:
    """``kill -9`` the leader of 3 coordinators ``kills`` times; each time, how long until a
    survivor's engine runs: by its log (``leader_elected``, the moment it starts the engine)
    and by its ``/readyz`` (role leader, probed every PROBE_INTERVAL). The killed one is
    started again (same member id) before the next kill, so there are always 3."""
    rng = random.Random(seed)
    ttl = f"{lease_ttl:g}s"
    by_log: list[float] = []
    by_probe: list[float] = []
    epochs: list[int] = []
    async with fresh_database() as url:
        servers = pg_coordinators(workdir / f"failover-{ttl}", url, 3, ttl)
        with running(servers):
            async with aiohttp.ClientSession() as session:
                for _ in range(kills):
                    old = await sole_leader(session, servers)
                    # A random phase against the lease renewals (every ttl/3), which decide
                    # how much of the lease is left at the kill.
                    await asyncio.sleep(rng.uniform(0.5, 0.5 + lease_ttl))
                    survivors = [s for s in servers if s is not old]
                    assert old.popen is not None
                    killed_wall, killed = time.time(), time.monotonic()
                    old.popen.kill()
                    new = await _first_leader(session, survivors)
                    by_probe.append(time.monotonic() - killed)
                    elected = _elected_after(new.log_path, killed_wall)
                    by_log.append(elected - killed_wall)
                    epochs.append(await _epoch(session, new))
                    old.popen.wait(10)
                    old.start("/readyz")  # back as a follower
    return {
        "coordinators": 3,
        "lease_ttl_s": lease_ttl,
        "kills": kills,
        "engine_started_ms": _summary(by_log),
        "readyz_leader_ms": _summary(by_probe),
        "probe_interval_ms": PROBE_INTERVAL * MS,
        "epochs": epochs,
        "epochs_increase": all(b > a for a, b in itertools.pairwise(epochs)),
        "samples_ms": [round(v * MS) for v in by_log],
        "target_ms": 5000,
    }


async def _first_leader(
    session: aiohttp.ClientSession, servers: Sequence[Server], deadline: float = 30.0
) -> Server:
    async with asyncio.timeout(deadline):
        while True:
            roles = await asyncio.gather(*(role(session, s) for s in servers))
            if "leader" in roles:
                return servers[roles.index("leader")]
            await asyncio.sleep(PROBE_INTERVAL)


def _elected_after(log_path: Path, after: float) -> float:
    """Wall time of the first ``leader_elected`` line in a JSON log at or after ``after``."""
    for line in log_path.read_text(errors="replace").splitlines():
        if '"leader_elected"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            at = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
            if at >= after:
                return at
    raise RuntimeError(f"no leader_elected after the kill in {log_path}")


async def _epoch(session: aiohttp.ClientSession, server: Server) -> int:
    admin = Admin(server.url, session)
    return int((await admin.call("GET", "/v1/cluster"))["epoch"])


# --- cross-coordinator wake ---------------------------------------------------------------


async def wake(workdir: Path, *, samples: int) -> dict[str, Any]:
    """How long a change takes to wake a long-poll, by where the change and the poll are:

    - ``cross``: change on follower A, poll held on follower B (3 coordinators, PostgreSQL);
    - ``local``: change and poll on the same follower B (the baseline of the same cluster);
    - ``sqlite``: change and poll on one SQLite coordinator.

    Two long-polls: a job status blocking query (``?index=N``) woken by a ``PUT`` of the
    job (a new version of a job that targets no node), and a simulated agent's assignments
    long-poll woken by a ``restart`` of its job (an operator action: its plan writes the new
    assignment). Latency: from sending the change to the long-poll's answer; the three kinds
    are interleaved, sample by sample, so they see the same machine.
    """
    async with fresh_database() as url:
        pg = pg_coordinators(workdir / "wake", url, 3)
        sqlite = coordinator(workdir / "wake" / "sqlite")
        with running([*pg, sqlite]):
            async with aiohttp.ClientSession() as session:
                leader = await sole_leader(session, pg)
                a, b = (s for s in pg if s is not leader)
                pairs = {"cross": (a, b), "local": (b, b), "sqlite": (sqlite, sqlite)}
                status = await _status_wakes(session, pairs, samples)
                agent = await _agent_wakes(session, pairs, samples)
    result: dict[str, Any] = {"samples_each": samples, "target_ms": 250}
    for what, timed in (("job_status", status), ("agent_assignments", agent)):
        wakes = {kind: [w for w, _ in pairs] for kind, pairs in timed.items()}
        result[what] = {kind: _summary(values) for kind, values in wakes.items()}
        result[what]["change_answered_ms"] = {
            kind: _summary([a for _, a in pairs]) for kind, pairs in timed.items()
        }
        cross, local = wakes["cross"], wakes["local"]
        result[what]["cross_to_local_ratio"] = {
            q: round(percentile(cross, n) / percentile(local, n), 2)
            for q, n in (("p50", 50), ("p99", 99))
        }
    return result


Pairs = dict[str, tuple[Server, Server]]
Timing = tuple[float, float]
"""Seconds from sending the change to the long-poll's answer, and to the change's own."""


async def _interleaved(
    pairs: Pairs, samples: int, sample: Callable[[str, Server, Server, int], Awaitable[Timing]]
) -> dict[str, list[Timing]]:
    kinds = list(pairs)
    wakes: dict[str, list[Timing]] = {kind: [] for kind in kinds}
    for i in range(samples):
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            change_on, poll_on = pairs[kind]
            wakes[kind].append(await sample(kind, change_on, poll_on, i))
    return wakes


async def _status_wakes(
    session: aiohttp.ClientSession, pairs: Pairs, samples: int
) -> dict[str, list[Timing]]:
    def spec(marker: str) -> dict[str, Any]:
        return job_spec("wake", marker, canary=0, waves=1, selector={"bench": "nothing"})

    for change_on, _ in pairs.values():
        await Admin(change_on.url, session).put_job(spec("start"))
    for change_on, _ in pairs.values():
        await _settled(Admin(change_on.url, session), "wake")

    async def sample(kind: str, change_on: Server, poll_on: Server, i: int) -> Timing:
        poller, changer = Admin(poll_on.url, session), Admin(change_on.url, session)
        revision = int((await poller.status("wake"))["revision"])
        woke = 0.0

        async def poll() -> int:
            nonlocal woke
            path = f"/v1/jobs/wake/status?index={revision}&wait=20s"
            data = await poller.call("GET", path)
            woke = time.monotonic()
            return int(data["revision"])

        task = asyncio.create_task(poll())
        await asyncio.sleep(0.1)  # the request is held by now (a held poll answers nothing)
        if task.done():
            raise RuntimeError(f"the {kind} long-poll answered before the change: {task.result()}")
        sent = time.monotonic()
        await changer.put_job(spec(f"{kind}-{i}"))
        answered = time.monotonic()
        if await asyncio.wait_for(task, 20) <= revision:
            raise RuntimeError(f"the {kind} long-poll answered without a change")
        await _settled(changer, "wake")
        return woke - sent, answered - sent

    return await _interleaved(pairs, samples, sample)


async def _settled(admin: Admin, job: str) -> None:
    """Until the engine has seen the job's new version (which waits, queued: it targets no
    node) and wrote its last revision for it."""
    status = await admin.wait_state(job, {"queued"}, deadline=30)
    while True:
        await asyncio.sleep(0.1)
        again = await admin.status(job)
        if again["revision"] == status["revision"]:
            return
        status = again


async def _agent_wakes(
    session: aiohttp.ClientSession, pairs: Pairs, samples: int
) -> dict[str, list[Timing]]:
    # One simulated agent per database, long-polling the coordinator the polls are held on.
    poll_urls = {poll_on.url for _, poll_on in pairs.values()}
    fleets = {
        url: SimFleet(
            SimConfig(url=url, join_token=JOIN_TOKEN, nodes=1, name_prefix="wake", poll_wait=30)
        )
        for url in poll_urls
    }
    job = job_spec("agent-wake", "v1", canary=0, waves=1, min_healthy_time="0s")
    async with contextlib.AsyncExitStack() as stack:
        for fleet in fleets.values():
            await stack.enter_async_context(fleet)
            await fleet.start()
            await fleet.wait_reported(deadline=30)
        for url in poll_urls:
            admin = Admin(url, session)
            await admin.put_job(job)
            await admin.wait_state("agent-wake", {"running"}, deadline=60)

        async def sample(kind: str, change_on: Server, poll_on: Server, i: int) -> Timing:
            fleet = fleets[poll_on.url]
            node, log = fleet.nodes[0], fleet.log.assignments
            generation = node.executions["agent-wake"].generation
            seen = len(log)
            changer = Admin(change_on.url, session)
            sent = time.monotonic()
            await changer.call("POST", "/v1/jobs/agent-wake/restart")
            answered = time.monotonic()
            async with asyncio.timeout(20):
                while True:
                    fleet.arrived.clear()
                    if any(g > generation for *_, g in log[seen:]):
                        break
                    await fleet.arrived.wait()
            received = next(at for at, *_, g in log[seen:] if g > generation)
            await changer.wait_state("agent-wake", {"running"}, deadline=60)
            return received - sent, answered - sent

        return await _interleaved(pairs, samples, sample)
    raise AssertionError("unreachable")  # for mypy: the exit stack does not swallow


# --- a large fleet on PostgreSQL against SQLite -----------------------------------------


async def fleet(
    workdir: Path,
    *,
    nodes: int,
    hold_seconds: float,
    min_healthy: float,
    waves: int,
    reaction_trials: int,
    sqlite: bool = True,
) -> dict[str, Any]:
    """The fleet scenario (bench.scenarios.rollout_and_reaction) with ``nodes`` agents spread
    over 3 coordinators on PostgreSQL, then on one SQLite coordinator."""
    params: dict[str, Any] = {
        "hold_seconds": hold_seconds,
        "min_healthy": min_healthy,
        "waves": waves,
        "reaction_trials": reaction_trials,
    }
    result: dict[str, Any] = {"nodes": nodes}
    async with fresh_database() as url:
        servers = pg_coordinators(workdir / "fleet-pg", url, 3)
        result["postgresql_3"] = await rollout_and_reaction(
            workdir / "fleet-pg",
            nodes,
            servers=servers,
            database=database_processes(url),
            **params,
        )
        result["postgresql_3"]["leader_elections"] = sum(
            s.log_path.read_text(errors="replace").count('"leader_elected"') for s in servers
        )
    if sqlite:
        result["sqlite_1"] = await rollout_and_reaction(workdir / "fleet-sqlite", nodes, **params)
        result["ratio_pg_to_sqlite"] = _fleet_ratios(result["postgresql_3"], result["sqlite_1"])
    return result


def _fleet_ratios(pg: dict[str, Any], sqlite: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "held_report_p99": ratio(
            pg["hold"]["report_latency_ms"]["p99"], sqlite["hold"]["report_latency_ms"]["p99"]
        ),
        "rollout_seconds": ratio(pg["rollout"]["seconds"], sqlite["rollout"]["seconds"]),
        "reaction_p99": ratio(
            pg["reaction"]["reaction_ms"]["p99"], sqlite["reaction"]["reaction_ms"]["p99"]
        ),
        "register_seconds": ratio(
            pg["hold"]["register_seconds"], sqlite["hold"]["register_seconds"]
        ),
    }
