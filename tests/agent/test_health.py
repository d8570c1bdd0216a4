"""Table tests for the pure health evaluation."""

from __future__ import annotations

import pytest

from agent.health import CheckCounts, HealthState, evaluate_health
from shared.spec import TcpCheck

CHECK = TcpCheck(type="tcp", address="127.0.0.1:1", failure_threshold=3, success_threshold=2)
OTHER = TcpCheck(type="tcp", address="127.0.0.1:2", failure_threshold=1, success_threshold=1)

S, U, H = HealthState.STARTING, HealthState.UNHEALTHY, HealthState.HEALTHY


def counts(successes: int = 0, failures: int = 0) -> CheckCounts:
    return CheckCounts(successes=successes, failures=failures, last_error="refused")


class TestEvaluateHealth:
    @pytest.mark.parametrize(
        ("samples", "previous", "expected"),
        [
            ([counts()], S, S),
            ([counts(successes=1)], S, S),  # below success_threshold
            ([counts(successes=2)], S, H),
            ([counts(failures=2)], S, S),  # below failure_threshold
            ([counts(failures=3)], S, U),  # a broken version is reported while starting
            ([counts(failures=1)], H, H),  # one failure does not flap
            ([counts(failures=2)], H, H),
            ([counts(failures=3)], H, U),
            ([counts(successes=1)], U, U),  # recovering, not yet there
            ([counts(successes=2)], U, H),
        ],
    )
    def test_single_check_thresholds(
        self, samples: list[CheckCounts], previous: HealthState, expected: HealthState
    ) -> None:
        """failure_threshold and success_threshold gate transitions; otherwise state holds."""
        assert evaluate_health(samples, [CHECK], previous).state is expected

    def test_all_checks_must_pass(self) -> None:
        """Healthy needs every check over its success threshold."""
        verdict = evaluate_health([counts(successes=2), counts()], [CHECK, OTHER], S)
        assert verdict.state is S
        verdict = evaluate_health([counts(successes=2), counts(successes=1)], [CHECK, OTHER], S)
        assert verdict.state is H

    def test_any_failing_check_makes_unhealthy(self) -> None:
        """One check at its failure threshold is enough, and the message names it."""
        verdict = evaluate_health([counts(successes=5), counts(failures=1)], [CHECK, OTHER], H)
        assert verdict.state is U
        assert verdict.message == "tcp 127.0.0.1:2: refused"

    def test_no_checks_is_healthy(self) -> None:
        """Without checks a running process is healthy."""
        assert evaluate_health([], [], S).state is H


class TestCheckCounts:
    def test_results_reset_the_other_counter(self) -> None:
        """A success resets consecutive failures and vice versa."""
        c = CheckCounts().record(False, "x").record(False, "y")
        assert (c.successes, c.failures, c.last_error) == (0, 2, "y")
        c = c.record(True)
        assert (c.successes, c.failures) == (1, 0)
