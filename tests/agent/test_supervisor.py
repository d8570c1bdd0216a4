"""Tests for supervising one execution with real processes."""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from agent.config import HostPolicy
from agent.launch import NodeInfo, pin_programs, prepare
from agent.metrics import AgentMetrics
from agent.paths import DataDir
from agent.policy import LaunchRequest, Program
from agent.runtime import LaunchSpec, ProcessHandle
from agent.runtime.exec import ExecRuntime
from agent.supervisor import Supervisor
from shared.clock import Clock, FakeClock, SystemClock
from shared.protocol import Assignment, ExecutionState
from shared.spec import Driver
from tests.agent.factories import (
    PYTHON,
    TEST_POLICY,
    assignment,
    data_dir_writes,
    free_port,
    job_spec,
)
from tests.helpers import eventually

NODE = NodeInfo(node_id="n-1", name="node-1", labels={"zone": "z1"})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Harness:
    """Builds supervisors on a data dir and records every state they pass through."""

    def __init__(self, tmp_path: Path, http: aiohttp.ClientSession) -> None:
        self.data_dir = DataDir(tmp_path / "data")
        self.data_dir.ensure()
        self.http = http
        self.states: list[ExecutionState] = []
        self.started: list[Supervisor] = []
        self.writes = data_dir_writes(self.data_dir.root)
        self.policy = TEST_POLICY
        self.metrics = AgentMetrics()

    def refusals(self, rule: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "fleetwave_agent_policy_refusals_total", {"rule": rule}
        )

    def supervisor(
        self,
        item: Assignment,
        clock: Clock,
        node: NodeInfo = NODE,
        *,
        runtime: bool = True,
        adopted: ProcessHandle | None = None,
    ) -> Supervisor:
        sup = Supervisor(
            item,
            node=node,
            runtime=ExecRuntime(clock) if runtime else None,
            data_dir=self.data_dir,
            clock=clock,
            http=self.http,
            on_change=lambda s: self.states.append(s.state),
            writes=self.writes,
            policy=self.policy,
            metrics=self.metrics,
            adopted=adopted,
        )
        self.started.append(sup)
        sup.start()
        return sup


@pytest.fixture
async def harness(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, http)
    yield h
    for sup in h.started:
        await sup.stop()


class TestRestartPolicy:
    async def test_crashing_process_restarted_then_failed(self, harness: Harness) -> None:
        """A process that keeps exiting 3 is restarted with backoff, then FAILED after
        max_restarts restarts within the window."""
        clock = FakeClock()
        spec = job_spec(
            command=["sh", "-c", "echo crash; exit 3"],
            task={"restart": {"max_restarts": 2, "delay": "1s", "window": "1m"}},
        )
        sup = harness.supervisor(assignment(spec), clock)
        await eventually(lambda: sup.state is ExecutionState.RESTARTING)
        assert sup.message == "exited with code 3; restarting in 1s"
        clock.advance(1)
        await eventually(lambda: sup.restarts == 2 and sup.state is ExecutionState.RESTARTING)
        assert sup.message == "exited with code 3; restarting in 2s"
        clock.advance(1.5)
        assert sup.restarts == 2  # the second delay is doubled
        clock.advance(0.5)
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == "exited with code 3; gave up after 2 restarts within 1m"
        report = sup.report()
        assert (report.restarts, report.exit_code, report.pid) == (2, 3, None)
        log = harness.data_dir.log_dir("web") / "stdout.log"
        assert log.read_text() == "crash\n" * 3

    async def test_always_restarts_clean_exit(self, harness: Harness) -> None:
        """With policy always a service that exits 0 is restarted too."""
        clock = FakeClock()
        spec = job_spec(command=["true"], task={"restart": {"policy": "always"}})
        sup = harness.supervisor(assignment(spec), clock)
        await eventually(lambda: sup.state is ExecutionState.RESTARTING)
        assert sup.message.startswith("exited with code 0; restarting")


class TestLifecycle:
    async def test_service_without_checks_healthy_then_stopped(self, harness: Harness) -> None:
        """A live process without checks is HEALTHY; stop kills it and reports STOPPED."""
        sup = harness.supervisor(assignment(job_spec()), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.HEALTHY)
        pid = sup.report().pid
        assert pid is not None
        assert psutil.pid_exists(pid)
        await sup.stop()
        assert sup.state is ExecutionState.STOPPED
        assert sup.report().pid is None
        assert harness.states == [ExecutionState.HEALTHY, ExecutionState.STOPPED]

    async def test_service_with_check_starting_then_healthy(self, harness: Harness) -> None:
        """A checked service is STARTING until its TCP check passes, then HEALTHY."""
        port = free_port()
        server = (
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', int(__import__('sys')"
            ".argv[1]))); time.sleep(0.3); s.listen(); time.sleep(300)"
        )
        spec = job_spec(
            command=[PYTHON, "-c", server, "${node.label.port}"],
            health={
                "checks": [
                    {
                        "type": "tcp",
                        "address": "127.0.0.1:${node.label.port}",
                        "interval": "50ms",
                        "failure_threshold": 100,
                    }
                ]
            },
        )
        node = NodeInfo(node_id="n-1", name="node-1", labels={"port": str(port)})
        sup = harness.supervisor(assignment(spec), SystemClock(), node)
        await eventually(lambda: sup.state is ExecutionState.HEALTHY)
        assert harness.states == [ExecutionState.STARTING, ExecutionState.HEALTHY]

    async def test_batch_completes(self, harness: Harness) -> None:
        """A batch job is STARTING while it runs and COMPLETED when it exits 0."""
        spec = job_spec(command=["sh", "-c", "sleep 0.2"], type="batch")
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.COMPLETED)
        assert ExecutionState.STARTING in harness.states
        assert sup.report().exit_code == 0

    async def test_batch_never_fails(self, harness: Harness) -> None:
        """A batch job that fails with restart policy never is FAILED at once."""
        spec = job_spec(
            command=["sh", "-c", "exit 1"], type="batch", task={"restart": {"policy": "never"}}
        )
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == "exited with code 1 (restart policy never)"

    async def test_env_interpolated(self, harness: Harness) -> None:
        """Placeholders in command and env are filled in with node and job values."""
        spec = job_spec(
            command=["sh", "-c", 'echo "$WHO ${job.name}@${job.version}"'],
            type="batch",
            task={"env": {"WHO": "${node.name}/${node.label.zone}"}},
        )
        sup = harness.supervisor(assignment(spec, version=7), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.COMPLETED)
        out = (harness.data_dir.log_dir("web") / "stdout.log").read_text()
        assert out == "node-1/z1 web@7\n"
        assert harness.data_dir.job_dir("web").is_dir()

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent")
    async def test_runs_as_user_in_default_working_dir(self, harness: Harness) -> None:
        """As root, a job with ``user`` runs as that user in its own default working dir."""
        spec = job_spec(
            command=["sh", "-c", "id -un; pwd; touch ./written"],
            type="batch",
            task={"user": "nobody"},
        )
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state in {ExecutionState.COMPLETED, ExecutionState.FAILED})
        assert sup.state is ExecutionState.COMPLETED, sup.message
        out = (harness.data_dir.log_dir("web") / "stdout.log").read_text().split()
        assert out == ["nobody", str(harness.data_dir.job_dir("web"))]
        assert (harness.data_dir.job_dir("web") / "written").owner() == "nobody"


class TestHostPolicy:
    async def test_a_root_job_is_refused_never_started_nor_retried(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """Under the default policy a ``user = "root"`` job (root whoever the agent runs as)
        is FAILED with the reason at once: its command never ran, no restart followed, and
        the refusal is counted by rule."""
        harness.policy = HostPolicy()
        marker = tmp_path / "ran"
        spec = job_spec(
            command=["sh", "-c", f"touch {marker}; exec sleep 300"],
            task={"user": "root", "restart": {"policy": "always", "delay": "1s"}},
        )
        sup = harness.supervisor(assignment(spec), FakeClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == (
            "refused by host policy: job runs as root (uid 0);"
            " set [policy] allow_root = true on this host to allow it"
        )
        assert harness.states == [ExecutionState.FAILED]
        assert (sup.restarts, sup.report().pid) == (0, None)
        assert not marker.exists()
        assert harness.refusals("allow_root") == 1
        assert harness.refusals("denied_env") == 0

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent (CI runs as root)")
    async def test_a_job_without_user_on_a_root_agent_is_refused(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """With no ``user`` the workload would be the root agent's own uid: refused."""
        harness.policy = HostPolicy()
        marker = tmp_path / "ran"
        sup = harness.supervisor(assignment(job_spec(command=["touch", str(marker)])), FakeClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message.startswith(
            "refused by host policy: job sets no user, so it would run as the agent's user,"
            " root (uid 0); set a user in the job, or set [policy] allow_root = true"
        )
        assert not marker.exists()

    async def test_a_refused_adopted_workload_is_stopped(self, harness: Harness) -> None:
        """A workload a previous agent run started under a looser policy is not adopted
        when the policy now refuses it: it is stopped and the execution FAILED."""
        harness.policy = HostPolicy(allow_root=True, denied_env=("SECRET_HOOK",))
        clock = SystemClock()
        spec = job_spec(task={"env": {"SECRET_HOOK": "1"}})
        handle = await ExecRuntime(clock).start(
            LaunchSpec(
                job="web", version=1, command=["sleep", "300"], env={"PATH": "/usr/bin:/bin"}
            )
        )
        sup = harness.supervisor(assignment(spec), clock, adopted=handle)
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message.startswith("refused by host policy: task.env sets SECRET_HOOK")
        assert not psutil.pid_exists(handle.pid) or (
            psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE
        )
        assert harness.refusals("denied_env") == 1

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent (CI runs as root)")
    async def test_a_check_planted_by_the_workload_runs_as_the_workloads_user(
        self, harness: Harness
    ) -> None:
        """A workload running as nobody writes ./check.sh into its working dir; the exec
        check runs it as nobody with nobody's own groups, and the workload has no group 0
        either (it used to keep root's group, and the check ran as root)."""
        harness.policy = HostPolicy()
        plant = (
            "id -u > workload-ids; id -G >> workload-ids;"
            " printf '#!/bin/sh\\nid -u > .ids; id -G >> .ids; mv .ids check-ids\\n' > check.sh;"
            " chmod 755 check.sh; exec sleep 300"
        )
        spec = job_spec(
            command=["sh", "-c", plant],
            task={"user": "nobody"},
            health={
                "checks": [
                    {
                        "type": "exec",
                        "command": ["./check.sh"],
                        "interval": "50ms",
                        "failure_threshold": 1000,
                    }
                ]
            },
        )
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.HEALTHY)
        job_dir = harness.data_dir.job_dir("web")
        entry = pwd.getpwnam("nobody")
        own = [str(entry.pw_uid), " ".join(str(g) for g in groups_of(entry))]
        assert (job_dir / "check-ids").read_text().splitlines() == own
        assert (job_dir / "workload-ids").read_text().splitlines() == own
        assert "0" not in own[1].split()


def groups_of(entry: pwd.struct_passwd) -> list[int]:
    """The groups initgroups gives the user: its primary group first, then the others."""
    return list(dict.fromkeys(os.getgrouplist(entry.pw_name, entry.pw_gid)))


class TestPinning:
    def test_programs_found_on_the_path_are_pinned(self) -> None:
        """The command and exec checks looked up on the PATH run as the file the policy
        judged; names with a slash and names not found stay as given."""
        spec = job_spec(
            command=["app", "--port", "1"],
            health={
                "checks": [
                    {"type": "exec", "command": ["./check.sh", "-v"]},
                    {"type": "tcp", "address": "127.0.0.1:1"},
                    {"type": "exec", "command": ["missing"]},
                ]
            },
        )
        data_dir = DataDir(Path("/data"))
        prepared = prepare(assignment(spec), NODE, data_dir)
        request = LaunchRequest(
            driver=Driver.EXEC,
            user=None,
            user_uid=None,
            agent_user="root",
            env_names=frozenset(),
            programs=(
                Program("command", "app", "/usr/bin/app", "/usr/bin/app"),
                Program("health check 1 command", "./check.sh", "./check.sh", "/data/x"),
                Program("health check 3 command", "missing", None, None),
            ),
        )
        pinned = pin_programs(prepared, request)
        assert pinned.launch.command == ["/usr/bin/app", "--port", "1"]
        assert [getattr(c, "command", None) for c in pinned.checks] == [
            ["./check.sh", "-v"],
            None,
            ["missing"],
        ]


class TestLaunchFailures:
    async def test_interpolation_error_fails(self, harness: Harness) -> None:
        """A placeholder without a value on this node fails the execution with the reason."""
        spec = job_spec(command=["echo", "${node.label.missing}"])
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == "placeholder ${node.label.missing} has no value on this node"

    async def test_systemd_driver_not_available(self, harness: Harness) -> None:
        """The systemd driver is not there yet: the execution fails saying so."""
        spec = job_spec(task={"driver": "systemd"})
        sup = harness.supervisor(assignment(spec), SystemClock(), runtime=False)
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == "systemd driver not available yet"

    async def test_missing_command_fails(self, harness: Harness) -> None:
        """A program that does not exist fails the execution with a clear message."""
        sup = harness.supervisor(assignment(job_spec(command=["no-such-x"])), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == "command not found: 'no-such-x'"


class TestUnwritableLogs:
    async def test_workload_runs_with_its_output_discarded(self, harness: Harness) -> None:
        """When its log files cannot be created (here a file stands where the job's log
        directory goes) the workload runs all the same, without them, and the data dir is
        reported unwritable until they can be created."""
        blocker = harness.data_dir.log_dir("web")
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a directory")
        spec = job_spec(command=["sh", "-c", "echo hello; exec sleep 300"])
        sup = harness.supervisor(assignment(spec), SystemClock())
        await eventually(lambda: sup.state is ExecutionState.HEALTHY)
        assert sup.report().pid is not None
        assert harness.writes.degraded
        blocker.unlink()
        harness.writes.retry()
        assert not harness.writes.degraded
        assert (blocker / "stdout.log").exists()
