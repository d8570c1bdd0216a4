"""JobStatus is exactly the seed's object, zero values included."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.status import JobState, JobStateType, JobStatus, Rollout, RolloutType
from tests.jobstatus_schema import SCHEMA, validate_job_status


class TestJobStatus:
    def test_zero_value_matches_design(self) -> None:
        """Before anything happens every field has its Go zero value."""
        body = json.loads(JobStatus().model_dump_json())
        validate_job_status(body)
        assert body["created_at"] == "0001-01-01T00:00:00Z"
        assert body["rollout"]["type"] == ""
        assert body["rollout"]["canary_nodes"] == []
        assert body["state"] == {"details": {}, "message": "", "state_type": ""}

    def test_field_names_are_exactly_the_seeds(self) -> None:
        """No field is added, removed or renamed at any level."""
        body = json.loads(JobStatus().model_dump_json())
        assert set(body) == set(SCHEMA["properties"])
        assert set(body["rollout"]) == set(SCHEMA["properties"]["rollout"]["properties"])
        assert set(body["state"]) == set(SCHEMA["properties"]["state"]["properties"])

    def test_enums_are_exactly_the_seeds(self) -> None:
        """State and rollout type values are the seed's lists, zero value included."""
        props = SCHEMA["properties"]
        assert [s.value for s in JobStateType] == props["state"]["properties"]["state_type"]["enum"]
        assert {t.value for t in RolloutType} == set(props["rollout"]["properties"]["type"]["enum"])

    def test_populated_status_round_trips(self) -> None:
        """A filled-in status serialises to RFC 3339 UTC and parses back to the same value."""
        now = datetime(2026, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
        status = JobStatus(
            created_at=now,
            updated_at=now,
            version=2,
            revision=7,
            state=JobState(state_type=JobStateType.RUNNING, message="ok", details={"a": "b"}),
            rollout=Rollout(type=RolloutType.UPDATE, canary_nodes=["n1"], started_at=now),
        )
        body = json.loads(status.model_dump_json())
        validate_job_status(body)
        assert body["created_at"] == "2026-05-01T12:30:15.250000Z"
        assert JobStatus.model_validate(body) == status
