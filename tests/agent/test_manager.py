"""Tests for the execution manager: applying actions, persistence and restore."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from agent.executions import ExecutionRecord, ExecutionStore
from agent.manager import ExecutionManager
from agent.paths import DataDir
from agent.reconcile import ReplaceJob, RestartJob, StartJob, StopJob
from agent.restart import ExitStatus
from agent.runtime import Discovered, LaunchSpec, ProcessHandle
from agent.runtime.exec import ExecRuntime
from agent.supervisor import NodeInfo
from shared.clock import FakeClock, SystemClock
from shared.protocol import ExecutionState
from shared.spec import Driver
from tests.agent.factories import assignment, job_spec
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
    tmp_path: Path, http: aiohttp.ClientSession, runtime: object
) -> tuple[ExecutionManager, ExecutionStore]:
    data_dir = DataDir(tmp_path / "data")
    data_dir.ensure()
    store = ExecutionStore(data_dir.executions)
    manager = ExecutionManager(
        runtimes={Driver.EXEC: runtime},  # type: ignore[dict-item]
        data_dir=data_dir,
        store=store,
        clock=FakeClock(),
        http=http,
    )
    return manager, store


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
        the workload itself is started again."""
        other = await asyncio.create_subprocess_exec("sleep", "300")
        try:
            manager, store = manager_for(tmp_path, http, ExecRuntime(SystemClock()))
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
            # The recorded workload is gone, so it is started again: one new process.
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
