"""A real PostgreSQL for tests: a fresh database per test, dropped afterwards.

The server is ``FLEETWAVE_TEST_PG`` (default: trust auth as ``postgres`` on 127.0.0.1:5432).
Without one, tests that need it are skipped with a message saying so; under CI
(``CI=true``) they fail instead, so that a broken service never passes as green.

Use the ``pg_url`` fixture (import it into a test module or a conftest), or
``fresh_database()`` where a fixture does not fit; ``pg_store()`` opens a PostgresStore.

``private_pg`` is a server of the test's own instead (``PrivateServer``), started from the
installed binaries in a temp dir, that the test may crash and start again: outages of the
database itself, without touching the shared server that other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

from coordinator.store.postgres import LIVENESS_FLUSH_SECONDS, PostgresStore

SERVER = os.environ.get("FLEETWAVE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A server where the test user may create databases."""


def database_url(name: str) -> str:
    """SERVER's URL with another database."""
    base, _, _ = SERVER.rpartition("/")
    return f"{base}/{name}"


def _unavailable(message: str) -> NoReturn:
    """Skip the test for want of PostgreSQL; under CI fail it instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(f"no PostgreSQL server answers at {SERVER} ({exc}); set FLEETWAVE_TEST_PG")


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
        if self._server is not None:
            return  # up already
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


# ---------------------------------------------------------------------------- a private server

PG_BIN = os.environ.get("FLEETWAVE_PG_BIN", "")
"""Where initdb, pg_ctl and postgres are (default: the newest /usr/lib/postgresql/*/bin, else
PATH)."""
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
OS_USER = "postgres"
"""Who runs the private server when the tests run as root (PostgreSQL refuses root)."""

PRIVATE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # Durability stays real: an acknowledged commit must survive the crash a test causes.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


def server_bin_dir() -> Path | None:
    """The directory holding the PostgreSQL server binaries, or None if none is installed."""
    candidates = [Path(PG_BIN)] if PG_BIN else []
    if not PG_BIN:
        versions = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in SERVER_TOOLS):
            return directory
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


class PrivateServer:
    """A PostgreSQL server of one test's own, in a temp dir: a unix socket there and a free
    TCP port on 127.0.0.1, trust authentication as ``postgres``, fsync on.

    ``stop()`` crashes it by default (``pg_ctl stop -m immediate``: no shutdown checkpoint,
    every connection cut, crash recovery at the next start); ``stop("fast")`` is a clean
    shutdown that still ends every session. ``start()`` serves again on the same port.
    """

    def __init__(self, bin_dir: Path, base: Path, port: int, run_as: list[str]) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.port = port
        self._run_as = run_as
        self.data = base / "data"
        self.log = base / "server.log"

    @property
    def url(self) -> str:
        """The ``postgres`` database over TCP (what a coordinator is given)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster (initdb's own files need no fsync: nothing is acknowledged yet)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = {
            **PRIVATE_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self, timeout: float = 30) -> None:
        """Start it and return once it accepts connections (after any crash recovery)."""
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(timeout)),
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop it (``immediate``: a crash; ``fast``: a clean shutdown); return once it is
        down."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def is_running(self) -> bool:
        status = self._call("pg_ctl", "status", "-D", str(self.data))
        return status.returncode == 0

    def close(self) -> None:
        """Stop it if it runs and remove its files."""
        if self.data.exists() and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def _call(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._run_as, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.base,  # (the server user may not enter the caller's directory)
        )

    def _run(self, tool: str, *args: str) -> None:
        done = self._call(tool, *args)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):"
                f" {done.stderr.strip() or done.stdout.strip()}\n{log}"
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A started PrivateServer, stopped and removed on exit; skipped (failed under CI) when
    no server binaries are installed, or when running as root without a ``postgres`` user."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        _unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in /usr/lib/postgresql/*/bin"
            " or on PATH; install postgresql or set FLEETWAVE_PG_BIN"
        )
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="fleetwave-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            shutil.rmtree(base)
            _unavailable(f"running as root, and PostgreSQL refuses root: no {OS_USER!r} user")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = (
            ["runuser", "-u", OS_USER, "--"]
            if shutil.which("runuser")
            else ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
        )
    server = PrivateServer(bin_dir, base, _free_port(), run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    """A PostgreSQL server of this test's own, which it may stop and start (see
    ``PrivateServer``)."""
    with private_server() as server:
        yield server
