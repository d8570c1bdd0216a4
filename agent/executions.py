"""Per-execution state persisted as ``executions/<job>.json`` so a restarted agent knows it."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.fsutil import atomic_write
from shared.protocol import Assignment, ExecutionReport, ExecutionState

log = structlog.get_logger("agent.executions")

TERMINAL_STATES = frozenset({ExecutionState.FAILED, ExecutionState.COMPLETED})
"""States that stay as they are until a new version or generation is assigned."""


class ExecutionRecord(BaseModel):
    """What the agent knows about one job's execution, including how to find its process."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    job: str
    version: int
    generation: int = 0
    state: ExecutionState
    message: str = ""
    restarts: int = 0
    restart_history: list[datetime] = Field(
        default_factory=list,
        description="when it was restarted within the restart window (the policy's budget)",
    )
    restart_at: datetime | None = Field(
        default=None, description="when a decided restart is due (state restarting)"
    )
    exit_code: int | None = None
    pid: int | None = None
    start_time: float | None = Field(default=None, description="process start, epoch seconds")
    driver: str = "exec"
    kill_timeout: float = 10.0
    unit: str | None = Field(default=None, description="the systemd unit, for that driver")
    assignment: Assignment | None = Field(
        default=None, description="what is running, so a restarted agent can supervise it"
    )

    def report(self) -> ExecutionReport:
        """The record as the coordinator sees it."""
        return ExecutionReport(
            job=self.job,
            version=self.version,
            generation=self.generation,
            state=self.state,
            message=self.message[:2000],
            restarts=self.restarts,
            exit_code=self.exit_code,
            pid=self.pid,
        )


class ExecutionStore:
    """One small JSON file per job under ``directory``, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, record: ExecutionRecord) -> None:
        atomic_write(self._path(record.job), record.model_dump_json().encode())

    def delete(self, job: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(job).unlink()

    def load_all(self) -> list[ExecutionRecord]:
        """Every readable record; unreadable ones are logged and removed."""
        records: list[ExecutionRecord] = []
        if not self.directory.is_dir():
            return records
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(ExecutionRecord.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError) as exc:
                log.warning("execution_record_unreadable", path=str(path), error=str(exc))
                with contextlib.suppress(OSError):
                    path.unlink()
        return records

    def _path(self, job: str) -> Path:
        return self.directory / f"{job}.json"
