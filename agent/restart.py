"""The restart policy as pure decisions: after an exit (restart after a delay, give up,
complete or stop), and for a workload that died while the agent itself was down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.durations import format_duration
from shared.protocol import ExecutionState
from shared.spec import JobType, RestartMode, RestartPolicy


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit ``code``, or the ``signal`` that killed it."""

    code: int | None = None
    signal: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.code == 0 and self.signal is None

    @property
    def report_code(self) -> int:
        """The code reported to the coordinator; 128+N for a signal, as shells do."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else -1

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.code is None:
            return "ended (exit status unknown)"
        return f"exited with code {self.code}"


UNKNOWN_EXIT = ExitStatus()
"""How a workload ended that was not the agent's child (adopted), or ended while no agent ran."""


class RestartAction(StrEnum):
    RESTART = "restart"  # start it again after ``delay`` seconds
    GIVE_UP = "give_up"  # the execution fails: policy or restart budget says no
    COMPLETE = "complete"  # a batch job succeeded
    STOP = "stop"  # a service ended cleanly and its policy does not restart it


@dataclass(frozen=True)
class RestartDecision:
    """What to do after a process ended, and the reason to report."""

    action: RestartAction
    delay: float = 0.0
    message: str = ""


def decide_restart(
    history: Sequence[datetime],
    policy: RestartPolicy,
    job_type: JobType,
    exit_status: ExitStatus,
    now: datetime,
) -> RestartDecision:
    """Decide after an exit; ``history`` holds the times of this execution's earlier restarts.

    A batch job that exits 0 is complete. ``never`` does not restart; ``on-failure``
    restarts failures only; ``always`` restarts services on any exit. Restarts are
    budgeted: more than ``max_restarts`` within ``window`` gives up. The delay doubles
    with each recent restart (``delay * 2**n``), capped at ``max_delay``.
    """
    what = exit_status.describe()
    if job_type is JobType.BATCH and exit_status.succeeded:
        return RestartDecision(RestartAction.COMPLETE, message=what)
    if policy.policy is RestartMode.NEVER or (
        policy.policy is RestartMode.ON_FAILURE and exit_status.succeeded
    ):
        action = RestartAction.STOP if exit_status.succeeded else RestartAction.GIVE_UP
        return RestartDecision(action, message=f"{what} (restart policy {policy.policy})")
    recent = [t for t in history if now - t < policy.window]
    if len(recent) >= policy.max_restarts:
        return RestartDecision(
            RestartAction.GIVE_UP,
            message=f"{what}; gave up after {len(recent)} restarts within {_window(policy)}",
        )
    base = policy.delay.total_seconds()
    delay = min(policy.max_delay.total_seconds(), base * 2.0 ** min(len(recent), 62))
    return RestartDecision(
        RestartAction.RESTART, delay=delay, message=f"{what}; restarting in {delay:g}s"
    )


class Resume(StrEnum):
    """How a starting agent picks up a recorded execution whose workload is gone."""

    START = "start"  # it had not started yet: start it, which is no restart
    EXITED = "exited"  # it ran and ended while no agent watched: an exit of unknown status
    RESTART = "restart"  # its restart was already decided and counted: start it when due
    KEEP = "keep"  # it ended for good (failed, completed, stopped by its policy): leave it


def how_to_resume(state: ExecutionState) -> Resume:
    """What the recorded ``state`` of an execution whose workload is gone asks for.

    A workload that ran and died unseen is an exit like any other: the restart policy
    decides, with the restart history of the record, so an agent restarted again and again
    never restarts a crash-looping workload past its budget or without its backoff.
    """
    match state:
        case ExecutionState.PENDING:
            return Resume.START
        case ExecutionState.STARTING | ExecutionState.HEALTHY | ExecutionState.UNHEALTHY:
            return Resume.EXITED
        case ExecutionState.RESTARTING:
            return Resume.RESTART
        case _:
            return Resume.KEEP


def restart_wait(restart_at: datetime | None, policy: RestartPolicy, now: datetime) -> float:
    """Seconds until a restart decided before the agent's own restart is due.

    Never longer than ``max_delay``: a wall clock that was set back must not hold it up.
    """
    if restart_at is None:
        return 0.0
    left = (restart_at - now).total_seconds()
    return min(max(0.0, left), policy.max_delay.total_seconds())


def _window(policy: RestartPolicy) -> str:
    return format_duration(policy.window)
