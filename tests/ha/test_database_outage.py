"""Stop PostgreSQL in the middle of a rollout, then start it again (DESIGN §8, database down).

Two coordinators (``tests.ha.harness.HaFleet``) share a private PostgreSQL server
(``tests.pg.private_pg``) that the test may crash; four real agents talk to both (half of
them to each first), with the fault suite's short intervals (heartbeat 500 ms, a node is
down after 4 s). Once the canary of a canary +
3-wave update has passed, the server is crashed (``pg_ctl stop -m immediate``) while a
writer keeps creating tokens on both coordinators. For DOWN_FOR seconds both coordinators
are hammered with operator reads and writes while the agents keep reporting; then the
server is started again.

Pass rules: every answer while it is down is a 503 with ``Retry-After`` (never a 500, and
no coordinator dies); every workload keeps running; after the restart both coordinators
are ready again and one of them leads, by themselves; every write acknowledged before the
crash (job versions, tokens, events) is there and nothing refused meanwhile was applied;
the rollout completes and the fault suite's invariants hold.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, free_port, wait_for
from tests.faults.harness import JOB, ZERO_TIME, FaultFleet, ended_running
from tests.faults.invariants import Put
from tests.ha.harness import HaFleet
from tests.pg import PrivateServer, private_pg
from tests.promtext import parse as parse_metrics

__all__ = ["private_pg"]  # the fixture, imported for pytest

AGENTS = 4
DOWN_FOR = 6.0
"""Seconds the server stays down: past the lease (the leader must step down) and past the
node TTL (no node may be marked down for the database's silence)."""
LEASE_TTL = "3s"
SEED = 12
BUDGET = 90.0
"""Seconds the whole scenario may take, from the first process to the last check."""

READS = ("/v1/jobs", f"/v1/jobs/{JOB}/status", "/v1/nodes", f"/v1/jobs/{JOB}/nodes")
MORE_READS = ("/v1/events?after=0", "/v1/tokens", "/v1/cluster", "/readyz")


@dataclass(frozen=True)
class Answer:
    """One request made while the database may be down, and what came back."""

    where: str
    request: str
    status: int  # 0: nothing answered
    retry_after: str | None
    sent: float  # monotonic
    answered: float


def request(
    url: str, method: str = "GET", body: Any = None, timeout: float = 10.0, *, raw: bool = False
) -> tuple[int, dict[str, str], Any]:
    """One JSON request with the admin token: (status, headers with lower-case names, body
    parsed, or as text with ``raw``); status 0 when nothing answered in time."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    req.add_header("Accept", "application/json")  # GET /v1/events: a page, not a stream
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, data_read = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, data_read = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, None
    text = data_read.decode(errors="replace")
    try:
        parsed = text if raw else json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in headers.items()}, parsed


def call(where: str, url: str, method: str, path: str, body: Any = None) -> tuple[Answer, Any]:
    sent = time.monotonic()
    status, headers, answer = request(url + path, method, body)
    answered = time.monotonic()
    return Answer(
        where, f"{method} {path}", status, headers.get("retry-after"), sent, answered
    ), answer


class TokenWriter(threading.Thread):
    """Creates viewer tokens on the coordinators in turn, as fast as they answer, and notes
    every answer: the acknowledged ones must survive the crash."""

    def __init__(self, coordinators: dict[str, str]) -> None:
        super().__init__(name="token-writer", daemon=True)
        self._coordinators = list(coordinators.items())
        self._halt = threading.Event()
        self.answers: list[tuple[str, Answer]] = []  # (token name, answer)

    def acknowledged(self) -> list[str]:
        return [name for name, a in list(self.answers) if a.status == 201]

    def run(self) -> None:
        i = 0
        while not self._halt.is_set():
            where, url = self._coordinators[i % len(self._coordinators)]
            name = f"outage-{i}"
            answer, _ = call(where, url, "POST", "/v1/tokens", {"name": name, "role": "viewer"})
            self.answers.append((name, answer))
            i += 1
            if answer.status != 201:
                self._halt.wait(0.05)  # pace the refused ones; the outage is what we wait out

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


def mid_rollout(faults: FaultFleet, version: int) -> bool:
    """Whether ``version``'s canary has passed and its waves have not all passed yet."""
    status = faults.status()
    rollout = status["rollout"]
    return bool(
        status["version"] == version
        and rollout["updated_nodes"] >= 1
        and rollout["completed_at"] == ZERO_TIME
    )


def leader(url: str) -> tuple[str, int] | None:
    status, _, body = request(url + "/v1/cluster")
    if status != 200 or not body["leader"]["id"]:
        return None
    return body["leader"]["id"], int(body["epoch"])


def agreed_leader(urls: dict[str, str]) -> tuple[str, int] | None:
    """The leader and epoch, once every coordinator's ``GET /v1/cluster`` says the same."""
    views = {leader(url) for url in urls.values()}
    return views.pop() if len(views) == 1 else None


def is_ready(url: str) -> bool:
    return request(url + "/readyz")[0] == 200


def events(url: str) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    after = 0
    while True:
        status, _, body = request(f"{url}/v1/events?after={after}&limit=1000")
        assert status == 200, f"GET /v1/events answered {status}: {body}"
        found |= {e["id"]: e for e in body["events"]}
        if len(body["events"]) < 1000:
            return found
        after = body["events"][-1]["id"]


def token_names(url: str) -> set[str]:
    status, _, body = request(url + "/v1/tokens")
    assert status == 200, f"GET /v1/tokens answered {status}: {body}"
    return {t["name"] for t in body["tokens"]}


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie has ended)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def log_tails(fleet: LocalFleet, server: PrivateServer | None = None) -> str:
    paths = sorted((fleet.base_dir / "logs").glob("*.log"))
    if server is not None:
        paths.append(server.log)
    return "\n".join(f"==> {p}\n{p.read_text(errors='replace')[-2500:]}" for p in paths)


def served(url: str) -> Counter[str]:
    """How many requests the coordinator at ``url`` answered since it started, by
    ``<status> <route>`` (its request metrics: agents' requests included)."""
    status, _, text = request(url + "/metrics", raw=True)
    assert status == 200, f"GET /metrics answered {status}"
    counts: Counter[str] = Counter()
    for name, labels, value in parse_metrics(text).samples:
        if name == "fleetwave_http_request_duration_seconds_count":
            counts[f"{labels['status']} {labels['route']}"] += int(value)
    return counts


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop", ["immediate", "fast"])
def test_a_database_outage_mid_rollout_is_503s_and_the_rollout_finishes(
    private_pg: PrivateServer, tmp_path: Path, stop: str
) -> None:
    """Stop PostgreSQL mid-rollout (``immediate``: a crash; ``fast``: a shutdown that ends
    every session): only 503s with Retry-After meanwhile, workloads keep running, then both
    coordinators recover by themselves, nothing acknowledged is lost and the rollout
    completes."""
    began = time.monotonic()
    faults = HaFleet(
        tmp_path, SEED, database_url=private_pg.url, coordinators=2, lease_ttl=LEASE_TTL
    )
    members = faults.fleet.members
    figures: dict[str, Any] = {}
    writer: TokenWriter | None = None
    try:
        faults.fleet.start_coordinators()
        urls = {m.member_id: faults.fleet.member_url(i) for i, m in enumerate(members)}
        faults.recorder.start()
        for i in range(1, AGENTS + 1):
            name = f"n{i}"
            faults.ports[name] = free_port()
            # Half the agents prefer each coordinator (each fails over to the other).
            first, second = list(urls) if i % 2 else list(urls)[::-1]
            faults.fleet.start_agent(
                name,
                {"port": str(faults.ports[name]), "zone": f"z{i % 2}"},
                coordinator=urls[first],
                extra=["--coordinator", urls[second]],
            )
        faults.fleet.wait_nodes_ready(AGENTS, timeout=30)

        v1 = faults.deploy(faults.spec())
        assert ended_running(faults, v1) == []
        faults.wait_all_run(v1)
        v2 = faults.deploy(faults.spec())
        wait_for(f"the canary of version {v2} to pass", lambda: mid_rollout(faults, v2), 30)

        # Writes acknowledged right up to the crash.
        writer = TokenWriter(urls)
        writer.start()
        wait_for("3 acknowledged tokens", lambda: len(writer.acknowledged()) >= 3, 10)
        events_before = events(urls["c1"])
        _, epoch_before = wait_for("a leader", lambda: leader(urls["c1"]), timeout=5)
        workloads = {p.pid for p in faults.fleet.workload_processes()}
        assert len(workloads) == AGENTS, f"expected one workload per node: {workloads}"

        private_pg.stop(stop)
        down_at, down_wall = time.monotonic(), time.time()
        answers: list[Answer] = []
        scrapes: list[tuple[int, dict[str, str], Any]] = []
        lost_workloads: set[int] = set()
        dead: set[str] = set()
        while time.monotonic() < down_at + DOWN_FOR:  # the outage: hammer both coordinators
            for where, url in urls.items():
                for path in (*READS, *MORE_READS):
                    answers.append(call(where, url, "GET", path)[0])
                scrapes.append(request(url + "/metrics", raw=True))
                spec = faults.spec()
                put, body = call(where, url, "PUT", f"/v1/jobs/{JOB}", spec)
                answers.append(put)
                version = body["version"] if put.status in (200, 201) else 0
                faults.puts.append(Put(put.status, version, spec["task"]["env"]["FAULT_MARK"]))
                answers.append(call(where, url, "POST", f"/v1/jobs/{JOB}/rollout/pause")[0])
            lost_workloads |= workloads - alive(workloads)
            dead |= {m.member_id for m in members if m.proc is None or not m.proc.alive()}
            dead |= {name for name, proc in faults.fleet.agents.items() if not proc.alive()}
        up_called = time.monotonic()
        private_pg.start()
        up_at = time.monotonic()
        figures["server_start_s"] = round(up_at - up_called, 2)

        ready_after = {}
        for where, url in urls.items():
            wait_for(f"coordinator {where} to be ready again", partial(is_ready, url), 30)
            ready_after[where] = round(time.monotonic() - up_at, 2)
        figures["ready_after_restart_s"] = ready_after
        elected, epoch = wait_for(
            "one leader that both coordinators name", lambda: agreed_leader(urls), timeout=30
        )
        figures["leader_after_restart_s"] = round(time.monotonic() - up_at, 2)
        figures["leader"] = {"before": epoch_before, "after": epoch, "member": elected}
        assert epoch > epoch_before, "the lease expired during the outage: a new term begins"
        wait_for(
            "a token acknowledged after the restart",
            lambda: writer.answers[-1][1].status == 201,
            15,
        )
        writer.stop()

        outage = [a for a in answers if a.sent >= down_at and a.answered <= up_called]
        outage += [a for _, a in writer.answers if a.sent >= down_at and a.answered <= up_called]
        figures["outage_answers"] = dict(Counter(a.status for a in outage))
        figures["outage_answers_by_request"] = {
            f"{a.request} {a.status}": n
            for a, n in Counter(
                Answer("", a.request.split("?")[0], a.status, None, 0, 0) for a in outage
            ).items()
        }
        problems = []
        wrong = [a for a in outage if a.status != 503 or not a.retry_after]
        if wrong:
            problems.append(
                f"{len(wrong)} answers during the outage were not 503 + Retry-After: {wrong[:10]}"
            )
        failing = [
            status == 200 and "fleetwave_store_write_failing 1.0" in str(text)
            for status, _, text in scrapes
        ]
        figures["metrics_scrapes_saying_store_failing"] = f"{sum(failing)}/{len(failing)}"
        if not all(failing):
            problems.append(
                "GET /metrics did not answer 200 with fleetwave_store_write_failing 1 during"
                f" the outage: {[s[0] for s in scrapes]}"
            )
        writer_statuses = Counter(a.status for _, a in writer.answers)
        figures["token_writer"] = dict(writer_statuses)
        if set(writer_statuses) - {201, 503}:
            problems.append(f"token writes answered {dict(writer_statuses)} (only 201 or 503)")
        if lost_workloads:
            problems.append(f"workloads ended during the outage: {sorted(lost_workloads)}")
        if dead:
            problems.append(f"processes died during the outage: {sorted(dead)}")
        started = [
            life
            for life in faults.lives()
            if down_wall <= life.started <= time.time() and life.started < down_wall + DOWN_FOR
        ]
        if started:
            problems.append(f"workloads started while the database was down: {started}")

        outcome = ended_running(faults, v2, timeout=45)
        figures["rollout_done_after_restart_s"] = round(time.monotonic() - up_at, 2)
        problems += outcome
        if not outcome:
            faults.wait_all_run(v2)

        acknowledged = set(writer.acknowledged())
        figures["tokens_acknowledged"] = len(acknowledged)
        for where, url in urls.items():
            missing = acknowledged - token_names(url)
            if missing:
                problems.append(f"acknowledged tokens missing on {where}: {sorted(missing)}")
        after = events(urls["c2"])
        changed = [i for i, e in events_before.items() if after.get(i) != e]
        if changed:
            problems.append(f"events stored before the crash changed or vanished: {changed}")
        problems += faults.violations()
        for where, url in urls.items():
            answered = served(url)
            errors = {k: n for k, n in answered.items() if k[0] == "5" and k[:3] != "503"}
            agents = {k: n for k, n in answered.items() if " /v1/agent/" in k and k[0] == "5"}
            figures[f"agent_requests_refused_on_{where}"] = agents
            if errors:
                problems.append(f"coordinator {where} answered 5xx other than 503: {errors}")
        for member in members:
            assert member.proc is not None
            where, text = member.member_id, member.proc.log_path.read_text(errors="replace")
            if "unhandled_error" in text:
                problems.append(f"coordinator {where} logged an unhandled error (a 500)")
            if "store_listen_resumed" not in text:
                problems.append(f"coordinator {where} never resumed its LISTEN connection")
        figures["seconds"] = round(time.monotonic() - began, 1)
        print("database outage figures:", figures)
        assert not problems, "\n".join(problems) + "\n" + log_tails(faults.fleet, server=private_pg)
        assert figures["seconds"] <= BUDGET, f"took {figures['seconds']}s (budget {BUDGET}s)"
    finally:
        if writer is not None:
            writer.stop()
        faults.close()
        print(f"logs: {tmp_path}")


def test_an_unreachable_database_at_start_is_named_without_its_password(tmp_path: Path) -> None:
    """A coordinator whose database refuses connections exits at start with an error that
    names the URL, with the password left out."""
    port = free_port()  # nothing listens on it
    password = f"pw-{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator",
            *("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)),
            *("--database", f"postgresql://u:{password}@127.0.0.1:{port}/x"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode != 0
    assert f"cannot use PostgreSQL database postgresql://u:***@127.0.0.1:{port}/x" in done.stderr
    assert password not in done.stderr + done.stdout
    assert not list(tmp_path.glob("*.token")), "tokens were generated for a start that failed"
