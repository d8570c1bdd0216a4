"""Builders for specs, assignments and settings used across the agent tests."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

from agent.config import AgentSettings, HostPolicy
from agent.metrics import AgentMetrics
from agent.writes import DataDirWrites
from shared.clock import Clock, FakeClock
from shared.protocol import Assignment
from shared.spec import JobSpec

PYTHON = sys.executable

TEST_POLICY = HostPolicy(allow_root=True)
"""The host policy of these tests' agents: their jobs mostly set no ``user``, so they run as
whoever runs pytest, which is root in CI. The default (root refused) is tested on its own in
test_policy.py."""


def job_spec(name: str = "web", command: list[str] | None = None, **extra: Any) -> JobSpec:
    """A valid job spec; ``extra`` is merged in at the top level (task merged key by key)."""
    task = {"command": command or ["sleep", "300"], "kill_timeout": "2s"}
    task.update(extra.pop("task", {}))
    return JobSpec.model_validate({"name": name, "task": task, **extra})


def assignment(spec: JobSpec, version: int = 1, generation: int = 0) -> Assignment:
    return Assignment(job=spec.name, version=version, generation=generation, spec=spec)


def data_dir_writes(root: Path, clock: Clock | None = None) -> DataDirWrites:
    """The failed-writes tracker of an agent on ``root``, with its own metrics."""
    return DataDirWrites(root, clock=clock or FakeClock(), metrics=AgentMetrics())


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings(data_dir: Path, **overrides: Any) -> AgentSettings:
    """Agent settings for an in-process agent that ignores the host's config and env."""
    values: dict[str, Any] = {
        "config_file": data_dir.parent / "absent-ok.toml",
        "data_dir": data_dir,
        "name": "node-1",
        "listen": "off",
        "poll_wait": "1s",
        "policy": TEST_POLICY,
    }
    values.update(overrides)
    Path(values["config_file"]).touch()
    return AgentSettings(**values)
