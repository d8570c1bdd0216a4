"""Go-style duration parsing: valid strings round-trip, absurd ones are a ValueError."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.durations import format_duration, parse_duration


@pytest.mark.parametrize("text", ["500ms", "10s", "2m", "1h30m", "1.5s"])
def test_valid_durations_round_trip(text: str) -> None:
    """A formatted duration parses back to the same length."""
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["99999999999999999999h", "1" * 400 + "s"])
def test_durations_past_the_range_are_value_errors(text: str) -> None:
    """A duration too long for timedelta is rejected as bad input, not an OverflowError."""
    with pytest.raises(ValueError, match="too long"):
        parse_duration(text)


def test_zero_needs_no_unit() -> None:
    """``"0"`` is the one duration without a unit."""
    assert parse_duration("0") == timedelta(0)
