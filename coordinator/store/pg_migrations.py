"""PostgreSQL schema migrations, applied in order and recorded in ``schema_migrations``.

Never edit a migration that has shipped; append a new one. Several coordinators may start
at once against one database: each migrates inside one transaction that first takes an
advisory lock, so exactly one applies each migration and the others find it applied.

Records are pydantic models stored as ``json`` (kept verbatim: unlike ``jsonb`` it takes
a ``\\u0000`` in an agent's message, as SQLite does); the columns beside them are what
queries filter, order or update on their own. A node's liveness (``last_seq``,
``last_heartbeat``, ``load``) and ``assign_index`` live only in columns, so that a batch of
heartbeats and an engine decision never overwrite one another's part of the row.
``epoch`` records which leader's engine wrote a row (NULL: not an engine write).
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.errors import StoreError

MIGRATION_LOCK = 0x46_57_4D_49_47  # "FWMIG"
"""The advisory lock key held while migrating."""

MIGRATIONS: list[str] = [
    # 1: first schema
    """
    CREATE TABLE jobs (
        name text PRIMARY KEY,
        revision bigint NOT NULL,
        version bigint NOT NULL,
        record json NOT NULL,
        epoch bigint
    );
    CREATE TABLE job_versions (
        job text NOT NULL,
        version bigint NOT NULL,
        spec json NOT NULL,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (job, version)
    );
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        name text NOT NULL CONSTRAINT nodes_name UNIQUE,
        token_hash text NOT NULL CONSTRAINT nodes_token_hash UNIQUE,
        next_token_hash text NOT NULL DEFAULT '',
        record json NOT NULL,
        last_seq bigint NOT NULL DEFAULT 0,
        last_heartbeat timestamptz NOT NULL,
        load json NOT NULL,
        assign_index bigint NOT NULL DEFAULT 1,
        epoch bigint
    );
    CREATE INDEX nodes_next_token_hash ON nodes (next_token_hash) WHERE next_token_hash <> '';
    CREATE TABLE assignments (
        node_id text NOT NULL REFERENCES nodes (id),
        job text NOT NULL,
        version bigint NOT NULL,
        generation bigint NOT NULL DEFAULT 0,
        assigned_at timestamptz NOT NULL,
        epoch bigint,
        PRIMARY KEY (node_id, job)
    );
    CREATE INDEX assignments_job ON assignments (job);
    CREATE TABLE executions (
        node_id text NOT NULL REFERENCES nodes (id),
        job text NOT NULL,
        record json NOT NULL,
        PRIMARY KEY (node_id, job)
    );
    CREATE INDEX executions_job ON executions (job);
    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time timestamptz NOT NULL,
        job text NOT NULL DEFAULT '',
        node text NOT NULL DEFAULT '',
        kind text NOT NULL,
        old text NOT NULL DEFAULT '',
        new text NOT NULL DEFAULT '',
        reason text NOT NULL DEFAULT '',
        "by" text NOT NULL DEFAULT '',
        epoch bigint
    );
    CREATE INDEX events_job ON events (job, id);
    CREATE TABLE tokens (
        id text PRIMARY KEY,
        name text NOT NULL,
        secret_hash text NOT NULL CONSTRAINT tokens_secret_hash UNIQUE,
        record json NOT NULL
    );
    CREATE INDEX tokens_name ON tokens (name);
    CREATE TABLE audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time timestamptz NOT NULL,
        token_id text NOT NULL DEFAULT '',
        token_name text NOT NULL DEFAULT '',
        role text NOT NULL DEFAULT '',
        remote text NOT NULL DEFAULT '',
        method text NOT NULL,
        path text NOT NULL,
        job text NOT NULL DEFAULT '',
        node text NOT NULL DEFAULT '',
        status integer NOT NULL DEFAULT 0,
        request_id text NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_time ON audit (time);
    CREATE INDEX audit_job ON audit (job, id);
    CREATE INDEX audit_token ON audit (token_name, id);
    CREATE INDEX audit_anonymous ON audit (token_id, status, id);
    CREATE TABLE store_probe (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pad bytea NOT NULL
    );
    """,
    # 2: leadership: one lease row with its epoch, and the coordinators sharing the database
    """
    CREATE TABLE lease (
        id integer PRIMARY KEY CHECK (id = 1),
        holder text NOT NULL DEFAULT '',
        address text NOT NULL DEFAULT '',
        epoch bigint NOT NULL DEFAULT 0,
        expires_at timestamptz NOT NULL DEFAULT '-infinity'
    );
    INSERT INTO lease (id) VALUES (1);
    CREATE TABLE members (
        id text PRIMARY KEY,
        address text NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen timestamptz NOT NULL
    );
    """,
    # 3: the process behind a member id: two coordinators given the same id can never both
    # hold the lease (the second waits, and says why), and a restarted one is a new holder
    """
    ALTER TABLE lease ADD COLUMN instance text NOT NULL DEFAULT '';
    ALTER TABLE members ADD COLUMN instance text NOT NULL DEFAULT '';
    """,
]


async def migrate(conn: asyncpg.Connection | PoolConnectionProxy) -> list[int]:
    """Bring the schema up to date in one transaction; the numbers of the migrations this
    call applied (none when another coordinator did, or nothing was missing)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(
            await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        )
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this coordinator knows"
                f" ({len(MIGRATIONS)}); upgrade fleetwave before using this database"
            )
        applied = []
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            applied.append(number)
        return applied
