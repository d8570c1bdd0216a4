"""The fault harness on three coordinators sharing one PostgreSQL database.

``HaFleet`` is the fault suite's ``FaultFleet`` (its workload that records every start, the
rollouts' stored membership, the invariants) on a ``LocalFleet`` of several coordinators:
every call goes to a coordinator that can answer, the event log is read from whichever
one is up, and ``failover()`` kills the leader and times the takeover.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.client import ApiError
from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.faults.events import EventRecorder, http_call
from tests.faults.harness import JOB, ZERO_TIME, FaultFleet
from tests.faults.invariants import Put
from tests.helpers import JOBS_AS_PYTEST_USER

REPORT = Path(
    os.environ.get("FLEETWAVE_HA_REPORT", Path(__file__).resolve().parents[2] / ".ha-report.json")
)
"""Where the HA tests write their figures (merged by section), for docs/benchmarks.md."""

LEASE_TTL = "2s"
COORDINATORS = 3


@dataclass(frozen=True)
class Failover:
    """One kill of the leader and its takeover: who, when, and the epochs before and after."""

    killed: int  # member index
    killed_at: float  # wall time
    leader: int  # the new leader's index
    seconds: float  # from the kill to the new leader's /readyz saying "leader"
    old_epoch: int
    new_epoch: int


class ClusterEvents(EventRecorder):
    """The event log, read from the first coordinator that answers (the store is shared)."""

    def __init__(self, fleet: LocalFleet) -> None:
        super().__init__(fleet.url)
        self._fleet = fleet

    def _fetch(self, after: int) -> list[dict[str, Any]]:
        last: ApiError | None = None
        for index, member in enumerate(self._fleet.members):
            if not member.running:
                continue
            self._api = self._fleet.api_of(index, timeout=2)
            try:
                return super()._fetch(after)
            except ApiError as exc:
                last = exc
        raise last or ApiError(0, "unavailable", "no coordinator answers", {})


@dataclass
class HaFleet(FaultFleet):
    """A FaultFleet whose coordinators are ``coordinators`` members on ``database_url``."""

    database_url: str = field(kw_only=True)
    coordinators: int = field(default=COORDINATORS, kw_only=True)
    lease_ttl: str = field(default=LEASE_TTL, kw_only=True)
    failovers: list[Failover] = field(default_factory=list, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fleet = LocalFleet(
            self.base_dir,
            heartbeat_interval=self.heartbeat,
            heartbeat_ttl=f"{self.ttl:g}s",
            policy=JOBS_AS_PYTEST_USER,
            database_url=self.database_url,
            coordinators=self.coordinators,
            lease_ttl=self.lease_ttl,
        )
        self.recorder = ClusterEvents(self.fleet)

    def start(self, agents: int, *, coordinator_url: str | None = None) -> None:
        """Every coordinator (one leads) and ``agents`` agents that know them all, all ready."""
        self.fleet.start_coordinators(env=self.coordinator_env)
        self.recorder.start()
        for i in range(1, agents + 1):
            name = f"n{i}"
            self.ports[name] = free_port()
            labels = {"port": str(self.ports[name]), "zone": f"z{i % 2}"}
            self.fleet.start_agent(name, labels, coordinator=coordinator_url)
        self.fleet.wait_nodes_ready(agents, timeout=60)

    def live_url(self) -> str:
        """The URL of the first coordinator that is up and not paused."""
        running = [i for i, m in enumerate(self.fleet.members) if m.running]
        return self.fleet.member_url(running[0] if running else 0)

    def put(self, spec: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """PUT ``spec`` on a coordinator that is up (any member serves the whole API)."""
        status, headers, body = http_call(f"{self.live_url()}/v1/jobs/{JOB}", "PUT", spec)
        version = body["version"] if status in (200, 201) else 0
        self.puts.append(Put(status, version, spec["task"]["env"]["FAULT_MARK"]))
        return status, headers, body

    def epoch(self, member: int) -> int:
        return int(self.fleet.cluster(member)["epoch"])

    def failover(self, *, within: float = 30.0) -> Failover:
        """kill -9 the leader and start it again at once (as systemd would); wait for a
        member to say it leads (the restarted one may win the lease too) and time it."""
        old = self.fleet.leader(timeout=10)
        old_epoch = self.epoch(old)
        killed_at = self.fleet.kill_coordinator(old)
        self.fleet.start_coordinator(wait=False, member=old, env=self.coordinator_env)
        new = self.fleet.leader(timeout=within)
        seconds = time.time() - killed_at
        failover = Failover(old, killed_at, new, seconds, old_epoch, self.epoch(new))
        self.failovers.append(failover)
        return failover

    def rollout_view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.api.request("GET", f"/v1/jobs/{JOB}/rollout").body
        return view

    def close(self) -> None:
        for member in self.fleet.members:
            if member.paused and member.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member.proc.popen.pid, signal.SIGCONT)
                member.paused = False
        super().close()


def active_group(view: dict[str, Any]) -> int | None:
    """Which gated group of the rollout is being updated: 0 the canaries, then each wave
    (1-based, as in the view); None once it has ended or before it began."""
    if view["completed_at"] != ZERO_TIME:
        return None
    if view["canary"]["nodes"] and view["canary"]["state"] == "active":
        return 0
    active = [w["wave"] for w in view["waves"] if w["state"] == "active"]
    return active[0] if active else None


def wait_for_group(ha: HaFleet, version: int, group: int, timeout: float = 60) -> int | None:
    """Poll the rollout of ``version`` until its active group is ``group`` or later; the
    group reached, or None when the rollout ended first."""

    def reached() -> tuple[int | None] | None:
        try:
            view = ha.rollout_view()
        except ApiError:
            return None
        if view.get("target_version") != version:
            return None
        now = active_group(view)
        if now is None:
            return (None,) if view["completed_at"] != ZERO_TIME else None
        return (now,) if now >= group else None

    return wait_for(f"group {group} of version {version}", reached, timeout, interval=0.02)[0]


def spread(values: list[float]) -> dict[str, float]:
    """p50, p99 (nearest rank), max and min of ``values``, in seconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered) + 0.5) - 1))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
    }


def write_report(section: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` as ``section`` into the HA report file."""
    try:
        report = json.loads(REPORT.read_text())
    except (OSError, ValueError):
        report = {}
    report[section] = figures | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
