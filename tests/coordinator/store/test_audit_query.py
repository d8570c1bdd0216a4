"""Pages of the audit log from a real SqliteStore on a real file: forwards and newest first,
between ``after`` and ``before``, filtered by job and token, each read along an index in id
order (EXPLAIN QUERY PLAN) rather than by sorting every matching entry."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from coordinator.domain.records import AuditEntry
from coordinator.store.sqlite import SqliteStore, audit_query
from tests.coordinator.store.conftest import CLOCK

CI_ID = "0d7c6f52-3c1e-4d84-9f0a-6b1f0e2a9c11"
ONCALL_ID = "5a0e2c47-8c0a-4b7e-a1f3-2d9e8b7c6a55"
TOKENS = [
    (CI_ID, "ci"),
    (ONCALL_ID, "oncall"),
    ("bootstrap-admin", "bootstrap-admin"),
    ("", ""),  # a refusal without a valid token
]
JOBS = ["web", "api", ""]
ENTRIES = 211

FILTERS: list[tuple[str | None, str | None]] = [
    (None, None),
    ("web", None),
    (None, "ci"),
    (None, CI_ID),
    (None, "bootstrap-admin"),
    ("api", "oncall"),
    ("api", ONCALL_ID),
    ("nope", None),
    (None, "5a0e2c47-0000-0000-0000-000000000000"),
]


def entry(i: int) -> AuditEntry:
    token_id, token_name = TOKENS[i % len(TOKENS)]
    return AuditEntry(
        time=CLOCK.now(),
        token_id=token_id,
        token_name=token_name,
        method="POST",
        path=f"/v1/x/{i}",
        job=JOBS[i % len(JOBS)] if i % 7 else "web",
        status=200,
    )


def matches(e: AuditEntry, job: str | None, token: str | None) -> bool:
    return (job is None or e.job == job) and (token is None or token in (e.token_name, e.token_id))


@pytest.fixture
async def log(store: SqliteStore) -> list[AuditEntry]:
    """ENTRIES entries with ids 1.., the first 10 then pruned (ids do not start at 1)."""
    ids = await store.write_audit([entry(i) for i in range(ENTRIES)], [])
    await store.prune_audit(before=CLOCK.now(), keep_rows=ENTRIES - 10)
    return [entry(i).model_copy(update={"id": id_}) for i, id_ in enumerate(ids)][10:]


@pytest.mark.parametrize(("job", "token"), FILTERS)
async def test_newest_first_pages_back_through_every_match(
    store: SqliteStore, log: list[AuditEntry], job: str | None, token: str | None
) -> None:
    """Newest first, each page's smallest id as the next ``before``, the pages hold every
    matching entry once, newest first, and stop with a short page."""
    seen: list[int] = []
    before: int | None = None
    while True:
        page = await store.list_audit(
            before=before, limit=7, job=job, token=token, newest_first=True
        )
        seen += [e.id for e in page]
        if len(page) < 7:
            break
        before = page[-1].id
    assert seen == [e.id for e in reversed(log) if matches(e, job, token)]


@pytest.mark.parametrize(("job", "token"), FILTERS)
async def test_oldest_first_between_after_and_before(
    store: SqliteStore, log: list[AuditEntry], job: str | None, token: str | None
) -> None:
    """Oldest first, only ids strictly between ``after`` and ``before``."""
    after, before = log[20].id, log[150].id
    page = await store.list_audit(after=after, before=before, limit=1000, job=job, token=token)
    assert [e.id for e in page] == [
        e.id for e in log if after < e.id < before and matches(e, job, token)
    ]


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize(
    ("job", "token", "index"),
    [
        (None, None, "INTEGER PRIMARY KEY"),
        ("web", None, "INDEX audit_job"),
        (None, "ci", "INDEX audit_token"),
        (None, CI_ID, "INDEX audit_token"),
        ("web", "ci", "INDEX audit_"),
    ],
)
async def test_each_page_walks_an_index_in_id_order(
    store: SqliteStore,
    log: list[AuditEntry],
    job: str | None,
    token: str | None,
    index: str,
    newest_first: bool,
) -> None:
    """No filter makes SQLite read every matching entry and sort them: the page walks the
    rowid, audit_job or audit_token (token ids through their name) and stops at ``limit``."""
    sql, params = audit_query(
        after=0, before=10**6, limit=50, job=job, token=token, newest_first=newest_first
    )
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in plan), plan
    assert plan[0].startswith(f"SEARCH audit USING {index}"), plan
