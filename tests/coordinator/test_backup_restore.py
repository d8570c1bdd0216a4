"""The backup and restore procedures of docs/operations.md give a database the coordinator
opens with every job, version and node (real app on a real SQLite file; fake clock)."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordinator.store.migrations import MIGRATIONS
from coordinator.store.sqlite import SqliteStore
from coordinator.tokens import hash_token
from shared.errors import StoreError
from tests.coordinator.conftest import Harness, web_spec


async def populate(harness: Harness) -> dict[str, str]:
    """Two nodes, a job with two versions rolled out to them, and a second job."""
    tokens = {}
    for name, port in (("node-1", "8001"), ("node-2", "8002")):
        _, tokens[name] = await harness.register(name, port=port)
    for greeting in ("v1", "v2"):
        spec = web_spec() | {"task": web_spec()["task"] | {"env": {"GREETING": greeting}}}
        resp = await harness.put_job(spec)
        assert resp.status in (200, 201), await resp.text()
        await harness.driver.evaluate("web")
    resp = await harness.put_job(web_spec("api"))
    assert resp.status == 201, await resp.text()
    await harness.driver.evaluate("api")
    return tokens


async def content(store: SqliteStore) -> dict[str, Any]:
    """What an operator relies on after a restore, in comparable form."""
    jobs = {job.name: job.model_dump(mode="json") for job in await store.list_jobs()}
    versions = {
        name: [v.model_dump(mode="json") for v in await store.list_versions(name)] for name in jobs
    }
    nodes = {node.name: node.model_dump(mode="json") for node in await store.list_nodes()}
    assignments = {name: await store.job_assignments(name) for name in jobs}
    return {"jobs": jobs, "versions": versions, "nodes": nodes, "assignments": assignments}


async def opened(path: Path) -> dict[str, Any]:
    """Open ``path`` as the coordinator does (migrations included) and read it back."""
    store = SqliteStore(path)
    await store.open()
    try:
        return await content(store)
    finally:
        await store.close()


def restore(backup: Path, data_dir: Path) -> Path:
    """The documented restore: the backup becomes ``fleetwave.db`` of an empty data dir."""
    data_dir.mkdir()
    target = data_dir / "fleetwave.db"
    shutil.copyfile(backup, target)
    return target


DOC_DB = "/var/lib/fleetwave/fleetwave.db"
DOC_BACKUP = "/var/backups/fleetwave-$(date +%F).db"


def documented_command(kind: str) -> str:
    """The ``sqlite3`` backup command line of docs/operations.md that uses ``kind``."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"sqlite3 {DOC_DB} ") and kind in line and DOC_BACKUP in line:
            return line
    raise AssertionError(f"docs/operations.md has no sqlite3 {kind} command")


def online_backup(source: Path, dest: Path, pages: int = -1) -> None:
    """SQLite's online backup API, as ``sqlite3 DB ".backup FILE"`` uses it."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(dest)) as dst,
    ):
        src.backup(dst, pages=pages)


class TestOnlineBackup:
    async def test_backup_while_the_store_is_open_restores_everything(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """A backup taken through the backup API while the store has the file open (its latest
        writes still only in the WAL) restores every job, version, node and assignment."""
        tokens = await populate(harness)
        wal = Path(f"{harness.path}-wal")
        assert (await asyncio.to_thread(wal.stat)).st_size > 0  # writes not yet checkpointed
        expected = await content(harness.store)
        assert set(expected["jobs"]) == {"web", "api"}
        assert len(expected["versions"]["web"]) == 2
        assert expected["assignments"]["web"]  # the engine's decisions are in it too

        backup = tmp_path / "backup.db"
        await asyncio.to_thread(online_backup, harness.path, backup)

        restored = restore(backup, tmp_path / "restored")
        assert await opened(restored) == expected
        # Agents keep working after a restore: their node tokens are still known.
        store = SqliteStore(restored)
        await store.open()
        try:
            for name, token in tokens.items():
                node = await store.node_by_token_hash(hash_token(token))
                assert node is not None
                assert node.name == name
        finally:
            await store.close()

    async def test_backup_during_writes_is_consistent(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        """A page-by-page backup while jobs are being submitted yields a consistent database:
        every job it holds has all its versions, and nothing committed before it is missing."""
        await populate(harness)
        before = set((await content(harness.store))["jobs"])
        backup = tmp_path / "backup.db"
        copying = asyncio.create_task(asyncio.to_thread(online_backup, harness.path, backup, 1))
        for i in range(20):
            resp = await harness.put_job(web_spec(f"job-{i}"))
            assert resp.status == 201, await resp.text()
        await copying

        got = await opened(restore(backup, tmp_path / "restored"))
        assert before <= set(got["jobs"])
        for name, job in got["jobs"].items():
            numbers = [v["version"] for v in got["versions"][name]]
            assert numbers == list(range(1, job["status"]["version"] + 1))

    @pytest.mark.parametrize("command", [".backup", "VACUUM INTO"])
    async def test_documented_shell_command(
        self, harness: Harness, tmp_path: Path, command: str
    ) -> None:
        """The exact ``sqlite3`` command docs/operations.md gives works on the live database."""
        await populate(harness)
        expected = await content(harness.store)
        line = documented_command(command)
        backup = tmp_path / "fleetwave-backup.db"
        script = line.replace(DOC_DB, shlex.quote(str(harness.path))).replace(
            DOC_BACKUP, str(backup)
        )
        proc = await asyncio.create_subprocess_exec("sh", "-c", script, stderr=subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err
        with contextlib.closing(sqlite3.connect(backup)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert await opened(restore(backup, tmp_path / "restored")) == expected


class TestSchemaVersions:
    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database written by a newer coordinator is refused with a message saying so,
        and left unchanged."""
        path = tmp_path / "fleetwave.db"
        store = SqliteStore(path)
        await store.open()
        await store.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version) VALUES (?)", (len(MIGRATIONS) + 1,)
            )
            conn.commit()
        newer = SqliteStore(path)
        with pytest.raises(StoreError, match="newer than this coordinator knows"):
            await newer.open()
        await newer.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            (top,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        assert top == len(MIGRATIONS) + 1

    async def test_migrations_are_recorded_once(self, tmp_path: Path) -> None:
        """Opening a database again applies no migration twice: each version is recorded once."""
        path = tmp_path / "fleetwave.db"
        for _ in range(2):
            store = SqliteStore(path)
            await store.open()
            await store.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
