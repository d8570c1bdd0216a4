"""Fleet arrival scenarios: registering a fleet from nothing, and a coordinator restart
under a held fleet (the reconnect storm). See docs/benchmarks.md.

Every agent is the simulator's copy of the real agent's reconnect (bench/simulator.py);
the coordinator is a real process, stopped with a real signal and started again on the
same data dir and port.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import Admin, Meter, bare_server, coordinator
from bench.scenarios import SETTLE_SECONDS, HeldFleet
from bench.simulator import EXPECTED_IN_OUTAGE, SimConfig, SimFleet, percentile
from coordinator.demo.fleet import JOIN_TOKEN

TTL_INTERVALS = 3.0
"""The coordinator's default TTL in heartbeat intervals: the grace after its start in which
silence counts for nothing is as long, so a storm must be over well within it."""


def _seconds(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(percentile(values, 100), 2),
    }


def unexpected(kinds: dict[str, int]) -> dict[str, int]:
    """The errors an outage does not explain (anything but refused connections, dropped
    connections and 503s with a Retry-After)."""
    return {k: n for k, n in kinds.items() if k not in EXPECTED_IN_OUTAGE}


# --- registration from nothing ----------------------------------------------------------


async def registration(workdir: Path, nodes: int, *, baseline: bool = True) -> dict[str, Any]:
    """``nodes`` agents register with a fresh coordinator (each then polls and reports, like
    an agent that just joined); time until all are registered and until all were heard.
    Baseline: the same registrations, same concurrency, against the bare aiohttp server."""
    coord = coordinator(workdir / f"register-{nodes}").start("/readyz")
    try:
        meter = Meter(coord.process).start()
        fleet = SimFleet(SimConfig(url=coord.url, join_token=JOIN_TOKEN, nodes=nodes))
        async with fleet:
            started = time.monotonic()
            await fleet.start()
            registered = time.monotonic() - started
            await fleet.wait_reported(deadline=300)
            heard = time.monotonic() - started
            usage = meter.stop()
            peak = coord.peak_rss_mb()
            kinds = dict(fleet.log.kinds)
    finally:
        coord.close()
    result: dict[str, Any] = {
        "nodes": nodes,
        "concurrency": fleet.config.register_concurrency,
        "register_seconds": round(registered, 2),
        "registrations_per_second": round(nodes / registered, 1),
        "all_reported_seconds": round(heard, 2),
        "errors_by_kind": kinds,
        "coordinator_cpu_percent": round(usage.cpu_percent, 1),
        "coordinator_peak_rss_mb": round(peak, 1),
        "target": "< 20 s at 10,000 with no errors",
    }
    if baseline:
        bare = await _bare_registration(workdir, nodes, fleet.config.register_concurrency)
        result["bare_registrations_per_second"] = bare
        result["ratio_to_bare"] = round(result["registrations_per_second"] / bare, 3)
    return result


async def _bare_registration(workdir: Path, nodes: int, concurrency: int) -> float:
    bare = bare_server(workdir / f"register-{nodes}", 60, 800).start()
    try:
        config = SimConfig(
            url=bare.url, join_token=JOIN_TOKEN, nodes=nodes, register_concurrency=concurrency
        )
        async with SimFleet(config) as fleet:
            started = time.monotonic()
            await fleet.register_all(start_loops=False)
            took = time.monotonic() - started
            if fleet.log.kinds:
                raise RuntimeError(f"bare registration failed: {dict(fleet.log.kinds)}")
    finally:
        bare.close()
    return round(nodes / took, 1)


# --- the reconnect storm ------------------------------------------------------------------


STORM_DEADLINE = 180.0
"""Seconds after the stop by which every agent must be back, or the storm is reported as
not recovered (the target is 30 s)."""


async def reconnect_storm(
    workdir: Path,
    nodes: int,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL),
    coordinator_args: tuple[str, ...] = (),
    spread_reconnect: bool = True,
) -> dict[str, Any]:
    """A held fleet, one job running on all; the coordinator is stopped (each signal in
    turn) and started again on the same data dir and port. Per storm: each agent's time
    to its first accepted report, errors by kind, the coordinator's CPU and peak RSS;
    after all storms, the nodes and events the coordinator holds (no node may be down)."""
    where = workdir / f"storm-{nodes}"
    servers = [coordinator(where, *coordinator_args)]
    fleet = HeldFleet(where, nodes, servers=servers, spread_reconnect=spread_reconnect)
    async with fleet as held:
        took, status = await held.deploy(
            "v1", canary=0, waves=1, min_healthy_time="0s", deadline=600
        )
        await asyncio.sleep(SETTLE_SECONDS)
        storms = []
        for sig in signals:
            storms.append(await _storm(held, sig))
        nodes_down, down_events = await _down(held.admin)
        return {
            "nodes": nodes,
            "agents_spread_first_retry": spread_reconnect,
            "register_seconds": round(held.register_seconds, 1),
            "register_errors_by_kind": dict(
                Counter(k for _at, c, k in held.fleet.log.error_times if c == "register")
            ),
            "first_rollout_seconds": round(took, 1),
            "first_rollout_state": status["state"]["state_type"],
            "storms": storms,
            "nodes_down_after": nodes_down,
            "node_down_events": down_events,
            "job_state_after": (await held.admin.status("bench"))["state"]["state_type"],
        }


async def _storm(held: HeldFleet, sig: signal.Signals) -> dict[str, Any]:
    coord, fleet = held.coord, held.fleet
    assert coord.popen is not None
    before_cpu = coord.process.cpu_times()
    seq_behind = fleet.log.seq_behind
    grace = TTL_INTERVALS * max(n.heartbeat for n in fleet.nodes)
    stopped_at = time.monotonic()
    exit_code = await asyncio.to_thread(coord.stop, sig)
    exited_at = time.monotonic()
    await asyncio.to_thread(coord.start, "/readyz", 120.0)
    ready_at = time.monotonic()
    meter = Meter(coord.process).start()
    deadline = stopped_at + STORM_DEADLINE
    back = fleet.back_after(stopped_at)
    while len(back) < held.nodes and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        back = fleet.back_after(stopped_at)
    all_back_at = max(back.values(), default=time.monotonic())
    usage = meter.stop()
    # Stay past the coordinator's grace (its start + TTL) and a node monitor pass, so a node
    # that was throttled too long would be marked down before the count below.
    await asyncio.sleep(max(0.0, ready_at + grace + 6.0 - time.monotonic()))
    kinds = fleet.log.kinds_between(stopped_at, all_back_at + 1.0)
    phases = {
        "stopping": fleet.log.kinds_between(stopped_at, exited_at),
        "starting": fleet.log.kinds_between(exited_at, ready_at),
        "after_ready": fleet.log.kinds_between(ready_at, all_back_at + 1.0),
    }
    by_call = Counter(c for at, c, _k in fleet.log.error_times if stopped_at <= at < all_back_at)
    since_stop = [t - stopped_at for t in back.values()]
    since_ready = [t - ready_at for t in back.values()]
    return {
        "signal": sig.name,
        "exit_code": exit_code,
        "old_cpu_seconds": round(before_cpu.user + before_cpu.system, 1),
        "stopped_seconds": round(exited_at - stopped_at, 2),
        "ready_after_stop_seconds": round(ready_at - stopped_at, 2),
        "agents_back": len(back),
        "all_back": len(back) == held.nodes,
        "all_back_after_stop_seconds": round(all_back_at - stopped_at, 2),
        "back_after_stop_s": _seconds(since_stop),
        "back_after_ready_s": _seconds(since_ready),
        "back_per_second_after_ready": _histogram(since_ready),
        "grace_after_start_s": round(grace, 1),
        "errors_by_kind": kinds,
        "errors_by_call": dict(by_call),
        "errors_by_phase": phases,
        "reports_refused_seq_behind": fleet.log.seq_behind - seq_behind,
        "unexpected_errors": unexpected(kinds),
        "coordinator_cpu_percent_until_all_back": round(usage.cpu_percent, 1),
        "coordinator_cpu_seconds_until_all_back": round(usage.cpu_percent * usage.seconds / 100, 2),
        "coordinator_peak_rss_mb": round(coord.peak_rss_mb(), 1),
        "coordinator_rss_mb_after": round(usage.rss_mb, 1),
    }


def _histogram(seconds: list[float]) -> list[int]:
    """Agents back in each whole second (from 0), to show how the storm was spread."""
    if not seconds:
        return []
    counts = [0] * (int(max(0.0, max(seconds))) + 1)
    for s in seconds:
        counts[int(max(0.0, s))] += 1
    return counts


async def _down(admin: Admin) -> tuple[int, int]:
    """Nodes the coordinator holds as down now, and ``node_status`` -> down events ever."""
    nodes = await admin.call("GET", "/v1/nodes")
    down = sum(1 for n in nodes["nodes"] if n["status"] == "down")
    events = 0
    after = 0
    headers = {**admin.headers, "Accept": "application/json"}
    while True:
        async with admin.session.get(
            f"{admin.url}/v1/events", params={"after": str(after), "limit": "1000"}, headers=headers
        ) as resp:
            page = json.loads(await resp.text())
        batch = page["events"]
        events += sum(1 for e in batch if e["kind"] == "node_status" and e["new"] == "down")
        if len(batch) < 1000:
            return down, events
        after = page["last_id"]


__all__ = ["reconnect_storm", "registration", "unexpected"]
