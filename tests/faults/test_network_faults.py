"""500 ms latency and lost requests between the agents and the coordinator.

Every agent talks to the coordinator through the suite's fault proxy (``proxy.py``): each
request waits 500-600 ms, and a seeded 10% are lost (the request, the answer, or the
answer held past the agent's timeout). The operator's API is not proxied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import free_port, wait_for
from tests.faults.harness import FaultFleet, ended_running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROXY = Path(__file__).with_name("proxy.py")
AGENTS = 5


def proxy_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/_proxy/stats", timeout=5) as resp:
        stats: dict[str, int] = json.loads(resp.read())
        return stats


def test_a_lossy_slow_network_makes_no_duplicate_start(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """Through 500 ms latency and 10% lost requests a create and an update complete and
    converge, and every node starts each version exactly once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (faults.base_dir / "proxy.log").open("wb")
    proxy = subprocess.Popen(
        [
            sys.executable,
            str(PROXY),
            *("--listen", f"127.0.0.1:{port}", "--upstream", faults.fleet.url),
            *("--latency", "0.5", "--jitter", "0.1", "--drop", "0.1", "--hold", "12"),
            *("--seed", str(faults.seed)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    problems: list[str] = []
    try:
        wait_for("the proxy", lambda: proxy_stats(url) is not None, timeout=30)
        faults.start(AGENTS, coordinator_url=url)
        for _ in range(2):  # a create, then an update
            version = faults.deploy(faults.spec())
            # A node whose answers are held past its timeout is unreachable for real: the
            # rollout may end while one is down (degraded), and must converge afterwards.
            problems += ended_running(faults, version, timeout=90, also=("degraded",))
            try:
                faults.wait_all_run(version, timeout=60)
                faults.fleet.wait_state("web", "running", timeout=30)
            except TimeoutError as exc:
                problems.append(str(exc))
        figures["proxy"] = proxy_stats(url)
    finally:
        proxy.terminate()
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
        log.close()
    starts = Counter((life.node, life.version) for life in faults.lives())
    problems += [
        f"{node} started version {v} {n} times" for (node, v), n in starts.items() if n > 1
    ]
    # Lost requests make nodes unreachable for real: "no live node marked down" does not apply.
    problems += faults.violations(check_down=False)
    assert not problems, "\n".join(problems)
