"""The benchmark scenarios; each returns a JSON-able dict of raw numbers and ratios.

Every scenario starts its own real coordinator process on a fresh data dir and takes
its baseline in the same run, because the 2-core machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench import load
from bench.harness import (
    Admin,
    GroupMeter,
    Meter,
    Server,
    bare_server,
    coordinator,
    job_spec,
)
from bench.simulator import SimConfig, SimFleet, percentile
from coordinator.demo.fleet import ADMIN_TOKEN, JOIN_TOKEN, policy_toml

MS = 1000.0


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * MS, 2)


# --- agent-protocol throughput -------------------------------------------------------------


async def throughput(workdir: Path, seconds: float, connections: int = 32) -> dict[str, Any]:
    """Reports and assignment reads per second: coordinator vs bare aiohttp, same payload sizes."""
    coord = coordinator(workdir / "throughput").start("/readyz")
    try:
        async with aiohttp.ClientSession() as session:
            cfg = SimConfig(url=coord.url, join_token=JOIN_TOKEN, nodes=connections)
            fleet = SimFleet(cfg)
            for node in fleet.nodes:
                await node.register(session)
            admin = Admin(coord.url, session)
            await admin.put_job(job_spec("bench", "v1", canary=0, waves=1))
            # Wait until every node holds the assignment, so responses carry a real spec.
            tokens = [n.token for n in fleet.nodes]
            await _wait_assigned(session, coord.url, tokens)
        report_req, assign_req = _agent_requests(tokens)
        sizes = await _response_sizes(coord, report_req, assign_req)
        real = await _measure_pair(coord, report_req, assign_req, connections, seconds)
        coord_usage = real.pop("usage")
    finally:
        coord.close()
    bare = bare_server(workdir / "throughput", sizes["report"], sizes["assignments"]).start()
    try:
        base = await _measure_pair(bare, report_req, assign_req, connections, seconds)
        base.pop("usage")
    finally:
        bare.close()
    return {
        "connections": connections,
        "seconds_each": seconds,
        "response_bytes": sizes,
        "coordinator_rps": real,
        "bare_rps": base,
        "ratio": {k: round(real[k] / base[k], 3) for k in real},
        "coordinator_cpu_percent_during_reports": coord_usage,
    }


def _agent_requests(tokens: list[str]) -> tuple[load.RequestFactory, load.RequestFactory]:
    seqs = [0] * len(tokens)
    execution = {"job": "bench", "version": 1, "generation": 0, "state": "healthy"}

    def report(conn: int, _n: int) -> bytes:
        seqs[conn] += 1
        body = json.dumps({"seq": seqs[conn], "load": {}, "executions": [execution]})
        return load.build_request(
            "POST",
            "/v1/agent/report",
            {"Authorization": f"Bearer {tokens[conn]}", "Content-Type": "application/json"},
            body.encode(),
        )

    def assignments(conn: int, _n: int) -> bytes:
        return load.build_request(
            "GET", "/v1/agent/assignments", {"Authorization": f"Bearer {tokens[conn]}"}
        )

    return report, assignments


async def _wait_assigned(session: aiohttp.ClientSession, url: str, tokens: list[str]) -> None:
    async with asyncio.timeout(60):
        for token in tokens:
            while True:
                async with session.get(
                    f"{url}/v1/agent/assignments", headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    if (await resp.json())["assignments"]:
                        break
                await asyncio.sleep(0.05)


async def _response_sizes(
    server: Server, report: load.RequestFactory, assign: load.RequestFactory
) -> dict[str, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(report(0, 0))
        _, report_body = await load.read_response(reader)
        writer.write(assign(0, 0))
        _, assign_body = await load.read_response(reader)
    finally:
        writer.close()
    return {"report": len(report_body), "assignments": len(assign_body)}


async def _measure_pair(
    server: Server,
    report: load.RequestFactory,
    assign: load.RequestFactory,
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    meter = Meter(server.process).start()
    reports = await load.closed_loop("127.0.0.1", server.port, report, connections, seconds)
    usage = meter.stop()
    assigns = await load.closed_loop("127.0.0.1", server.port, assign, connections, seconds)
    if reports.errors or assigns.errors:
        raise RuntimeError(f"{server.name}: {reports.errors + assigns.errors} failed requests")
    return {
        "report": round(reports.rps, 1),
        "assignments": round(assigns.rps, 1),
        "usage": round(usage.cpu_percent, 1),
    }


# --- a held fleet, its rollouts and its reaction time ---------------------------------------


class HeldFleet:
    """Coordinator processes and ``nodes`` simulated agents running one job, all healthy.

    One coordinator on a fresh data dir by default; ``servers`` (not yet started) share one
    database, and the agents are spread over them (the operator API goes to the first).
    """

    def __init__(
        self,
        workdir: Path,
        nodes: int,
        poll_wait: float = 30.0,
        *,
        servers: Sequence[Server] = (),
        database: Callable[[], Iterable[psutil.Process]] | None = None,
        spread_reconnect: bool = True,
    ) -> None:
        self.servers = list(servers) or [coordinator(workdir)]
        self.spread_reconnect = spread_reconnect
        self.database = database
        """The database server's processes, metered beside the coordinators."""
        self.coord = self.servers[0]
        self.nodes = nodes
        self.poll_wait = poll_wait
        self.failing: set[int] = set()
        self.fleet: SimFleet
        self.admin: Admin
        self._session: aiohttp.ClientSession

    def meter(self) -> GroupMeter:
        """CPU and RSS of all the coordinator processes."""
        return GroupMeter(lambda: [s.process for s in self.servers]).start()

    def database_meter(self) -> GroupMeter | None:
        return GroupMeter(self.database).start() if self.database is not None else None

    async def __aenter__(self) -> HeldFleet:
        for server in self.servers:
            server.start("/readyz")
        self.empty_rss_mb = self.meter().stop().rss_mb
        self._session = aiohttp.ClientSession()
        self.admin = Admin(self.coord.url, self._session)
        config = SimConfig(
            url=self.coord.url,
            urls=tuple(s.url for s in self.servers) if len(self.servers) > 1 else (),
            join_token=JOIN_TOKEN,
            nodes=self.nodes,
            poll_wait=self.poll_wait,
            failing_versions=frozenset(),
            spread_reconnect=self.spread_reconnect,
        )
        self.fleet = SimFleet(config)
        try:
            await self.fleet.__aenter__()
            started = time.monotonic()
            await self.fleet.start()
            self.register_seconds = time.monotonic() - started
            await self.fleet.wait_reported(deadline=300)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.fleet.stop()
        await self._session.close()
        for server in self.servers:
            server.close()

    def fail_versions(self, *versions: int) -> None:
        self.fleet.config = SimConfig(
            **{**self.fleet.config.__dict__, "failing_versions": frozenset(versions)}
        )

    async def deploy(
        self, marker: str, *, canary: int | str, waves: int, min_healthy_time: str, deadline: float
    ) -> tuple[float, dict[str, Any]]:
        """Submit a new version and wait for the rollout to end; (seconds taken, status)."""
        started = time.monotonic()
        await self.admin.put_job(
            job_spec("bench", marker, canary=canary, waves=waves, min_healthy_time=min_healthy_time)
        )
        status = await self.admin.wait_state(
            "bench", {"running", "rollout_failed", "failed", "degraded"}, deadline, interval=0.1
        )
        return time.monotonic() - started, status


async def hold(workdir: Path, nodes: int, seconds: float) -> dict[str, Any]:
    """``nodes`` agents with default heartbeats and long-polls, one job running everywhere."""
    async with HeldFleet(workdir / f"hold-{nodes}", nodes) as held:
        took, status = await held.deploy(
            "v1", canary=0, waves=1, min_healthy_time="0s", deadline=300
        )
        return await _measure_hold(held, seconds) | {
            "register_seconds": round(held.register_seconds, 1),
            "first_rollout_seconds": round(took, 1),
            "first_rollout_state": status["state"]["state_type"],
        }


SETTLE_SECONDS = 12.0
"""Wait after the first rollout before measuring a held fleet: one default heartbeat interval
(10 s) and a little, so the window sees the steady state (heartbeats and long-polls), not the
tail of the rollout's state-change reports."""


async def _measure_hold(held: HeldFleet, seconds: float) -> dict[str, Any]:
    await asyncio.sleep(SETTLE_SECONDS)
    coord_meter, db_meter = held.meter(), held.database_meter()
    sim_meter = Meter(psutil.Process()).start()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    coord = coord_meter.stop()
    sim = sim_meter.stop()
    database = {"database_cpu_percent": round(db_meter.stop().cpu_percent, 1)} if db_meter else {}
    samples = held.fleet.reports_between(start, time.monotonic())
    latencies = [s.latency for s in samples]
    rate = len(samples) / seconds
    baseline = await _bare_latency(held, rate, min(seconds, 10.0))
    p99 = percentile(latencies, 99)
    return {
        "nodes": held.nodes,
        "coordinators": len(held.servers),
        "window_seconds": round(seconds, 1),
        "reports_per_second": round(rate, 1),
        "report_errors": sum(not s.ok for s in samples),
        "report_latency_ms": {"p50": _ms(latencies, 50), "p99": _ms(latencies, 99)},
        "bare_latency_ms_same_rate": baseline,
        "p99_ratio_to_bare": round(p99 * MS / baseline["p99"], 2) if baseline["p99"] else None,
        "coordinator_cpu_percent": round(coord.cpu_percent, 1),
        "coordinator_rss_mb": round(coord.rss_mb, 1),
        "coordinator_empty_rss_mb": round(held.empty_rss_mb, 1),
        "simulator_cpu_percent": round(sim.cpu_percent, 1),
        "cpu_ms_per_node_second": round(coord.cpu_percent * 10 / held.nodes, 4),
        "rss_kb_per_node": round((coord.rss_mb - held.empty_rss_mb) * 1000 / held.nodes, 2),
        **database,
        "error_count": len(held.fleet.log.errors),
        "errors": held.fleet.log.errors[:5],
    }


async def _bare_latency(held: HeldFleet, rate: float, seconds: float) -> dict[str, float]:
    """Report-shaped requests at the same rate against a bare aiohttp server (the baseline)."""
    bare = bare_server(held.coord.log_path.parent.parent, 60, 800).start()
    try:
        body = b'{"seq":1,"load":{},"executions":[]}'
        req = load.build_request(
            "POST", "/v1/agent/report", {"Content-Type": "application/json"}, body
        )
        result = await load.open_loop(
            "127.0.0.1", bare.port, lambda _c, _n: req, max(rate, 1.0), seconds
        )
    finally:
        bare.close()
    return {"p50": _ms(result.latencies, 50), "p99": _ms(result.latencies, 99)}


async def rollout_and_reaction(
    workdir: Path,
    nodes: int,
    *,
    hold_seconds: float,
    min_healthy: float,
    waves: int,
    reaction_trials: int,
    servers: Sequence[Server] = (),
    database: Callable[[], Iterable[psutil.Process]] | None = None,
) -> dict[str, Any]:
    """Hold ``nodes``, measure; roll a new version out in waves; then failing canaries.

    On one fresh coordinator, or on ``servers`` sharing a database (see HeldFleet)."""
    held_fleet = HeldFleet(workdir / f"rollout-{nodes}", nodes, servers=servers, database=database)
    async with held_fleet as held:
        took, _ = await held.deploy("v1", canary=0, waves=1, min_healthy_time="0s", deadline=600)
        held_numbers = await _measure_hold(held, hold_seconds)
        held_numbers["first_rollout_seconds"] = round(took, 1)
        held_numbers["register_seconds"] = round(held.register_seconds, 1)

        t = f"{min_healthy:g}s"
        limit = (waves + 1) * min_healthy + 600
        meter, db_meter = held.meter(), held.database_meter()
        took, status = await held.deploy(
            "v2", canary=1, waves=waves, min_healthy_time=t, deadline=limit
        )
        usage = meter.stop()
        if db_meter is not None:
            database_usage = {"database_cpu_percent": round(db_meter.stop().cpu_percent, 1)}
        else:
            database_usage = {}
        bound = (waves + 1) * min_healthy
        rollout = {
            "nodes": nodes,
            "canary": 1,
            "waves": waves,
            "min_healthy_time_s": min_healthy,
            "simulated_start_delay_s": held.fleet.config.start_delay,
            "seconds": round(took, 2),
            "lower_bound_s": bound,
            "target_s": bound + 10,
            "overhead_per_phase_s": round((took - bound) / (waves + 1), 3),
            "ratio_to_lower_bound": round(took / bound, 3),
            "state": status["state"]["state_type"],
            "coordinator_cpu_percent": round(usage.cpu_percent, 1),
            "coordinator_rss_mb": round(usage.rss_mb, 1),
            **database_usage,
        }
        reaction = await _reactions(held, nodes, reaction_trials)
        trouble = {
            "agent_errors": len(held.fleet.log.errors),
            "agent_failovers": held.fleet.log.failovers,
            "operator_503s": held.admin.unavailable,
        }
        return {"hold": held_numbers, "rollout": rollout, "reaction": reaction, **trouble}


async def _reactions(held: HeldFleet, nodes: int, trials: int) -> dict[str, Any]:
    canary = max(1, nodes // 100)
    samples: list[float] = []
    trial_p99: list[float] = []
    states = []
    for trial in range(trials):
        version = 3 + trial
        held.fail_versions(version)
        stable = (await held.admin.status("bench"))["version"]
        # Each failed trial is rolled back to the same stable version (v2).
        stable = 2 if stable > 2 else stable
        before = time.monotonic()
        _, status = await held.deploy(
            f"bad-{trial}", canary=canary, waves=3, min_healthy_time="5s", deadline=120
        )
        states.append(status["state"]["state_type"])
        # Let the rollback assignments arrive (the job state flips before agents poll).
        await asyncio.sleep(2.0)
        failures = [f for f in held.fleet.log.failures if f[3] == version and f[0] >= before]
        if not failures:
            raise RuntimeError(f"no failure reported for v{version}: {status}")
        first = min(f[0] for f in failures)
        back = [
            (at, node)
            for at, node, job, v, _g in held.fleet.log.assignments
            if job == "bench" and v == stable and at >= first
        ]
        trial_samples = [at - first for at, _ in back]
        samples += trial_samples
        trial_p99.append(_ms(trial_samples, 99))
    return {
        "trials": trials,
        "canary_nodes_per_trial": canary,
        "rolled_back_agents": len(samples),
        "reaction_ms": {
            "p50": _ms(samples, 50),
            "p99": _ms(samples, 99),
            "max": _ms(samples, 100),
        },
        "per_trial_p99_ms": trial_p99,
        "states": states,
    }


# --- the real agent's footprint ---------------------------------------------------------


async def agent_footprint(workdir: Path, seconds: float) -> dict[str, Any]:
    """A real ``fleetwave-agent`` idle with one running job, vs. an idle interpreter baseline."""
    coord = coordinator(workdir / "agent").start("/readyz")
    agent = baseline = None
    try:
        data = workdir / "agent" / "agent-data"
        config = workdir / "agent" / "agent.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        # The measured job sets no user: it runs as whoever runs the benchmark (root in CI).
        config.write_text(policy_toml({"allow_root": True}), encoding="utf-8")
        agent = _spawn(
            [
                sys.executable,
                "-m",
                "agent",
                "--config",
                str(config),
                "--coordinator",
                coord.url,
                "--join-token",
                JOIN_TOKEN,
                "--data-dir",
                str(data),
                "--name",
                "footprint",
                "--label",
                "sim=true",
                "--listen",
                "off",
                "--log-format",
                "json",
            ],
            workdir / "agent" / "logs" / "agent.log",
            # Its job goes when it stops (agents keep their workloads by default).
            env={"FLEETWAVE_ON_STOP": "stop-workloads"},
        )
        baseline = _spawn(
            [
                sys.executable,
                "-c",
                "import asyncio, aiohttp, pydantic, structlog; asyncio.run(asyncio.sleep(3600))",
            ],
            workdir / "agent" / "logs" / "baseline.log",
        )
        async with aiohttp.ClientSession() as session:
            admin = Admin(coord.url, session)
            spec = job_spec("idle", "v1", canary=0, waves=1, min_healthy_time="0s")
            spec["health"] = {"checks": [{"type": "exec", "command": ["true"], "interval": "10s"}]}
            await admin.put_job(spec)
            await admin.wait_state("idle", {"running"}, deadline=60)
        await asyncio.sleep(2.0)  # let start-up work (imports, first reports) settle
        agent_proc, base_proc = psutil.Process(agent.pid), psutil.Process(baseline.pid)
        m_agent, m_base = Meter(agent_proc).start(), Meter(base_proc).start()
        await asyncio.sleep(seconds)
        a, b = m_agent.stop(), m_base.stop()
        return {
            "window_seconds": seconds,
            "agent_rss_mb": round(a.rss_mb, 1),
            "agent_cpu_percent": round(a.cpu_percent, 3),
            "baseline_rss_mb": round(b.rss_mb, 1),
            "baseline_cpu_percent": round(b.cpu_percent, 3),
            "rss_ratio_to_baseline": round(a.rss_mb / b.rss_mb, 2),
            "health_check": "exec `true` every 10s",
        }
    finally:
        for proc in (agent, baseline):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
        coord.close()


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Any:
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


__all__ = ["ADMIN_TOKEN", "agent_footprint", "hold", "rollout_and_reaction", "throughput"]
