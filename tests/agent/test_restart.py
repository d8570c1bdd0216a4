"""Table tests for the pure restart decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.restart import (
    UNKNOWN_EXIT,
    ExitStatus,
    RestartAction,
    RestartDecision,
    Resume,
    decide_restart,
    how_to_resume,
    restart_wait,
)
from shared.protocol import ExecutionState
from shared.spec import JobType, RestartMode, RestartPolicy

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FAIL = ExitStatus(code=3)
OK = ExitStatus(code=0)
KILLED = ExitStatus(signal=9)


def policy(mode: str = "on-failure", max_restarts: int = 3) -> RestartPolicy:
    return RestartPolicy.model_validate(
        {
            "policy": mode,
            "max_restarts": max_restarts,
            "window": "1m",
            "delay": "1s",
            "max_delay": "5s",
        }
    )


def ago(*seconds: float) -> list[datetime]:
    return [NOW - timedelta(seconds=s) for s in seconds]


class TestDecideRestart:
    @pytest.mark.parametrize(
        ("history", "pol", "job_type", "status", "action", "delay"),
        [
            ([], policy(), JobType.SERVICE, FAIL, RestartAction.RESTART, 1.0),
            (ago(5), policy(), JobType.SERVICE, FAIL, RestartAction.RESTART, 2.0),
            (ago(5, 4), policy(), JobType.SERVICE, KILLED, RestartAction.RESTART, 4.0),
            (ago(5, 4, 3), policy(), JobType.SERVICE, FAIL, RestartAction.GIVE_UP, 0.0),
            # restarts older than the window no longer count
            (ago(120, 90, 61), policy(), JobType.SERVICE, FAIL, RestartAction.RESTART, 1.0),
            (ago(120, 90, 30), policy(), JobType.SERVICE, FAIL, RestartAction.RESTART, 2.0),
            # the delay is capped at max_delay
            (ago(1, 2, 3, 4), policy(max_restarts=9), JobType.SERVICE, FAIL, "restart", 5.0),
            ([], policy(max_restarts=0), JobType.SERVICE, FAIL, RestartAction.GIVE_UP, 0.0),
            ([], policy("always"), JobType.SERVICE, OK, RestartAction.RESTART, 1.0),
            ([], policy("on-failure"), JobType.SERVICE, OK, RestartAction.STOP, 0.0),
            ([], policy("never"), JobType.SERVICE, OK, RestartAction.STOP, 0.0),
            ([], policy("never"), JobType.SERVICE, FAIL, RestartAction.GIVE_UP, 0.0),
            ([], policy("always"), JobType.BATCH, OK, RestartAction.COMPLETE, 0.0),
            ([], policy("on-failure"), JobType.BATCH, OK, RestartAction.COMPLETE, 0.0),
            ([], policy("on-failure"), JobType.BATCH, FAIL, RestartAction.RESTART, 1.0),
            (ago(1, 2, 3), policy(), JobType.BATCH, FAIL, RestartAction.GIVE_UP, 0.0),
            ([], policy("never"), JobType.BATCH, FAIL, RestartAction.GIVE_UP, 0.0),
        ],
    )
    def test_table(
        self,
        history: list[datetime],
        pol: RestartPolicy,
        job_type: JobType,
        status: ExitStatus,
        action: str,
        delay: float,
    ) -> None:
        """Policy, job type, exit status and recent restarts decide action and delay."""
        decision = decide_restart(history, pol, job_type, status, NOW)
        assert decision.action == action
        assert decision.delay == pytest.approx(delay)

    def test_messages_name_exit_and_reason(self) -> None:
        """Messages say how the process ended and why the agent gave up."""
        gave_up = decide_restart(ago(1, 2, 3), policy(), JobType.SERVICE, FAIL, NOW)
        assert gave_up == RestartDecision(
            RestartAction.GIVE_UP,
            message="exited with code 3; gave up after 3 restarts within 1m",
        )
        killed = decide_restart([], policy(), JobType.SERVICE, KILLED, NOW)
        assert killed.message == "killed by signal 9; restarting in 1s"
        never = decide_restart([], policy(RestartMode.NEVER), JobType.SERVICE, FAIL, NOW)
        assert never.message == "exited with code 3 (restart policy never)"


class TestExitStatus:
    def test_report_code(self) -> None:
        """Signals are reported as 128+N like a shell; exit codes as they are."""
        assert KILLED.report_code == 137
        assert FAIL.report_code == 3
        assert OK.succeeded
        assert not KILLED.succeeded

    def test_unknown_exit_is_a_failure(self) -> None:
        """A workload that ended unseen (adopted, or while the agent was down) says so, is
        not a success, and is restarted only by a policy that restarts failures."""
        assert UNKNOWN_EXIT.describe() == "ended (exit status unknown)"
        assert not UNKNOWN_EXIT.succeeded
        restart = decide_restart([], policy(), JobType.BATCH, UNKNOWN_EXIT, NOW)
        assert restart.message == "ended (exit status unknown); restarting in 1s"
        never = decide_restart([], policy("never"), JobType.SERVICE, UNKNOWN_EXIT, NOW)
        assert never.action is RestartAction.GIVE_UP


class TestResume:
    @pytest.mark.parametrize(
        ("state", "resume"),
        [
            (ExecutionState.PENDING, Resume.START),
            (ExecutionState.STARTING, Resume.EXITED),
            (ExecutionState.HEALTHY, Resume.EXITED),
            (ExecutionState.UNHEALTHY, Resume.EXITED),
            (ExecutionState.RESTARTING, Resume.RESTART),
            (ExecutionState.FAILED, Resume.KEEP),
            (ExecutionState.COMPLETED, Resume.KEEP),
            (ExecutionState.STOPPED, Resume.KEEP),
        ],
    )
    def test_recorded_state_decides(self, state: ExecutionState, resume: Resume) -> None:
        """A workload that ran is an exit; a decided restart is finished; the rest stays."""
        assert how_to_resume(state) is resume

    @pytest.mark.parametrize(
        ("restart_at", "wait"),
        [
            (None, 0.0),  # nothing recorded: at once
            (NOW + timedelta(seconds=3), 3.0),  # what is left of the backoff
            (NOW - timedelta(seconds=3), 0.0),  # overdue
            (NOW + timedelta(hours=1), 5.0),  # a clock set back: at most max_delay
        ],
    )
    def test_restart_wait(self, restart_at: datetime | None, wait: float) -> None:
        """A restart decided before the agent's restart waits out the rest of its backoff."""
        assert restart_wait(restart_at, policy(), NOW) == pytest.approx(wait)
