"""What an agent's report means: one pure decision that every store applies the same way.

A store reads the node and its executions, asks :func:`decide_report`, and writes what it
says (or nothing, when the report is refused). Whether the report can be acknowledged from
memory before it is written is the store's business; whether it *changes* anything durable
is decided here (``liveness_only``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.domain.records import ExecutionRecord, NodeRecord, ReportOutcome
from shared.nodes import Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport


@dataclass(frozen=True)
class Report:
    """One report as the agent sent it (already validated by the API layer)."""

    seq: int
    load: Load
    resources: Resources | None
    executions: Sequence[ExecutionReport]
    conditions: Sequence[NodeCondition] = ()


@dataclass(frozen=True)
class ReportDecision:
    """What to store for a report, and what to answer."""

    outcome: ReportOutcome
    node: NodeRecord | None
    """The node after the report; None when the report is refused (nothing to write)."""
    executions: Mapping[str, ExecutionRecord]
    """Every execution of the node after the report, by job (a job not reported is gone)."""
    removed: frozenset[str]
    """Jobs whose execution record the report ends."""
    liveness_only: bool
    """Nothing durable changes: only ``last_heartbeat``, ``load`` and ``last_seq`` move."""


def decide_report(
    node: NodeRecord,
    executions: Mapping[str, ExecutionRecord],
    report: Report,
    now: datetime,
) -> ReportDecision:
    """The node and executions after ``report``, given what is stored now.

    A report whose ``seq`` is not above the node's ``last_seq`` is a replay or arrived late:
    it is refused and changes nothing (the agent resends from the returned ``last_seq``).
    An accepted report marks the node ready, replaces its conditions, and records every
    execution it names; ``since`` survives a repeated state.
    """
    if report.seq <= node.last_seq:
        return ReportDecision(
            outcome=ReportOutcome(False, node.last_seq, node.assign_index),
            node=None,
            executions=executions,
            removed=frozenset(),
            liveness_only=True,
        )
    update: dict[str, object] = {
        "last_heartbeat": now,
        "load": report.load,
        "status": NodeStatus.READY,
        "last_seq": report.seq,
        "conditions": list(report.conditions),
    }
    if report.resources is not None:
        update["resources"] = report.resources
    new = node.model_copy(update=update)
    current, changed = merge_executions(executions, node.id, report.executions, now)
    liveness_only = (
        node.status == NodeStatus.READY
        and (report.resources is None or report.resources == node.resources)
        and list(report.conditions) == node.conditions
        and not changed
        and all(unchanged(executions.get(r.job), r) for r in report.executions)
    )
    return ReportDecision(
        outcome=ReportOutcome(
            accepted=True,
            last_seq=report.seq,
            assign_index=node.assign_index,
            status_changed=node.status != NodeStatus.READY,
            changed_jobs=frozenset(changed),
        ),
        node=new,
        executions=current,
        removed=frozenset(executions.keys() - current.keys()),
        liveness_only=liveness_only,
    )


def merge_executions(
    existing: Mapping[str, ExecutionRecord],
    node_id: str,
    reports: Sequence[ExecutionReport],
    now: datetime,
) -> tuple[dict[str, ExecutionRecord], set[str]]:
    """The node's execution records after a report (a job not reported is gone), and the
    jobs whose execution changed."""
    current: dict[str, ExecutionRecord] = {}
    changed: set[str] = set()
    for report in reports:
        old = existing.get(report.job)
        new = current[report.job] = merge_execution(old, node_id, report, now)
        if old is None or _reported(old) != _reported(new):
            changed.add(report.job)
    changed.update(existing.keys() - current.keys())
    return current, changed


def merge_execution(
    old: ExecutionRecord | None, node_id: str, report: ExecutionReport, now: datetime
) -> ExecutionRecord:
    """The new execution record; ``since`` survives repeated reports of the same state."""
    same_run = (
        old is not None and old.version == report.version and old.generation == report.generation
    )
    same_state = same_run and old is not None and old.state == report.state
    since = old.since if same_state and old is not None else now
    if old is not None and unchanged(old, report):
        return old  # a report that repeats it changes nothing, ``updated_at`` included
    return ExecutionRecord(
        node_id=node_id,
        job=report.job,
        version=report.version,
        generation=report.generation,
        state=report.state,
        message=report.message,
        restarts=report.restarts,
        exit_code=report.exit_code,
        since=since,
        updated_at=now,
    )


_REPORTED = ("version", "generation", "state", "message", "restarts", "exit_code")
"""What an agent says about an execution; a report that repeats all of it changes nothing."""


def _reported(execution: ExecutionRecord | ExecutionReport) -> tuple[object, ...]:
    return tuple(getattr(execution, key) for key in _REPORTED)


def unchanged(old: ExecutionRecord | None, report: ExecutionReport) -> bool:
    """Whether ``report`` says exactly what ``old`` already records."""
    return old is not None and _reported(old) == _reported(report)
