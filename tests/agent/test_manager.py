"""Tests for the execution manager: applying actions, persistence and restore."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import psutil
import pytest

from agent.config import HostPolicy
from agent.executions import ExecutionRecord, ExecutionStore
from agent.launch import NodeInfo
from agent.manager import ExecutionManager
from agent.paths import DataDir
from agent.reconcile import ReplaceJob, RestartJob, StartJob, StopJob
from agent.restart import ExitStatus
from agent.runtime import Discovered, LaunchSpec, ProcessHandle
from agent.runtime.exec import ExecRuntime
from agent.writes import DataDirWrites
from shared.clock import FakeClock, SystemClock
from shared.protocol import ExecutionState
from shared.spec import Driver, JobSpec
from tests.agent.factories import TEST_POLICY, assignment, data_dir_writes, job_spec
from tests.helpers import eventually

NODE = NodeInfo(node_id="n-1", name="node-1")


class FakeHandle:
    """A process that runs until stopped."""

    def __init__(self, runtime: RecordingRuntime, name: str, pid: int) -> None:
        self._runtime = runtime
        self._name = name
        self._pid = pid
        self._exited = asyncio.Event()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def start_time(self) -> float:
        return 1.0

    @property
    def unit(self) -> str | None:
        return None

    async def wait(self) -> ExitStatus:
        await self._exited.wait()
        return ExitStatus(signal=15)

    async def stop(self, kill_timeout: float) -> ExitStatus:
        self._runtime.events.append(f"stop {self._name}")
        self._exited.set()
        return ExitStatus(signal=15)


class RecordingRuntime:
    """A runtime that records starts and stops instead of running anything."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._pids = iter(range(1000, 2000))

    async def start(self, spec: LaunchSpec) -> FakeHandle:
        name = f"{spec.job}@{spec.version}"
        self.events.append(f"start {name}")
        return FakeHandle(self, name, next(self._pids))

    async def adopt(self, record: ExecutionRecord) -> FakeHandle | None:
        return None

    async def discover(self, instance: str) -> list[Discovered]:
        return []


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def manager_for(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    runtime: object,
    clock: FakeClock | None = None,
    writes: DataDirWrites | None = None,
    policy: HostPolicy = TEST_POLICY,
) -> tuple[ExecutionManager, ExecutionStore]:
    data_dir = DataDir(tmp_path / "data")
    data_dir.ensure()
    store = ExecutionStore(data_dir.executions)
    manager = ExecutionManager(
        runtimes={Driver.EXEC: runtime},  # type: ignore[dict-item]
        data_dir=data_dir,
        store=store,
        writes=writes or data_dir_writes(data_dir.root),
        clock=clock or FakeClock(),
        http=http,
        policy=policy,
    )
    return manager, store


class TestHostPolicy:
    async def test_a_refused_version_never_starts_and_a_complying_one_does(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A version the policy refuses fails without reaching the runtime and stays failed
        (also in its record); the next version, which complies, starts as usual."""
        runtime = RecordingRuntime()
        manager, store = manager_for(tmp_path, http, runtime, policy=HostPolicy())
        await manager.apply([StartJob(assignment(job_spec("web", task={"user": "root"}), 1))], NODE)
        await eventually(lambda: manager.reports()[0].state is ExecutionState.FAILED)
        (report,) = manager.reports()
        assert report.message.startswith("refused by host policy: job runs as root (uid 0)")
        assert (report.restarts, report.pid) == (0, None)
        (record,) = store.load_all()
        assert (record.state, record.message) == (report.state, report.message)
        assert runtime.events == []
        nobody = job_spec("web", task={"user": "nobody"})
        await manager.apply([ReplaceJob(assignment(nobody, 2))], NODE)
        await eventually(lambda: runtime.events == ["start web@2"])
        await eventually(lambda: manager.reports()[0].state is ExecutionState.HEALTHY)
        await manager.stop_all()


class TestApply:
    async def test_replace_stops_old_before_starting_new(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """Replace and restart stop the running execution before starting the next one."""
        runtime = RecordingRuntime()
        manager, store = manager_for(tmp_path, http, runtime)
        spec = job_spec("web")
        await manager.apply([StartJob(assignment(spec, 1))], NODE)
        await eventually(lambda: runtime.events == ["start web@1"])
        await manager.apply([ReplaceJob(assignment(spec, 2))], NODE)
        await eventually(lambda: len(runtime.events) == 3)
        await manager.apply([RestartJob(assignment(spec, 2, generation=1))], NODE)
        await eventually(lambda: len(runtime.events) == 5)
        assert runtime.events == [
            "start web@1",
            "stop web@1",
            "start web@2",
            "stop web@2",
            "start web@2",
        ]
        (record,) = store.load_all()
        assert (record.version, record.generation, record.state) == (2, 1, "healthy")
        await manager.apply([StopJob("web")], NODE)
        assert store.load_all() == []
        assert manager.reports() == []


class TestUnwritableRecords:
    async def test_supervision_goes_on_and_the_record_follows(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A job whose record cannot be written runs and is reported all the same; the
        newest record is written by the retry once the data dir takes it, and removed the
        same way when the job stops."""
        runtime = RecordingRuntime()
        writes = data_dir_writes(tmp_path / "data")
        manager, store = manager_for(tmp_path, http, runtime, writes=writes)
        record_path = store.directory / "web.json"
        record_path.mkdir()
        await manager.apply([StartJob(assignment(job_spec("web"), 1))], NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
        assert writes.degraded
        record_path.rmdir()
        writes.retry()
        assert [r.state for r in store.load_all()] == [ExecutionState.HEALTHY]

        record_path.unlink()
        record_path.mkdir()
        (record_path / "keep").touch()  # not empty: cannot be removed as a record either
        await manager.apply([StopJob("web")], NODE)
        assert manager.reports() == []
        assert writes.degraded
        (record_path / "keep").unlink()
        record_path.rmdir()
        record_path.write_text("{}")  # a stale record the retry must remove
        writes.retry()
        assert not record_path.exists()
        assert not writes.degraded


class TestRestore:
    async def test_finished_executions_remembered(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """Failed and completed executions are reported again after a restart."""
        runtime = RecordingRuntime()
        manager, store = manager_for(tmp_path, http, runtime)
        store.save(ExecutionRecord(job="once", version=3, state=ExecutionState.COMPLETED))
        await manager.restore(NODE)
        assert [(r.job, r.version, r.state) for r in manager.reports()] == [
            ("once", 3, ExecutionState.COMPLETED)
        ]
        assert runtime.events == []

    async def test_finished_record_with_live_copy_stops_the_copy(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A process of a job whose execution already finished is an orphan: it is stopped."""
        runtime = ExecRuntime(SystemClock())
        manager, store = manager_for(tmp_path, http, runtime)
        handle = await runtime.start(marked_launch(manager, "web", 1))
        store.save(ExecutionRecord(job="web", version=1, state=ExecutionState.FAILED))
        await manager.restore(NODE)
        await eventually(lambda: not alive(handle.pid))
        await handle.wait()  # reap our child before the loop closes
        assert [r.state for r in manager.reports()] == [ExecutionState.FAILED]


def marked_launch(manager: ExecutionManager, job: str, version: int) -> LaunchSpec:
    """What the supervisor would launch for ``job`` (with the instance marker), as sleep 300."""
    return LaunchSpec(
        job=job,
        version=version,
        command=["sleep", "300"],
        env=dict(os.environ),
        instance=manager._data_dir.instance,
    )


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class TestAdoption:
    """A restarted agent takes over the workloads it left running (real processes)."""

    @pytest.fixture(autouse=True)
    async def reap(self) -> AsyncIterator[None]:
        """Workloads this test process started as children are reaped before the loop closes
        (another "agent" run stops them, but only the parent can collect their exit)."""
        self.children: list[ProcessHandle] = []
        yield
        for handle in self.children:
            await handle.stop(1.0)  # at once when already stopped

    async def running(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> tuple[ExecutionManager, ExecutionStore, int]:
        """A first agent run: web@1 running and healthy, then the agent goes away."""
        manager, store = manager_for(tmp_path, http, ExecRuntime(SystemClock()))
        await manager.apply([StartJob(assignment(job_spec("web"), 1))], NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
        pid = manager.reports()[0].pid
        assert pid is not None
        handle = manager.supervisors["web"]._handle
        assert handle is not None
        self.children.append(handle)
        await manager.detach_all()
        return manager, store, pid

    async def test_restart_adopts_the_running_workload(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """The next run supervises the same process (same pid), healthy, without a restart."""
        _, _, pid = await self.running(tmp_path, http)
        manager, _ = manager_for(tmp_path, http, ExecRuntime(SystemClock()))
        await manager.restore(NODE)
        (report,) = manager.reports()
        assert (report.pid, report.state, report.restarts) == (pid, ExecutionState.HEALTHY, 0)
        assert manager.current()["web"].version == 1
        await manager.stop_all()
        assert not alive(pid)

    async def test_reused_pid_is_not_mistaken_for_the_workload(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A record whose pid now belongs to another process adopts nothing and kills nothing;
        the workload itself is restarted after the policy's backoff."""
        other = await asyncio.create_subprocess_exec("sleep", "300")
        try:
            clock = FakeClock()
            manager, store = manager_for(tmp_path, http, ExecRuntime(SystemClock()), clock)
            start = psutil.Process(other.pid).create_time()
            store.save(
                ExecutionRecord(
                    job="web",
                    version=1,
                    state=ExecutionState.HEALTHY,
                    pid=other.pid,
                    start_time=start - 100,  # the workload was older: the pid was reused
                    assignment=assignment(job_spec("web"), 1),
                )
            )
            await manager.restore(NODE)
            assert alive(other.pid)
            # The recorded workload is gone, so it is restarted: one new process.
            await eventually(lambda: manager.reports()[0].state == ExecutionState.RESTARTING)
            clock.advance(1)
            await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
            assert manager.reports()[0].pid not in (None, other.pid)
            await manager.stop_all()
        finally:
            other.kill()
            await other.wait()

    @pytest.mark.parametrize("damage", ["corrupt", "missing"])
    async def test_lost_record_adopts_by_marker_once_assigned(
        self, tmp_path: Path, http: aiohttp.ClientSession, damage: str
    ) -> None:
        """Without a usable record the workload is found by its marker and kept when the
        coordinator assigns exactly that version: no second process is ever started."""
        _, store, pid = await self.running(tmp_path, http)
        path = store.directory / "web.json"
        if damage == "corrupt":
            path.write_bytes(b'{"job": "web", "vers')
        else:
            path.unlink()
        runtime = ExecRuntime(SystemClock())
        manager, store = manager_for(tmp_path, http, runtime)
        await manager.restore(NODE)
        assert manager.reports() == []
        assert alive(pid)
        await manager.claim([assignment(job_spec("web"), 1)], NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
        assert manager.reports()[0].pid == pid
        found = await runtime.discover(manager._data_dir.instance)
        assert [d.handle.pid for d in found] == [pid]
        await manager.stop_all()

    async def test_lost_record_and_new_version_replaces_exactly_once(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A found workload of another version is stopped; reconcile then starts one copy."""
        _, store, pid = await self.running(tmp_path, http)
        (store.directory / "web.json").unlink()
        runtime = ExecRuntime(SystemClock())
        manager, store = manager_for(tmp_path, http, runtime)
        await manager.restore(NODE)
        await manager.claim([assignment(job_spec("web"), 2)], NODE)
        assert not alive(pid)
        assert manager.current() == {}
        await manager.apply([StartJob(assignment(job_spec("web"), 2))], NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
        found = await runtime.discover(manager._data_dir.instance)
        assert [(d.job, d.version) for d in found] == [("web", 2)]
        await manager.stop_all()

    async def test_duplicate_copy_is_stopped_and_the_recorded_one_kept(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """Two live copies of a job (say, a crash mid-replace): the recorded one stays."""
        first, _, pid = await self.running(tmp_path, http)
        runtime = ExecRuntime(SystemClock())
        extra = await runtime.start(marked_launch(first, "web", 1))
        self.children.append(extra)
        manager, _ = manager_for(tmp_path, http, runtime)
        await manager.restore(NODE)
        assert manager.reports()[0].pid == pid
        await eventually(lambda: not alive(extra.pid))
        await manager.stop_all()


def crash_loop_spec(marker: Path, max_restarts: int = 3) -> JobSpec:
    """A service that notes each start in ``marker``, then runs until it is killed."""
    return job_spec(
        "web",
        command=["sh", "-c", f"echo run >> {marker}; exec sleep 300"],
        task={"restart": {"max_restarts": max_restarts, "delay": "1s", "window": "1h"}},
    )


def starts(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


class TestRestartAfterAgentRestart:
    """A workload that died while no agent watched it is restarted by its restart policy:
    counted, after its backoff, within its budget (real processes, a fake clock)."""

    @pytest.fixture(autouse=True)
    async def reap(self) -> AsyncIterator[None]:
        """Workloads this test process started are reaped before the loop closes."""
        self.children: list[ProcessHandle] = []
        yield
        for handle in self.children:
            await handle.stop(1.0)

    def agent_run(
        self, tmp_path: Path, http: aiohttp.ClientSession, clock: FakeClock
    ) -> tuple[ExecutionManager, ExecutionStore]:
        """One agent run on the shared data dir and clock."""
        return manager_for(tmp_path, http, ExecRuntime(SystemClock()), clock)

    async def healthy(self, manager: ExecutionManager) -> int:
        """Wait until the job runs healthy; its pid (the process is reaped at teardown)."""
        await eventually(lambda: manager.reports()[0].state == ExecutionState.HEALTHY)
        handle = manager.supervisors["web"]._handle
        assert handle is not None
        self.children.append(handle)
        return handle.pid

    async def crash_unwatched(self, manager: ExecutionManager) -> None:
        """The agent goes away (its workload keeps running), then the workload dies."""
        handle = manager.supervisors["web"]._handle
        assert handle is not None
        await manager.detach_all()
        os.killpg(handle.pid, signal.SIGKILL)
        await handle.wait()
        assert not alive(handle.pid)

    async def test_death_while_down_is_a_counted_restart_after_backoff(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """The restart is counted and recorded (history, due time), and nothing starts
        before the policy's backoff has passed."""
        clock = FakeClock()
        marker = tmp_path / "runs"
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.apply([StartJob(assignment(crash_loop_spec(marker)))], NODE)
        await self.healthy(manager)
        await self.crash_unwatched(manager)

        manager, store = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.RESTARTING)
        (report,) = manager.reports()
        assert (report.restarts, report.pid) == (1, None)
        assert report.message == "ended (exit status unknown); restarting in 1s"
        (record,) = store.load_all()
        assert record.restart_history == [clock.now()]
        assert record.restart_at == clock.now() + timedelta(seconds=1)
        clock.advance(0.9)
        for _ in range(20):
            await asyncio.sleep(0)  # a start that came too early would be under way now
        assert starts(marker) == 1
        clock.advance(0.1)
        await self.healthy(manager)
        assert starts(marker) == 2
        assert (
            manager.reports()[0].message
            == "running (restart 1; previous run ended (exit status unknown))"
        )
        await manager.stop_all()

    async def test_agent_killed_during_the_backoff_does_not_count_twice(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """An agent run that finds the restart already decided waits out what is left of
        its backoff and starts the workload once, without counting it again."""
        clock = FakeClock()
        marker = tmp_path / "runs"
        manager, _ = self.agent_run(tmp_path, http, clock)
        spec = crash_loop_spec(marker)
        await manager.apply([StartJob(assignment(spec))], NODE)
        await self.healthy(manager)
        os.killpg(manager.reports()[0].pid or 0, signal.SIGKILL)  # crashes while watched
        await eventually(lambda: manager.reports()[0].state == ExecutionState.RESTARTING)
        assert manager.reports()[0].message == "killed by signal 9; restarting in 1s"
        clock.advance(0.5)
        await manager.detach_all()

        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        assert (manager.reports()[0].state, manager.reports()[0].restarts) == (
            ExecutionState.RESTARTING,
            1,
        )
        for _ in range(20):
            await asyncio.sleep(0)
        assert starts(marker) == 1
        clock.advance(0.5)
        await self.healthy(manager)
        assert (starts(marker), manager.reports()[0].restarts) == (2, 1)
        await manager.stop_all()

    async def test_crash_loop_across_agent_restarts_ends_failed(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """Crashes seen and unseen, with the agent restarted again and again: every start
        after the first is a counted restart, and once max_restarts are spent the
        execution fails and no later agent run starts it again."""
        clock = FakeClock()
        marker = tmp_path / "runs"
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.apply([StartJob(assignment(crash_loop_spec(marker, max_restarts=3)))], NODE)
        await self.healthy(manager)

        # Restart 1: the workload dies while the agent is down.
        await self.crash_unwatched(manager)
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.RESTARTING)
        # The agent is killed again during the backoff; the next run finishes the restart.
        await manager.detach_all()
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        clock.advance(1)
        pid = await self.healthy(manager)

        # Restart 2: it crashes while watched.
        os.killpg(pid, signal.SIGKILL)
        await eventually(lambda: manager.reports()[0].restarts == 2)
        clock.advance(2)
        await self.healthy(manager)

        # Restart 3: unseen again.
        await self.crash_unwatched(manager)
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        await eventually(lambda: manager.reports()[0].restarts == 3)
        clock.advance(4)
        await self.healthy(manager)

        # The budget is spent: the next unseen death fails the execution.
        await self.crash_unwatched(manager)
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.FAILED)
        assert manager.reports()[0].message == (
            "ended (exit status unknown); gave up after 3 restarts within 1h"
        )
        clock.advance(3600)
        manager, _ = self.agent_run(tmp_path, http, clock)
        await manager.restore(NODE)
        assert [(r.state, r.restarts) for r in manager.reports()] == [(ExecutionState.FAILED, 3)]
        assert manager.supervisors == {}
        assert starts(marker) == 4  # the first start and 3 counted restarts, no more

    async def test_spent_budget_on_record_fails_without_starting(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A record whose restart history already holds max_restarts within the window
        fails at once when its workload is gone."""
        clock = FakeClock()
        marker = tmp_path / "runs"
        manager, store = self.agent_run(tmp_path, http, clock)
        now = clock.now()
        store.save(
            ExecutionRecord(
                job="web",
                version=1,
                state=ExecutionState.UNHEALTHY,
                restarts=7,
                restart_history=[now - timedelta(minutes=2), now - timedelta(minutes=1)],
                assignment=assignment(crash_loop_spec(marker, max_restarts=2)),
            )
        )
        await manager.restore(NODE)
        await eventually(lambda: manager.reports()[0].state == ExecutionState.FAILED)
        assert manager.reports()[0].restarts == 7
        assert starts(marker) == 0

    async def test_service_stopped_by_its_policy_stays_stopped(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A service that exited 0 under on-failure was stopped by its policy: an agent
        restart does not start it again."""
        clock = FakeClock()
        marker = tmp_path / "runs"
        manager, store = self.agent_run(tmp_path, http, clock)
        store.save(
            ExecutionRecord(
                job="web",
                version=1,
                state=ExecutionState.STOPPED,
                message="exited with code 0 (restart policy on-failure)",
                assignment=assignment(crash_loop_spec(marker)),
            )
        )
        await manager.restore(NODE)
        assert [r.state for r in manager.reports()] == [ExecutionState.STOPPED]
        assert manager.current()["web"].version == 1
        assert manager.supervisors == {}
        assert starts(marker) == 0
