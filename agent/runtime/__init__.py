"""Runtimes: the drivers that start, watch and stop workloads (exec processes, systemd units).

Runs inside the agent. The supervisor talks to a driver only through these Protocols; the
manager uses ``adopt``/``discover`` to take over workloads a previous agent run left running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.restart import ExitStatus

if TYPE_CHECKING:
    from agent.executions import ExecutionRecord

INSTANCE_ENV = "FLEETWAVE_AGENT_INSTANCE"
"""Set in every exec workload's environment to the agent's instance id (see DataDir.instance)."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a driver needs to start one execution, already interpolated."""

    job: str
    version: int
    command: list[str]
    generation: int = 0
    instance: str = ""
    """The agent's instance id: exec marks the process with it, systemd names the unit."""
    kill_timeout: float = 10.0
    env: dict[str, str] = field(default_factory=dict)
    working_dir: Path | None = None
    user: str | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None


class ProcessHandle(Protocol):
    """One started (or adopted) workload process."""

    @property
    def pid(self) -> int: ...

    @property
    def unit(self) -> str | None:
        """The systemd unit running the workload (None for the exec driver)."""
        ...

    @property
    def start_time(self) -> float:
        """The process's start time (seconds since the epoch); with ``pid`` it names it."""
        ...

    async def wait(self) -> ExitStatus:
        """Wait until the process has exited; leftovers of its process group are killed."""
        ...

    async def stop(self, kill_timeout: float) -> ExitStatus:
        """SIGTERM the process group, SIGKILL it after ``kill_timeout`` seconds."""
        ...


class Runtime(Protocol):
    """A driver: starts workloads and finds ones it started before the agent restarted."""

    async def start(self, spec: LaunchSpec) -> ProcessHandle:
        """Start the workload; raise LaunchError with a clear message when it cannot."""
        ...

    async def adopt(self, record: ExecutionRecord) -> ProcessHandle | None:
        """A handle for the still running workload ``record`` names, or None if it is gone."""
        ...

    async def discover(self, instance: str) -> list[Discovered]:
        """Every live workload this agent instance started, found without any records."""
        ...


@dataclass(frozen=True)
class Discovered:
    """A live workload found by its marker: which execution it is, and a handle on it."""

    job: str
    version: int
    generation: int
    handle: ProcessHandle
