"""A real PostgreSQL for tests: a fresh database per test, dropped afterwards.

The server is ``FLEETWAVE_TEST_PG`` (default: trust auth as ``postgres`` on 127.0.0.1:5432).
Without one, tests that need it are skipped with a message saying so; under CI
(``CI=true``) they fail instead, so that a broken service never passes as green.

Use the ``pg_url`` fixture (import it into a test module or a conftest), or
``fresh_database()`` where a fixture does not fit; ``pg_store()`` opens a PostgresStore.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from coordinator.store.postgres import LIVENESS_FLUSH_SECONDS, PostgresStore

SERVER = os.environ.get("FLEETWAVE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A server where the test user may create databases."""


def database_url(name: str) -> str:
    """SERVER's URL with another database."""
    base, _, _ = SERVER.rpartition("/")
    return f"{base}/{name}"


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"no PostgreSQL server answers at {SERVER} ({exc}); set FLEETWAVE_TEST_PG"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped (its connections ended) on exit."""
    admin = await _admin()
    name = f"fw_{secrets.token_hex(6)}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield database_url(name)
        finally:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh database on the test server, for this test only."""
    async with fresh_database() as url:
        yield url


@contextlib.asynccontextmanager
async def pg_store(
    url: str, member_id: str = "", *, liveness_flush_seconds: float = LIVENESS_FLUSH_SECONDS
) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on ``url``, closed on exit."""
    store = PostgresStore(url, member_id, liveness_flush_seconds=liveness_flush_seconds)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def terminate_connections(url: str, *, application: str = "fleetwave%") -> int:
    """End the server side of the store connections to ``url``'s database (as a server
    restart or a failed network would); how many were ended."""
    admin = await _admin()
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name LIKE $2 AND pid <> pg_backend_pid()",
            url.rpartition("/")[2],
            application,
        )
        return len(rows)
    finally:
        await admin.close()


class Outage:
    """A TCP proxy in front of the test server that can fail like a database host: ``down()``
    resets every connection and refuses new ones, ``up()`` serves again on the same port."""

    def __init__(self, target: str = SERVER) -> None:
        netloc = target.partition("://")[2].partition("/")[0].rpartition("@")[2]
        host, _, port = netloc.partition(":")
        self._target = (host or "127.0.0.1", int(port or 5432))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def url(self, database_url: str) -> str:
        """``database_url`` through the proxy."""
        scheme, _, rest = database_url.partition("://")
        userinfo, at, hostpath = rest.rpartition("@")
        path = hostpath.partition("/")[2]
        return f"{scheme}://{userinfo}{at}127.0.0.1:{self.port}/{path}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()
