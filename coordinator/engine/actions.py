"""Operator actions as pure functions of the job record.

Each returns the new record and the events to record, or raises ``Conflict`` saying why the
action does not apply now. The planner then takes it from there (level-triggered).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from coordinator.domain.records import Event, Gate, JobRecord, NodeRecord, Phase, RolloutState
from coordinator.engine.planner import start_rollback, start_rollout
from coordinator.engine.targets import select_targets
from shared.clock import ZERO_TIME
from shared.errors import Conflict
from shared.status import JobState, JobStateType, RolloutType

ActionResult = tuple[JobRecord, list[Event]]
_ENDED = {JobStateType.STOPPED, JobStateType.DELETED}


def _event(job: JobRecord, now: datetime, kind: str, reason: str = "", new: str = "") -> Event:
    return Event(time=now, job=job.name, kind=kind, new=new, reason=reason)


def _state_name(job: JobRecord) -> str:
    return job.status.state.state_type.value or "none"


def _not_ended(job: JobRecord, action: str) -> None:
    if job.status.state.state_type in _ENDED:
        raise Conflict(
            f"cannot {action} job {job.name!r}: it is {_state_name(job)};"
            " submit it again with `fleetwave job run` first",
            {"state": _state_name(job)},
        )


def _active(job: JobRecord, action: str) -> RolloutState:
    _not_ended(job, action)
    if not job.rollout.is_active():
        raise Conflict(
            f"cannot {action} job {job.name!r}: no rollout is in progress"
            f" (state {_state_name(job)})",
            {"state": _state_name(job)},
        )
    return job.rollout


def _with(job: JobRecord, rs: RolloutState) -> JobRecord:
    return job.model_copy(update={"rollout": rs})


def pause(job: JobRecord, now: datetime) -> ActionResult:
    """Hold the rollout: no node is given the new version until `resume`."""
    rs = _active(job, "pause")
    if rs.gate != Gate.NONE:
        return job, []  # already waiting for an operator
    return _with(job, rs.model_copy(update={"gate": Gate.OPERATOR})), [
        _event(job, now, "rollout_paused", "paused by operator")
    ]


def resume(job: JobRecord, now: datetime) -> ActionResult:
    """Lift an operator pause (or a manual wave gate); the canary gate needs `promote`."""
    rs = _active(job, "resume")
    if rs.gate == Gate.NONE:
        return job, []
    if rs.gate == Gate.CANARY:
        raise Conflict(
            "the rollout waits at the canary promotion gate; `fleetwave rollout promote` goes on",
            {"gate": rs.gate.value},
        )
    return _with(job, _pass_gate(rs, now)), [_event(job, now, "rollout_resumed")]


def _pass_gate(rs: RolloutState, now: datetime) -> RolloutState:
    update: dict[str, object] = {"gate": Gate.NONE, "progress_at": now}
    if rs.gate == Gate.CANARY:
        update["promoted"] = True
    elif rs.gate == Gate.WAVE:
        update["current_wave"] = rs.current_wave + 1
    return rs.model_copy(update=update)


def promote(job: JobRecord, now: datetime, *, full: bool) -> ActionResult:
    """Pass the gate the rollout waits at (approving canaries early is allowed); ``full`` also
    rolls out every remaining wave at once, without further gates. Health still gates nodes."""
    rs = _active(job, "promote")
    if rs.gate == Gate.OPERATOR:
        raise Conflict("the rollout is paused by an operator; `fleetwave rollout resume` first")
    if rs.gate == Gate.NONE and rs.phase == Phase.WAVES and not full:
        raise Conflict(
            "nothing to promote: the rollout is not waiting at a gate"
            " (--full rolls out every remaining wave at once)"
        )
    if rs.gate != Gate.NONE:
        rs = _pass_gate(rs, now)
    if rs.phase == Phase.CANARY:
        rs = rs.model_copy(update={"promoted": True})
    if full:
        rs = rs.model_copy(update={"promote_full": True, "gate_until": ZERO_TIME})
    return _with(job, rs), [_event(job, now, "rollout_promoted", "full" if full else "gate")]


def abort(job: JobRecord, now: datetime) -> ActionResult:
    """Halt the rollout; nodes already given the new version go back to the stable one (or
    stop the job, for a first version that has nothing to go back to)."""
    rs = _active(job, "abort")
    reason = "aborted by operator"
    halted = rs.model_copy(
        update={
            "phase": Phase.HALTED,
            "completed_at": now,
            "halted_reason": reason,
            "gate": Gate.NONE,
        }
    )
    events = [_event(job, now, "rollout_aborted", reason)]
    if rs.from_version and rs.type != RolloutType.RESTART and rs.target_version != rs.from_version:
        events.append(_event(job, now, "rollback_started", reason, new=str(rs.from_version)))
        return _with(job, start_rollback(job, halted, rs.from_version, reason, now)), events
    if not rs.from_version:
        halted = halted.model_copy(update={"started": []})  # nothing stable: stop the job
    return _with(job, halted), events


def retry(job: JobRecord, now: datetime) -> ActionResult:
    """Re-run the failed or aborted rollout of the current version from its first unfinished
    wave, as a new generation: failed nodes run the version again, and nodes of the waves that
    had passed (still on it, or rolled back) get it again along with that wave, at most
    max_parallel at a time."""
    _not_ended(job, "retry")
    rs = job.rollout
    base = rs.retry if rs.type == RolloutType.ROLLBACK else rs
    if (
        rs.is_active()
        or base is None
        or base.phase != Phase.HALTED
        or base.for_version != job.status.version
        or base.type == RolloutType.ROLLBACK
    ):
        raise Conflict(
            f"cannot retry job {job.name!r}: its latest rollout of version {job.status.version}"
            f" did not fail or abort (state {_state_name(job)})",
            {"state": _state_name(job)},
        )
    # current_wave is 0 until the canaries passed; `promote` may have approved them early.
    canary_pending = bool(base.canary) and base.current_wave == 0
    wave = 0 if canary_pending else max(base.current_wave, 1)
    # An operator rollback may have made a version stable since a first version failed.
    kind = (
        RolloutType.UPDATE if base.type == RolloutType.CREATE and job.stable_version else base.type
    )
    fresh = base.model_copy(
        update={
            "type": kind,
            "from_version": job.stable_version,
            "phase": Phase.CANARY if canary_pending else Phase.WAVES,
            "current_wave": wave,
            # An early promote approved the canaries of the attempt that failed, not these.
            "promoted": base.promoted and not canary_pending,
            "gate": Gate.NONE,
            "gate_until": ZERO_TIME,
            "promote_full": False,
            # A new generation, so agents run again what failed for this version before
            # (they never re-run a failed execution of the same version and generation);
            # passed waves get it again along with the current one, paced by max_parallel.
            "generation": base.generation + 1,
            "started": [],
            "updated": [],
            "failed": {},
            "skipped": {},
            "started_at": now,
            "completed_at": ZERO_TIME,
            "progress_at": now,
            "halted_reason": "",
            "retry": None,
        }
    )
    return _with(job, fresh), [
        _event(
            job,
            now,
            "rollout_retried",
            new=str(fresh.target_version),
            reason=f"from {'the canary phase' if canary_pending else f'wave {wave}'}",
        )
    ]


def rollback(job: JobRecord, now: datetime, to_version: int | None) -> ActionResult:
    """Return the fleet to ``to_version`` (default: the last stable version before the one
    the fleet runs or is moving to); the job's spec version does not change."""
    _not_ended(job, "roll back")
    rs = job.rollout
    current = rs.target_version
    if to_version is None:
        earlier = [v for v in job.stable_history if v != current]
        if not earlier:
            raise Conflict(
                f"job {job.name!r} has no earlier stable version to roll back to;"
                " give one with --to-version",
                {"stable_history": ",".join(map(str, job.stable_history))},
            )
        to_version = earlier[-1]
    if not 1 <= to_version <= job.status.version:
        # A well-formed request the job's versions (so far) cannot satisfy: a conflict.
        raise Conflict(
            f"job {job.name!r} has no version {to_version}; its versions are"
            f" 1..{job.status.version}",
            {"to_version": to_version, "latest": job.status.version},
        )
    if to_version == current and not rs.is_active() and rs.phase == Phase.DONE:
        raise Conflict(f"the fleet already runs version {to_version}", {"version": to_version})
    base = rs.model_copy(update={"retry": None}) if rs.type != RolloutType.ROLLBACK else rs
    new = start_rollback(job, base, to_version, "", now)
    return _with(job, new), [_event(job, now, "rollback_started", "operator", new=str(to_version))]


def restart(job: JobRecord, nodes: Iterable[NodeRecord], now: datetime) -> ActionResult:
    """Restart the running version's processes wave by wave (same version, new generation)."""
    _not_ended(job, "restart")
    if job.rollout.is_active():
        raise Conflict(
            f"job {job.name!r} has a rollout in progress; wait for it or abort it first",
            {"state": _state_name(job)},
        )
    if job.stable_version == 0:
        raise Conflict(f"job {job.name!r} has no running version to restart")
    targets = select_targets(job.name, job.spec.target, nodes)
    if not targets:
        raise Conflict(f"job {job.name!r} has no eligible node to restart on")
    rs = start_rollout(
        job,
        RolloutType.RESTART,
        targets,
        now,
        target_version=job.stable_version,
        generation=job.rollout.generation + 1,
    )
    return _with(job, rs), [_event(job, now, "rollout_started", new="restart")]


def stop(job: JobRecord, now: datetime) -> ActionResult:
    """Stop the job on every node; submitting it again starts it as a new version."""
    _not_ended(job, "stop")
    return _end(job, now, JobStateType.STOPPED, "stopped by an operator"), [
        _event(job, now, "job_stopped")
    ]


def delete(job: JobRecord, now: datetime) -> ActionResult:
    """Stop the job everywhere and keep a tombstone; versions stay readable."""
    if job.status.state.state_type == JobStateType.DELETED:
        return job, []
    ended = _end(job, now, JobStateType.DELETED, "deleted by an operator")
    return ended.model_copy(update={"deleted": True}), [_event(job, now, "job_deleted")]


def _end(job: JobRecord, now: datetime, state: JobStateType, message: str) -> JobRecord:
    rs = job.rollout
    if rs.is_active():
        rs = rs.model_copy(
            update={"phase": Phase.HALTED, "completed_at": now, "halted_reason": message}
        )
    status = job.status.model_copy(
        update={
            "state": JobState(state_type=state, message=message),
            "revision": job.status.revision + 1,
            "updated_at": now,
            "rollout": job.status.rollout.model_copy(update={"completed_at": rs.completed_at}),
        }
    )
    return job.model_copy(update={"status": status, "rollout": rs, "stable_version": 0})
