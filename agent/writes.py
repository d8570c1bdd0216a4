"""Writes of agent state to the data dir that may fail: the agent goes on in memory.

A full disk or a read-only remount must not silence a node whose workloads run fine. Each
write on a loop's path goes through ``DataDirWrites.attempt``: a failure is counted
(``fleetwave_agent_data_dir_write_errors_total``), logged once per file and episode, kept
to be tried again (the report loop retries at every report, so at least once a heartbeat),
and reported to the coordinator as the node condition ``data_dir_unwritable`` until every
pending write has gone through. Seqs are reserved in blocks, so a quiet agent may not write
for a long time: each report also looks at the filesystem (``check``, no write), so a full
or read-only data dir shows before the agent needs to write there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from functools import partial
from pathlib import Path

import structlog

from agent.fsutil import check_writable
from agent.metrics import AgentMetrics
from shared.clock import Clock
from shared.nodes import DATA_DIR_UNWRITABLE, MAX_CONDITION_MESSAGE, NodeCondition

log = structlog.get_logger("agent.writes")

Write = Callable[[], object]

FILESYSTEM = "filesystem"
"""The kind of ``check``: the filesystem looks full or read-only (found without writing)."""


def describe_error(exc: OSError) -> str:
    """``[Errno 28] No space left on device``: the error without the (temp) file name."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)


def unwritable_condition(root: Path, error: str, since: datetime) -> NodeCondition:
    """The node condition for a data dir that cannot be written since ``since``."""
    message = f"cannot write {root}: {error}"
    return NodeCondition(
        type=DATA_DIR_UNWRITABLE, message=message[:MAX_CONDITION_MESSAGE], since=since
    )


class DataDirWrites:
    """Pending (failed) writes by kind and item, and the episode they belong to.

    An episode starts with the first failed write and ends when no write is pending any
    more. Only the latest write of each ``(kind, item)`` is kept, so a retry never writes
    older state over newer.
    """

    def __init__(self, root: Path, *, clock: Clock, metrics: AgentMetrics) -> None:
        self._root = root
        self._clock = clock
        self._metrics = metrics
        self._pending: dict[tuple[str, str], Write] = {}
        self._since: datetime | None = None
        self._error = ""

    @property
    def degraded(self) -> bool:
        """Whether some agent state could not be written (and lives only in memory)."""
        return bool(self._pending)

    def attempt(self, kind: str, write: Write, *, item: str = "") -> bool:
        """Run ``write``; True when it went through, else it is kept to be retried.

        ``kind`` is a bounded metric label (``report_seq``, ``execution_record``, ...),
        ``item`` tells apart the files of one kind (a job's name).
        """
        try:
            write()
        except OSError as exc:
            self.failed(kind, exc, retry=write, item=item)
            return False
        self.succeeded(kind, item=item)
        return True

    def failed(self, kind: str, exc: OSError, *, retry: Write, item: str = "") -> None:
        """A write failed with ``exc``; ``retry`` does it again (the latest wins)."""
        self._metrics.data_dir_write_errors.labels(kind).inc()
        error = describe_error(exc)
        if (kind, item) not in self._pending:
            log.warning(
                "data_dir_write_failed",
                kind=kind,
                item=item,
                error=error,
                data_dir=str(self._root),
            )
        if self._since is None:
            self._since, self._error = self._clock.now(), error
        self._pending[(kind, item)] = retry

    def succeeded(self, kind: str, *, item: str = "") -> None:
        """A write went through: it is no longer pending (the episode may end)."""
        if self._pending.pop((kind, item), None) is None or self._pending:
            return
        since, self._since = self._since, None
        seconds = (self._clock.now() - since).total_seconds() if since else 0.0
        log.info("data_dir_writable_again", data_dir=str(self._root), seconds=round(seconds, 3))

    def check(self) -> None:
        """Look at the data dir's filesystem: full or read-only counts like a failed write
        (kind ``filesystem``) until a later check finds it writable."""
        self.attempt(FILESYSTEM, partial(check_writable, self._root))

    def retry(self, *, skip: Collection[str] = ()) -> None:
        """Try every pending write once more, but those of the ``skip`` kinds (and the
        filesystem, which ``check`` looks at)."""
        for (kind, item), write in list(self._pending.items()):
            if kind in skip or kind == FILESYSTEM:
                continue
            if self._pending.get((kind, item)) is write:  # not replaced by a newer one meanwhile
                self.attempt(kind, write, item=item)

    def conditions(self) -> list[NodeCondition]:
        """What the next report says about the data dir: nothing while it can be written."""
        if self._since is None:
            return []
        return [unwritable_condition(self._root, self._error, self._since)]
