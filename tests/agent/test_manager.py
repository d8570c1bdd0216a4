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
from agent.runtime import LaunchSpec
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

    async def adopt(self, pid: int, start_time: float) -> FakeHandle | None:
        return None


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
        await manager.restore()
        assert [(r.job, r.version, r.state) for r in manager.reports()] == [
            ("once", 3, ExecutionState.COMPLETED)
        ]
        assert runtime.events == []

    async def test_orphaned_process_is_stopped(
        self, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A process left running by a crashed agent is found by its record and stopped."""
        runtime = ExecRuntime(SystemClock())
        handle = await runtime.start(
            LaunchSpec(job="web", version=1, command=["sleep", "300"], env=dict(os.environ))
        )
        manager, store = manager_for(tmp_path, http, runtime)
        store.save(
            ExecutionRecord(
                job="web",
                version=1,
                state=ExecutionState.HEALTHY,
                pid=handle.pid,
                start_time=handle.start_time,
                kill_timeout=2.0,
            )
        )
        await manager.restore()
        await handle.wait()
        assert store.load_all() == []
        assert manager.reports() == []
        assert not psutil.pid_exists(handle.pid) or (
            psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE
        )
