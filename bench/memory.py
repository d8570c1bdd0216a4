"""Coordinator memory per held node, against a bare aiohttp server holding as many long-polls.

``python -m bench.memory --nodes 3000 [--trace 1] [--gc 50000,20,50] [--bare]
[--gc-windows "50000,20,50;700,10,10"]``

The coordinator runs as ``python -m coordinator`` under ``bench.memprobe``. Measured: its RSS
started and idle, then with ``--nodes`` simulated agents registered, one job running on every
node (so each holds a node, an assignment and an execution record) and every agent's
long-poll held; per node is the difference divided by the nodes. With ``--trace N``
tracemalloc (N frames) says where the live Python bytes are, by file and by line; the RSS
figures of a traced run include tracemalloc's own overhead, so take RSS from an untraced run.
GC pauses (gc.callbacks) are counted over ``--window`` seconds of the held fleet, then
over one more window per ``--gc-windows`` setting, and one full collection is timed.

``--bare`` measures ``bench.bare --hold-polls`` the same way: N connections each holding a
GET, nothing else (aiohttp's own cost per held request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import Admin, Server, bare_server, coordinator, job_spec
from bench.simulator import SimConfig, SimFleet, raise_nofile_limit
from coordinator.demo.fleet import JOIN_TOKEN

HOLD_SECONDS = 300.0
"""Long-poll wait: the coordinator's cap, so polls stay held through the measurement."""


class Probed:
    """A server run under bench.memprobe, dumped on demand."""

    def __init__(
        self, server: Server, workdir: Path, trace: int, gc: str | None, windows: str = ""
    ) -> None:
        self.out = workdir / "memprobe.json"
        server.argv[1:3] = ["-m", "bench.memprobe", server.argv[2]]
        self.server = server
        os.environ["BENCH_MEMPROBE_OUT"] = str(self.out)
        os.environ["BENCH_MEMPROBE_TRACE"] = str(trace)
        os.environ["BENCH_MEMPROBE_GC_WINDOWS"] = windows
        if gc:
            os.environ["BENCH_MEMPROBE_GC"] = gc
        else:
            os.environ.pop("BENCH_MEMPROBE_GC", None)

    async def dump(self, signum: int = signal.SIGUSR1) -> dict[str, Any]:
        self.out.unlink(missing_ok=True)
        assert self.server.popen is not None
        self.server.popen.send_signal(signum)
        async with asyncio.timeout(300):  # a traced snapshot of a big heap takes a while
            while not self.out.exists():  # noqa: ASYNC110 - written by another process
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.2)  # let the writer finish
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data


async def measure_coordinator(
    workdir: Path, nodes: int, trace: int, gc: str | None, window: float, windows: str = ""
) -> dict[str, Any]:
    # Traced, the coordinator runs ~3x slower: fewer heartbeats and registrations at once
    # keep its answers within the simulator's timeouts (the held state is the same).
    slower = ("--heartbeat-interval", "30s") if trace else ()
    probed = Probed(coordinator(workdir, *slower), workdir, trace, gc, windows)
    try:
        probed.server.start("/readyz")  # inside: a server that never got ready is stopped
        await asyncio.sleep(2.0)
        empty = await probed.dump()
        async with aiohttp.ClientSession() as session:
            admin = Admin(probed.server.url, session)
            config = SimConfig(
                url=probed.server.url,
                join_token=JOIN_TOKEN,
                nodes=nodes,
                poll_wait=HOLD_SECONDS,
                report_connections=32,
                register_concurrency=4 if trace else 8,  # a timed-out one retried is a 409
            )
            async with SimFleet(config) as fleet:
                started = time.monotonic()
                await fleet.start()
                await fleet.wait_reported(deadline=600)
                registered = time.monotonic() - started
                await admin.put_job(job_spec("mem", "v1", canary=0, waves=1, min_healthy_time="0s"))
                status = await admin.wait_state("mem", {"running"}, deadline=600, interval=0.5)
                await asyncio.sleep(12.0)  # a heartbeat interval: the state-change tail ends
                await probed.dump()  # starts the gc window
                await asyncio.sleep(window)
                held = await probed.dump()
                settings = []
                for setting in filter(None, windows.split(";")):
                    await asyncio.sleep(window)
                    pauses = _pauses((await probed.dump())["gc_pauses_ms"])
                    settings.append({"gc_threshold": setting, "gc": pauses})
                full = await probed.dump(signal.SIGUSR2)
                errors = fleet.log.errors[:5]
    finally:
        probed.server.close()
    return _summary("coordinator", nodes, empty, held, window) | {
        "gc_windows": settings,
        "full_collect": full,
        "register_seconds": round(registered, 1),
        "job_state": status["state"]["state_type"],
        "errors": errors,
    }


async def measure_bare(workdir: Path, nodes: int, trace: int, window: float) -> dict[str, Any]:
    server = bare_server(workdir, 60, 800)
    server.argv.append("--hold-polls")
    probed = Probed(server, workdir, trace, None)
    tasks: list[asyncio.Task[None]] = []
    try:
        probed.server.start()
        await asyncio.sleep(2.0)
        empty = await probed.dump()
        raise_nofile_limit()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=120)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"{probed.server.url}/v1/agent/assignments?wait={HOLD_SECONDS:g}"

            async def poll() -> None:
                while True:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(None)) as resp:
                        await resp.read()

            gate = asyncio.Semaphore(64)

            async def opened() -> None:
                async with gate:
                    tasks.append(asyncio.create_task(poll()))
                    await asyncio.sleep(0.001)

            await asyncio.gather(*(opened() for _ in range(nodes)))
            await asyncio.sleep(12.0)
            await probed.dump()
            await asyncio.sleep(window)
            held = await probed.dump()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        probed.server.close()
    return _summary("bare", nodes, empty, held, window)


def _summary(
    what: str, nodes: int, empty: dict[str, Any], held: dict[str, Any], window: float
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": what,
        "nodes": nodes,
        "empty_rss_mb": round(empty["rss_mb"], 1),
        "held_rss_mb": round(held["rss_mb"], 1),
        "rss_kb_per_node": round((held["rss_mb"] - empty["rss_mb"]) * 1000 / nodes, 2),
        "gc_objects": held["gc_objects"],
        "objects_per_node": {
            name: round((count - empty["types"].get(name, 0)) / nodes, 2)
            for name, count in held["types"].items()
        },
        "gc_threshold": held["gc_threshold"],
        "gc_window_seconds": window,
        "gc": _pauses(held["gc_pauses_ms"]),
    }
    if "by_file" in held:
        out["traced_kb_per_node"] = round(
            (held["traced_mb"] - empty["traced_mb"]) * 1000 / nodes, 2
        )
        for key in ("by_file", "by_line", "by_trace"):
            if key in held:
                out[key] = [
                    {"where": row["where"], "bytes_per_node": round(row["bytes"] / nodes, 1)}
                    for row in held[key]
                ]
    return out


def _pauses(by_generation: dict[str, list[float]]) -> dict[str, Any]:
    return {
        gen: {
            "count": len(pauses),
            "p50_ms": pauses[len(pauses) // 2] if pauses else 0,
            "max_ms": pauses[-1] if pauses else 0,
            "total_ms": round(sum(pauses), 1),
        }
        for gen, pauses in by_generation.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: off)")
    parser.add_argument("--gc", help="young,middle,old thresholds for the coordinator")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of gc counting")
    parser.add_argument("--gc-windows", default="", help="more gc windows: y,m,o;y,m,o")
    parser.add_argument("--bare", action="store_true", help="the bare aiohttp baseline")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fw-mem-") as tmp:
        workdir = Path(tmp)
        if args.bare:
            result = asyncio.run(measure_bare(workdir, args.nodes, args.trace, args.window))
        else:
            result = asyncio.run(
                measure_coordinator(
                    workdir, args.nodes, args.trace, args.gc, args.window, args.gc_windows
                )
            )
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
