"""The report body's conditions: a small list, each type once, absent meaning none."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.nodes import MAX_CONDITIONS
from shared.protocol import ReportRequest


def condition(kind: str) -> dict[str, str]:
    return {"type": kind, "message": "m", "since": "2026-12-01T10:00:00Z"}


class TestReportConditions:
    def test_absent_means_none(self) -> None:
        """An older agent sends no conditions: the report says there are none."""
        assert ReportRequest.model_validate({"seq": 1}).conditions == []

    def test_bounded_count(self) -> None:
        """At most MAX_CONDITIONS conditions per report."""
        many = [condition(f"c{i}") for i in range(MAX_CONDITIONS + 1)]
        ReportRequest.model_validate({"seq": 1, "conditions": many[:MAX_CONDITIONS]})
        with pytest.raises(ValidationError):
            ReportRequest.model_validate({"seq": 1, "conditions": many})

    def test_one_per_type(self) -> None:
        """The same type twice is refused."""
        with pytest.raises(ValidationError, match="only once"):
            ReportRequest.model_validate({"seq": 1, "conditions": [condition("a")] * 2})
