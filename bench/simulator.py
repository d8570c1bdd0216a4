"""Thousands of simulated agents in one asyncio process, speaking the real agent protocol.

Each simulated node registers with the join token, long-polls its assignments
(``GET /v1/agent/assignments?index=N&wait=...``) and reports (``POST /v1/agent/report``)
every heartbeat interval and promptly after a state change, exactly like ``fleetwave-agent``.
Workloads are simulated: an assigned version is ``starting`` at once and, after
``start_delay``, ``healthy`` or ``failed`` (``failing_versions`` fail everywhere,
``fail_rate`` fails a random share of starts).

Losing the coordinator, a simulated node does what ``fleetwave-agent`` does (agent/sync.py,
agent/report.py, agent/backoff.py): the poll retries after the agent's jittered backoff (the
first retry after a coordinator that answered is spread over ``BackoffPolicy.reconnect_spread``,
then equal jitter), a failed report is retried after the same backoff capped at a heartbeat,
a ``Retry-After`` is waited out, a report answered ``accepted: false`` is resent above the
coordinator's seq, the first answer after an outage sends the pending report at once and wakes
the poll, and a call has 5 s to connect and 10 s for its answer. Registration is retried the
same way, with a node key, so a registration whose answer was lost is renewed, not refused.

The fleet records what a benchmark needs: report round-trip latencies, when each
assignment reached its node, when each failure was first reported, and every error by kind
(``error_kind``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import resource
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agent.backoff import BackoffPolicy, retry_delay
from agent.report import next_heartbeat, report_retry_delay

REPORT_DEBOUNCE = 0.1  # the real agent's debounce after a state change
BACKOFF = BackoffPolicy()  # the real agent's default
REGISTER_ATTEMPTS = 20
MAX_RESENDS = 3  # the real agent's resends with a corrected seq (agent/report.py)

EXPECTED_IN_OUTAGE = frozenset({"connection_refused", "disconnected", "503_retry_after"})
"""Error kinds an agent sees while its coordinator restarts or sheds load on purpose."""


class HTTPStatusError(Exception):
    """An answer with an unexpected status (for ``error_kind``)."""

    def __init__(self, what: str, status: int, retry_after: float | None, text: str) -> None:
        super().__init__(f"{what}: HTTP {status} {text[:200]}")
        self.status = status
        self.retry_after = retry_after


def error_kind(exc: BaseException) -> str:
    """A short name for what went wrong, to count errors by kind."""
    if isinstance(exc, HTTPStatusError):
        if exc.status == 503:
            return "503_retry_after" if exc.retry_after is not None else "503"
        return "5xx" if exc.status >= 500 else f"http_{exc.status}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return "connection_refused" if refused else "connect_failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "disconnected"
    return type(exc).__name__


def retry_after_of(resp: aiohttp.ClientResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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
    spread_reconnect: bool = True
    """The agent's first retry after losing its coordinator spread over
    ``BackoffPolicy.reconnect_spread``; False: the backoff's first step (0.25-0.5 s), what
    the agent did before, for comparison."""
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
    node: int = -1  # the sending node's number


@dataclass
class FleetLog:
    """What happened, in ``time.monotonic()`` seconds."""

    reports: list[Sample] = field(default_factory=list)
    polls: int = 0
    failovers: int = 0
    seq_behind: int = 0  # reports answered accepted=false (the coordinator saw a newer seq)
    errors: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    # (time.monotonic(), "poll" | "report" | "register", kind) of every error
    error_times: list[tuple[float, str, str]] = field(default_factory=list)
    # (received_at, node, job, version, generation) for every changed assignment received
    assignments: list[tuple[float, str, str, int, int]] = field(default_factory=list)
    # (sent_at, node, job, version) of the first report of each failed execution
    failures: list[tuple[float, str, str, int]] = field(default_factory=list)

    def error(self, what: str) -> None:
        if len(self.errors) < 1000:
            self.errors.append(what)

    def failed(self, call: str, name: str, exc: BaseException, sent: float) -> None:
        """Count an error of the call sent at ``sent`` (a timeout is known only its deadline
        later; it is filed under when it was sent)."""
        kind = error_kind(exc)
        self.kinds[kind] += 1
        self.error_times.append((sent, call, kind))
        self.error(f"{call} {name}: {kind}: {type(exc).__name__} {exc}")

    def kinds_between(self, start: float, end: float) -> dict[str, int]:
        """Errors by kind in [start, end), of every call."""
        return dict(Counter(k for at, _c, k in self.error_times if start <= at < end))


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
        self.repoll = asyncio.Event()  # the real agent's session.repoll
        self.reconnected = asyncio.Event()  # the real agent's session.reconnected
        self.offline = False
        self.had_contact = False
        self.poll_failures = 0
        self.report_failures = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.key = f"simulated-node-key-{cfg.name_prefix}-{number:05d}".ljust(32, "k")

    def _contact(self) -> None:
        """A coordinator answered (the real agent's ``NodeSession.mark_contact``)."""
        self.had_contact = True
        if self.offline:
            self.offline = False
            self.reconnected.set()
            self.repoll.set()

    def _unreachable(self) -> None:
        self.offline = True
        self.reconnected.clear()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def register(self, session: aiohttp.ClientSession) -> None:
        body = {
            "join_token": self.fleet.config.join_token,
            "name": self.name,
            "labels": self.labels,
            "agent_version": "sim",
            "node_key": self.key,
        }
        async with session.post(f"{self.url}/v1/agent/register", json=body) as resp:
            text = await resp.text()
            if resp.status != 201:
                raise HTTPStatusError(
                    f"register {self.name}", resp.status, retry_after_of(resp), text
                )
        data = json.loads(text)
        self.node_id, self.token = data["node_id"], data["node_token"]
        self.heartbeat = self.fleet.config.heartbeat or float(data["heartbeat_interval"])

    async def poll_loop(self) -> None:
        cfg = self.fleet.config
        wait = f"{cfg.poll_wait:g}s"
        timeout = aiohttp.ClientTimeout(total=cfg.poll_wait + 10, sock_connect=5)  # the agent's
        session = self.fleet.poll_session
        while True:
            self.repoll.clear()
            sent = time.monotonic()
            try:
                params = {"index": str(self.index), "wait": wait}
                async with session.get(
                    f"{self.url}/v1/agent/assignments",
                    params=params,
                    headers=self._auth,
                    timeout=timeout,
                ) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise HTTPStatusError(
                            f"poll {self.name}", resp.status, retry_after_of(resp), text
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.fleet.log.failed("poll", self.name, exc, sent)
                self._fail_over(exc)
                await self._poll_backoff(exc)
                continue
            self.fleet.log.polls += 1
            self.poll_failures = 0
            self._contact()
            self.apply(json.loads(text))

    async def _poll_backoff(self, exc: Exception) -> None:
        """The real agent's ``SyncLoop._failed``: back off (cut short by a repoll)."""
        delay = retry_delay(
            self.poll_failures,
            BACKOFF,
            random.random,
            reconnecting=self.had_contact and self.fleet.config.spread_reconnect,
            retry_after=getattr(exc, "retry_after", None),
        )
        self.poll_failures += 1
        self._unreachable()
        await _sleep_or_event(delay, self.repoll)

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
        # The coordinator may hand out another interval with any answer (the agent's rule).
        self.heartbeat = self.fleet.config.heartbeat or float(
            data.get("heartbeat_interval") or self.heartbeat
        )
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
        # which reports on a state change do not move; a failed report is sent again after
        # the backoff (at most a heartbeat), or at once when the coordinator answers again.
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + random.uniform(0, self.heartbeat)
        self.changed.set()  # the real agent reports right after it starts
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
            error = await self.report()
            if error is None:
                self.report_failures = 0
                continue
            delay = report_retry_delay(self.report_failures, BACKOFF, random.random, self.heartbeat)
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                delay = max(delay, retry_after)
            self.report_failures += 1
            self._unreachable()
            self.changed.set()  # what failed goes out right after the backoff
            await _sleep_or_event(delay, self.reconnected)

    async def report(self) -> Exception | None:
        """Send one report (again with a higher seq when the coordinator saw a newer one, as
        the real agent does: after a crash it remembers the seqs it reserved); the error, or
        None when it was accepted."""
        for _ in range(MAX_RESENDS):
            error, answer = await self._send_report()
            if error is not None:
                return error
            assert answer is not None
            if answer["accepted"]:
                if int(answer["index"]) > self.index:
                    self.repoll.set()
                return None
            self.fleet.log.seq_behind += 1
            self.seq = max(self.seq, int(answer["last_seq"]))
        return None  # like the agent: the next turn goes on from the corrected seq

    async def _send_report(self) -> tuple[Exception | None, dict[str, Any] | None]:
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
        error: Exception | None = None
        answer: dict[str, Any] | None = None
        try:
            async with self.fleet.report_session.post(
                f"{self.url}/v1/agent/report",
                data=body,
                headers={**self._auth, "Content-Type": "application/json"},
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    error = HTTPStatusError(
                        f"report {self.name}", resp.status, retry_after_of(resp), text
                    )
                else:
                    answer = json.loads(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            self._fail_over(exc)
        ok = answer is not None and bool(answer["accepted"])
        self.fleet.log.reports.append(Sample(sent, time.monotonic() - sent, ok, self.number))
        if error is not None:
            self.fleet.log.failed("report", self.name, error, sent)
            return error, None
        self._contact()
        if ok:
            self.reported_once.set()
            for e in failing:
                self.fleet.note_failure(sent, self.node_id, e.job, e.version)
        return None, answer


async def _sleep_or_event(seconds: float, event: asyncio.Event) -> None:
    """The real agent's ``sleep_or_event``, on the real clock."""
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


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
            # The real agent's deadlines (agent/client.py): 5 s to connect, 10 s for the
            # answer. Not as a total: a simulated agent waiting for one of the pool's
            # connections (a real agent has its own) must not time out for it.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=10),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Register every node (bounded concurrency), then start their poll and report loops."""
        await self.register_all(start_loops=True)

    async def register_all(self, *, start_loops: bool) -> None:
        """Register every node, ``register_concurrency`` at a time; each is retried like the
        real agent (its backoff, a ``Retry-After`` waited out) and its errors counted."""
        gate = asyncio.Semaphore(self.config.register_concurrency)

        async def one(node: SimNode) -> None:
            async with gate:
                for attempt in range(REGISTER_ATTEMPTS):
                    sent = time.monotonic()
                    try:
                        await node.register(self.report_session)
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self.log.failed("register", node.name, exc, sent)
                        await asyncio.sleep(
                            retry_delay(
                                attempt,
                                BACKOFF,
                                random.random,
                                retry_after=getattr(exc, "retry_after", None),
                            )
                        )
                else:
                    raise RuntimeError(f"register {node.name}: failed {REGISTER_ATTEMPTS} times")
            if start_loops:
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

    def back_after(self, start: float) -> dict[int, float]:
        """Node number -> when the answer to its first accepted report sent at or after
        ``start`` arrived."""
        back: dict[int, float] = {}
        for s in self.log.reports:
            if s.ok and s.at >= start:
                answered = s.at + s.latency
                if answered < back.get(s.node, math.inf):
                    back[s.node] = answered
        return back

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
