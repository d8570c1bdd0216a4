"""A LocalFleet with fault injection and the evidence the invariants are checked on.

``FaultFleet`` starts a real coordinator and real agents (``LocalFleet``), deploys the
suite's own workload (``workload.py``, which records every start and stop), and keeps:

- the seeded ``random.Random`` every random choice of a scenario comes from;
- every PUT and its answer, every rollout's membership as stored, every fault it injected
  (kills, pauses, clock steps) with real wall times;
- the coordinator's event log, read as it grows (``events.EventRecorder``).

``violations()`` runs every invariant of ``invariants.py`` over all of it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import LocalFleet, Proc, free_port, wait_for
from tests.faults import invariants
from tests.faults.events import EventRecorder, http_call
from tests.faults.invariants import Life, Put, Rollout
from tests.helpers import JOBS_AS_PYTEST_USER

WORKLOAD = Path(__file__).with_name("workload.py")
JOB = "web"
ZERO_TIME = "0001-01-01T00:00:00Z"
ENDED = {"running", "degraded", "rollout_failed", "failed", "completed"}
EVAL_METRIC = "fleetwave_engine_evaluation_duration_seconds_count"
INVARIANTS = (
    "canary_gate",
    "wave_order",
    "completion",
    "healthy_never_failed",
    "live_never_down",
    "no_duplicate_starts",
    "acknowledged_writes",
)

# Short intervals so that the whole suite fits its budget; a node is down after 4 s.
HEARTBEAT = "500ms"
TTL_SECONDS = 4.0

POLICY: dict[str, Any] = {
    "canary": 1,
    "waves": 3,
    "min_healthy_time": "1s",
    "healthy_deadline": "8s",
    "progress_deadline": "1m",
    "on_unreachable": "skip",
    "auto_rollback": True,
    "max_failed_nodes": 0,
}


@dataclass
class Restart:
    """One coordinator restart: when we killed it, when it was ready, when it evaluated."""

    killed_at: float  # real wall time
    ready_after: float  # seconds from kill to /readyz 200
    resumed_after: float | None  # seconds from ready to its first engine evaluation (None: >3 s)


@dataclass
class FaultFleet:
    """A local fleet of real processes plus the faults injected into it and their evidence."""

    base_dir: Path
    seed: int
    heartbeat: str = HEARTBEAT
    ttl: float = TTL_SECONDS
    coordinator_env: dict[str, str] = field(default_factory=dict)
    rng: random.Random = field(init=False)
    fleet: LocalFleet = field(init=False)
    records: Path = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    puts: list[Put] = field(default_factory=list)
    rollouts: dict[int, Rollout] = field(default_factory=dict)
    broken: set[int] = field(default_factory=set)
    outages: dict[str, list[list[float | None]]] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    recorder: EventRecorder = field(init=False)
    _marks: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - seeded fault choices, no secrets
        self.fleet = LocalFleet(
            self.base_dir,
            heartbeat_interval=self.heartbeat,
            heartbeat_ttl=f"{self.ttl:g}s",
            policy=JOBS_AS_PYTEST_USER,
        )
        self.records = self.base_dir / "workload-records.jsonl"
        self.recorder = EventRecorder(self.fleet.url)

    # ------------------------------------------------------------------ processes

    @property
    def api(self) -> ApiClient:
        return self.fleet.api

    @property
    def coordinator(self) -> Proc:
        assert self.fleet.coordinator is not None
        return self.fleet.coordinator

    def start(self, agents: int, *, coordinator_url: str | None = None) -> None:
        """A coordinator and ``agents`` agents (labels: a port, one of two zones), all ready."""
        self.fleet.start_coordinator(env=self.coordinator_env)
        self.recorder.start()
        for i in range(1, agents + 1):
            name = f"n{i}"
            self.ports[name] = free_port()
            labels = {"port": str(self.ports[name]), "zone": f"z{i % 2}"}
            self.fleet.start_agent(name, labels, coordinator=coordinator_url)
        self.fleet.wait_nodes_ready(agents, timeout=60)

    def kill_coordinator(self) -> float:
        """kill -9 the coordinator; return the real time of the kill."""
        at = time.time()
        self.fleet.stop(self.coordinator, signal.SIGKILL)
        return at

    def restart_coordinator(self, killed_at: float, *, watch_resume: bool = True) -> Restart:
        """Start it again on the same data dir and port; time readiness and the engine's
        first evaluation (its evaluation counter leaving 0), watched for up to 3 s."""
        self.fleet.start_coordinator(wait=False, env=self.coordinator_env)
        self.fleet.wait_ready(timeout=60)
        ready = time.time()
        resumed = None
        if watch_resume:  # (a coordinator without jobs has nothing to evaluate)
            with contextlib.suppress(TimeoutError):
                wait_for("a first engine evaluation", self._evaluated, timeout=3, interval=0.02)
                resumed = time.time() - ready
        restart = Restart(killed_at, ready - killed_at, resumed)
        self.restarts.append(restart)
        return restart

    def _evaluated(self) -> bool:
        with urllib.request.urlopen(self.fleet.url + "/metrics", timeout=2) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith(EVAL_METRIC + " "):
                return float(line.split()[1]) > 0
        return False

    def pause(self, proc: Proc, seconds: float, *, node: str | None = None) -> None:
        """SIGSTOP ``proc`` for ``seconds`` (the fault itself), then SIGCONT."""
        start = time.time()
        os.kill(proc.popen.pid, signal.SIGSTOP)
        outage = self.outage_begins(node) if node else None
        try:
            time.sleep(seconds)
        finally:
            os.kill(proc.popen.pid, signal.SIGCONT)
            if outage is not None:
                outage[1] = time.time()
        self.figures.setdefault("pauses", []).append(
            {"what": node or "coordinator", "seconds": round(time.time() - start, 2)}
        )

    def freeze_agent(self, node: str) -> list[float | None]:
        """SIGSTOP ``node``'s agent until ``thaw_agent``; return its outage."""
        os.kill(self.fleet.agents[node].popen.pid, signal.SIGSTOP)
        return self.outage_begins(node)

    def thaw_agent(self, node: str, outage: list[float | None]) -> None:
        os.kill(self.fleet.agents[node].popen.pid, signal.SIGCONT)
        outage[1] = time.time()
        assert outage[0] is not None
        self.figures.setdefault("pauses", []).append(
            {"what": node, "seconds": round(outage[1] - outage[0], 2)}
        )

    def outage_begins(self, node: str) -> list[float | None]:
        """Note that ``node``'s agent stops answering from now (set [1] when it is back)."""
        outage: list[float | None] = [time.time(), None]
        self.outages.setdefault(node, []).append(outage)
        return outage

    def close(self) -> None:
        for proc in [self.fleet.coordinator, *self.fleet.agents.values()]:
            if proc is not None and proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.popen.pid, signal.SIGCONT)
        self.recorder.stop()
        self.fleet.close()

    # ------------------------------------------------------------------ jobs

    def spec(
        self,
        *,
        broken: bool = False,
        crash_after_ms: int = 0,
        restart: dict[str, Any] | None = None,
        pad: str = "",
        **rollout: Any,
    ) -> dict[str, Any]:
        """A job spec running the workload; each spec carries a new marker, so it is a new
        version and a stored version can be matched with the PUT that made it; ``pad``
        makes it big."""
        self._marks += 1
        command = [
            sys.executable,
            str(WORKLOAD),
            "--records",
            str(self.records),
            "--port",
            "${node.label.port}",
            "--node",
            "${node.name}",
            "--job",
            "${job.name}",
            "--version",
            "${job.version}",
        ]
        if broken:
            command.append("--broken")
        if crash_after_ms:
            command += ["--crash-after-ms", str(crash_after_ms)]
        task: dict[str, Any] = {
            "command": command,
            "env": {"FAULT_MARK": f"{self.seed}-{self._marks}"}
            | ({"FAULT_PAD": pad} if pad else {}),
            "kill_timeout": "5s",
        }
        if restart is not None:
            task["restart"] = restart
        check = {
            "type": "http",
            "url": "http://127.0.0.1:${node.label.port}/",
            "interval": "200ms",
            "timeout": "500ms",
            "failure_threshold": 2,
        }
        return {
            "name": JOB,
            "task": task,
            "health": {"checks": [check]},
            "rollout": {**POLICY, **rollout},
        }

    def put(self, spec: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """PUT ``spec``; note the answer (and whether the version is broken everywhere)."""
        status, headers, body = http_call(f"{self.fleet.url}/v1/jobs/{JOB}", "PUT", spec)
        version = body["version"] if status in (200, 201) else 0
        self.puts.append(Put(status, version, spec["task"]["env"]["FAULT_MARK"]))
        if version and "--broken" in spec["task"]["command"]:
            self.broken.add(version)
        return status, headers, body

    def deploy(self, spec: dict[str, Any]) -> int:
        """PUT ``spec`` (it must be acknowledged) and note its rollout's membership."""
        plan = self.api.request("POST", f"/v1/jobs/{JOB}/plan", spec).body["rollout"]
        status, _, body = self.put(spec)
        assert status in (200, 201), f"PUT answered {status}: {body}"
        version = int(body["version"])
        self.rollouts[version] = self._membership(version, plan)
        return version

    def _membership(self, version: int, plan: dict[str, Any]) -> Rollout:
        """The rollout as stored, read while it runs; the dry-run plan (same inputs, same
        split) if it ended before we could look."""

        def stored() -> Rollout | None:
            view = self.api.request("GET", f"/v1/jobs/{JOB}/rollout").body
            if view.get("target_version") == version and view.get("type") in ("create", "update"):
                return Rollout(
                    JOB,
                    version,
                    tuple(n["id"] for n in view["canary"]["nodes"]),
                    tuple(tuple(n["id"] for n in w["nodes"]) for w in view["waves"]),
                )
            if view.get("rolled_back_from") == version:
                return self._from_plan(version, plan)
            return None

        return wait_for(f"the rollout of version {version}", stored, timeout=60)

    def _from_plan(self, version: int, plan: dict[str, Any]) -> Rollout:
        self.figures["membership_from_plan"] = self.figures.get("membership_from_plan", 0) + 1
        return Rollout(
            JOB,
            version,
            tuple(n["id"] for n in plan["canary"]),
            tuple(tuple(n["id"] for n in wave) for wave in plan["waves"]),
        )

    def status(self) -> dict[str, Any]:
        return self.fleet.status(JOB)

    def rollout_ended(self, version: int) -> dict[str, Any] | None:
        """The status once the rollouts of ``version`` are over (rolled back or not)."""
        status = self.status()
        ended = status["state"]["state_type"] in ENDED
        done = status["rollout"]["completed_at"] != ZERO_TIME
        return status if status["version"] == version and ended and done else None

    def rollout_ended_now(self, version: int) -> bool:
        """Whether the rollouts of ``version`` are over; False when the coordinator is busy
        or unreachable (it was just restarted)."""
        try:
            return self.rollout_ended(version) is not None
        except ApiError:
            return False

    def job_nodes(self) -> dict[str, dict[str, Any]]:
        """GET /v1/jobs/web/nodes by node name."""
        rows = self.api.request("GET", f"/v1/jobs/{JOB}/nodes").body["nodes"]
        return {row["node_name"]: row for row in rows}

    def wait_all_run(self, version: int, timeout: float = 60) -> None:
        """Until every node reports a healthy execution of ``version``."""

        def converged() -> bool:
            rows = self.job_nodes().values()
            return len(rows) == len(self.ports) and all(
                (r["execution"] or {}).get("version") == version
                and (r["execution"] or {}).get("state") == "healthy"
                for r in rows
            )

        wait_for(f"every node to run version {version} healthy", converged, timeout)

    def stored_versions(self) -> dict[int, str]:
        body = self.api.request("GET", f"/v1/jobs/{JOB}/versions").body
        return {
            v["version"]: v["spec"]["task"]["env"].get("FAULT_MARK", "") for v in body["versions"]
        }

    def segment(self, version: int) -> invariants.Segment:
        """The events of the rollout of ``version`` (create or update)."""
        found = invariants.segments(self.recorder.events(), JOB)
        return next(s for s in found if s.kind == "rollout" and s.version == version)

    def names(self) -> dict[str, str]:
        return {n["id"]: n["name"] for n in self.fleet.nodes()}

    def lives(self) -> list[Life]:
        return invariants.lives(invariants.read_records(self.records))

    # ------------------------------------------------------------------ verdicts

    def verdicts(self, *, check_down: bool = True) -> dict[str, list[str]]:
        """Every invariant over everything seen so far, by name (the coordinator must be up).

        ``check_down=False`` leaves out "no live node is marked down", for scenarios whose
        faults make every node legitimately unreachable (a lossy network).
        """
        events = self.recorder.events()
        names = self.names()
        starts = self.lives()
        found: dict[str, list[str]] = {name: [] for name in INVARIANTS}
        for version, rollout in sorted(self.rollouts.items()):
            found["canary_gate"] += invariants.check_canary_gate(
                rollout, events, starts, names, broken_everywhere=version in self.broken
            )
            found["wave_order"] += invariants.check_wave_order(rollout, events, starts, names)
            found["completion"] += invariants.check_completion(rollout, events, starts, names)
        found["healthy_never_failed"] = invariants.check_healthy_never_failed(
            events, starts, names, JOB
        )
        if check_down:
            outages = {
                node: [(float(a or 0), b) for a, b in spans] for node, spans in self.outages.items()
            }
            found["live_never_down"] = invariants.check_live_nodes_never_down(
                events, names, outages, self.ttl
            )
        else:
            del found["live_never_down"]
        found["no_duplicate_starts"] = invariants.check_no_duplicate_starts(starts)
        found["acknowledged_writes"] = invariants.check_acknowledged_writes(
            self.puts, self.stored_versions()
        )
        self.figures.update(
            events=len(events),
            rollouts=len(self.rollouts),
            workload_starts=len(starts),
            acknowledged_writes=sum(p.status in (200, 201) for p in self.puts),
            violations={name: len(problems) for name, problems in found.items()},
        )
        return found

    def violations(self, *, check_down: bool = True) -> list[str]:
        """``verdicts()`` as one list of sentences, each naming its invariant."""
        return [
            f"[{name}] {problem}"
            for name, problems in self.verdicts(check_down=check_down).items()
            for problem in problems
        ]

    def progress_after_restarts(self) -> dict[str, float] | None:
        """How long after each restart was ready the job's first event came (0 when it
        came while starting), before the next kill; restarts with no event are left out."""
        events = [e for e in self.recorder.events() if e.job == JOB]
        delays = []
        for i, restart in enumerate(self.restarts):
            ready = restart.killed_at + restart.ready_after
            until = self.restarts[i + 1].killed_at if i + 1 < len(self.restarts) else 1e12
            first = next((e.time for e in events if restart.killed_at <= e.time < until), None)
            if first is not None:
                delays.append(max(0.0, first - ready))
        return _spread(delays)

    def restart_figures(self) -> dict[str, Any]:
        resumed = [r.resumed_after for r in self.restarts]
        known = [r for r in resumed if r is not None]
        ready = [r.ready_after for r in self.restarts]
        return {
            "kills": len(self.restarts),
            "ready_after_kill_s": _spread(ready),
            "resume_after_ready_s": _spread(known),
            "not_resumed_within_3s": len(resumed) - len(known),
        }


def ended_running(
    faults: FaultFleet, version: int, *, timeout: float = 45, also: tuple[str, ...] = ()
) -> list[str]:
    """Wait for the rollouts of ``version`` to end; a good version must end ``running`` (or
    one of ``also``), a broken one rolled back by itself (``rollout_failed`` after a
    rollback). Returns what went wrong, as sentences."""
    try:
        status = wait_for(
            f"the rollout of version {version} to end",
            lambda: faults.rollout_ended(version),
            timeout,
        )
    except TimeoutError as exc:
        return [f"stuck: {exc}"]
    state, kind = status["state"]["state_type"], status["rollout"]["type"]
    if version in faults.broken:
        if (state, kind) != ("rollout_failed", "rollback"):
            return [f"broken version {version} ended {state} after a {kind} (not rolled back)"]
    elif state not in ("running", *also):
        return [f"good version {version} ended {state}: {status['state']['message']}"]
    return []


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def rerun_hint(seed: int, nodeid: str) -> str:
    return f"seed {seed}; rerun: FLEETWAVE_FAULT_SEED={seed} .venv/bin/pytest '{nodeid}'"
