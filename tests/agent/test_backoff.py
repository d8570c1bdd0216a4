"""Tests for the pure backoff function."""

from __future__ import annotations

import pytest

from agent.backoff import BackoffPolicy, backoff_delay

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
