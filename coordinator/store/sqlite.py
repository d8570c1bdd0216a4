"""The embedded SQLite store: WAL, ``synchronous=FULL``, one writer connection, one reader.

Two things make it serve 10,000 agents from one process (see docs/benchmarks.md):
the hot tables are mirrored in memory (``store.mirror``), so reads need neither a
database round trip nor a JSON parse; and reports that arrive together are written in
one transaction (group commit), so one fsync acknowledges all of them, durably.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import aiosqlite
import structlog

from coordinator.domain.nodes import (
    check_name_free,
    check_token_name_free,
    join_token_used,
    renewed,
    rescheduled,
    revoked,
    token_offered,
    token_promoted,
    token_revoked,
)
from coordinator.domain.records import (
    AssignmentChange,
    AssignmentRecord,
    AuditEntry,
    AuditOutcome,
    Event,
    ExecutionRecord,
    JobRecord,
    JobVersion,
    NodeRecord,
    ReportOutcome,
    TokenRecord,
)
from coordinator.domain.reports import Report, ReportDecision, decide_report
from coordinator.store import WriteHealth
from coordinator.store.changes import LiveState
from coordinator.store.health import WriteTracker, write_error
from coordinator.store.migrations import MIGRATIONS
from coordinator.store.mirror import Mirror
from shared.clock import format_time
from shared.errors import BadRequest, Conflict, FleetwaveError, StoreError
from shared.nodes import ID_SHAPE_PATTERN, Eligibility, Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport
from shared.spec import JobSpec

log = structlog.get_logger("fleetwave.store")

FLUSH_CHUNK = 250
"""Nodes encoded and written per step of a liveness flush."""

LIVENESS_FLUSH_SECONDS = 5.0
"""How long heartbeat-only changes (last heartbeat, load, report seq) may live only in memory.

A report that changes nothing but liveness is applied to the in-memory mirror at once and
written with the others of its kind every few seconds: at 10,000 nodes that is ~1,000 fewer
fsynced transactions a second. A crash loses at most this much heartbeat history, which the
node monitor's TTL (3 heartbeat intervals) absorbs; every execution state change is still
written before its report is answered.
"""

SEQ_RESERVATION = 1000
"""How far past a written report's seq the store may acknowledge heartbeats from memory.

Heartbeats acknowledged from memory are lost by a crash, and with them the node's
``last_seq``: a replay of one of them would be accepted again. So every report written in
a transaction also writes ``seq_reserved = seq + SEQ_RESERVATION`` (a floor that is at least
every seq ever acknowledged), a heartbeat beyond it goes through a transaction, which
reserves the next window, and a store that opens starts each node at its reservation.

Why 1,000: an agent uses about one seq per heartbeat (10 s by default) plus one per state
change, so a window lasts hours and costs one extra written report per node every few hours
(at 10,000 nodes about one a second, inside a group commit). A bigger window costs only a
bigger jump of the seq floor after a crash, which the agent takes in one resend: it goes on
after the ``last_seq`` of the refusal.
"""

PROBE_BYTES = 16 * 1024
"""Size of the probe write that ``check_writable`` tries while writes fail.

It must need new pages: on a full disk SQLite can still rewrite a page in place, so a
one-row update would pass while every write that grows the database fails.
"""


class SqliteStore:
    """Store on one SQLite file. Writes are serialised; reads use a second connection (WAL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._spec_cache: dict[tuple[str, int], JobSpec] = {}
        self._mirror = Mirror()
        self._after_commit: list[Callable[[], None]] = []
        self._reports = _GroupCommit(self._commit_reports)
        self._registrations = _GroupCommit(self._commit_registrations)
        self._event_listeners: list[Callable[[], None]] = []
        self._events_written = False  # set inside a transaction that inserted events
        self._queued_nodes: Counter[str] = Counter()  # reports queued or being committed
        self._dirty_liveness: set[str] = set()  # nodes whose liveness is newer in memory
        self._liveness_flusher: asyncio.Task[None] | None = None
        self._writes = WriteTracker(self.path)

    # lifecycle

    async def open(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect() if self.path != ":memory:" else self._writer
        await self._load_mirror()

    async def _load_mirror(self) -> None:
        mirror = self._mirror = Mirror()
        for row in await self._rows("SELECT record FROM jobs"):
            mirror.put_job(JobRecord.model_validate_json(row["record"]))
        for row in await self._rows(self._NODE_COLS):
            node = self._node(row)
            mirror.put_node(node)
            mirror.reserve_seq(node.id, row["seq_reserved"])
        for row in await self._rows("SELECT record FROM tokens"):
            mirror.put_token(TokenRecord.model_validate_json(row["record"]))
        for row in await self._rows("SELECT * FROM assignments"):
            mirror.put_assignment(_assignment(row))
        for row in await self._rows("SELECT record FROM executions"):
            mirror.put_execution(ExecutionRecord.model_validate_json(row["record"]))

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
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                    await conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        await self._reports.close()
        await self._registrations.close()
        flusher, self._liveness_flusher = self._liveness_flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        if self._writer is not None:
            with contextlib.suppress(StoreError, sqlite3.Error):
                await self.flush_liveness()
                await self._release_seq_reservations()
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
    async def _tx(
        self, what: str, *, proves_health: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; ``what`` it does names it in errors ("save job 'web'").

        Memory (the mirror, the event listeners) follows only a COMMIT that succeeded. Any
        failure, the COMMIT's own included (a full disk or an I/O error usually shows
        there), rolls back and drops what the transaction would have applied, so memory
        stays at the last committed state. A storage failure raises StoreUnavailable.

        A commit clears the store's failing state unless ``proves_health`` is false: small
        writes (audit rows, often updated in place) can commit on a full disk where every
        write that needs a new page fails, so they must not make /readyz say ready.
        """
        if self._writer is None:
            raise StoreError("store is not open")
        async with self._write_lock:
            conn = self._writer
            try:
                if conn.in_transaction:  # a ROLLBACK that failed earlier left it open
                    await conn.execute("ROLLBACK")
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                cancelled = await _settle(_commit(conn))
            except BaseException as exc:
                self._events_written = False
                self._after_commit.clear()
                await self._roll_back(conn)
                if isinstance(exc, sqlite3.Error):
                    error = write_error(exc, what, self.path)
                    self._writes.failed(error)
                    raise error from exc
                raise
            if proves_health:
                self._writes.committed()
            applied, self._after_commit = self._after_commit, []
            for apply in applied:
                apply()
            if self._events_written:
                self._events_written = False
                for listener in self._event_listeners:
                    listener()
            if cancelled:
                raise asyncio.CancelledError

    async def _roll_back(self, conn: aiosqlite.Connection) -> None:
        """ROLLBACK, unless SQLite already did (it does itself on a full disk or an I/O
        error, and then refuses a ROLLBACK: no transaction is active)."""
        try:
            await conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # the next transaction rolls it back first
                log.error("store_rollback_failed", database=self.path, error=str(exc))

    # health

    def live(self) -> LiveState:
        return self._mirror.live()

    def write_health(self) -> WriteHealth:
        return self._writes.health

    async def check_writable(self, now: float) -> str | None:
        if self._writes.should_probe(now):
            with contextlib.suppress(StoreError):
                async with self._tx("write a probe row") as conn:
                    await conn.execute(
                        "INSERT INTO store_probe (pad) VALUES (zeroblob(?))", (PROBE_BYTES,)
                    )
                    await conn.execute("DELETE FROM store_probe")
        return self._writes.health.failing

    async def _rows(self, sql: str, params: Sequence[object] = ()) -> list[aiosqlite.Row]:
        """Rows of a read; an I/O error (or a locked, corrupt file) is an outage (503), as
        for writes."""
        try:
            async with self._r.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise write_error(exc, "read the database", self.path) from exc

    # jobs

    async def get_job(self, name: str) -> JobRecord | None:
        return self._mirror.jobs.get(name)

    async def list_jobs(self) -> list[JobRecord]:
        return self._mirror.listed_jobs()

    async def save_job(
        self, job: JobRecord, *, expected_revision: int | None, new_version: JobVersion | None
    ) -> None:
        async with self._tx(f"save job {job.name!r}") as conn:
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
            self._after_commit.append(lambda: self._mirror.put_job(job))
            return
        cur = await conn.execute(
            "UPDATE jobs SET revision = ?, version = ?, record = ? WHERE name = ? AND revision = ?",
            (*params, job.name, expected_revision),
        )
        if cur.rowcount != 1:
            raise Conflict(
                f"job {job.name!r} changed concurrently (expected revision {expected_revision})"
            )
        self._after_commit.append(lambda: self._mirror.put_job(job))

    async def list_versions(self, job: str) -> list[JobVersion]:
        rows = await self._rows(
            "SELECT job, version, spec, created_at FROM job_versions WHERE job = ?"
            " ORDER BY version",
            (job,),
        )
        return [self._version(r) for r in rows]

    async def get_version(self, job: str, version: int) -> JobVersion | None:
        found = self._mirror.versions.get((job, version))
        if found is not None:
            return found  # versions are immutable once stored
        rows = await self._rows(
            "SELECT job, version, spec, created_at FROM job_versions WHERE job = ? AND version = ?",
            (job, version),
        )
        if not rows:
            return None
        found = self._mirror.versions[(job, version)] = self._version(rows[0])
        return found

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

    async def insert_node(
        self, node: NodeRecord, *, join_token: str | None = None, events: Sequence[Event] = ()
    ) -> None:
        """Queue the registration for the next group commit; return once it is durable.

        A fleet registers all at once (a first start, a restore): one transaction, and one
        fsync, per registration made it the slowest thing the coordinator did (36 a second
        at 2,000 agents, its CPU mostly idle). Registrations that arrive while one commits
        are committed together, each checked as if alone.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._registrations.submit(_PendingNode(node, join_token, tuple(events), future))

    async def _commit_registrations(self, batch: Sequence[_PendingNode]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        added: dict[str, NodeRecord] = {}  # by name, earlier in this batch
        tokens: dict[str, TokenRecord] = {}  # join tokens with this batch's uses counted
        nodes: list[NodeRecord] = []
        events: list[Event] = []
        names = ", ".join(repr(p.node.name) for p in batch[:3])
        what = f"register node {names}" if len(batch) == 1 else f"register {len(batch)} nodes"
        if len(batch) > 1:
            what += f" ({names}{', ...' if len(batch) > 3 else ''})"
        async with self._tx(what) as conn:
            for pending in batch:
                node, token_id = pending.node, pending.join_token
                try:
                    # Checked under the write lock: a name belongs to one node, whatever
                    # its status; and to the first of this batch that asked for it.
                    earlier = [added[node.name]] if node.name in added else []
                    check_name_free(node.name, [*self._mirror.nodes_named(node.name), *earlier])
                    if token_id is not None:
                        current = tokens.get(token_id) or self._mirror.tokens.get(token_id)
                        tokens[token_id] = join_token_used(current)
                except FleetwaveError as exc:
                    outcomes.append(exc)
                    continue
                added[node.name] = node
                nodes.append(node)
                events.extend(pending.events)
                outcomes.append(None)
            await conn.executemany(
                "INSERT INTO nodes (id, name, token_hash, record, last_seq, assign_index)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (n.id, n.name, n.token_hash, n.model_dump_json(), n.last_seq, n.assign_index)
                    for n in nodes
                ],
            )
            await conn.executemany(
                "UPDATE tokens SET record = ? WHERE id = ?",
                [(used.model_dump_json(), used.id) for used in tokens.values()],
            )
            await self._insert_events(conn, events)
            self._after_commit.extend(partial(self._mirror.put_node, n) for n in nodes)
            self._after_commit.extend(partial(self._mirror.put_token, t) for t in tokens.values())
        return outcomes

    def _node(self, row: aiosqlite.Row) -> NodeRecord:
        """The node as stored; its ``last_seq`` is the floor below which no report is
        accepted, at least its seq reservation (see SEQ_RESERVATION)."""
        node = NodeRecord.model_validate_json(row["record"])
        floor = max(row["last_seq"], row["seq_reserved"])
        return node.model_copy(update={"last_seq": floor, "assign_index": row["assign_index"]})

    _NODE_COLS = "SELECT record, last_seq, seq_reserved, assign_index FROM nodes"

    async def get_node(self, node_id: str) -> NodeRecord | None:
        return self._mirror.nodes.get(node_id)

    async def find_node(self, id_or_name: str) -> NodeRecord | None:
        node = await self.get_node(id_or_name)
        if node is not None:
            return node
        nodes = self._mirror.nodes_named(id_or_name)
        # Names are unique; databases from before that rule may hold a down namesake:
        # prefer the live node, else the newest.
        nodes.sort(key=lambda n: (n.status != NodeStatus.DOWN, n.registered_at), reverse=True)
        return nodes[0] if nodes else None

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        return self._mirror.node_by_token(token_hash)

    async def list_nodes(self) -> list[NodeRecord]:
        return self._mirror.listed_nodes()

    async def _update_node(self, conn: aiosqlite.Connection, node: NodeRecord) -> None:
        await conn.execute(
            "UPDATE nodes SET record = ?, name = ? WHERE id = ?",
            (node.model_dump_json(), node.name, node.id),
        )
        self._after_commit.append(lambda: self._mirror.put_node(node))

    def _load_node(self, node_id: str) -> NodeRecord:
        """The committed node; only called under the write lock, so it is also the latest."""
        node = self._mirror.nodes.get(node_id)
        if node is None:
            raise StoreError(f"node {node_id} vanished")
        return node

    async def renew_registration(
        self,
        node_id: str,
        *,
        token_hash: str,
        labels: dict[str, str],
        resources: Resources,
        agent_version: str,
        issued_at: datetime,
        expires_at: datetime | None,
    ) -> NodeRecord | None:
        async with self._tx(f"renew the registration of node {node_id}") as conn:
            node = renewed(
                self._mirror.nodes.get(node_id),
                token_hash=token_hash,
                labels=labels,
                resources=resources,
                agent_version=agent_version,
                issued_at=issued_at,
                expires_at=expires_at,
            )
            if node is None:
                return None
            await self._write_node_token(conn, node)
            return node

    async def _write_node_token(self, conn: aiosqlite.Connection, node: NodeRecord) -> None:
        await conn.execute(
            "UPDATE nodes SET record = ?, token_hash = ? WHERE id = ?",
            (node.model_dump_json(), node.token_hash, node.id),
        )
        self._after_commit.append(lambda: self._mirror.put_node(node))

    async def offer_node_token(
        self, node_id: str, *, token_hash: str, expires_at: datetime | None
    ) -> None:
        async with self._tx(f"rotate the token of node {node_id}") as conn:
            node = self._load_node(node_id)
            await self._update_node(conn, token_offered(node, token_hash, expires_at))

    async def promote_node_token(self, node_id: str, token_hash: str, now: datetime) -> NodeRecord:
        async with self._tx(f"switch node {node_id} to its rotated token") as conn:
            node = self._load_node(node_id)
            promoted = token_promoted(node, token_hash, now)
            if promoted is None:
                return node  # promoted already (two requests with the new token at once)
            await self._write_node_token(conn, promoted)
            return promoted

    async def approve_node(self, node_id: str, *, events: Sequence[Event] = ()) -> NodeRecord:
        async with self._tx(f"approve node {node_id}") as conn:
            node = self._load_node(node_id)
            if node.approved:
                return node
            node = node.model_copy(update={"approved": True})
            await self._update_node(conn, node)
            await self._insert_events(conn, events)
            return node

    async def revoke_node(
        self, node_id: str, now: datetime, *, events: Sequence[Event] = ()
    ) -> NodeRecord:
        async with self._tx(f"revoke node {node_id}") as conn:
            node = self._load_node(node_id)
            changed = revoked(node, now)
            if changed is not None:
                await self._update_node(conn, changed)
                await self._insert_events(conn, events)
            return changed or node

    async def purge_node(self, node_id: str, *, events: Sequence[Event] = ()) -> None:
        async with self._tx(f"purge node {node_id}") as conn:
            for table in ("assignments", "executions"):
                await conn.execute(f"DELETE FROM {table} WHERE node_id = ?", (node_id,))  # noqa: S608
            await conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
            await self._insert_events(conn, events)
            self._after_commit.append(lambda: self._mirror.drop_node(node_id))

    # tokens

    async def insert_token(self, token: TokenRecord) -> None:
        async with self._tx(f"create token {token.name!r}") as conn:
            check_token_name_free(token, self._mirror.tokens.values())
            await conn.execute(
                "INSERT INTO tokens (id, secret_hash, record) VALUES (?, ?, ?)",
                (token.id, token.secret_hash, token.model_dump_json()),
            )
            self._after_commit.append(lambda: self._mirror.put_token(token))

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._mirror.tokens.values(), key=lambda t: (t.created_at, t.id))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        return self._mirror.tokens.get(token_id)

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        return self._mirror.token_by_hash(secret_hash)

    async def revoke_token(self, token_id: str, now: datetime) -> TokenRecord | None:
        async with self._tx(f"revoke token {token_id}") as conn:
            current = self._mirror.tokens.get(token_id)
            changed = None if current is None else token_revoked(current, now)
            if changed is None:
                return current
            token = changed
            await conn.execute(
                "UPDATE tokens SET record = ? WHERE id = ?", (token.model_dump_json(), token.id)
            )
            self._after_commit.append(lambda: self._mirror.put_token(token))
            return token

    async def set_node_status(
        self, node_id: str, status: NodeStatus, *, epoch: int | None = None
    ) -> None:
        async with self._tx(f"set the status of node {node_id}") as conn:
            node = self._load_node(node_id)
            await self._update_node(conn, node.model_copy(update={"status": status}))

    async def set_node_agent_version(self, node_id: str, agent_version: str) -> None:
        async with self._tx(f"set the agent version of node {node_id}") as conn:
            node = self._load_node(node_id)
            await self._update_node(conn, node.model_copy(update={"agent_version": agent_version}))

    async def set_node_scheduling(
        self,
        node_id: str,
        *,
        eligibility: Eligibility | None = None,
        drain: bool | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        async with self._tx(f"change the scheduling of node {node_id}") as conn:
            node = self._load_node(node_id)
            await self._update_node(conn, rescheduled(node, eligibility=eligibility, drain=drain))
            await self._insert_events(conn, events)

    async def record_report(
        self,
        node_id: str,
        *,
        seq: int,
        load: Load,
        resources: Resources | None,
        executions: Sequence[ExecutionReport],
        now: datetime,
        conditions: Sequence[NodeCondition] = (),
    ) -> ReportOutcome:
        """Queue the report for the next group commit; return once it is durable.

        A report that only says the node is alive (same executions, resources and
        conditions) is applied to memory at once and persisted lazily; see
        LIVENESS_FLUSH_SECONDS.
        """
        quick = self._liveness_only(node_id, seq, load, resources, executions, now, conditions)
        if quick is not None:
            return quick
        future: asyncio.Future[ReportOutcome] = asyncio.get_running_loop().create_future()
        pending = _PendingReport(
            node_id, seq, load, resources, executions, now, future, conditions=tuple(conditions)
        )
        self._queued_nodes[node_id] += 1
        try:
            return await self._reports.submit(pending)
        finally:
            self._queued_nodes[node_id] -= 1
            if not self._queued_nodes[node_id]:
                del self._queued_nodes[node_id]

    def _liveness_only(
        self,
        node_id: str,
        seq: int,
        load: Load,
        resources: Resources | None,
        executions: Sequence[ExecutionReport],
        now: datetime,
        conditions: Sequence[NodeCondition] = (),
    ) -> ReportOutcome | None:
        """The outcome of a report that changes nothing durable, applied to memory; None
        when the report must go through a transaction."""
        node = self._mirror.nodes.get(node_id)
        if node is None or node_id in self._queued_nodes or self._writer is None:
            return None
        report = Report(seq, load, resources, executions, tuple(conditions))
        decision = decide_report(node, self._mirror.node_executions(node_id), report, now)
        if decision.node is None:
            return decision.outcome  # replayed or late
        if not decision.liveness_only:
            return None
        if seq > self._mirror.seq_reserved.get(node_id, 0):
            return None  # beyond what a crash would still refuse: reserve more first
        self._mirror.put_node(decision.node)
        self._dirty_liveness.add(node_id)
        if self._liveness_flusher is None or self._liveness_flusher.done():
            self._liveness_flusher = asyncio.create_task(self._flush_liveness_later())
        return decision.outcome

    async def _flush_liveness_later(self) -> None:
        while self._dirty_liveness or self._mirror.liveness_kept:
            await asyncio.sleep(LIVENESS_FLUSH_SECONDS)
            try:
                await self.flush_liveness()
            except (StoreError, sqlite3.Error) as exc:
                log.warning("liveness_flush_failed", error=str(exc))

    async def flush_liveness(self) -> None:
        """Write the heartbeat-only changes still held in memory."""
        ids = self._dirty_liveness | self._mirror.liveness_kept
        if not ids:
            return
        self._dirty_liveness = set()
        self._mirror.liveness_kept = set()
        try:
            async with self._tx(f"write the heartbeats of {len(ids)} nodes") as conn:
                # Under the write lock the mirror holds the latest committed state plus
                # liveness. Encoded in chunks, each written before the next is encoded: at
                # 10,000 nodes encoding them all at once would hold the event loop for a
                # third of a second.
                ordered = sorted(ids)
                for start in range(0, len(ordered), FLUSH_CHUNK):
                    chunk = [
                        self._mirror.nodes.get(i) for i in ordered[start : start + FLUSH_CHUNK]
                    ]
                    await conn.executemany(
                        "UPDATE nodes SET record = ?, last_seq = ? WHERE id = ?",
                        [(n.model_dump_json(), n.last_seq, n.id) for n in chunk if n is not None],
                    )
        except BaseException:
            self._dirty_liveness |= ids  # still only in memory: the next flush writes them
            raise

    async def _release_seq_reservations(self) -> None:
        """At a clean shutdown, after the last flush: every node starts next time from the
        last seq it acknowledged, not from its reservation (no agent gets a refusal)."""
        floors = [(n.last_seq, n.id) for n in self._mirror.nodes.values()]
        async with self._tx(f"release the seq reservations of {len(floors)} nodes") as conn:
            await conn.executemany("UPDATE nodes SET seq_reserved = ? WHERE id = ?", floors)

    async def _commit_reports(
        self, batch: Sequence[_PendingReport]
    ) -> list[ReportOutcome | Exception]:
        async with self._tx(f"record {len(batch)} reports") as conn:
            # Computed under the write lock, from the latest committed state.
            outcomes, writes = self._merge_reports(batch)
            if writes.node_rows:
                await conn.executemany(
                    "UPDATE nodes SET record = ?, last_seq = ?,"
                    " seq_reserved = MAX(seq_reserved, ?) WHERE id = ?",
                    list(writes.node_rows.values()),
                )
            if writes.upsert_rows:
                await conn.executemany(
                    "INSERT INTO executions (node_id, job, record) VALUES (?, ?, ?)"
                    " ON CONFLICT (node_id, job) DO UPDATE SET record = excluded.record",
                    list(writes.upsert_rows.values()),
                )
            if writes.deletes:
                await conn.executemany(
                    "DELETE FROM executions WHERE node_id = ? AND job = ?", sorted(writes.deletes)
                )
            self._after_commit.append(lambda: self._mirror_reports(writes))
        return outcomes

    def _merge_reports(
        self, batch: Sequence[_PendingReport]
    ) -> tuple[list[ReportOutcome | Exception], _BatchWrites]:
        """Each report's outcome, and the node and execution rows the batch writes.

        Each report's rows are built and encoded on their own first: one that cannot be
        stored (an integer beyond 64 bits, a string that is not UTF-8, anything raising while
        encoding it) gets its own exception and is left out; the others are written.
        """
        outcomes: list[ReportOutcome | Exception] = []
        writes = _BatchWrites()
        for p in batch:
            node = writes.nodes.get(p.node_id) or self._mirror.nodes.get(p.node_id)
            if node is None:
                outcomes.append(StoreError(f"node {p.node_id} vanished"))
                continue
            existing = writes.runs.get(p.node_id)
            if existing is None:
                existing = self._mirror.node_executions(p.node_id)
            report = Report(p.seq, p.load, p.resources, p.executions, p.conditions)
            decision = decide_report(node, existing, report, p.now)
            if decision.node is None:
                outcomes.append(decision.outcome)
                continue
            try:
                merged = _encode_report(decision)
            except Exception as exc:
                # Only this report's own data can fail here: it is its outcome, not the batch's.
                log.warning("report_not_storable", node_id=p.node_id, error=str(exc))
                outcomes.append(BadRequest(f"the report cannot be stored: {exc}"))
                continue
            writes.add(merged, existing)
            outcomes.append(decision.outcome)
        return outcomes, writes

    def _mirror_reports(self, writes: _BatchWrites) -> None:
        for node in writes.nodes.values():
            self._mirror.put_node(node)
            self._mirror.reserve_seq(node.id, node.last_seq + SEQ_RESERVATION)
        for record in writes.upserts.values():
            self._mirror.put_execution(record)
        for node_id, job in writes.deletes:
            self._mirror.drop_execution(node_id, job)

    # assignments and executions

    async def node_assignments(self, node_id: str) -> tuple[int, list[AssignmentRecord]]:
        node = self._mirror.nodes.get(node_id)
        return (node.assign_index if node else 0), self._mirror.node_assignments(node_id)

    async def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        return self._mirror.job_assignments(job)

    async def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        return self._mirror.job_executions(job)

    async def apply_plan(
        self,
        job: JobRecord,
        *,
        expected_revision: int,
        changes: Sequence[AssignmentChange],
        events: Sequence[Event],
        now: datetime,
        epoch: int | None = None,
    ) -> Mapping[str, int]:
        indexes: dict[str, int] = {}
        assigned_at = format_time(now)
        removed: list[tuple[str, str]] = []
        assigned: list[AssignmentRecord] = []
        async with self._tx(f"apply a plan for job {job.name!r}") as conn:
            await self._write_job(conn, job, expected_revision)
            for change in changes:
                node = self._mirror.nodes.get(change.node_id)
                if node is not None:
                    indexes[change.node_id] = indexes.get(change.node_id, node.assign_index) + 1
                if change.version is None:
                    removed.append((change.node_id, job.name))
                else:
                    assigned.append(
                        AssignmentRecord(
                            node_id=change.node_id,
                            job=job.name,
                            version=change.version,
                            generation=change.generation,
                            assigned_at=now,
                        )
                    )
            if removed:
                await conn.executemany(
                    "DELETE FROM assignments WHERE node_id = ? AND job = ?", removed
                )
            if assigned:
                await conn.executemany(
                    "INSERT INTO assignments (node_id, job, version, generation, assigned_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id, job) DO UPDATE SET"
                    " version = excluded.version, generation = excluded.generation,"
                    " assigned_at = excluded.assigned_at",
                    [(a.node_id, a.job, a.version, a.generation, assigned_at) for a in assigned],
                )
            if indexes:
                await conn.executemany(
                    "UPDATE nodes SET assign_index = ? WHERE id = ?",
                    [(index, node_id) for node_id, index in indexes.items()],
                )
            await self._insert_events(conn, events)
            self._after_commit.append(lambda: self._mirror_plan(removed, assigned, indexes))
        return indexes

    def _mirror_plan(
        self,
        removed: Sequence[tuple[str, str]],
        assigned: Sequence[AssignmentRecord],
        indexes: Mapping[str, int],
    ) -> None:
        for node_id, job in removed:
            self._mirror.drop_assignment(node_id, job)
        for record in assigned:
            self._mirror.put_assignment(record)
        for node_id, index in indexes.items():
            node = self._mirror.nodes[node_id]
            self._mirror.put_node(node.model_copy(update={"assign_index": index}))

    # events

    async def append_events(self, events: Sequence[Event], *, epoch: int | None = None) -> None:
        if events:
            async with self._tx(f"append {len(events)} events") as conn:
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
            "INSERT INTO events (time, job, node, kind, old, new, reason, by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (format_time(e.time), e.job, e.node, e.kind, e.old, e.new, e.reason, e.by)
                for e in events
            ],
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

    # audit

    async def write_audit(
        self, entries: Sequence[AuditEntry], outcomes: Sequence[AuditOutcome]
    ) -> list[int]:
        ids: list[int] = []
        async with self._tx(
            f"write {len(entries) + len(outcomes)} audit records", proves_health=False
        ) as conn:
            for e in entries:
                cur = await conn.execute(
                    "INSERT INTO audit (time, token_id, token_name, role, remote, method, path,"
                    " job, node, status, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        format_time(e.time),
                        e.token_id,
                        e.token_name,
                        e.role,
                        e.remote,
                        e.method,
                        e.path,
                        e.job,
                        e.node,
                        e.status,
                        e.request_id,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
            if outcomes:
                await conn.executemany(
                    "UPDATE audit SET status = ?, token_id = COALESCE(NULLIF(?, ''), token_id),"
                    " token_name = COALESCE(NULLIF(?, ''), token_name),"
                    " node = COALESCE(NULLIF(?, ''), node) WHERE id = ?",
                    [(o.status, o.token_id, o.token_name, o.node, o.entry_id) for o in outcomes],
                )
        return ids

    async def list_audit(
        self,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
        job: str | None = None,
        token: str | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        sql, params = audit_query(
            after=after,
            before=before,
            limit=limit,
            job=job,
            token=token,
            newest_first=newest_first,
        )
        return [AuditEntry.model_validate(dict(r)) for r in await self._rows(sql, params)]

    async def prune_audit(
        self, *, before: datetime, keep_rows: int, keep_anonymous: int | None = None
    ) -> int:
        async with self._tx("prune the audit log", proves_health=False) as conn:
            # Compared as times: as text a whole second ("...01Z") sorts after its own
            # fractions ("...01.25Z").
            cur = await conn.execute(
                "DELETE FROM audit WHERE julianday(time) < julianday(?)", (format_time(before),)
            )
            removed = cur.rowcount
            if keep_anonymous is not None:
                # Refusals without a valid token have their own cap: a flood of them must
                # never push out the record of what token holders did.
                cur = await conn.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE token_id = ''"
                    " AND status IN (401, 403) ORDER BY id DESC LIMIT -1 OFFSET ?)",
                    (keep_anonymous,),
                )
                removed += cur.rowcount
            # The newest ``keep_rows`` entries that are left (ids have gaps by now).
            if keep_rows <= 0:
                cur = await conn.execute("DELETE FROM audit")
            else:
                cur = await conn.execute(
                    "DELETE FROM audit WHERE id < (SELECT id FROM audit ORDER BY id DESC"
                    " LIMIT 1 OFFSET ?)",
                    (keep_rows - 1,),
                )
            return removed + cur.rowcount


def audit_query(
    *,
    after: int,
    before: int | None,
    limit: int,
    job: str | None,
    token: str | None,
    newest_first: bool,
) -> tuple[str, tuple[object, ...]]:
    """The SELECT of one page of the audit log, and its parameters. SQLite walks the rowid,
    audit_job (job, id) or audit_token (token_name, id) in id order, either way, and stops
    after ``limit`` matching rows: no filter makes it read and sort all that match
    (tests/coordinator/store/test_audit_query.py checks the plans)."""
    where: list[str] = ["id > ?"]
    params: list[object] = [after]
    if before is not None:
        where.append("id < ?")
        params.append(before)
    if job is not None:
        where.append("job = ?")
        params.append(job)
    if token is not None:
        # Not "token_name = ? OR token_id = ?": an OR, or token_id alone (audit_anonymous
        # has the status before the id), makes SQLite read every entry of the token and sort
        # them. Names never look like ids and the configured tokens' ids are their names, so
        # a name is matched by name; an id by its token's name (one per id: a token or node
        # keeps its name), which keeps the walk on audit_token, and then by id.
        if re.fullmatch(ID_SHAPE_PATTERN, token) is None:
            where.append("token_name = ?")
            params.append(token)
        else:
            where.append(
                "token_name = (SELECT token_name FROM audit WHERE token_id = ? LIMIT 1)"
                " AND token_id = ?"
            )
            params += [token, token]
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"  # noqa: S608
    return sql, (*params, limit)


async def _commit(conn: aiosqlite.Connection) -> None:
    await conn.execute("COMMIT")


async def _settle(work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` to its end even if the caller is cancelled meanwhile; return whether
    it was. A COMMIT runs on in aiosqlite's thread after its waiter is cancelled, so a
    transaction that stopped waiting could not tell memory whether it committed."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled and task.exception() is not None:
        raise asyncio.CancelledError from task.exception()
    task.result()  # raises what the work raised
    return cancelled


def _assignment(row: aiosqlite.Row) -> AssignmentRecord:
    return AssignmentRecord.model_validate(dict(row))


class _Pending(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


P = TypeVar("P", bound=_Pending)
R = TypeVar("R")


class _GroupCommit(Generic[P, R]):
    """Requests that queue up while a transaction commits are committed together, by one
    task, in one transaction (one fsync); each caller gets its own outcome.

    ``commit`` returns an outcome per request: its result, or the exception for it alone
    (a failure of the whole transaction fails every request of the batch)."""

    def __init__(self, commit: Callable[[Sequence[P]], Awaitable[list[R | Exception]]]) -> None:
        self._commit = commit
        self._queue: list[P] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, pending: P) -> R:
        """Queue ``pending`` (its future is the caller's); return once it is durable."""
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        result: R = await pending.future
        return result

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Commit the queue, and whatever queued up meanwhile, until none is left."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                outcomes = await self._commit(batch)
            except Exception as exc:
                outcomes = [exc] * len(batch)
            except BaseException:
                for pending in [*batch, *self._queue]:
                    if not pending.future.done():
                        pending.future.set_exception(StoreError("the store was closed"))
                self._queue = []
                raise
            for pending, outcome in zip(batch, outcomes, strict=True):
                future = pending.future
                if future.done():
                    continue  # the caller went away; the change is stored all the same
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


@dataclass(frozen=True)
class _PendingNode:
    """A registration waiting for the next group commit, and its caller."""

    node: NodeRecord
    join_token: str | None
    events: tuple[Event, ...]
    future: asyncio.Future[None]


@dataclass(frozen=True)
class _PendingReport:
    """A report waiting for the next group commit, and the caller waiting for its outcome."""

    node_id: str
    seq: int
    load: Load
    resources: Resources | None
    executions: Sequence[ExecutionReport]
    now: datetime
    future: asyncio.Future[ReportOutcome]
    conditions: tuple[NodeCondition, ...] = ()


Row = tuple[object, ...]
_SQLITE_INTS = range(-(2**63), 2**63)


def _storable(row: Row) -> Row:
    """``row`` when SQLite can store each value; else raise ValueError saying which not."""
    for value in row:
        if isinstance(value, int) and value not in _SQLITE_INTS:
            raise ValueError("an integer does not fit in SQLite's 64 bits")
        if isinstance(value, str):
            value.encode()  # a lone surrogate fails here, not in the batch's executemany
    return row


@dataclass(frozen=True)
class _MergedReport:
    """One accepted report's node and executions, with their rows encoded and checked."""

    node: NodeRecord
    node_row: Row
    current: Mapping[str, ExecutionRecord]
    rows: dict[str, Row]


def _encode_report(decision: ReportDecision) -> _MergedReport:
    """The rows of an accepted report; raises when one cannot be stored."""
    new = decision.node
    assert new is not None
    node_row = _storable(
        (new.model_dump_json(), new.last_seq, new.last_seq + SEQ_RESERVATION, new.id)
    )
    rows = {
        job: _storable((new.id, job, record.model_dump_json()))
        for job, record in decision.executions.items()
    }
    return _MergedReport(new, node_row, decision.executions, rows)


@dataclass
class _BatchWrites:
    """What one group commit writes; a node may report twice in a batch (the later wins)."""

    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    node_rows: dict[str, Row] = field(default_factory=dict)
    runs: dict[str, Mapping[str, ExecutionRecord]] = field(default_factory=dict)
    upserts: dict[tuple[str, str], ExecutionRecord] = field(default_factory=dict)
    upsert_rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    deletes: set[tuple[str, str]] = field(default_factory=set)

    def add(self, merged: _MergedReport, existing: Mapping[str, ExecutionRecord]) -> None:
        node_id = merged.node.id
        self.nodes[node_id] = merged.node
        self.node_rows[node_id] = merged.node_row
        self.runs[node_id] = merged.current
        for job in existing.keys() - merged.current.keys():
            self.deletes.add((node_id, job))
            self.upserts.pop((node_id, job), None)
            self.upsert_rows.pop((node_id, job), None)
        for job, record in merged.current.items():
            self.deletes.discard((node_id, job))
            self.upserts[(node_id, job)] = record
            self.upsert_rows[(node_id, job)] = merged.rows[job]
