"""What one execution launches: its assignment with every placeholder filled in for this
node (``prepare``), then each program pinned to the file the host policy judged."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.paths import DataDir
from agent.policy import LaunchRequest
from agent.runtime import LaunchSpec
from agent.runtime.environment import child_environment
from shared.interpolation import interpolate, node_variables
from shared.protocol import Assignment
from shared.spec import ExecCheck, HealthCheck, HttpCheck, TcpCheck

VERSION_DIR_ENV = "FLEETWAVE_VERSION_DIR"


@dataclass(frozen=True)
class NodeInfo:
    """The node as workloads see it through ``${node.*}`` placeholders."""

    node_id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """An assignment with every placeholder filled in, ready for a driver."""

    launch: LaunchSpec
    checks: list[HealthCheck]


def prepare(
    assignment: Assignment, node: NodeInfo, data_dir: DataDir, version_dir: Path | None = None
) -> Prepared:
    """Interpolate command, env and check targets; raise InterpolationError on a bad one.

    With artifacts, ``version_dir`` holds them: it is the default working directory and
    ``$FLEETWAVE_VERSION_DIR`` names it.
    """
    spec = assignment.spec
    variables = node_variables(
        node_id=node.node_id,
        node_name=node.name,
        labels=node.labels,
        job_name=assignment.job,
        job_version=assignment.version,
    )
    task = spec.task
    command = [interpolate(arg, variables) for arg in task.command]
    job_env = {key: interpolate(value, variables) for key, value in task.env.items()}
    if version_dir is not None:
        job_env[VERSION_DIR_ENV] = str(version_dir)
    checks: list[HealthCheck] = []
    for check in spec.health.checks:
        if isinstance(check, HttpCheck):
            checks.append(check.model_copy(update={"url": interpolate(check.url, variables)}))
        elif isinstance(check, TcpCheck):
            address = interpolate(check.address, variables)
            checks.append(check.model_copy(update={"address": address}))
        else:
            argv = [interpolate(arg, variables) for arg in check.command]
            checks.append(check.model_copy(update={"command": argv}))
    logs = data_dir.log_dir(assignment.job)
    working_dir = version_dir or data_dir.job_dir(assignment.job)
    launch = LaunchSpec(
        job=assignment.job,
        version=assignment.version,
        generation=assignment.generation,
        instance=data_dir.instance,
        kill_timeout=task.kill_timeout.total_seconds(),
        command=command,
        env=child_environment(job_env, user=task.user),
        working_dir=working_dir if task.working_dir is None else Path(task.working_dir),
        user=task.user,
        stdout_path=logs / "stdout.log",
        stderr_path=logs / "stderr.log",
    )
    return Prepared(launch=launch, checks=checks)


def pin_programs(prepared: Prepared, request: LaunchRequest) -> Prepared:
    """``prepared`` with each program that was looked up on the PATH replaced by the file
    found (``request.programs``: the command, then each exec check in order)."""
    programs = iter(request.programs)

    def pinned(argv: list[str]) -> list[str]:
        found = next(programs).found
        return argv if found is None else [found, *argv[1:]]

    launch = dataclasses.replace(prepared.launch, command=pinned(prepared.launch.command))
    checks = [
        check.model_copy(update={"command": pinned(check.command)})
        if isinstance(check, ExecCheck)
        else check
        for check in prepared.checks
    ]
    return Prepared(launch=launch, checks=checks)
