"""Real SQLite failures on a real store's writer connection, for tests of what the store
does when its storage fails: a full database, a COMMIT that fails, a crash."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from coordinator.store.sqlite import SqliteStore

UNLIMITED_PAGES = 4294967294
"""SQLite's default max_page_count."""


def writer(store: SqliteStore) -> aiosqlite.Connection:
    """The store's one writer connection (the failures below are per connection)."""
    conn = store._writer
    assert conn is not None, "the store is not open"
    return conn


async def fill_disk(store: SqliteStore) -> None:
    """Let the database grow no further and use up its free pages, as a full disk would:
    from now on every write that needs a new page fails with SQLITE_FULL ("database or
    disk is full"). Call only while no write of the store is in flight."""
    conn = writer(store)
    await conn.execute("CREATE TABLE IF NOT EXISTS test_filler (pad BLOB NOT NULL)")
    async with conn.execute("PRAGMA page_count") as cur:
        row = await cur.fetchone()
    assert row is not None
    await conn.execute(f"PRAGMA max_page_count = {int(row[0])}")
    size = 64 * 1024
    while size >= 1:
        try:
            await conn.execute("INSERT INTO test_filler (pad) VALUES (zeroblob(?))", (size,))
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            size //= 2


async def free_disk(store: SqliteStore) -> None:
    """Space is back: the database may grow again."""
    await writer(store).execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")


@dataclass
class CommitFaults:
    """Makes the next ``failing`` COMMITs of a connection fail (SQLite interrupts them: the
    COMMIT itself fails and leaves the transaction open), after letting ``passing`` COMMITs
    through, and can hold a COMMIT in flight."""

    failing: int = 0
    passing: int = 0
    hold: bool = False
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _interrupt: bool = False

    def on_statement(self, sql: str) -> None:
        """Trace callback, in the connection's thread as each statement starts."""
        self._interrupt = False
        if sql != "COMMIT":
            return
        if self.hold:
            self.reached.set()
            self.release.wait(timeout=30)
        if self.passing > 0:
            self.passing -= 1
        elif self.failing > 0:
            self.failing -= 1
            self._interrupt = True

    def on_progress(self) -> int:
        """Progress handler: non-zero interrupts the statement running now."""
        return 1 if self._interrupt else 0


async def commit_faults(store: SqliteStore) -> CommitFaults:
    faults = CommitFaults()
    conn = writer(store)
    await conn.set_trace_callback(faults.on_statement)
    await conn.set_progress_handler(faults.on_progress, 1)
    return faults


def crash_copy(store: SqliteStore, dest: Path) -> Path:
    """The database as ``kill -9`` of the coordinator would leave it now: the main file and
    its WAL, without anything the store holds only in memory. Call between writes."""
    dest.mkdir(parents=True, exist_ok=True)
    source = Path(store.path)
    copy = dest / source.name
    shutil.copyfile(source, copy)
    wal = source.with_name(source.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    return copy
