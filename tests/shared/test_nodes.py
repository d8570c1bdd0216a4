"""Node conditions as agents report them: bounded, cleaned, one per type."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.nodes import DATA_DIR_UNWRITABLE, MAX_CONDITION_MESSAGE, NodeCondition, clean_text
from shared.status import RFC3339_PATTERN

SINCE = "2026-12-01T10:00:00Z"


class TestCleanText:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("No space left on device", "No space left on device"),
            ("line\nnext\ttab\r", "line next tab "),
            ("\x1b[31mred\x1b[0m", " [31mred [0m"),  # no terminal escapes reach a screen
            ("a\u202eb\u200bc", "abc"),  # bidi override and zero-width space dropped
            ("\x7f\x85", "  "),  # DEL and C1 controls too
            ("/var/lib/fleetwave-agent: é ü 日本", "/var/lib/fleetwave-agent: é ü 日本"),
        ],
    )
    def test_controls_become_spaces_invisibles_go(self, raw: str, clean: str) -> None:
        """Control characters become spaces; other invisible characters are dropped."""
        assert clean_text(raw) == clean


class TestNodeCondition:
    def test_message_is_cleaned(self) -> None:
        """A message from an agent is stored without its control characters."""
        condition = NodeCondition.model_validate(
            {"type": DATA_DIR_UNWRITABLE, "message": "disk\nfull\x1b", "since": SINCE}
        )
        assert condition.message == "disk full "
        assert condition.since == datetime(2026, 12, 1, 10, tzinfo=UTC)

    @pytest.mark.parametrize(
        "body",
        [
            {"type": "Data-Dir", "since": SINCE},  # not snake_case
            {"type": "x" * 64, "since": SINCE},  # too long a type
            {"type": "t", "message": "m" * (MAX_CONDITION_MESSAGE + 1), "since": SINCE},
            {"type": "t", "since": "yesterday"},
            {"type": "t"},  # since is required
            {"type": "t", "since": SINCE, "extra": 1},
        ],
    )
    def test_bad_condition_is_refused(self, body: dict[str, object]) -> None:
        """Type, message length, time and fields are checked: agents are not trusted."""
        with pytest.raises(ValidationError):
            NodeCondition.model_validate(body)

    def test_time_with_an_offset_is_utc(self) -> None:
        """An RFC 3339 time in another zone is read as the same instant in UTC."""
        condition = NodeCondition.model_validate(
            {"type": "t", "since": "2026-12-01t12:00:00+02:00"}
        )
        assert condition.since == datetime(2026, 12, 1, 10, tzinfo=UTC)
        assert condition.model_dump(mode="json")["since"] == "2026-12-01T10:00:00Z"

    @pytest.mark.parametrize(
        "since",
        [
            "2026-12-01T10:00:00",  # no offset: RFC 3339 needs one, as the OpenAPI document says
            "2026-12-01 10:00:00Z",
            "2026-12-01",
            "1764583200",
            1764583200,
            "2026-02-30T10:00:00Z",
            "2026-12-31T23:59:60Z",  # a leap second: no datetime holds it
            "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
            "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
            "\uff12026-12-01T10:00:00Z",  # a fullwidth digit
        ],
    )
    def test_only_rfc3339_times_that_fit_a_datetime(self, since: object) -> None:
        """``since`` is exactly what RFC3339_PATTERN (the document's pattern) and a real
        date allow: no numbers, no naive or spaced times, nothing outside datetime's range."""
        with pytest.raises(ValidationError):
            NodeCondition.model_validate({"type": "t", "since": since})
        if isinstance(since, str) and since[:1].isascii():
            assert re.fullmatch(RFC3339_PATTERN, since) is None or "-02-30" in since
