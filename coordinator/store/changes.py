"""What changed in a store that keeps its state in memory, for the engine's incremental plans.

The engine plans a job from its nodes, assignments and executions. A store that holds them
in memory (the embedded SQLite store's mirror, the memory store) hands the engine live,
read-only views of them and a log of the nodes whose record, assignment or execution it put
or dropped, so that an evaluation reads nothing whole and looks again only at what changed
(``coordinator.engine.index``). A store without one (PostgreSQL: several coordinators write
its tables) offers none, and the engine compares records instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from coordinator.domain.records import AssignmentRecord, ExecutionRecord, NodeRecord

CHANGE_LOG_LIMIT = 200_000
"""Entries kept (8 bytes each: the ids are the records' own strings). At 10,000 nodes that
is minutes of heartbeats; a job not evaluated for longer is planned from scratch once."""


class ChangeLog:
    """Node ids in the order their state changed, read by position (a cursor).

    Its one reader, the engine, keeps a cursor per job; a cursor older than what the log
    still holds gets None (unknown: look at everything)."""

    def __init__(self, limit: int = CHANGE_LOG_LIMIT) -> None:
        self._limit = limit
        self._ids: list[str] = []
        self._base = 1  # the position of self._ids[0]; 0 is "never read"

    @property
    def end(self) -> int:
        """The cursor just past the last change."""
        return self._base + len(self._ids)

    def note(self, node_id: str) -> None:
        self._ids.append(node_id)
        if len(self._ids) > self._limit:
            drop = len(self._ids) // 2
            del self._ids[:drop]
            self._base += drop

    def since(self, cursor: int) -> set[str] | None:
        """The nodes changed at or after ``cursor``; None when the log no longer reaches
        back that far."""
        if cursor < self._base:
            return None
        return set(self._ids[cursor - self._base :])


@dataclass(frozen=True)
class LiveState:
    """Live read-only views of a store's in-memory state and its change log. The views
    change as the store commits: read them without awaiting in between."""

    changes: ChangeLog
    fleet: Mapping[str, NodeRecord]
    """Nodes the engine may plan with: approved and not revoked."""
    job_assignments: Callable[[str], Mapping[str, AssignmentRecord]]
    job_executions: Callable[[str], Mapping[str, ExecutionRecord]]
