"""Replays of acknowledged agent reports across a coordinator crash.

The test takes one node's token from its agent's data dir (``identity.json``), stops that
agent, and reports in its place: heartbeat-only reports with growing sequence numbers,
noting which the coordinator acknowledged (``accepted: true``). Then it kills the
coordinator with SIGKILL at a random point, starts it again, and replays every
acknowledged report: none may be accepted again.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.faults.harness import FaultFleet

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CRASHES = 4


def report(faults: FaultFleet, token: str, seq: int) -> dict[str, Any]:
    """POST a heartbeat-only report as the node; the answer's JSON."""
    req = urllib.request.Request(
        faults.fleet.url + "/v1/agent/report",
        data=json.dumps({"seq": seq}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"report seq {seq} answered {exc.code}: {exc.read()!r}") from None


def test_an_acknowledged_report_is_never_accepted_twice(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """After each of four crashes, replaying every report acknowledged before it is
    refused (accepted: false), and a new sequence number is still accepted."""
    faults.start(3)
    victim = faults.rng.choice(sorted(faults.ports))
    data_dir = faults.base_dir / "agents" / victim
    faults.fleet.stop(faults.fleet.agents[victim], signal.SIGKILL)
    faults.outage_begins(victim)
    token = json.loads((data_dir / "identity.json").read_text())["node_token"]
    used = json.loads((data_dir / "report_seq.json").read_text())
    # The agent's highest seq ("reserved"; "last_seq" in older agents): ours come after it.
    next_seq = int(used.get("reserved", used.get("last_seq", 0))) + 1
    acknowledged: list[int] = []
    problems: list[str] = []
    replays = accepted_again = 0
    for crash in range(CRASHES):
        for _ in range(faults.rng.randint(3, 8)):
            answer = report(faults, token, next_seq)
            if answer["accepted"]:
                acknowledged.append(next_seq)
            else:
                problems.append(f"fresh seq {next_seq} refused before crash {crash}: {answer}")
            next_seq = max(next_seq, answer["last_seq"]) + 1
        again = report(faults, token, acknowledged[-1])
        if again["accepted"]:
            problems.append(f"seq {acknowledged[-1]} accepted twice without a crash: {again}")
        time.sleep(faults.rng.uniform(0.0, 1.5))  # a random crash point
        faults.restart_coordinator(faults.kill_coordinator(), watch_resume=False)
        for seq in acknowledged:
            answer = report(faults, token, seq)
            replays += 1
            if answer["accepted"]:
                accepted_again += 1
                problems.append(f"acknowledged seq {seq} accepted again after crash {crash + 1}")
            next_seq = max(next_seq, answer["last_seq"] + 1)
        answer = report(faults, token, next_seq)
        if not answer["accepted"]:
            problems.append(f"a new seq {next_seq} was refused after crash {crash + 1}: {answer}")
        else:
            acknowledged.append(next_seq)
        next_seq = max(next_seq, answer["last_seq"]) + 1
    figures.update(
        crashes=CRASHES,
        acknowledged_reports=len(acknowledged),
        replays_after_crash=replays,
        replays_accepted=accepted_again,
    )
    assert not problems, "\n".join(problems)
