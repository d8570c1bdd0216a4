"""The agent's memory limit on a real systemd: its unit's cgroup holds the agent, not the jobs.

One container for the module (booting is most of the time): the first test deploys a job and
checks placement and limits, the second the kernel's own view of the agent's cgroup.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.systemd.machine import SystemdHost
from tests.e2e.systemd.test_units import (
    AGENT,
    WEB_JOB,
    WORKLOAD,
    agent_status,
    job_state,
    wait_ready,
)

pytestmark = [pytest.mark.slow]

SLICE = "fleetwave-workloads.slice"
MEMORY_HIGH = 160 * 2**20
MEMORY_MAX = 256 * 2**20

# The web job plus an exec check: check processes are the agent's children that stay in its
# cgroup, so they run under its limit too.
CHECKED_JOB = copy.deepcopy(WEB_JOB)
CHECKED_JOB["health"]["checks"].append({"type": "exec", "command": ["true"], "interval": "1s"})


@pytest.fixture(scope="module")
def host(systemd_images: list[Path]) -> Iterator[SystemdHost]:
    """One booted container with CHECKED_JOB deployed and running healthy."""
    with SystemdHost(systemd_images) as booted:
        wait_ready(booted)
        answer = booted.api("PUT", "/v1/jobs/web", CHECKED_JOB)
        assert answer.status == 201, answer.body
        booted.wait_until(lambda: job_state(booted) == "running", timeout=60, what="web running")
        booted.wait_until(lambda: "1 healthy" in agent_status(booted), what="STATUS= counts it")
        yield booted


def cgroup_of(host: SystemdHost, pid: int) -> str:
    """The unified-hierarchy (cgroup v2) path of ``pid`` inside the container."""
    lines = host.sh(f"cat /proc/{pid}/cgroup").splitlines()
    return next(line.removeprefix("0::") for line in lines if line.startswith("0::"))


def cgroup2_root(host: SystemdHost) -> str:
    """Where the container mounts cgroup v2: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    host that keeps its controllers on cgroup v1 (hybrid)."""
    found = host.sh("test -e /sys/fs/cgroup/cgroup.controllers && echo yes", check=False)
    return "/sys/fs/cgroup" if found.strip() else "/sys/fs/cgroup/unified"


class TestAgentMemoryLimit:
    def test_limit_set_and_jobs_outside_the_agents_cgroup(self, host: SystemdHost) -> None:
        """The unit carries MemoryHigh/MemoryMax; the healthy job's workload runs in a scope
        of its own in the workloads slice, the agent's cgroup holds the agent, and the agent
        was never OOM-killed or restarted."""
        limits = host.show(AGENT, "MemoryAccounting", "MemoryHigh", "MemoryMax")
        assert limits == {
            "MemoryAccounting": "yes",
            "MemoryHigh": str(MEMORY_HIGH),
            "MemoryMax": str(MEMORY_MAX),
        }
        (workload,) = host.pids(WORKLOAD)
        scope = cgroup_of(host, workload)
        # A dash in a slice name is a level: fleetwave.slice/fleetwave-workloads.slice.
        assert scope.startswith(f"/fleetwave.slice/{SLICE}/fleetwave-"), scope
        assert scope.endswith(f"-{workload}.scope"), scope
        # Ordered before the agent: on shutdown systemd stops the agent first, then the jobs.
        scope_unit = scope.rpartition("/")[2]
        assert AGENT in host.show(scope_unit, "Before")["Before"].split()
        agent = host.main_pid(AGENT)
        agent_cgroup = cgroup_of(host, agent)
        assert agent_cgroup == "/system.slice/fleetwave-agent.service"
        procs = host.sh(f"cat {cgroup2_root(host)}{agent_cgroup}/cgroup.procs").split()
        assert str(agent) in procs
        assert str(workload) not in procs
        props = host.show(AGENT, "ActiveState", "SubState", "NRestarts", "Result", "MainPID")
        assert props == {
            "ActiveState": "active",
            "SubState": "running",
            "NRestarts": "0",
            "Result": "success",
            "MainPID": str(agent),
        }
        assert "killed by the OOM killer" not in host.journal(AGENT)  # systemd says so if it was

    def test_kernel_enforces_the_limit_on_the_agent_alone(self, host: SystemdHost) -> None:
        """Where the kernel gives the container cgroup v2's memory controller: the agent's
        cgroup has the unit's memory.max and memory.high, uses far less, and saw no OOM."""
        root = cgroup2_root(host)
        if "memory" not in host.sh(f"cat {root}/cgroup.controllers").split():
            # This host keeps the memory controller on cgroup v1: the container's systemd
            # records MemoryMax on the unit but cannot apply it (checked by the test above).
            return
        path = f"{root}/system.slice/fleetwave-agent.service"
        assert host.sh(f"cat {path}/memory.max").strip() == str(MEMORY_MAX)
        assert host.sh(f"cat {path}/memory.high").strip() == str(MEMORY_HIGH)
        current = int(host.show(AGENT, "MemoryCurrent")["MemoryCurrent"])
        assert 0 < current < MEMORY_HIGH
        events = dict(line.split() for line in host.sh(f"cat {path}/memory.events").splitlines())
        assert (events["oom"], events["oom_kill"]) == ("0", "0"), events
