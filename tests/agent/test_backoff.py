"""Tests for the pure backoff function."""

from __future__ import annotations

import pytest

from agent.backoff import BackoffPolicy, backoff_delay, retry_delay

POLICY = BackoffPolicy(base=1.0, cap=10.0)


class TestBackoffDelay:
    @pytest.mark.parametrize(
        ("attempt", "rand", "expected"),
        [
            (0, 0.0, 0.5),
            (0, 1.0, 1.0),
            (1, 0.0, 1.0),
            (2, 0.5, 3.0),
            (3, 1.0, 8.0),
            (4, 0.0, 5.0),  # 16 capped at 10, half fixed
            (50, 1.0, 10.0),
            (10_000, 0.0, 5.0),
        ],
    )
    def test_table(self, attempt: int, rand: float, expected: float) -> None:
        """The delay doubles per attempt, is capped, and only its upper half is jittered."""
        assert backoff_delay(attempt, POLICY, lambda: rand) == pytest.approx(expected)

    def test_never_exceeds_cap(self) -> None:
        """No attempt number or random value yields more than the cap."""
        for attempt in range(100):
            assert backoff_delay(attempt, POLICY, lambda: 0.999) <= POLICY.cap


class TestRetryDelay:
    @pytest.mark.parametrize(
        ("failures", "reconnecting", "rand", "retry_after", "expected"),
        [
            (0, True, 0.0, None, 0.0),  # losing a coordinator: the whole spread, from 0
            (0, True, 0.5, None, 2.5),
            (0, True, 0.999, None, 4.995),
            (1, True, 0.0, None, 1.0),  # then the backoff's second step
            (0, False, 0.0, None, 0.5),  # never heard: the backoff's first step
            (0, True, 0.1, 3.0, 3.0),  # a Retry-After is waited out
            (3, False, 1.0, 3.0, 8.0),  # ... but never shortens the backoff
        ],
    )
    def test_table(
        self,
        failures: int,
        reconnecting: bool,
        rand: float,
        retry_after: float | None,
        expected: float,
    ) -> None:
        """The first retry after a coordinator that answered is drawn from the whole spread;
        later ones back off; a Retry-After is a floor."""
        policy = BackoffPolicy(base=1.0, cap=10.0, reconnect_spread=5.0)
        delay = retry_delay(
            failures, policy, lambda: rand, reconnecting=reconnecting, retry_after=retry_after
        )
        assert delay == pytest.approx(expected)

    def test_the_spread_never_exceeds_the_cap(self) -> None:
        """A policy with a short cap (tests' fast backoff) keeps its first retry under it."""
        policy = BackoffPolicy(base=0.05, cap=0.2)
        assert retry_delay(0, policy, lambda: 0.999, reconnecting=True) < 0.2
