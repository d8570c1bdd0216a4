"""The JSON Schema of the seed's JobStatus, and a validator that also checks date-time strings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads((Path(__file__).parent / "jobstatus.schema.json").read_text())
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def validate_job_status(status: Any) -> None:
    """Raise if ``status`` is not exactly a seed JobStatus with RFC 3339 UTC timestamps."""
    jsonschema.validate(status, SCHEMA)
    for value in (
        status["created_at"],
        status["updated_at"],
        status["rollout"]["started_at"],
        status["rollout"]["completed_at"],
    ):
        assert RFC3339_UTC.match(value), f"not an RFC 3339 UTC timestamp: {value!r}"
