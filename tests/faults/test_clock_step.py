"""A ±1 h step of the coordinator's wall clock during rollouts, through libfaketime.

The coordinator runs with Debian's libfaketime preloaded (``LD_PRELOAD``), reading its
offset from a file on every call (``FAKETIME_TIMESTAMP_FILE`` + ``FAKETIME_NO_CACHE=1``),
so the test steps the clock of the running process by rewriting that file. Only the wall
clock moves (``FAKETIME_DONT_FAKE_MONOTONIC=1``): ``datetime.now()`` and ``time.time()``
jump, ``time.monotonic()`` and asyncio's timers do not, as after an NTP step. (That
setting breaks ``time.sleep()`` on Python 3.11, libfaketime issue 426; the coordinator
never calls it.) The agents and the workloads keep the real clock.
"""

from __future__ import annotations

import calendar
import glob
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import wait_for
from tests.faults.events import http_call
from tests.faults.harness import FaultFleet, ended_running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

AGENTS = 5
LIBFAKETIME = "/usr/lib/*/faketime/libfaketime.so.1"


def libfaketime() -> str:
    found = sorted(glob.glob(LIBFAKETIME))
    if not found or shutil.which("faketime") is None:
        pytest.skip(
            "the Debian package faketime (libfaketime) is not installed:"
            " apt-get install faketime (.ci/run installs it)"
        )
    return found[0]


def coordinator_offset(faults: FaultFleet) -> float:
    """How far the coordinator's wall clock is from ours (its HTTP Date header), in s."""
    status, headers, _ = http_call(faults.fleet.url + "/healthz", timeout=2)
    assert status == 200
    return (
        calendar.timegm(time.strptime(headers["Date"], "%a, %d %b %Y %H:%M:%S GMT")) - time.time()
    )


def step_clock(faults: FaultFleet, offset_file: Path, hours: int) -> None:
    """Set the coordinator's clock ``hours`` off the real one and see that it took."""
    before = int(offset_file.read_text().strip().rstrip("s")) // 3600
    offset_file.write_text(f"{hours * 3600:+d}s\n")
    wait_for(
        f"the coordinator's clock to be {hours:+d} h off",
        lambda: abs(coordinator_offset(faults) - hours * 3600) < 5,
        timeout=10,
    )
    faults.figures.setdefault("clock_steps", []).append(f"{hours - before:+d}h")


def test_a_wall_clock_step_changes_nothing(faults: FaultFleet, figures: dict[str, Any]) -> None:
    """Steps of +1 h, -1 h and -1 h again, at random points of three rollouts (one of a
    broken version), fire no deadline early or late: no node marked down or failed, the
    good versions complete and the broken one is rolled back."""
    offset_file = faults.base_dir / "faketime-offset"
    offset_file.write_text("+0s\n")
    faults.coordinator_env = {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    faults.start(AGENTS)
    problems = ended_running(faults, faults.deploy(faults.spec()))
    for hours, broken in ((1, False), (0, True), (-1, False)):
        version = faults.deploy(faults.spec(broken=broken))
        time.sleep(faults.rng.uniform(0.3, 3.0))  # a random point of the rollout
        step_clock(faults, offset_file, hours)
        problems += ended_running(faults, version)
    problems += faults.violations()
    assert not problems, "\n".join(problems)
