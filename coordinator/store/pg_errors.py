"""Which PostgreSQL failures are an outage (503, retry) rather than a bug (500), and how a
database URL is named in messages (never with its password)."""

from __future__ import annotations

import re

import asyncpg

from shared.errors import StoreError, StoreUnavailable

OUTAGE_CLASSES = frozenset(
    {
        "08",  # connection exception: refused, reset, lost in the middle of a query
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "57",  # operator intervention: shutting down, starting up, crash recovery, canceled
        "58",  # system error: I/O error
    }
)
"""SQLSTATE classes of a failure of the server or the way to it, not of the statement."""

OUTAGE_STATES = frozenset(
    {
        "25006",  # read-only transaction: connected to a standby (a failover in progress)
        "25P03",  # idle-in-transaction timeout: the server dropped a stalled transaction
        "40001",  # serialization failure: the same transaction may commit when retried
        "40P01",  # deadlock detected: likewise
        "55P03",  # lock not available (lock_timeout)
    }
)

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
"""What a database call raises (OSError: the socket; TimeoutError is one)."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or could not take the write
    now, so that the same call may succeed later; anything else is a bug."""
    if isinstance(exc, OSError):  # refused, reset, unreachable, timed out
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in OUTAGE_CLASSES or state in OUTAGE_STATES
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "connection was closed in the middle of operation"
        return "closed" in str(exc)
    # InternalClientError: the server ended the session while we were not looking (a
    # process resumed after SIGSTOP finds its idle-in-transaction session gone).
    return isinstance(exc, asyncpg.InternalClientError)


def redact(url: str) -> str:
    """``url`` with its password (in the user info or a ``password=`` parameter) as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:***@{hosts}"
    tail = re.sub(r"([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{authority}{tail}"


def describe(exc: BaseException) -> str:
    """The cause in one line: its message, or its type when it has none."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def store_error(exc: BaseException, what: str, url: str) -> StoreError:
    """The error a failed database call raises: it names what failed and the database."""
    message = f"could not {what}: {describe(exc)} (database {redact(url)})"
    return StoreUnavailable(message) if is_outage(exc) else StoreError(message)
