"""The PostgreSQL store: several coordinators share one database (high availability).

Nothing mutable is kept in memory: every read goes to the database, since another
coordinator may have written since (immutable job versions are cached, and parsed records
are reused while their stored JSON is the same). Writes commit before they are
acknowledged (PostgreSQL's default ``synchronous_commit``), with one exception: a report
that changes nothing durable (a heartbeat) is acknowledged at once and written with the
others of its kind every LIVENESS_FLUSH_SECONDS, well within the node TTL that the leader
judges liveness by.

Every write transaction notifies the other coordinators of what it changed
(``store.pg_listen``); engine writes carry the leader's epoch and are fenced against the
lease (``store.lease``) in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from pydantic import TypeAdapter

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
from coordinator.domain.reports import Report, decide_report
from coordinator.store import WriteHealth
from coordinator.store.health import WriteTracker
from coordinator.store.lease import DuplicateMember, Fenced, LeaseState, Member
from coordinator.store.pg_errors import DB_ERRORS, describe, redact, store_error
from coordinator.store.pg_listen import EVERYTHING, ChangeListener, payloads
from coordinator.store.pg_migrations import migrate
from coordinator.store.sqlite import audit_query
from shared.errors import BadRequest, Conflict, OutcomeUnknown, StoreError, StoreUnavailable
from shared.nodes import Eligibility, Load, NodeCondition, NodeStatus, Resources
from shared.protocol import ExecutionReport
from shared.spec import JobSpec

log = structlog.get_logger("fleetwave.store")

LIVENESS_FLUSH_SECONDS = 2.0
"""How long a heartbeat-only report may live only in this coordinator's memory.

The leader (maybe another coordinator) judges liveness from the database, so this must stay
well below the node TTL (3 heartbeat intervals, 30 s by default); every state change is
written before its report is answered."""

POOL_SIZE = 10
"""Connections per coordinator (PostgreSQL's default max_connections is 100)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to establish a connection before the database counts as unreachable."""
COMMAND_TIMEOUT = 15.0
"""Seconds a statement may take before it counts as an outage (a partitioned server
answers nothing, not even an error)."""
ACQUIRE_TIMEOUT = 10.0
"""Seconds to wait for a pooled connection (all busy, or connecting fails slowly)."""
IDLE_IN_TRANSACTION_MS = 2000
"""Milliseconds a transaction may sit between statements before the server ends its session.

A transaction holds locks: an engine write holds the lease row (FOR SHARE, the fencing),
event writers the events lock. A coordinator stopped inside one (SIGSTOP, a VM pause, a
partition) would keep every other member from taking the lease or writing events until it
ran again; kill -9 closes the socket, a pause does not. Our transactions never wait between
statements for anything but the event loop, so 2 s (below the default 3 s lease) only ends
the stuck ones, and the takeover still comes when the lease expires."""

PROBE_BYTES = 16 * 1024
"""Size of the probe row ``check_writable`` writes while writes fail."""

EVENTS_LOCK = 0x46_57_45_56  # "FWEV"
AUDIT_LOCK = 0x46_57_41_55  # "FWAU"
TOKEN_NAME_LOCK = 0x46_57_54_4B  # "FWTK"
"""Advisory lock keys. Writers of events and audit entries take theirs before inserting, so
ids commit in the order they are assigned: a reader paging by ``id > after`` never skips a
row that commits later with a smaller id. The token name lock makes the name check of
``insert_token`` atomic across coordinators."""

_INT64 = range(-(2**63), 2**63)
_EXECUTIONS = TypeAdapter(list[ExecutionRecord])

_NODE_COLS = "n.id, n.record, n.last_seq, n.last_heartbeat, n.load::text AS load, n.assign_index"
_EVENT_COLS = 'id, time, job, node, kind, old, new, reason, "by"'


class _FromJson(Protocol):
    @classmethod
    def model_validate_json(cls, json_data: str) -> Self: ...


M = TypeVar("M", bound=_FromJson)


class PostgresStore:
    """Store on a PostgreSQL database that other coordinators may share."""

    def __init__(
        self,
        url: str,
        member_id: str = "",
        *,
        liveness_flush_seconds: float = LIVENESS_FLUSH_SECONDS,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self.member_id = member_id or f"m-{secrets.token_hex(4)}"
        """Names this coordinator in the lease and in its notifications."""
        self.instance = secrets.token_hex(8)
        """This process: the lease is held by a member id *and* its instance, so a second
        coordinator configured with the same id can never act as the holder."""
        self.migrated: list[int] = []
        """The migrations this store's ``open`` applied."""
        self._name = redact(url)
        self._liveness_flush = liveness_flush_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lease_pool: asyncpg.Pool | None = None
        """One connection of its own for the lease: a leader busy with agents must never
        miss a renewal waiting for a pooled connection (it would step down under load)."""
        self._writes = WriteTracker(self._name)
        self._versions: dict[tuple[str, int], JobVersion] = {}
        self._jobs = _Parsed(JobRecord)
        self._nodes = _Parsed(NodeRecord)
        self._event_listeners: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[list[str]], None]] = []
        self._listener: ChangeListener | None = None
        self._heartbeats: dict[str, _Heartbeat] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._reporting: Counter[str] = Counter()  # nodes with a report in a transaction

    # lifecycle

    async def open(self) -> None:
        try:
            self._pool = await self._make_pool(self._pool_size)
            self._lease_pool = await self._make_pool(1)
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                self.migrated = await migrate(conn)
            self._listener = ChangeListener(
                self.url, self.member_id, self._remote_change, connect_timeout=CONNECT_TIMEOUT
            )
            await self._listener.start()
        except (*DB_ERRORS, ValueError) as exc:  # ValueError: a malformed URL
            await self._close_pool()
            raise StoreError(
                f"cannot use PostgreSQL database {self._name}: {describe(exc)}"
            ) from exc
        except BaseException:
            await self._close_pool()
            raise
        if self.migrated:
            log.info("store_migrated", database=self._name, migrations=self.migrated)

    async def _make_pool(self, size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.url,
            # No floor of idle connections: while the database is down, asyncpg would keep
            # reconnecting one in the background and print a raw traceback (not a log
            # event) at each try. Connections are made as calls need them.
            min_size=0,
            max_size=size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            reset=_keep_session,
            server_settings={
                "application_name": f"fleetwave {self.member_id}"[:63],
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
            },
        )

    async def close(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        if self._pool is not None:
            with contextlib.suppress(StoreError):
                await self.flush_liveness()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        await self._close_pool()

    async def _close_pool(self) -> None:
        pools = (self._pool, self._lease_pool)
        self._pool = self._lease_pool = None
        for pool in pools:
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except (TimeoutError, *DB_ERRORS):
                pool.terminate()

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _tx(
        self,
        what: str,
        *,
        epoch: int | None = None,
        proves_health: bool = True,
        lease: bool = False,
    ) -> AsyncIterator[_Tx]:
        """One write transaction; ``what`` it does names it in errors ("save job 'web'").

        With ``epoch``, the transaction first checks that this coordinator holds the lease
        in that epoch, and keeps it from changing hands until it commits (Fenced if not).
        The keys it collects are notified to the other coordinators as it commits; event
        listeners run once it has. A database failure raises StoreUnavailable (an outage)
        or StoreError (a bug), and the transaction changed nothing.
        """
        pool = self._open_pool()
        if lease and self._lease_pool is not None:
            pool = self._lease_pool
        tx: _Tx | None = None
        committing = committed = False
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                async with conn.transaction():
                    tx = _Tx(conn, epoch)
                    if epoch is not None:
                        await self._fence(conn, epoch)
                    yield tx
                    for payload in payloads(self.member_id, tx.keys):
                        await conn.execute("SELECT pg_notify('fleetwave', $1)", payload)
                    committing = True  # leaving the block sends COMMIT
                committed = True
        except DB_ERRORS as exc:
            if committed:
                # Only handing the connection back failed: the write is durable.
                log.warning("connection_release_failed", error=str(exc), what=what)
            else:
                error = await self._failed(exc, what)
                if committing and isinstance(error, StoreUnavailable):
                    # The server may have committed before the connection broke: never say
                    # "nothing changed" then (a client would resend the change elsewhere).
                    raise OutcomeUnknown(
                        f"{error.message}; the connection broke while committing, so the"
                        " change may or may not have been applied: read the current state"
                        " before retrying"
                    ) from exc
                raise error from exc
        if proves_health:
            self._writes.committed()
        if tx is not None and tx.events:
            self._events_stored()

    async def _failed(self, exc: BaseException, what: str) -> StoreError:
        error = store_error(exc, what, self.url)
        self._writes.failed(error)
        if self._pool is not None and error.status == 503:
            # Pooled connections may all be dead (a restarted server): connect afresh.
            await self._pool.expire_connections()
        return error

    async def _fence(self, conn: PoolConnectionProxy, epoch: int) -> None:
        row = await conn.fetchrow(
            "SELECT holder, instance, epoch, expires_at > clock_timestamp() AS live"
            " FROM lease WHERE id = 1 FOR SHARE"
        )
        if row is None or not (
            row["holder"] == self.member_id
            and row["instance"] == self.instance
            and row["epoch"] == epoch
            and row["live"]
        ):
            holder, current = (row["holder"], row["epoch"]) if row is not None else ("", 0)
            raise Fenced(
                f"leadership epoch {epoch} of {self.member_id} is over"
                f" (lease: {holder or 'nobody'}, epoch {current})",
                {"epoch": epoch, "current_epoch": current, "holder": holder},
            )

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Rows of a read; an unreachable database is an outage (503), as for writes."""
        pool = self._open_pool()
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                return list(await conn.fetch(sql, *args))
        except DB_ERRORS as exc:
            raise await self._failed(exc, "read the database") from exc

    # health

    def live(self) -> None:
        """None: several coordinators write the tables, and nothing here holds them."""
        return None

    def write_health(self) -> WriteHealth:
        return self._writes.health

    async def check_writable(self, now: float) -> str | None:
        if self._writes.should_probe(now):
            with contextlib.suppress(StoreError):
                async with self._tx("write a probe row") as tx:
                    await tx.conn.execute(
                        "INSERT INTO store_probe (pad) VALUES ($1)", bytes(PROBE_BYTES)
                    )
                    await tx.conn.execute("DELETE FROM store_probe")
        return self._writes.health.failing

    # change notification

    def on_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit that stored events, here or (notified) on
        another coordinator."""
        self._event_listeners.append(listener)

    def on_remote_change(self, listener: Callable[[list[str]], None]) -> None:
        """Call ``listener`` with the keys another coordinator's commit changed (see
        ``store.pg_listen``); ``["*"]`` after the notification connection was lost."""
        self._change_listeners.append(listener)

    def _events_stored(self) -> None:
        for listener in self._event_listeners:
            _call(listener)

    def _remote_change(self, keys: list[str]) -> None:
        for listener in self._change_listeners:
            _call(listener, keys)
        if "events" in keys or EVERYTHING in keys:
            self._events_stored()

    # jobs

    async def get_job(self, name: str) -> JobRecord | None:
        rows = await self._fetch("SELECT name, record FROM jobs WHERE name = $1", name)
        return self._jobs.parse(name, rows[0]["record"]) if rows else None

    async def list_jobs(self) -> list[JobRecord]:
        rows = await self._fetch("SELECT name, record FROM jobs ORDER BY name")
        return [self._jobs.parse(r["name"], r["record"]) for r in rows]

    async def save_job(
        self, job: JobRecord, *, expected_revision: int | None, new_version: JobVersion | None
    ) -> None:
        async with self._tx(f"save job {job.name!r}") as tx:
            await _write_job(tx, job, expected_revision)
            if new_version is not None:
                await tx.conn.execute(
                    "INSERT INTO job_versions (job, version, spec, created_at)"
                    " VALUES ($1, $2, $3, $4)",
                    new_version.job,
                    new_version.version,
                    new_version.spec.model_dump_json(),
                    new_version.created_at,
                )

    async def list_versions(self, job: str) -> list[JobVersion]:
        rows = await self._fetch(
            "SELECT job, version, spec::text AS spec, created_at FROM job_versions"
            " WHERE job = $1 ORDER BY version",
            job,
        )
        return [self._version(r) for r in rows]

    async def get_version(self, job: str, version: int) -> JobVersion | None:
        found = self._versions.get((job, version))
        if found is not None:
            return found  # versions are immutable once stored
        rows = await self._fetch(
            "SELECT job, version, spec::text AS spec, created_at FROM job_versions"
            " WHERE job = $1 AND version = $2",
            job,
            version,
        )
        return self._version(rows[0]) if rows else None

    def _version(self, row: asyncpg.Record) -> JobVersion:
        key = (row["job"], row["version"])
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = JobVersion(
                job=row["job"],
                version=row["version"],
                spec=JobSpec.model_validate_json(row["spec"]),
                created_at=_utc(row["created_at"]),
            )
        return found

    # nodes

    def _node(self, row: asyncpg.Record) -> NodeRecord:
        """The node as stored, with the liveness this coordinator has not written yet."""
        node = self._nodes.parse(row["id"], row["record"]).model_copy(
            update={
                "last_seq": row["last_seq"],
                "last_heartbeat": _utc(row["last_heartbeat"]),
                "load": Load.model_validate_json(row["load"]),
                "assign_index": row["assign_index"],
            }
        )
        beat = self._heartbeats.get(node.id)
        return beat.applied_to(node) if beat is not None else node

    async def _node_where(self, where: str, *args: object) -> list[NodeRecord]:
        rows = await self._fetch(f"SELECT {_NODE_COLS} FROM nodes n WHERE {where}", *args)  # noqa: S608
        return [self._node(r) for r in rows]

    async def _lock_node(self, tx: _Tx, node_id: str) -> NodeRecord | None:
        """The node, locked until the transaction ends (None when there is none)."""
        row = await tx.conn.fetchrow(
            f"SELECT {_NODE_COLS} FROM nodes n WHERE n.id = $1 FOR UPDATE",  # noqa: S608
            node_id,
        )
        return self._node(row) if row is not None else None

    async def _locked_node(self, tx: _Tx, node_id: str) -> NodeRecord:
        node = await self._lock_node(tx, node_id)
        if node is None:
            raise StoreError(f"node {node_id} vanished")
        return node

    async def insert_node(
        self, node: NodeRecord, *, join_token: str | None = None, events: Sequence[Event] = ()
    ) -> None:
        async with self._tx(f"register node {node.name!r}") as tx:
            await _insert_events(tx, events)
            check_name_free(node.name, await self._named(tx, node.name))
            if join_token is not None:
                row = await tx.conn.fetchrow(
                    "SELECT record FROM tokens WHERE id = $1 FOR UPDATE", join_token
                )
                used = join_token_used(
                    TokenRecord.model_validate_json(row["record"]) if row else None
                )
                await tx.conn.execute(
                    "UPDATE tokens SET record = $2 WHERE id = $1", used.id, used.model_dump_json()
                )
                tx.keys.add("tokens")
            status = await tx.conn.execute(
                "INSERT INTO nodes (id, name, token_hash, next_token_hash, record, last_seq,"
                " last_heartbeat, load, assign_index) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT DO NOTHING",
                node.id,
                node.name,
                node.token_hash,
                node.next_token_hash,
                node.model_dump_json(),
                node.last_seq,
                node.last_heartbeat,
                node.load.model_dump_json(),
                node.assign_index,
            )
            if status == "INSERT 0 0":
                # Another coordinator registered the name meanwhile (it waited for that).
                check_name_free(node.name, await self._named(tx, node.name))
                raise StoreError(f"node {node.id} or its token is registered already")
            tx.keys.add("nodes")

    async def _named(self, tx: _Tx, name: str) -> list[NodeRecord]:
        rows = await tx.conn.fetch(f"SELECT {_NODE_COLS} FROM nodes n WHERE n.name = $1", name)  # noqa: S608
        return [self._node(r) for r in rows]

    async def get_node(self, node_id: str) -> NodeRecord | None:
        nodes = await self._node_where("n.id = $1", node_id)
        return nodes[0] if nodes else None

    async def find_node(self, id_or_name: str) -> NodeRecord | None:
        nodes = await self._node_where("n.id = $1 OR n.name = $1", id_or_name)
        nodes.sort(key=lambda n: n.id != id_or_name)  # an id wins over a name
        return nodes[0] if nodes else None

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        nodes = await self._node_where(
            "n.token_hash = $1 OR (n.next_token_hash = $1 AND n.next_token_hash <> '')",
            token_hash,
        )
        return nodes[0] if nodes else None

    async def list_nodes(self) -> list[NodeRecord]:
        return await self._node_where("true ORDER BY n.name, n.id")

    async def _write_node(self, tx: _Tx, node: NodeRecord) -> None:
        """Write what a node's record says, except its liveness and assignment index; the
        row records the transaction's epoch (NULL: not an engine write)."""
        await tx.conn.execute(
            "UPDATE nodes SET record = $2, name = $3, token_hash = $4, next_token_hash = $5,"
            " epoch = $6 WHERE id = $1",
            node.id,
            node.model_dump_json(),
            node.name,
            node.token_hash,
            node.next_token_hash,
            tx.epoch,
        )
        # node:<id> too: a revocation ends that node's long-poll on whichever coordinator
        # holds it (a 401 at once instead of at the end of its wait).
        tx.keys.update(("nodes", f"node:{node.id}"))

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
        async with self._tx(f"renew the registration of node {node_id}") as tx:
            node = renewed(
                await self._lock_node(tx, node_id),
                token_hash=token_hash,
                labels=labels,
                resources=resources,
                agent_version=agent_version,
                issued_at=issued_at,
                expires_at=expires_at,
            )
            if node is not None:
                await self._write_node(tx, node)
            return node

    async def offer_node_token(
        self, node_id: str, *, token_hash: str, expires_at: datetime | None
    ) -> None:
        async with self._tx(f"rotate the token of node {node_id}") as tx:
            node = await self._locked_node(tx, node_id)
            await self._write_node(tx, token_offered(node, token_hash, expires_at))

    async def promote_node_token(self, node_id: str, token_hash: str, now: datetime) -> NodeRecord:
        async with self._tx(f"switch node {node_id} to its rotated token") as tx:
            node = await self._locked_node(tx, node_id)
            promoted = token_promoted(node, token_hash, now)
            if promoted is None:
                return node
            await self._write_node(tx, promoted)
            return promoted

    async def approve_node(self, node_id: str, *, events: Sequence[Event] = ()) -> NodeRecord:
        async with self._tx(f"approve node {node_id}") as tx:
            node = await self._locked_node(tx, node_id)
            if node.approved:
                return node
            node = node.model_copy(update={"approved": True})
            await self._write_node(tx, node)
            await _insert_events(tx, events)
            return node

    async def revoke_node(
        self, node_id: str, now: datetime, *, events: Sequence[Event] = ()
    ) -> NodeRecord:
        async with self._tx(f"revoke node {node_id}") as tx:
            node = await self._locked_node(tx, node_id)
            changed = revoked(node, now)
            if changed is None:
                return node
            await self._write_node(tx, changed)
            await _insert_events(tx, events)
            return changed

    async def purge_node(self, node_id: str, *, events: Sequence[Event] = ()) -> None:
        async with self._tx(f"purge node {node_id}") as tx:
            await _insert_events(tx, events)
            jobs: set[str] = set()
            for table in ("assignments", "executions"):
                rows = await tx.conn.fetch(
                    f"DELETE FROM {table} WHERE node_id = $1 RETURNING job",  # noqa: S608
                    node_id,
                )
                jobs.update(r["job"] for r in rows)
            await tx.conn.execute("DELETE FROM nodes WHERE id = $1", node_id)
            self._heartbeats.pop(node_id, None)
            tx.keys.update({"nodes", f"node:{node_id}", *(f"job:{job}" for job in jobs)})

    async def set_node_status(
        self, node_id: str, status: NodeStatus, *, epoch: int | None = None
    ) -> None:
        async with self._tx(f"set the status of node {node_id}", epoch=epoch) as tx:
            node = await self._locked_node(tx, node_id)
            await self._write_node(tx, node.model_copy(update={"status": status}))

    async def set_node_agent_version(self, node_id: str, agent_version: str) -> None:
        async with self._tx(f"set the agent version of node {node_id}") as tx:
            node = await self._locked_node(tx, node_id)
            await self._write_node(tx, node.model_copy(update={"agent_version": agent_version}))

    async def set_node_scheduling(
        self,
        node_id: str,
        *,
        eligibility: Eligibility | None = None,
        drain: bool | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        async with self._tx(f"change the scheduling of node {node_id}") as tx:
            node = await self._locked_node(tx, node_id)
            await self._write_node(tx, rescheduled(node, eligibility=eligibility, drain=drain))
            await _insert_events(tx, events)

    # reports

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
        """Record a report; return once it is durable, or, when it changes nothing durable,
        once it is queued for the next liveness flush (see LIVENESS_FLUSH_SECONDS)."""
        if seq not in _INT64:
            raise BadRequest("the report cannot be stored: its seq does not fit in 64 bits")
        report = Report(seq, load, resources, tuple(executions), tuple(conditions))
        if not self._reporting[node_id]:
            quick = await self._liveness_only(node_id, report, now)
            if quick is not None:
                return quick
        self._reporting[node_id] += 1
        try:
            return await self._record_in_tx(node_id, report, now)
        finally:
            self._reporting[node_id] -= 1
            if not self._reporting[node_id]:
                del self._reporting[node_id]

    async def _liveness_only(
        self, node_id: str, report: Report, now: datetime
    ) -> ReportOutcome | None:
        """The outcome of a report that is refused or changes nothing durable (queued for
        the next flush); None when it must go through a transaction."""
        rows = await self._fetch(
            f"SELECT {_NODE_COLS}, (SELECT json_agg(e.record) FROM executions e"  # noqa: S608
            " WHERE e.node_id = n.id)::text AS runs FROM nodes n WHERE n.id = $1",
            node_id,
        )
        if not rows:
            return None
        node = self._node(rows[0])
        runs = {e.job: e for e in _EXECUTIONS.validate_json(rows[0]["runs"] or "[]")}
        decision = decide_report(node, runs, report, now)
        if decision.node is None:
            return decision.outcome  # replayed or late
        if not decision.liveness_only:
            return None
        self._heartbeats[node_id] = _Heartbeat(report.seq, now, report.load)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_liveness_later())
        return decision.outcome

    async def _record_in_tx(self, node_id: str, report: Report, now: datetime) -> ReportOutcome:
        async with self._tx(f"record a report of node {node_id}") as tx:
            # Locked: a report of this node on another coordinator waits, then sees this
            # one's seq, so no seq is accepted twice.
            node = await self._locked_node(tx, node_id)
            rows = await tx.conn.fetch(
                "SELECT record::text AS record FROM executions WHERE node_id = $1", node_id
            )
            runs = {
                e.job: e for e in (ExecutionRecord.model_validate_json(r["record"]) for r in rows)
            }
            decision = decide_report(node, runs, report, now)
            if decision.node is None:
                return decision.outcome
            new = decision.node
            try:
                node_json = new.model_dump_json()
                load_json = new.load.model_dump_json()
                run_rows = [
                    (node_id, job, r.model_dump_json()) for job, r in decision.executions.items()
                ]
                _check_text(node_json, load_json, *(r[2] for r in run_rows))
            except Exception as exc:
                log.warning("report_not_storable", node_id=node_id, error=str(exc))
                raise BadRequest(f"the report cannot be stored: {exc}") from exc
            await tx.conn.execute(
                "UPDATE nodes SET record = $2, last_seq = $3, last_heartbeat = $4, load = $5,"
                " epoch = NULL WHERE id = $1",
                node_id,
                node_json,
                new.last_seq,
                new.last_heartbeat,
                load_json,
            )
            if run_rows:
                await tx.conn.executemany(
                    "INSERT INTO executions (node_id, job, record) VALUES ($1, $2, $3)"
                    " ON CONFLICT (node_id, job) DO UPDATE SET record = excluded.record",
                    run_rows,
                )
            if decision.removed:
                await tx.conn.execute(
                    "DELETE FROM executions WHERE node_id = $1 AND job = ANY($2::text[])",
                    node_id,
                    sorted(decision.removed),
                )
            beat = self._heartbeats.get(node_id)
            if beat is not None and beat.seq <= new.last_seq:
                del self._heartbeats[node_id]
            tx.keys.update(f"job:{job}" for job in decision.outcome.changed_jobs)
            if _listing_changed(node, new):
                tx.keys.add("nodes")
            return decision.outcome

    async def _flush_liveness_later(self) -> None:
        while self._heartbeats:
            await asyncio.sleep(self._liveness_flush)
            try:
                await self.flush_liveness()
            except StoreError as exc:
                log.warning("liveness_flush_failed", error=exc.message)

    async def flush_liveness(self) -> None:
        """Write the heartbeat-only reports still held in memory."""
        beats, self._heartbeats = self._heartbeats, {}
        if not beats:
            return
        ids = sorted(beats)
        try:
            async with self._tx(f"write the heartbeats of {len(ids)} nodes") as tx:
                # Rows locked in id order: two coordinators flushing (an agent that failed
                # over) or a report transaction never deadlock with this one.
                await tx.conn.execute(
                    "SELECT 1 FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
                )
                await tx.conn.execute(
                    "UPDATE nodes n SET last_seq = b.seq, last_heartbeat = b.at,"
                    " load = b.load::json"
                    " FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[])"
                    " AS b(id, seq, at, load) WHERE n.id = b.id AND n.last_seq < b.seq",
                    ids,
                    [beats[i].seq for i in ids],
                    [beats[i].at for i in ids],
                    [beats[i].load.model_dump_json() for i in ids],
                )
        except BaseException:
            for node_id, beat in beats.items():  # still only in memory: flushed next time
                newer = self._heartbeats.get(node_id)
                if newer is None or newer.seq < beat.seq:
                    self._heartbeats[node_id] = beat
            raise

    # tokens

    async def insert_token(self, token: TokenRecord) -> None:
        async with self._tx(f"create token {token.name!r}") as tx:
            await tx.conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", TOKEN_NAME_LOCK, token.name
            )
            rows = await tx.conn.fetch("SELECT record FROM tokens WHERE name = $1", token.name)
            check_token_name_free(token, (_token(r) for r in rows))
            await tx.conn.execute(
                "INSERT INTO tokens (id, name, secret_hash, record) VALUES ($1, $2, $3, $4)",
                token.id,
                token.name,
                token.secret_hash,
                token.model_dump_json(),
            )
            tx.keys.add("tokens")

    async def list_tokens(self) -> list[TokenRecord]:
        tokens = [_token(r) for r in await self._fetch("SELECT record FROM tokens")]
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._fetch("SELECT record FROM tokens WHERE id = $1", token_id)
        return _token(rows[0]) if rows else None

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        rows = await self._fetch("SELECT record FROM tokens WHERE secret_hash = $1", secret_hash)
        return _token(rows[0]) if rows else None

    async def revoke_token(self, token_id: str, now: datetime) -> TokenRecord | None:
        async with self._tx(f"revoke token {token_id}") as tx:
            row = await tx.conn.fetchrow(
                "SELECT record FROM tokens WHERE id = $1 FOR UPDATE", token_id
            )
            token = _token(row) if row is not None else None
            changed = token_revoked(token, now) if token is not None else None
            if changed is None:
                return token
            await tx.conn.execute(
                "UPDATE tokens SET record = $2 WHERE id = $1", changed.id, changed.model_dump_json()
            )
            tx.keys.add("tokens")
            return changed

    # assignments and executions

    async def node_assignments(self, node_id: str) -> tuple[int, list[AssignmentRecord]]:
        # One statement: the index and the assignments are of the same snapshot.
        rows = await self._fetch(
            "SELECT n.assign_index, a.node_id, a.job, a.version, a.generation, a.assigned_at"
            " FROM (SELECT $1::text AS id) q LEFT JOIN nodes n ON n.id = q.id"
            " LEFT JOIN assignments a ON a.node_id = q.id ORDER BY a.job",
            node_id,
        )
        index = rows[0]["assign_index"] or 0
        return index, [_assignment(r) for r in rows if r["job"] is not None]

    async def job_assignments(self, job: str) -> dict[str, AssignmentRecord]:
        rows = await self._fetch(
            "SELECT node_id, job, version, generation, assigned_at FROM assignments WHERE job = $1",
            job,
        )
        return {r["node_id"]: _assignment(r) for r in rows}

    async def job_executions(self, job: str) -> dict[str, ExecutionRecord]:
        rows = await self._fetch(
            "SELECT node_id, record::text AS record FROM executions WHERE job = $1", job
        )
        return {r["node_id"]: ExecutionRecord.model_validate_json(r["record"]) for r in rows}

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
        async with self._tx(f"apply a plan for job {job.name!r}", epoch=epoch) as tx:
            await _write_job(tx, job, expected_revision, epoch=epoch)
            bumps = Counter(change.node_id for change in changes)
            ids = sorted(bumps)
            await tx.conn.execute(
                "SELECT 1 FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
            )
            rows = await tx.conn.fetch(
                "UPDATE nodes n SET assign_index = n.assign_index + b.k, epoch = $3"
                " FROM unnest($1::text[], $2::bigint[]) AS b(id, k) WHERE n.id = b.id"
                " RETURNING n.id, n.assign_index",
                ids,
                [bumps[i] for i in ids],
                epoch,
            )
            indexes = {r["id"]: r["assign_index"] for r in rows}
            removed = [c.node_id for c in changes if c.version is None]
            if removed:
                await tx.conn.execute(
                    "DELETE FROM assignments WHERE job = $1 AND node_id = ANY($2::text[])",
                    job.name,
                    removed,
                )
            assigned = [
                (c.node_id, job.name, c.version, c.generation, now, epoch)
                for c in changes
                if c.version is not None
            ]
            if assigned:
                await tx.conn.executemany(
                    "INSERT INTO assignments (node_id, job, version, generation, assigned_at,"
                    " epoch) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node_id, job) DO UPDATE"
                    " SET version = excluded.version, generation = excluded.generation,"
                    " assigned_at = excluded.assigned_at, epoch = excluded.epoch",
                    assigned,
                )
            await _insert_events(tx, events)
            tx.keys.update(f"node:{node_id}" for node_id in indexes)
        return indexes

    # events

    async def append_events(self, events: Sequence[Event], *, epoch: int | None = None) -> None:
        if events:
            async with self._tx(f"append {len(events)} events", epoch=epoch) as tx:
                await _insert_events(tx, events)

    async def last_event_id(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) AS last FROM events")
        return int(rows[0]["last"])

    async def list_events(
        self, *, job: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        if job is None:
            rows = await self._fetch(
                f"SELECT {_EVENT_COLS} FROM events WHERE id > $1 ORDER BY id LIMIT $2",  # noqa: S608
                after,
                limit,
            )
        else:
            rows = await self._fetch(
                f"SELECT {_EVENT_COLS} FROM events WHERE job = $1 AND id > $2"  # noqa: S608
                " ORDER BY id LIMIT $3",
                job,
                after,
                limit,
            )
        return [Event.model_validate({**r, "time": _utc(r["time"])}) for r in rows]

    # audit

    async def write_audit(
        self, entries: Sequence[AuditEntry], outcomes: Sequence[AuditOutcome]
    ) -> list[int]:
        ids: list[int] = []
        async with self._tx(
            f"write {len(entries) + len(outcomes)} audit records", proves_health=False
        ) as tx:
            if entries:
                await tx.conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
            for e in entries:
                ids.append(
                    await tx.conn.fetchval(
                        "INSERT INTO audit (time, token_id, token_name, role, remote, method,"
                        " path, job, node, status, request_id)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                        e.time,
                        *map(
                            _text,
                            (e.token_id, e.token_name, e.role, e.remote, e.method, e.path),
                        ),
                        _text(e.job),
                        _text(e.node),
                        e.status,
                        _text(e.request_id),
                    )
                )
            if outcomes:
                await tx.conn.executemany(
                    "UPDATE audit SET status = $1, token_id = COALESCE(NULLIF($2, ''), token_id),"
                    " token_name = COALESCE(NULLIF($3, ''), token_name),"
                    " node = COALESCE(NULLIF($4, ''), node) WHERE id = $5",
                    [
                        (
                            o.status,
                            _text(o.token_id),
                            _text(o.token_name),
                            _text(o.node),
                            o.entry_id,
                        )
                        for o in outcomes
                    ],
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
        rows = await self._fetch(_numbered(sql), *params)
        return [AuditEntry.model_validate({**r, "time": _utc(r["time"])}) for r in rows]

    async def prune_audit(
        self, *, before: datetime, keep_rows: int, keep_anonymous: int | None = None
    ) -> int:
        async with self._tx("prune the audit log", proves_health=False) as tx:
            removed = _count(await tx.conn.execute("DELETE FROM audit WHERE time < $1", before))
            if keep_anonymous is not None:
                # Refusals without a valid token have their own cap: a flood of them must
                # never push out the record of what token holders did.
                removed += _count(
                    await tx.conn.execute(
                        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE token_id = ''"
                        " AND status IN (401, 403) ORDER BY id DESC OFFSET $1)",
                        keep_anonymous,
                    )
                )
            removed += _count(
                await tx.conn.execute(
                    "DELETE FROM audit WHERE id IN"
                    " (SELECT id FROM audit ORDER BY id DESC OFFSET $1)",
                    keep_rows,
                )
            )
            return removed

    # leadership

    async def try_lease(self, member_id: str, address: str, ttl_seconds: float) -> LeaseState:
        """Renew the lease if this process holds it, take it (the next epoch) if it expired
        or was never held, else leave it; and note that the member was seen. By the
        database's clock, in one transaction.

        A member id that another live process uses (seen within three leases) raises
        DuplicateMember and changes nothing: that is a configuration error."""
        async with self._tx("renew the leadership lease", lease=True) as tx:
            seen = await tx.conn.fetchrow(
                "INSERT INTO members (id, address, started_at, last_seen, instance)"
                " VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3)"
                " ON CONFLICT (id) DO UPDATE SET address = excluded.address,"
                " last_seen = excluded.last_seen, instance = excluded.instance,"
                " started_at = CASE WHEN members.instance = excluded.instance"
                " THEN members.started_at ELSE excluded.started_at END"
                " WHERE members.instance = excluded.instance"
                " OR members.last_seen < clock_timestamp() - make_interval(secs => $4)"
                " RETURNING instance",
                member_id,
                address,
                self.instance,
                float(ttl_seconds) * 3,
            )
            if seen is None:
                other = await tx.conn.fetchrow(
                    "SELECT address, EXTRACT(EPOCH FROM clock_timestamp() - last_seen)::float8"
                    " AS ago FROM members WHERE id = $1",
                    member_id,
                )
                where = f" at {other['address']}, seen {other['ago']:.1f}s ago" if other else ""
                raise DuplicateMember(
                    f"member id {member_id!r} is used by another running coordinator{where}:"
                    " give each coordinator its own --member-id (this one stays a follower"
                    " until that one has been gone for three leases)",
                    {"member_id": member_id},
                )
            row = await tx.conn.fetchrow(
                "UPDATE lease SET holder = $1, address = $2, instance = $4,"  # noqa: S608
                " epoch = CASE WHEN holder = $1 AND instance = $4"
                " AND expires_at > clock_timestamp() THEN epoch ELSE epoch + 1 END,"
                " expires_at = clock_timestamp() + make_interval(secs => $3)"
                " WHERE id = 1 AND ((holder = $1 AND instance = $4) OR holder = ''"
                " OR expires_at <= clock_timestamp())"
                f" RETURNING {_LEASE_COLS}",
                member_id,
                address,
                float(ttl_seconds),
                self.instance,
            )
            if row is None:
                row = await tx.conn.fetchrow(f"SELECT {_LEASE_COLS} FROM lease WHERE id = 1")  # noqa: S608
            if row is None:
                raise StoreError("the lease row is missing (migration 2 inserts it)")
            return _lease(row, member_id, self.instance)

    async def release_lease(self, member_id: str) -> None:
        """At a clean shutdown: let the lease expire now if this process holds it."""
        async with self._tx("release the leadership lease", lease=True) as tx:
            await tx.conn.execute(
                "UPDATE lease SET expires_at = clock_timestamp() WHERE id = 1 AND holder = $1"
                " AND instance = $2 AND expires_at > clock_timestamp()",
                member_id,
                self.instance,
            )

    async def lease(self) -> LeaseState:
        """The lease as this store's member sees it."""
        rows = await self._fetch(f"SELECT {_LEASE_COLS} FROM lease WHERE id = 1")  # noqa: S608
        return _lease(rows[0], self.member_id, self.instance)

    async def list_members(self) -> list[Member]:
        """Every coordinator that ever tried for the lease, by id; ``leader`` marks the one
        holding the live lease."""
        rows = await self._fetch(
            "SELECT m.id, m.address, m.started_at, m.last_seen,"
            " (l.holder = m.id AND l.instance = m.instance"
            " AND l.expires_at > clock_timestamp()) AS leader"
            " FROM members m CROSS JOIN lease l ORDER BY m.id"
        )
        return [Member(**dict(r)) for r in rows]


_LEASE_COLS = (
    "holder, address, epoch, instance,"
    " GREATEST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()), 0)::float8 AS expires_in"
)


def _lease(row: asyncpg.Record, member_id: str, instance: str) -> LeaseState:
    expires_in = float(row["expires_in"])
    return LeaseState(
        holder=row["holder"],
        address=row["address"],
        epoch=row["epoch"],
        held=row["holder"] == member_id and row["instance"] == instance and expires_in > 0,
        expires_in=expires_in,
    )


@dataclass
class _Tx:
    """A write transaction's connection and what it changed."""

    conn: PoolConnectionProxy
    epoch: int | None
    keys: set[str] = field(default_factory=set)
    events: bool = False


@dataclass(frozen=True)
class _Heartbeat:
    """A heartbeat acknowledged and not written yet."""

    seq: int
    at: datetime
    load: Load

    def applied_to(self, node: NodeRecord) -> NodeRecord:
        if node.last_seq >= self.seq:
            return node
        return node.model_copy(
            update={"last_seq": self.seq, "last_heartbeat": self.at, "load": self.load}
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool, beyond the rollback of an
    open transaction that asyncpg always does: the store keeps no session state (advisory
    locks are per transaction, LISTEN has its own connection, settings are set at connect).
    asyncpg's default reset query (``RESET ALL; UNLISTEN *; ...``) was one more round trip
    per store call: 13 % of a leader's time with 1,000 agents (bench/ha.py)."""


class _Parsed(Generic[M]):
    """Parsed records by key, reused while the stored JSON is the same text."""

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self._cache: dict[str, tuple[str, M]] = {}

    def parse(self, key: str, raw: str) -> M:
        cached = self._cache.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        record = self._model.model_validate_json(raw)
        self._cache[key] = (raw, record)
        return record


async def _write_job(
    tx: _Tx, job: JobRecord, expected_revision: int | None, *, epoch: int | None = None
) -> None:
    args = (job.name, job.status.revision, job.status.version, job.model_dump_json(), epoch)
    if expected_revision is None:
        status = await tx.conn.execute(
            "INSERT INTO jobs (name, revision, version, record, epoch)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            *args,
        )
        if status == "INSERT 0 0":
            raise Conflict(f"job {job.name!r} already exists")
    else:
        status = await tx.conn.execute(
            "UPDATE jobs SET revision = $2, version = $3, record = $4, epoch = $5"
            " WHERE name = $1 AND revision = $6",
            *args,
            expected_revision,
        )
        if status != "UPDATE 1":
            raise Conflict(
                f"job {job.name!r} changed concurrently (expected revision {expected_revision})"
            )
    tx.keys.add(f"job:{job.name}")


async def _insert_events(tx: _Tx, events: Sequence[Event]) -> None:
    if not events:
        return
    # Held to the commit: events commit in id order (see EVENTS_LOCK).
    await tx.conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
    await tx.conn.executemany(
        'INSERT INTO events (time, job, node, kind, old, new, reason, "by", epoch)'
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (e.time, *map(_text, (e.job, e.node, e.kind, e.old, e.new, e.reason, e.by)), tx.epoch)
            for e in events
        ],
    )
    tx.events = True
    tx.keys.add("events")


def _assignment(row: asyncpg.Record) -> AssignmentRecord:
    return AssignmentRecord(
        node_id=row["node_id"],
        job=row["job"],
        version=row["version"],
        generation=row["generation"],
        assigned_at=_utc(row["assigned_at"]),
    )


def _token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord.model_validate_json(row["record"])


def _listing_changed(old: NodeRecord, new: NodeRecord) -> bool:
    """Whether a report changed what listings of nodes show beyond liveness."""
    return (old.status, old.resources, old.conditions) != (
        new.status,
        new.resources,
        new.conditions,
    )


def _utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime. asyncpg writes ``ZERO_TIME`` (datetime.min)
    as ``-infinity`` and reads that back as a naive datetime.min."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _text(value: str) -> str:
    """``value`` as a text column can hold it: PostgreSQL text has no NUL character."""
    return value.replace("\x00", "\ufffd")


def _check_text(*values: str) -> None:
    """Raise ValueError unless each value can be sent as UTF-8 (no lone surrogate)."""
    for value in values:
        value.encode()


def _numbered(sql: str) -> str:
    """SQLite's ``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ..."""
    numbers = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _m: f"${next(numbers)}", sql)


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _call(listener: Callable[..., None], *args: Any) -> None:
    """Call a listener; one that fails must not stop the others (nor a commit's caller)."""
    try:
        listener(*args)
    except Exception:
        log.exception("store_listener_failed")
