"""Go-style duration strings ("500ms", "10s", "1h30m") as a pydantic type."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``"1h30m"``; raise ValueError with a helpful message."""
    cleaned = text.strip()
    if cleaned == "0":
        return timedelta(0)
    if not _WHOLE.match(cleaned):
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units ms, s, m or h,"
            " e.g. '500ms', '10s', '1h30m'"
        )
    seconds = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(cleaned))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # past timedelta's range (~2.7 million years): bad input, not a crash
        raise ValueError(f"duration {text!r} is too long") from None


def format_duration(value: timedelta) -> str:
    """Format a timedelta as the shortest Go-style string that parses back to it."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or (millis and (hours or minutes)):
        out += f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s" if millis else f"{seconds}s"
    elif millis:
        out += f"{millis}ms"
    return out


def _coerce(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        return value
    raise ValueError("must be a duration string such as '10s' or '2m'")


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^((\d+(\.\d+)?)(ms|s|m|h))+$|^0$"}),
]
"""A non-negative duration written as a Go-style string."""
