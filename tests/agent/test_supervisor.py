"""Tests for supervising one execution with real processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from agent.paths import DataDir
from agent.runtime.exec import ExecRuntime
from agent.supervisor import NodeInfo, Supervisor
from shared.clock import Clock, FakeClock, SystemClock
from shared.protocol import Assignment, ExecutionState
from tests.agent.factories import PYTHON, assignment, data_dir_writes, free_port, job_spec
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

    def supervisor(
        self, item: Assignment, clock: Clock, node: NodeInfo = NODE, *, runtime: bool = True
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
