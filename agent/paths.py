"""The data dir layout: identity, per-execution records, per-job working dirs and logs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.fsutil import ensure_private_dir


@dataclass(frozen=True)
class DataDir:
    """``identity.json``, ``report_seq.json``, ``executions/``, ``jobs/<job>/``, ``logs/<job>/``."""

    root: Path

    @property
    def instance(self) -> str:
        """A stable id of this agent installation (its data dir), marking its workloads.

        Exec workloads carry it in ``FLEETWAVE_AGENT_INSTANCE`` and systemd units in their
        names, so a restarted agent finds its own workloads even without its records, and
        several agents on one machine never take each other's.
        """
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()
        return digest[:10]

    @property
    def executions(self) -> Path:
        return self.root / "executions"

    @property
    def artifacts(self) -> Path:
        """``artifacts/<job>/<version>/``: verified artifacts of recent versions."""
        return self.root / "artifacts"

    def job_dir(self, job: str) -> Path:
        """The default working directory of ``job``."""
        return self.root / "jobs" / job

    def log_dir(self, job: str) -> Path:
        return self.root / "logs" / job

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> None:
        """Create the directories the agent writes to, private to the agent's user."""
        ensure_private_dir(self.root)
        for sub in ("executions", "jobs", "logs", "artifacts"):
            ensure_private_dir(self.root / sub)
