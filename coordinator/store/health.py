"""Whether the store's writes commit: which SQLite errors are an outage (503, retry) rather
than a bug (500), and the write health that ``/readyz`` and the metrics report."""

from __future__ import annotations

import sqlite3

import structlog

from coordinator.store import WriteHealth
from shared.errors import StoreError, StoreUnavailable

log = structlog.get_logger("fleetwave.store")

OUTAGES = frozenset(
    {
        sqlite3.SQLITE_FULL,  # database or disk is full
        sqlite3.SQLITE_IOERR,  # disk I/O error (EIO, a failed fsync, a vanished file)
        sqlite3.SQLITE_READONLY,  # the file or its directory became read-only
        sqlite3.SQLITE_BUSY,  # locked by another process past busy_timeout
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,  # the WAL or a temporary file cannot be created
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_CORRUPT,  # needs the operator (restore a backup); still not a bug
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_INTERRUPT,  # an interrupted write changed nothing
    }
)
"""Primary SQLite result codes of a write that failed because of the storage, not the SQL."""

PROBE_INTERVAL = 1.0
"""Seconds between two probe writes while writes fail (``/readyz`` may be polled often)."""


def is_outage(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the storage failed (full, I/O, read-only, locked), so that the
    same write may succeed later; anything else (an SQL error, a constraint) is a bug."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in OUTAGES


def write_error(exc: sqlite3.Error, what: str, path: str) -> StoreError:
    """The error a failed write (or read) raises: it names what failed and the database
    file."""
    message = f"could not {what}: {exc} (database {path})"
    return StoreUnavailable(message) if is_outage(exc) else StoreError(message)


class WriteTracker:
    """Follows the outcome of every write transaction and paces the probe writes."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._failing: str | None = None
        self._failures = 0
        self._probed_at: float | None = None

    @property
    def health(self) -> WriteHealth:
        return WriteHealth(self._failing, self._failures)

    def failed(self, error: StoreError) -> None:
        """A write failed; an outage makes the store unhealthy until a write commits."""
        if not isinstance(error, StoreUnavailable):
            return
        self._failures += 1
        if self._failing is None:
            log.error("store_writes_failing", database=self._path, error=error.message)
        self._failing = error.message

    def committed(self) -> None:
        """A write committed: the storage works again."""
        if self._failing is not None:
            log.info("store_writes_recovered", database=self._path, failures=self._failures)
            self._failing = None

    def should_probe(self, now: float) -> bool:
        """Whether to try a probe write at ``now`` (monotonic seconds): only while writes
        fail, and at most once a PROBE_INTERVAL; records the attempt."""
        if self._failing is None:
            return False
        if self._probed_at is not None and now - self._probed_at < PROBE_INTERVAL:
            return False
        self._probed_at = now
        return True
