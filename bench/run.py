"""Run the benchmarks: ``python -m bench.run quick`` (``make bench``) or ``full`` or one part.

Prints one JSON document (machine, calibration before/after, each scenario's raw
numbers and ratios) and writes it to ``--out``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import ha, scenarios, storm
from bench.harness import calibrate, calibrate_cpus, machine, pin_processes
from bench.simulator import raise_nofile_limit

QUICK = {
    "throughput_seconds": 5.0,
    "hold_nodes": 1000,
    "hold_seconds": 15.0,
    "rollout_nodes": 1000,
    "min_healthy": 1.0,
    "waves": 10,
    "reaction_trials": 2,
    "agent_seconds": 15.0,
    "scaling": [],
    "registration_nodes": 1000,
    "storm_nodes": 1000,
}
FULL = {
    "throughput_seconds": 15.0,
    "hold_nodes": 10000,
    "hold_seconds": 60.0,
    "rollout_nodes": 10000,
    "min_healthy": 10.0,
    "waves": 10,
    "reaction_trials": 3,
    "agent_seconds": 60.0,
    "scaling": [1000, 2000, 5000, 10000, 20000],
    "registration_nodes": 10000,
    "storm_nodes": 10000,
}
PARTS = ("throughput", "fleet", "agent", "scaling", "registration", "storm")
QUICK_PARTS = ("throughput", "fleet", "agent", "scaling")
"""``make bench`` stays under 3 minutes: registration and the storm run with ``--only`` or
``full``."""
HA = {
    "kills": 20,
    "lease_ttls": [3.0, 2.0],
    "wake_samples": 100,
    "fleet_nodes": 2000,
    "hold_seconds": 30.0,
    "min_healthy": 1.0,
    "waves": 10,
    "reaction_trials": 2,
}
HA_PARTS = ("failover", "wake", "ha-fleet")
"""``python -m bench.run ha``: several coordinators on PostgreSQL (bench/ha.py), ~15 min."""


async def calibrated(what: str, scenario: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one scenario with the machine's speed (each core the run uses) measured just
    before and just after it, in its result and in the progress line."""
    before = calibrate_cpus()
    result = await scenario
    result["calibration"] = {"before": before, "after": calibrate_cpus()}
    _progress(what, result)
    return result


async def run(plan: dict[str, Any], parts: set[str], workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "plan": plan}
    results["calibration_before"] = calibrate()
    results["calibration_cpus_before"] = calibrate_cpus()
    if "throughput" in parts:
        results["throughput"] = await calibrated(
            "throughput", scenarios.throughput(workdir, plan["throughput_seconds"])
        )
    if "fleet" in parts:
        fleet = await calibrated(
            "fleet",
            scenarios.rollout_and_reaction(
                workdir,
                plan["rollout_nodes"],
                hold_seconds=plan["hold_seconds"],
                min_healthy=plan["min_healthy"],
                waves=plan["waves"],
                reaction_trials=plan["reaction_trials"],
            ),
        )
        results.update(fleet)
        results["fleet_calibration"] = results.pop("calibration")
    if "agent" in parts:
        results["agent"] = await calibrated(
            "agent", scenarios.agent_footprint(workdir, plan["agent_seconds"])
        )
    if "scaling" in parts and plan["scaling"]:
        curve = []
        for nodes in plan["scaling"]:
            curve.append(
                await calibrated(
                    f"scaling {nodes}", scenarios.hold(workdir, nodes, plan["hold_seconds"])
                )
            )
        results["scaling"] = curve
    if "registration" in parts:
        nodes = plan["registration_nodes"]
        results["registration"] = await calibrated(
            f"registration {nodes}", storm.registration(workdir, nodes)
        )
    if "storm" in parts:
        nodes = plan["storm_nodes"]
        results["storm"] = await calibrated(
            f"storm {nodes}",
            storm.reconnect_storm(workdir, nodes, spread_reconnect=plan["spread_reconnect"]),
        )
    results["calibration_after"] = calibrate()
    results["calibration_cpus_after"] = calibrate_cpus()
    return results


async def run_ha(plan: dict[str, Any], parts: set[str], workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "plan": plan}
    results["calibration_before"] = calibrate()
    if "failover" in parts:
        results["failover"] = []
        for ttl in plan["lease_ttls"]:
            point = await calibrated(
                f"failover ttl={ttl:g}s", ha.failover(workdir, kills=plan["kills"], lease_ttl=ttl)
            )
            results["failover"].append(point)
    if "wake" in parts:
        results["wake"] = await calibrated("wake", ha.wake(workdir, samples=plan["wake_samples"]))
    if "ha-fleet" in parts:
        results["fleet"] = await calibrated(
            "ha-fleet",
            ha.fleet(
                workdir,
                nodes=plan["fleet_nodes"],
                hold_seconds=plan["hold_seconds"],
                min_healthy=plan["min_healthy"],
                waves=plan["waves"],
                reaction_trials=plan["reaction_trials"],
                sqlite=plan["sqlite"],
            ),
        )
    results["calibration_after"] = calibrate()
    results["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def _progress(what: str, data: Any) -> None:
    print(f"# {what}: {json.dumps(data)}", file=sys.stderr, flush=True)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the simulator: thousands of simulated agents in one process are the
    measurement's own bottleneck long before the coordinator is (docs/benchmarks.md)."""
    if name == "asyncio":
        return None
    import uvloop  # bench-only (dev extras), imported when asked for

    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["quick", "full", "ha"])
    parser.add_argument(
        "--only", action="append", choices=PARTS + HA_PARTS, help="run only these parts"
    )
    parser.add_argument("--nodes", type=int, help="override hold/rollout node count")
    parser.add_argument(
        "--scaling",
        help="fleet sizes of the scaling curve, comma-separated (full: 1000,...,20000)",
    )
    parser.add_argument("--kills", type=int, help="ha: leader kills per lease TTL")
    parser.add_argument(
        "--lease-ttl", type=float, action="append", help="ha: lease TTLs in seconds (3 and 2)"
    )
    parser.add_argument("--samples", type=int, help="ha: wake samples of each kind")
    parser.add_argument(
        "--no-sqlite", action="store_true", help="ha-fleet: skip the SQLite comparison"
    )
    parser.add_argument(
        "--no-reconnect-spread",
        action="store_true",
        help="storm: simulated agents retry after the backoff's first step, as agents did"
        " before the first retry was spread (for comparison)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, db)")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the simulator process (the coordinator always runs its own)",
    )
    args = parser.parse_args()
    plan = dict({"quick": QUICK, "full": FULL, "ha": HA}[args.mode])
    if args.mode == "ha":
        overrides = {
            "fleet_nodes": args.nodes,
            "kills": args.kills,
            "lease_ttls": args.lease_ttl,
            "wake_samples": args.samples,
        }
        plan |= {k: v for k, v in overrides.items() if v}
        plan["sqlite"] = not args.no_sqlite
        parts = set(args.only or HA_PARTS)
    else:
        if args.nodes:
            plan["hold_nodes"] = plan["rollout_nodes"] = args.nodes
            plan["registration_nodes"] = plan["storm_nodes"] = args.nodes
        plan["spread_reconnect"] = not args.no_reconnect_spread
        if args.scaling:
            plan["scaling"] = [int(n) for n in args.scaling.split(",")]
        parts = set(args.only or (QUICK_PARTS if args.mode == "quick" else PARTS))
    raise_nofile_limit()
    pinning = pin_processes()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwave-bench-"))
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            main = run_ha if args.mode == "ha" else run
            results = runner.run(main(plan, parts, workdir))
        results["simulator_loop"] = args.loop
        results["pinning"] = pinning
    finally:
        if args.keep:
            print(f"# work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
