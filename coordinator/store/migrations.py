"""Schema migrations, applied in order and recorded in ``schema_migrations``.

Never edit a migration that has shipped; append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: first schema
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        version INTEGER NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE job_versions (
        job TEXT NOT NULL,
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (job, version)
    );
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        assign_index INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX nodes_name ON nodes (name);
    CREATE TABLE assignments (
        node_id TEXT NOT NULL REFERENCES nodes (id),
        job TEXT NOT NULL,
        version INTEGER NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        assigned_at TEXT NOT NULL,
        PRIMARY KEY (node_id, job)
    );
    CREATE INDEX assignments_job ON assignments (job);
    CREATE TABLE executions (
        node_id TEXT NOT NULL REFERENCES nodes (id),
        job TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (node_id, job)
    );
    CREATE INDEX executions_job ON executions (job);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        job TEXT NOT NULL DEFAULT '',
        node TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        old TEXT NOT NULL DEFAULT '',
        new TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_job ON events (job, id);
    """,
    # 2: the table /readyz writes to while writes fail, to notice when they work again
    """
    CREATE TABLE store_probe (
        id INTEGER PRIMARY KEY,
        pad BLOB NOT NULL
    );
    """,
    # 3: a durable floor for report seqs, since heartbeats are acknowledged from memory
    """
    ALTER TABLE nodes ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: managed tokens (operator and join); only the secret's hash is stored
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL
    );
    """,
    # 5: who did what: the token behind an event, and the audit log of operator requests
    """
    ALTER TABLE events ADD COLUMN by TEXT NOT NULL DEFAULT '';
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        token_id TEXT NOT NULL DEFAULT '',
        token_name TEXT NOT NULL DEFAULT '',
        role TEXT NOT NULL DEFAULT '',
        remote TEXT NOT NULL DEFAULT '',
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        job TEXT NOT NULL DEFAULT '',
        node TEXT NOT NULL DEFAULT '',
        status INTEGER NOT NULL DEFAULT 0,
        request_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_time ON audit (time);
    CREATE INDEX audit_job ON audit (job, id);
    CREATE INDEX audit_token ON audit (token_name, id);
    CREATE INDEX audit_anonymous ON audit (token_id, status, id);
    """,
]
