"""Thousands of simulated agents in one asyncio process, speaking the real agent protocol.

Each simulated node registers with the join token, long-polls its assignments
(``GET /v1/agent/assignments?index=N&wait=...``) and reports (``POST /v1/agent/report``)
every heartbeat interval and promptly after a state change, exactly like ``fleetwave-agent``.
Workloads are simulated: an assigned version is ``starting`` at once and, after
``start_delay``, ``healthy`` or ``failed`` (``failing_versions`` fail everywhere,
``fail_rate`` fails a random share of starts).

The fleet records what a benchmark needs: report round-trip latencies, when each
assignment reached its node, and when each failure was first reported.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agent.report import next_heartbeat

REPORT_DEBOUNCE = 0.1  # the real agent's debounce after a state change


def raise_nofile_limit() -> int:
    """Raise this process's soft fd limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class SimConfig:
    url: str
    """The coordinator; with ``urls``, ignored."""
    join_token: str
    nodes: int
    name_prefix: str = "sim"
    zones: int = 3
    poll_wait: float = 30.0
    heartbeat: float | None = None  # None: the coordinator's heartbeat_interval
    start_delay: float = 0.1
    failing_versions: frozenset[int] = frozenset()
    fail_rate: float = 0.0
    register_concurrency: int = 32
    report_connections: int = 256
    seed: int = 1
    urls: tuple[str, ...] = ()
    """Several coordinators (one database): node i starts on ``urls[i % len(urls)]`` and,
    like the real agent, moves to the next one when a request cannot connect."""

    def url_of(self, number: int) -> str:
        return self.urls[number % len(self.urls)] if self.urls else self.url


@dataclass
class Execution:
    job: str
    version: int
    generation: int
    state: str = "starting"
    message: str = ""


@dataclass
class Sample:
    at: float  # time.monotonic() when sent
    latency: float  # seconds
    ok: bool


@dataclass
class FleetLog:
    """What happened, in ``time.monotonic()`` seconds."""

    reports: list[Sample] = field(default_factory=list)
    polls: int = 0
    failovers: int = 0
    errors: list[str] = field(default_factory=list)
    # (received_at, node, job, version, generation) for every changed assignment received
    assignments: list[tuple[float, str, str, int, int]] = field(default_factory=list)
    # (sent_at, node, job, version) of the first report of each failed execution
    failures: list[tuple[float, str, str, int]] = field(default_factory=list)

    def error(self, what: str) -> None:
        if len(self.errors) < 1000:
            self.errors.append(what)


class SimNode:
    """One simulated agent: a poll task and a report task sharing the node's state."""

    def __init__(self, fleet: SimFleet, number: int) -> None:
        self.fleet = fleet
        cfg = fleet.config
        self.name = f"{cfg.name_prefix}-{number:05d}"
        self.number = number
        self.url = cfg.url_of(number)
        self.labels = {"zone": f"z{number % cfg.zones}", "sim": "true"}
        self.node_id = ""
        self.token = ""
        self.index = 0
        self.seq = 0
        self.heartbeat = cfg.heartbeat or 10.0
        self.executions: dict[str, Execution] = {}
        self.changed = asyncio.Event()
        self.reported_once = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def register(self, session: aiohttp.ClientSession) -> None:
        body = {
            "join_token": self.fleet.config.join_token,
            "name": self.name,
            "labels": self.labels,
            "agent_version": "sim",
        }
        async with session.post(f"{self.url}/v1/agent/register", json=body) as resp:
            text = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"register {self.name}: HTTP {resp.status} {text[:200]}")
        data = json.loads(text)
        self.node_id, self.token = data["node_id"], data["node_token"]
        self.heartbeat = self.fleet.config.heartbeat or float(data["heartbeat_interval"])

    async def poll_loop(self) -> None:
        cfg = self.fleet.config
        wait = f"{cfg.poll_wait:g}s"
        timeout = aiohttp.ClientTimeout(total=cfg.poll_wait + 30)
        session = self.fleet.poll_session
        while True:
            try:
                params = {"index": str(self.index), "wait": wait}
                async with session.get(
                    f"{self.url}/v1/agent/assignments",
                    params=params,
                    headers=self._auth,
                    timeout=timeout,
                ) as resp:
                    text = await resp.text()
                    status = resp.status
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.fleet.log.error(f"poll {self.name}: {type(exc).__name__} {exc}")
                self._fail_over(exc)
                await asyncio.sleep(1.0 + random.random())
                continue
            self.fleet.log.polls += 1
            if status != 200:
                self.fleet.log.error(f"poll {self.name}: HTTP {status} {text[:200]}")
                await asyncio.sleep(1.0 + random.random())
                continue
            self.apply(json.loads(text))

    def _fail_over(self, exc: Exception) -> None:
        """After a failed connect, the next coordinator (the real agent's rule)."""
        urls = self.fleet.config.urls
        if urls and isinstance(exc, aiohttp.ClientConnectionError):
            self.url = urls[(urls.index(self.url) + 1) % len(urls)]
            self.fleet.log.failovers += 1

    def apply(self, data: dict[str, Any]) -> None:
        """Reconcile simulated executions to the complete desired state."""
        now = time.monotonic()
        self.index = int(data["index"])
        wanted = {a["job"]: a for a in data["assignments"]}
        for job in list(self.executions):
            if job not in wanted:
                del self.executions[job]
                self._cancel_timer(job)
                self.changed.set()
        for job, a in wanted.items():
            current = self.executions.get(job)
            version, generation = int(a["version"]), int(a["generation"])
            if (
                current is not None
                and current.version == version
                and current.generation == generation
            ):
                continue
            self.fleet.log.assignments.append((now, self.node_id, job, version, generation))
            self.fleet.arrived.set()
            self.executions[job] = Execution(job, version, generation)
            self._cancel_timer(job)
            loop = asyncio.get_running_loop()
            delay = self.fleet.config.start_delay
            self._timers[job] = loop.call_later(delay, self._started, job, version, generation)
            self.changed.set()

    def _cancel_timer(self, job: str) -> None:
        timer = self._timers.pop(job, None)
        if timer is not None:
            timer.cancel()

    def _started(self, job: str, version: int, generation: int) -> None:
        self._timers.pop(job, None)
        execution = self.executions.get(job)
        if execution is None or (execution.version, execution.generation) != (version, generation):
            return
        if self.fleet.should_fail(version):
            execution.state, execution.message = "failed", "simulated start failure"
        else:
            execution.state = "healthy"
        self.changed.set()

    async def report_loop(self) -> None:
        # Like the real agent (agent/report.py): heartbeats at a random phase of the interval,
        # which reports on a state change do not move.
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + random.uniform(0, self.heartbeat)
        while True:
            timed_out = False
            try:
                async with asyncio.timeout_at(next_beat):
                    await self.changed.wait()
                await asyncio.sleep(REPORT_DEBOUNCE)
            except TimeoutError:
                timed_out = True
            next_beat = next_heartbeat(next_beat, loop.time(), self.heartbeat, timed_out=timed_out)
            self.changed.clear()
            await self.report()

    async def report(self) -> None:
        self.seq += 1
        executions = [
            {
                "job": e.job,
                "version": e.version,
                "generation": e.generation,
                "state": e.state,
                "message": e.message,
            }
            for e in self.executions.values()
        ]
        body = json.dumps({"seq": self.seq, "load": {}, "executions": executions})
        failing = [e for e in self.executions.values() if e.state == "failed"]
        sent = time.monotonic()
        ok = False
        try:
            async with self.fleet.report_session.post(
                f"{self.url}/v1/agent/report",
                data=body,
                headers={**self._auth, "Content-Type": "application/json"},
            ) as resp:
                text = await resp.text()
                ok = resp.status == 200
                if not ok:
                    self.fleet.log.error(f"report {self.name}: HTTP {resp.status} {text[:200]}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fleet.log.error(f"report {self.name}: {type(exc).__name__} {exc}")
            self._fail_over(exc)
        self.fleet.log.reports.append(Sample(sent, time.monotonic() - sent, ok))
        if ok:
            self.reported_once.set()
            for e in failing:
                self.fleet.note_failure(sent, self.node_id, e.job, e.version)


class SimFleet:
    """Runs ``config.nodes`` simulated agents until ``stop()``."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.log = FleetLog()
        self.nodes = [SimNode(self, i) for i in range(config.nodes)]
        self._rand = random.Random(config.seed)
        self._failed_seen: set[tuple[str, str, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.arrived = asyncio.Event()
        """Set whenever an assignment reaches a node (cleared by whoever waits for one)."""
        self.poll_session: aiohttp.ClientSession
        self.report_session: aiohttp.ClientSession

    def should_fail(self, version: int) -> bool:
        if version in self.config.failing_versions:
            return True
        return self.config.fail_rate > 0 and self._rand.random() < self.config.fail_rate

    def note_failure(self, sent: float, node: str, job: str, version: int) -> None:
        key = (node, job, version)
        if key not in self._failed_seen:
            self._failed_seen.add(key)
            self.log.failures.append((sent, node, job, version))

    async def __aenter__(self) -> SimFleet:
        raise_nofile_limit()
        self.poll_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120)
        )
        self.report_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.report_connections),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Register every node (bounded concurrency), then start their poll and report loops."""
        gate = asyncio.Semaphore(self.config.register_concurrency)

        async def one(node: SimNode) -> None:
            async with gate:
                for attempt in range(5):  # like the agent: retry a timed-out registration
                    try:
                        await node.register(self.report_session)
                        break
                    except TimeoutError:
                        self.log.error(f"register {node.name}: timed out (attempt {attempt + 1})")
                else:
                    raise RuntimeError(f"register {node.name}: timed out 5 times")
            self._tasks.append(asyncio.create_task(node.poll_loop()))
            self._tasks.append(asyncio.create_task(node.report_loop()))

        await asyncio.gather(*(one(n) for n in self.nodes))

    async def wait_reported(self, deadline: float) -> None:
        """Until every node has had one report accepted."""
        async with asyncio.timeout(deadline):
            for node in self.nodes:
                await node.reported_once.wait()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if hasattr(self, "poll_session"):
            await self.poll_session.close()
            await self.report_session.close()

    def reports_between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.log.reports if start <= s.at < end]

    def received(self, job: str, version: int) -> dict[str, float]:
        """Node id -> when it first received ``version`` of ``job``."""
        seen: dict[str, float] = {}
        for at, node, j, v, _gen in self.log.assignments:
            if j == job and v == version and node not in seen:
                seen[node] = at
        return seen


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
