"""Fault-suite fixtures: a seed per scenario, a fault fleet, and the run's figures.

Seeds: ``FLEETWAVE_FAULT_SEED=N`` runs every selected scenario with seed N (to rerun a
failure); otherwise each scenario's seed is derived from its name and the run seed
``FLEETWAVE_FAULT_RUN_SEED`` (default 1), so a plain run is the same run every time.
Each scenario prints its seed. Figures go to ``.fault-report.json`` at the repo root
(merged by scenario, so rerunning one scenario updates only its entry) and are summed
up at the end of the pytest run.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import FaultFleet, rerun_hint
from tests.faults.report import REPORT, scenario_table, totals_table

OUTCOME = pytest.StashKey[str]()
FAILURE = pytest.StashKey[str]()
_figures: dict[str, dict[str, Any]] = {}


def scenario_seed(name: str) -> int:
    """The seed of scenario ``name`` for this run (see the module docstring)."""
    if os.environ.get("FLEETWAVE_FAULT_SEED"):
        return int(os.environ["FLEETWAVE_FAULT_SEED"])
    run_seed = os.environ.get("FLEETWAVE_FAULT_RUN_SEED", "1")
    return zlib.crc32(f"{run_seed}:{name}".encode())


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This scenario's seed, printed so that a failure can be rerun with it."""
    value = scenario_seed(request.node.name)
    print(f"fault scenario {request.node.name}: {rerun_hint(value, request.node.nodeid)}")
    return value


@pytest.fixture
def figures(request: pytest.FixtureRequest, seed: int) -> Iterator[dict[str, Any]]:
    """The scenario's figures; recorded for the report whether it passes or fails."""
    found: dict[str, Any] = {"seed": seed}
    started = time.monotonic()
    yield found
    found["outcome"] = request.node.stash.get(OUTCOME, "error")
    if FAILURE in request.node.stash:
        found["failure"] = request.node.stash[FAILURE]
    found["seconds"] = round(time.monotonic() - started, 1)
    found["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _figures[request.node.name] = found


@pytest.fixture
def faults(tmp_path: Path, seed: int, figures: dict[str, Any]) -> Iterator[FaultFleet]:
    """A fault fleet (no processes yet) whose figures end up in the report."""
    fleet = FaultFleet(tmp_path, seed)
    try:
        yield fleet
    finally:
        try:
            figures.update(fleet.figures)
        finally:
            fleet.close()
        print(f"logs and records: {tmp_path}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[OUTCOME] = report.outcome
        if call.excinfo is not None:
            item.stash[FAILURE] = str(call.excinfo.value).splitlines()[0][:300]
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _figures:
        return
    report: dict[str, Any] = {}
    try:
        report = json.loads(REPORT.read_text())
    except (OSError, ValueError):
        report = {}
    report.setdefault("scenarios", {}).update(_figures)
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _figures:
        return
    terminalreporter.section("fault injection figures")
    this_run = {"scenarios": _figures}
    for line in [*totals_table(this_run), "", *scenario_table(this_run)]:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"all figures: {REPORT}")
