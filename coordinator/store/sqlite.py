"""The embedded SQLite store: WAL, ``synchronous=FULL``, one writer connection, one reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import aiosqlite

from coordinator.store import AssignmentChange, ReportOutcome
from coordinator.store.migrations import MIGRATIONS
from coordinator.store.records import (
    AssignmentRecord,
    Event,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
)
from shared.clock import format_time
from shared.errors import Conflict, StoreError
from shared.nodes import Eligibility, Load, NodeStatus, Resources
from shared.protocol import ExecutionReport
from shared.spec import JobSpec


class SqliteStore:
    """Store on one SQLite file. Writes are serialised; reads use a second connection (WAL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._spec_cache: dict[tuple[str, int], JobSpec] = {}
        self._event_listeners: list[Callable[[], None]] = []
        self._events_written = False  # set inside a transaction that inserted events

    # lifecycle

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect() if self.path != ":memory:" else self._writer

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except Exception as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        conn.row_factory = aiosqlite.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=10000",
        ):
            await conn.execute(pragma)
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this coordinator knows"
                f" ({len(MIGRATIONS)}); upgrade fleetwave before using this database"
            )
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (number,))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._reader is not None and self._reader is not self._writer:
            await self._reader.close()
        if self._writer is not None:
            await self._writer.close()
        self._reader = self._writer = None

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("store is not open")
        return self._reader

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise StoreError("store is not open")
        async with self._write_lock:
            conn = self._writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                self._events_written = False
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            if self._events_written:
                self._events_written = False
                for listener in self._event_listeners:
                    listener()

    async def _rows(self, sql: str, params: Sequence[object] = ()) -> list[aiosqlite.Row]:
        async with self._r.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # jobs

    async def get_job(self, name: str) -> JobRecord | None:
        rows = await self._rows("SELECT record FROM jobs WHERE name = ?", (name,))
        return JobRecord.model_validate_json(rows[0]["record"]) if rows else None

    async def list_jobs(self) -> list[JobRecord]:
        rows = await self._rows("SELECT record FROM jobs ORDER BY name")
        return [JobRecord.model_validate_json(r["record"]) for r in rows]

    async def save_job(
        self, job: JobRecord, *, expected_revision: int | None, new_version: JobVersion | None
    ) -> None:
        async with self._tx() as conn:
            await self._write_job(conn, job, expected_revision)
            if new_version is not None:
                await conn.execute(
                    "INSERT INTO job_versions (job, version, spec, created_at) VALUES (?, ?, ?, ?)",
                    (
                        new_version.job,
                        new_version.version,
                        new_version.spec.model_dump_json(),
                        format_time(new_version.created_at),
                    ),
                )

    async def _write_job(
        self, conn: aiosqlite.Connection, job: JobRecord, expected_revision: int | None
    ) -> None:
        params = (job.status.revision, job.status.version, job.model_dump_json())
        if expected_revision is None:
            try:
                await conn.execute(
                    "INSERT INTO jobs (revision, version, record, name) VALUES (?, ?, ?, ?)",
                    (*params, job.name),
                )
            except aiosqlite.IntegrityError:
                raise Conflict(f"job {job.name!r} already exists") from None
            return
        cur = await conn.execute(
            "UPDATE jobs SET revision = ?, version = ?, record = ? WHERE name = ? AND revision = ?",
            (*params, job.name, expected_revision),
        )
        if cur.rowcount != 1:
            raise Conflict(
                f"job {job.name!r} changed concurrently (expected revision {expected_revision})"
            )

    async def list_versions(self, job: str) -> list[JobVersion]:
        rows = await self._rows(
            "SELECT job, version, spec, created_at FROM job_versions WHERE job = ?"
            " ORDER BY version",
            (job,),
        )
        return [self._version(r) for r in rows]

    async def get_version(self, job: str, version: int) -> JobVersion | None:
        rows = await self._rows(
            "SELECT job, version, spec, created_at FROM job_versions WHERE job = ? AND version = ?",
            (job, version),
        )
        return self._version(rows[0]) if rows else None

    def _version(self, row: aiosqlite.Row) -> JobVersion:
        return JobVersion(
            job=row["job"],
            version=row["version"],
            spec=self._spec(row["job"], row["version"], row["spec"]),
            created_at=row["created_at"],
        )

    def _spec(self, job: str, version: int, raw: str) -> JobSpec:
        key = (job, version)
        spec = self._spec_cache.get(key)
        if spec is None:
            spec = self._spec_cache[key] = JobSpec.model_validate_json(raw)
        return spec

    # nodes

    async def insert_node(self, node: NodeRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO nodes (id, name, token_hash, record, last_seq, assign_index)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    node.id,
                    node.name,
                    node.token_hash,
                    node.model_dump_json(),
                    node.last_seq,
                    node.assign_index,
                ),
            )

    def _node(self, row: aiosqlite.Row) -> NodeRecord:
        node = NodeRecord.model_validate_json(row["record"])
        return node.model_copy(
            update={"last_seq": row["last_seq"], "assign_index": row["assign_index"]}
        )

    _NODE_COLS = "SELECT record, last_seq, assign_index FROM nodes"

    async def get_node(self, node_id: str) -> NodeRecord | None:
        rows = await self._rows(f"{self._NODE_COLS} WHERE id = ?", (node_id,))
        return self._node(rows[0]) if rows else None

    async def find_node(self, id_or_name: str) -> NodeRecord | None:
        node = await self.get_node(id_or_name)
        if node is not None:
            return node
        rows = await self._rows(f"{self._NODE_COLS} WHERE name = ?", (id_or_name,))
        nodes = [self._node(r) for r in rows]
        # Names are unique among live nodes; prefer the live one, else the newest.
        nodes.sort(key=lambda n: (n.status != NodeStatus.DOWN, n.registered_at), reverse=True)
        return nodes[0] if nodes else None

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        rows = await self._rows(f"{self._NODE_COLS} WHERE token_hash = ?", (token_hash,))
        return self._node(rows[0]) if rows else None

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._rows(f"{self._NODE_COLS} ORDER BY name, id")
        return [self._node(r) for r in rows]

    async def _update_node(self, conn: aiosqlite.Connection, node: NodeRecord) -> None:
        await conn.execute(
            "UPDATE nodes SET record = ?, name = ? WHERE id = ?",
            (node.model_dump_json(), node.name, node.id),
        )

    async def _load_node(self, conn: aiosqlite.Connection, node_id: str) -> NodeRecord:
        async with conn.execute(f"{self._NODE_COLS} WHERE id = ?", (node_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"node {node_id} vanished")
        return self._node(row)

    async def set_node_status(self, node_id: str, status: NodeStatus) -> None:
        async with self._tx() as conn:
            node = await self._load_node(conn, node_id)
            await self._update_node(conn, node.model_copy(update={"status": status}))

    async def set_node_scheduling(
        self, node_id: str, *, eligibility: Eligibility | None = None, drain: bool | None = None
    ) -> None:
        async with self._tx() as conn:
            node = await self._load_node(conn, node_id)
            update: dict[str, object] = {}
            if eligibility is not None:
                update["eligibility"] = eligibility
            if drain is not None:
                update["drain"] = drain
            await self._update_node(conn, node.model_copy(update=update))

    async def record_report(
        self,
        node_id: str,
        *,
        seq: int,
        load: Load,
        resources: Resources | None,
        executions: Sequence[ExecutionReport],
        now: datetime,
    ) -> ReportOutcome:
        async with self._tx() as conn:
            node = await self._load_node(conn, node_id)
            if seq <= node.last_seq:
                return ReportOutcome(
                    accepted=False, last_seq=node.last_seq, assign_index=node.assign_index
                )
            update: dict[str, object] = {"last_heartbeat": now, "load": load}
            if resources is not None:
                update["resources"] = resources
            status_changed = node.status != NodeStatus.READY
            update["status"] = NodeStatus.READY
            await self._update_node(conn, node.model_copy(update=update))
            await conn.execute("UPDATE nodes SET last_seq = ? WHERE id = ?", (seq, node_id))
            changed = await self._record_executions(conn, node_id, executions, now)
            return ReportOutcome(
                accepted=True,
                last_seq=seq,
                assign_index=node.assign_index,
                status_changed=status_changed,
                changed_jobs=frozenset(changed),
            )

    async def _record_executions(
        self,
        conn: aiosqlite.Connection,
        node_id: str,
        reports: Sequence[ExecutionReport],
        now: datetime,
    ) -> set[str]:
        async with conn.execute(
            "SELECT job, record FROM executions WHERE node_id = ?", (node_id,)
        ) as cur:
            existing = {
                r["job"]: ExecutionRecord.model_validate_json(r["record"])
                for r in await cur.fetchall()
            }
        changed: set[str] = set()
        reported = {r.job for r in reports}
        for report in reports:
            old = existing.get(report.job)
            new = _merge_execution(old, node_id, report, now)
            if old is None or _differs(old, new):
                changed.add(report.job)
            await conn.execute(
                "INSERT INTO executions (node_id, job, record) VALUES (?, ?, ?)"
                " ON CONFLICT (node_id, job) DO UPDATE SET record = excluded.record",
                (node_id, report.job, new.model_dump_json()),
            )
        for job in existing.keys() - reported:
            await conn.execute(
                "DELETE FROM executions WHERE node_id = ? AND job = ?", (node_id, job)
            )
            changed.add(job)
        return changed

    # assignments and executions

    async def node_assignments(self, node_id: str) -> tuple[int, list[AssignmentRecord]]:
        rows = await self._rows("SELECT assign_index FROM nodes WHERE id = ?", (node_id,))
        index = int(rows[0]["assign_index"]) if rows else 0
        rows = await self._rows(
            "SELECT * FROM assignments WHERE node_id = ? ORDER BY job", (node_id,)
        )
        return index, [_assignment(r) for r in rows]

    async def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        rows = await self._rows("SELECT * FROM assignments WHERE job = ?", (job,))
        return {r["node_id"]: _assignment(r) for r in rows}

    async def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        rows = await self._rows("SELECT node_id, record FROM executions WHERE job = ?", (job,))
        return {r["node_id"]: ExecutionRecord.model_validate_json(r["record"]) for r in rows}

    async def apply_plan(
        self,
        job: JobRecord,
        *,
        expected_revision: int,
        changes: Sequence[AssignmentChange],
        events: Sequence[Event],
        now: datetime,
    ) -> Mapping[str, int]:
        indexes: dict[str, int] = {}
        async with self._tx() as conn:
            await self._write_job(conn, job, expected_revision)
            for change in changes:
                if change.version is None:
                    await conn.execute(
                        "DELETE FROM assignments WHERE node_id = ? AND job = ?",
                        (change.node_id, job.name),
                    )
                else:
                    await conn.execute(
                        "INSERT INTO assignments (node_id, job, version, generation, assigned_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id, job) DO UPDATE SET"
                        " version = excluded.version, generation = excluded.generation,"
                        " assigned_at = excluded.assigned_at",
                        (
                            change.node_id,
                            job.name,
                            change.version,
                            change.generation,
                            format_time(now),
                        ),
                    )
                async with conn.execute(
                    "UPDATE nodes SET assign_index = assign_index + 1 WHERE id = ?"
                    " RETURNING assign_index",
                    (change.node_id,),
                ) as cur:
                    row = await cur.fetchone()
                if row is not None:
                    indexes[change.node_id] = int(row[0])
            await self._insert_events(conn, events)
        return indexes

    # events

    async def append_events(self, events: Sequence[Event]) -> None:
        if events:
            async with self._tx() as conn:
                await self._insert_events(conn, events)

    async def last_event_id(self) -> int:
        rows = await self._rows("SELECT COALESCE(MAX(id), 0) AS last FROM events")
        return int(rows[0]["last"])

    def on_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit that stored events (wakes event streams)."""
        self._event_listeners.append(listener)

    async def _insert_events(self, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        self._events_written = self._events_written or bool(events)
        await conn.executemany(
            "INSERT INTO events (time, job, node, kind, old, new, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(format_time(e.time), e.job, e.node, e.kind, e.old, e.new, e.reason) for e in events],
        )

    async def list_events(
        self, *, job: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        if job is None:
            rows = await self._rows(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            )
        else:
            rows = await self._rows(
                "SELECT * FROM events WHERE job = ? AND id > ? ORDER BY id LIMIT ?",
                (job, after, limit),
            )
        return [Event.model_validate(dict(r)) for r in rows]


def _assignment(row: aiosqlite.Row) -> AssignmentRecord:
    return AssignmentRecord.model_validate(dict(row))


def _merge_execution(
    old: ExecutionRecord | None, node_id: str, report: ExecutionReport, now: datetime
) -> ExecutionRecord:
    """The new execution record; ``since`` survives repeated reports of the same state."""
    same_run = (
        old is not None and old.version == report.version and old.generation == report.generation
    )
    unchanged = same_run and old is not None and old.state == report.state
    since = old.since if unchanged and old is not None else now
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


def _differs(old: ExecutionRecord, new: ExecutionRecord) -> bool:
    keys = ("version", "generation", "state", "message", "restarts", "exit_code")
    return any(getattr(old, k) != getattr(new, k) for k in keys)
