"""Change notification between coordinators sharing one PostgreSQL database.

A write transaction names what it changed in ``pg_notify`` payloads (delivered when it
commits): ``<member id> <key> <key> ...``. Keys: ``job:<name>`` (the job's record,
assignments or executions), ``node:<id>`` (that node's assignment index), ``nodes`` (the
node set, or a node's status, approval, revocation or registration), ``events``,
``tokens``. Each coordinator LISTENs on one dedicated connection and hands the keys of the
other members' notifications to its listeners; after a lost connection it cannot know
what it missed, so it hands them ``["*"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import asyncpg
import structlog

from coordinator.store.pg_errors import DB_ERRORS, describe, redact

log = structlog.get_logger("fleetwave.store")

CHANNEL = "fleetwave"
PAYLOAD_LIMIT = 7900
"""Bytes per notification (PostgreSQL refuses payloads of 8000 bytes or more)."""
EVERYTHING = "*"
"""The key handed to listeners when anything may have changed."""
CHECK_INTERVAL = 5.0
"""Seconds between two checks that the LISTEN connection still answers (a silently dropped
connection shows no error until something is sent on it)."""
RECONNECT_MIN, RECONNECT_MAX = 0.1, 2.0
"""Back-off bounds, in seconds, between attempts to connect again."""


def payloads(member_id: str, keys: Iterable[str]) -> list[str]:
    """The notifications that carry ``keys`` from ``member_id``, each under PAYLOAD_LIMIT
    bytes; none when there is no key."""
    chunks: list[str] = []
    current = member_id
    for key in sorted(set(keys)):
        if len(current.encode()) + 1 + len(key.encode()) >= PAYLOAD_LIMIT:
            chunks.append(current)
            current = member_id
        current = f"{current} {key}"
    if current != member_id:
        chunks.append(current)
    return chunks


def parse(payload: str) -> tuple[str, list[str]]:
    """The sending member and the keys of one notification."""
    member, *keys = payload.split(" ")
    return member, keys


class ChangeListener:
    """One LISTEN connection that keeps itself connected and reports other members' keys."""

    def __init__(
        self,
        url: str,
        member_id: str,
        deliver: Callable[[list[str]], None],
        *,
        connect_timeout: float,
    ) -> None:
        self._url = url
        self._member_id = member_id
        self._deliver = deliver
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen from now on (raises what connecting raised); then keep listening."""
        await self._connect()
        self._task = asyncio.create_task(self._keep_listening(), name="pg-listen")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self._url,
            timeout=self._connect_timeout,
            server_settings={"application_name": f"fleetwave {self._member_id} listen"[:63]},
        )
        try:
            await conn.add_listener(CHANNEL, self._received)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        self._conn = conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _keep_listening(self) -> None:
        while True:
            await self._wait_until_lost()
            await self._close()
            log.warning("store_listen_lost", database=redact(self._url))
            await self._reconnect()
            log.info("store_listen_resumed", database=redact(self._url))
            self._deliver([EVERYTHING])

    async def _wait_until_lost(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), CHECK_INTERVAL)
                return
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
            except DB_ERRORS:
                return

    async def _reconnect(self) -> None:
        delay = RECONNECT_MIN
        while True:
            try:
                await self._connect()
                return
            except DB_ERRORS as exc:
                log.debug("store_listen_connect_failed", error=describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _received(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        member, keys = parse(str(payload))
        if member != self._member_id and keys:
            self._deliver(keys)
