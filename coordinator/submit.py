"""Submitting a job spec: the version and revision rules of DESIGN §4."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from coordinator.domain.records import JobRecord, JobVersion
from coordinator.engine.driver import JobLocks
from coordinator.store import Store
from shared.errors import PreconditionFailed
from shared.spec import JobSpec
from shared.status import JobState, JobStateType, JobStatus


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    created: bool
    changed: bool


def revise(existing: JobRecord | None, spec: JobSpec, now: datetime) -> JobRecord | None:
    """The job after submitting ``spec``, or None when it is identical to the current one."""
    pending = JobState(
        state_type=JobStateType.PENDING, message="new version accepted; waiting for the engine"
    )
    if existing is None:
        status = JobStatus(created_at=now, updated_at=now, version=1, revision=1, state=pending)
        return JobRecord(name=spec.name, spec=spec, status=status)
    ended = existing.deleted or existing.status.state.state_type == JobStateType.STOPPED
    if not ended and existing.spec.canonical() == spec.canonical():
        return None
    status = existing.status.model_copy(
        update={
            "version": existing.status.version + 1,
            "revision": existing.status.revision + 1,
            "updated_at": now,
            "state": pending,
        }
    )
    return existing.model_copy(update={"spec": spec, "status": status, "deleted": False})


def check_precondition(existing: JobRecord | None, if_match: int | None) -> None:
    """``If-Match: "R"`` must name the current revision; ``"0"`` means "must not exist"."""
    if if_match is None:
        return
    current = existing.status.revision if existing is not None else 0
    if current != if_match:
        raise PreconditionFailed(
            f"job revision is {current}, not {if_match}: someone changed it; fetch it and retry",
            {"current_revision": current, "expected_revision": if_match},
        )


async def submit_job(
    store: Store,
    locks: JobLocks,
    spec: JobSpec,
    if_match: int | None,
    now: datetime,
    by: str = "",
) -> Submission:
    """Store ``spec`` as the job's next version (unless it is unchanged); ``by`` is the
    submitting token's name, named by the rollout it starts."""
    async with locks(spec.name):
        existing = await store.get_job(spec.name)
        check_precondition(existing, if_match)
        revised = revise(existing, spec, now)
        if revised is None:
            assert existing is not None
            return Submission(job=existing, created=False, changed=False)
        revised = revised.model_copy(update={"changed_by": by})
        version = JobVersion(
            job=spec.name, version=revised.status.version, spec=spec, created_at=now
        )
        await store.save_job(
            revised,
            expected_revision=existing.status.revision if existing is not None else None,
            new_version=version,
        )
        return Submission(job=revised, created=existing is None, changed=True)
