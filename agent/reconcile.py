"""Reconciliation: a pure function from desired assignments and local executions to actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.protocol import Assignment


@dataclass(frozen=True)
class CurrentExecution:
    """What the node runs (or last ran) for one job."""

    job: str
    version: int
    generation: int


@dataclass(frozen=True)
class StartJob:
    """Start a job that has no execution on this node."""

    assignment: Assignment


@dataclass(frozen=True)
class StopJob:
    """Stop a job that is no longer assigned and forget its execution."""

    job: str


@dataclass(frozen=True)
class ReplaceJob:
    """Stop the running version, then start the assigned (different) version."""

    assignment: Assignment


@dataclass(frozen=True)
class RestartJob:
    """Same version, new generation: stop the process and start it again."""

    assignment: Assignment


Action = StartJob | StopJob | ReplaceJob | RestartJob


def reconcile(
    desired: Sequence[Assignment], current: Mapping[str, CurrentExecution]
) -> list[Action]:
    """The actions that turn ``current`` into ``desired``: stops first, then by job name.

    ``desired`` is the node's complete desired state, so every job it does not list is
    stopped. An execution that already matches (job, version, generation) is left alone,
    whatever its state: a failed or completed execution only runs again for a new version
    or generation.
    """
    wanted = {assignment.job: assignment for assignment in desired}
    stops: list[Action] = [StopJob(job) for job in sorted(current) if job not in wanted]
    changes: list[Action] = []
    for job in sorted(wanted):
        assignment = wanted[job]
        running = current.get(job)
        if running is None:
            changes.append(StartJob(assignment))
        elif running.version != assignment.version:
            changes.append(ReplaceJob(assignment))
        elif running.generation != assignment.generation:
            changes.append(RestartJob(assignment))
    return stops + changes
