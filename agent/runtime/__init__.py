"""Runtimes: the drivers that start, watch and stop workload processes (exec now, systemd later).

Runs inside the agent. The supervisor talks to a driver only through these Protocols, so a
systemd driver (transient units) can be added without touching the supervision logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.restart import ExitStatus


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a driver needs to start one execution, already interpolated."""

    job: str
    version: int
    command: list[str]
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

    async def adopt(self, pid: int, start_time: float) -> ProcessHandle | None:
        """A handle for a still running workload started earlier, or None if it is gone."""
        ...
