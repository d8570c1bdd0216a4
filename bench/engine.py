"""The engine's cost per evaluation, incremental against a full re-plan, in the same run.

    python -m bench.engine [--nodes 1000,10000] [--batch 50] [--out engine.json]

A rollout (canary + 10 waves, ``min_healthy_time`` 1 s) over N nodes in memory, with the
real planner: agents report healthy in batches of ``--batch``, and after each batch (as the
driver after a kick) the job is planned; the clock then moves on 2 s and it is planned
again. Each evaluation is timed three ways on the same inputs, one after the other:

- ``full``: ``plan_rollout`` without an index, the reference (the engine before the index);
- ``compare``: with the index finding changes by comparing records (the PostgreSQL store);
- ``log``: with the index and the changed node ids, as the store's change log hands them
  to the driver (the SQLite and memory stores).

Only the ``log`` plan is applied; the three plans are checked equal at every evaluation.
The last rows are a steady fleet: one report of one node, planned.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
)
from coordinator.engine.index import RolloutIndex
from coordinator.engine.observation import Observation
from coordinator.engine.planner import RolloutPlan, plan_rollout
from coordinator.submit import revise
from shared.nodes import NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobSpec

T0 = datetime(2026, 12, 1, tzinfo=UTC)
MODES = ("full", "compare", "log")


@dataclass
class Timings:
    samples: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evaluations": len(self.samples["full"])}
        for mode, values in self.samples.items():
            ordered = sorted(values)
            out[mode] = {
                "p50_ms": round(statistics.median(ordered) * 1000, 3),
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
                "total_s": round(sum(ordered), 3),
            }
        out["ratio_log_vs_full_total"] = round(
            out["log"]["total_s"] / max(out["full"]["total_s"], 1e-9), 4
        )
        return out


class Fleet:
    """N nodes, one job, and the driver's bookkeeping of what changed."""

    def __init__(self, size: int) -> None:
        self.now = T0
        self.nodes = {
            f"n{i:05d}": NodeRecord(
                id=f"n{i:05d}",
                name=f"n{i:05d}",
                token_hash=f"h{i}",
                status=NodeStatus.READY,
                labels={"zone": f"z{i % 3}"},
                registered_at=T0,
                last_heartbeat=T0,
            )
            for i in range(size)
        }
        self.assignments: dict[str, AssignmentRecord] = {}
        self.executions: dict[str, ExecutionRecord] = {}
        spec = JobSpec.model_validate(
            {
                "name": "web",
                "task": {"command": ["run"]},
                "rollout": {
                    "canary": 1,
                    "waves": 10,
                    "min_healthy_time": "1s",
                    "healthy_deadline": "5m",
                    "progress_deadline": "10m",
                },
            }
        )
        job = revise(None, spec, T0)
        assert job is not None
        self.job: JobRecord = job
        self.observation = Observation(heartbeat=timedelta(seconds=10))
        self.changed: set[str] = set()
        self.compare_index = RolloutIndex()
        self.log_index = RolloutIndex()
        self.first = True

    def report_healthy(self, node_id: str) -> None:
        assigned = self.assignments[node_id]
        self.executions[node_id] = ExecutionRecord(
            node_id=node_id,
            job="web",
            version=assigned.version,
            generation=assigned.generation,
            state=ExecutionState.HEALTHY,
            since=self.now,
            updated_at=self.now,
        )
        self.changed.add(node_id)

    def behind(self) -> list[str]:
        behind = []
        for node_id, want in self.assignments.items():
            ran = self.executions.get(node_id)
            if ran is None or (ran.version, ran.generation) != (want.version, want.generation):
                behind.append(node_id)
        return behind

    def evaluate(self, timings: Timings) -> RolloutPlan:
        inputs = (self.job, self.nodes, self.assignments, self.executions, self.now)
        plans = {}
        started = time.perf_counter()
        plans["full"] = plan_rollout(*inputs, self.observation)
        timings.samples["full"].append(time.perf_counter() - started)
        started = time.perf_counter()
        plans["compare"] = plan_rollout(*inputs, self.observation, self.compare_index)
        timings.samples["compare"].append(time.perf_counter() - started)
        changed = None if self.first else self.changed
        started = time.perf_counter()
        plans["log"] = plan_rollout(*inputs, self.observation, self.log_index, changed)
        timings.samples["log"].append(time.perf_counter() - started)
        self.first = False
        reference = plans["full"]
        for mode in ("compare", "log"):
            plan = plans[mode]
            same = (plan.job, plan.changes, plan.events, plan.wake_at) == (
                reference.job,
                reference.changes,
                reference.events,
                reference.wake_at,
            )
            if not same:
                raise SystemExit(f"the {mode} plan differs from the full one at {self.now}")
        return self.apply(plans["log"])

    def apply(self, plan: RolloutPlan) -> RolloutPlan:
        self.job = plan.job
        self.changed = set()
        for change in plan.changes:
            self.changed.add(change.node_id)
            if change.version is None:
                self.assignments.pop(change.node_id, None)
            else:
                self.assignments[change.node_id] = AssignmentRecord(
                    node_id=change.node_id,
                    job="web",
                    version=change.version,
                    generation=change.generation,
                    assigned_at=self.now,
                )
        return plan


def run(size: int, batch: int) -> dict[str, Any]:
    fleet = Fleet(size)
    rollout, steady = Timings(), Timings()
    fleet.evaluate(rollout)
    started = time.monotonic()
    while fleet.job.rollout.phase != "done":
        todo = fleet.behind()
        for index in range(0, len(todo), batch):
            for node_id in todo[index : index + batch]:
                fleet.report_healthy(node_id)
            fleet.evaluate(rollout)
        fleet.now += timedelta(seconds=2)
        fleet.evaluate(rollout)
        if time.monotonic() - started > 600:
            raise SystemExit("the rollout did not finish in 10 minutes")
    nodes = sorted(fleet.nodes)
    for i in range(50):
        fleet.now += timedelta(seconds=1)
        node_id = nodes[(i * 7919) % len(nodes)]
        fleet.report_healthy(node_id)
        fleet.evaluate(steady)
    return {"nodes": size, "rollout": rollout.summary(), "steady": steady.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--nodes", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=50, help="reports per evaluation")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    for size in (int(n) for n in args.nodes.split(",")):
        result = run(size, args.batch)
        results.append(result)
        for part in ("rollout", "steady"):
            row = result[part]
            print(
                f"{size:>6} nodes {part:7} evaluations {row['evaluations']:>4}: "
                + "  ".join(
                    f"{mode} p50 {row[mode]['p50_ms']:.2f} / p99 {row[mode]['p99_ms']:.2f} ms"
                    for mode in MODES
                )
                + f"  (log/full total {row['ratio_log_vs_full_total']:.4f})",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
