"""Go-style duration strings ("500ms", "10s", "1h30m") as a pydantic type."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SHAPE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")

MAX_DURATION_CHARS = 64
DURATION_PATTERN = r"^(?:0|(?:[0-9]{1,9}(?:\.[0-9]+)?(?:ms|s|m|h))+)$"
"""What a duration may be, here and in the OpenAPI document alike: ASCII digits, at most 9 before
a point, at most MAX_DURATION_CHARS characters, no spaces. So no duration overflows timedelta
(six parts of 999999999h are 2.2e13 s; timedelta holds 8.6e13 s)."""
POSITIVE_DURATION_PATTERN = r"^(?=[^1-9]*[1-9])" + DURATION_PATTERN.removeprefix("^")
"""A duration above zero: one digit at least is not 0 (a tiny one is rounded up to 1us)."""
_DURATION = re.compile(DURATION_PATTERN.removeprefix("^").removesuffix("$"))
_ONE_MICROSECOND = timedelta(microseconds=1)


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``"1h30m"``; raise ValueError with a helpful message.

    Exactly the strings DURATION_PATTERN describes (and the OpenAPI document says): no spaces,
    ASCII digits only. A non-zero duration below a microsecond is one microsecond, never zero.
    """
    if text == "0":
        return timedelta(0)
    if len(text) > MAX_DURATION_CHARS or (_SHAPE.fullmatch(text) and not _DURATION.fullmatch(text)):
        raise ValueError(
            f"duration {text[:80]!r} is too long: at most 9 digits before a point"
            f" and {MAX_DURATION_CHARS} characters"
        )
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"invalid duration {text[:80]!r}: use numbers with units ms, s, m or h,"
            " e.g. '500ms', '10s', '1h30m'"
        )
    seconds = sum((Decimal(num) * _UNITS[unit] for num, unit in _PART.findall(text)), Decimal(0))
    micros = int((seconds * 1_000_000).to_integral_value())
    return max(timedelta(microseconds=micros), _ONE_MICROSECOND if seconds else timedelta(0))


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
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "maxLength": MAX_DURATION_CHARS}
    ),
]
"""A non-negative duration written as a Go-style string."""

PositiveDuration = Annotated[
    Duration,
    WithJsonSchema(
        {"type": "string", "pattern": POSITIVE_DURATION_PATTERN, "maxLength": MAX_DURATION_CHARS}
    ),
]
"""A duration above zero; the model that uses it still checks that it is (the schema says so)."""
