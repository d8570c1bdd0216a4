"""The CLI's coordinator addresses: ``FLEETWAVE_ADDR`` / ``--addr`` may list several
coordinators (HA, DESIGN §8), and after a failed attempt the client asks ``may_try_next``
whether the request may go to the next one.

The rule: a request that never reached a coordinator (no connection: refused, DNS, TLS
handshake, connect timeout) may always go to the next one. A coordinator that answers 503
``store_unavailable`` changed nothing (the API's contract: a failed write is rolled back), so
that request may go on too. A connection that broke *after* the request was sent leaves its
outcome unknown: only a request that changes nothing (GET) is sent again.
"""

from __future__ import annotations

import enum
import urllib.parse
from dataclasses import dataclass

ADDR_SOURCE = "FLEETWAVE_ADDR (or --addr)"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing, so sending one twice is harmless."""
STORE_UNAVAILABLE = "store_unavailable"
"""The 503 error code of a coordinator whose database is down: nothing was changed."""


class AddressError(ValueError):
    """``FLEETWAVE_ADDR`` / ``--addr`` is not a list of coordinator URLs."""


def parse_addresses(value: str) -> tuple[str, ...]:
    """The comma-separated coordinator URLs of ``value``, in order, without repeats.

    Each must be ``http://HOST[:PORT][/PATH]`` or ``https://…``; an empty item, another
    scheme, a bad port, a query or a fragment is an ``AddressError`` naming the item.
    """
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise AddressError(f"{ADDR_SOURCE} is empty: give a coordinator URL, e.g. http://HOST:7400")
    addresses: list[str] = []
    for number, item in enumerate(items, start=1):
        if not item:
            raise AddressError(
                f"{ADDR_SOURCE} {value!r}: item {number} is empty"
                " (separate coordinator URLs with single commas)"
            )
        problem = _url_problem(item)
        if problem:
            raise AddressError(
                f"{ADDR_SOURCE}: bad coordinator address {item!r}: {problem}"
                " (write it as http://HOST:PORT or https://HOST:PORT)"
            )
        url = item.rstrip("/")
        if url not in addresses:
            addresses.append(url)
    return tuple(addresses)


def _url_problem(item: str) -> str:
    try:
        parts = urllib.parse.urlsplit(item)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in {"http", "https"}:
        return "the scheme must be http or https" if parts.scheme else "no http:// or https://"
    if not parts.hostname:
        return "no host"
    if parts.query or parts.fragment:
        return "no query or fragment allowed"
    if port == 0:
        return "port 0"
    return ""


class Failure(enum.Enum):
    """How an attempt at one coordinator failed."""

    NOT_CONNECTED = "not_connected"
    """No connection was made (refused, DNS, TLS handshake, connect timeout): nothing was sent."""
    BROKEN = "broken"
    """The connection broke after the request was (partly) sent, before a full answer."""
    UNAVAILABLE = "unavailable"
    """The coordinator answered 503."""


@dataclass(frozen=True)
class Attempt:
    """One coordinator that did not serve the request, and what it said."""

    addr: str
    failure: Failure
    problem: str
    code: str = ""
    """The error code of a 503's body (``store_unavailable`` from a coordinator)."""

    def line(self) -> str:
        return f"{self.addr}: {self.problem}"


def may_try_next(method: str, attempt: Attempt) -> bool:
    """Whether the request that failed as ``attempt`` may be sent to the next coordinator:
    never twice when it may have changed something."""
    if attempt.failure is Failure.NOT_CONNECTED or method.upper() in SAFE_METHODS:
        return True
    return attempt.failure is Failure.UNAVAILABLE and attempt.code == STORE_UNAVAILABLE


def all_failed_message(attempts: list[Attempt]) -> str:
    """Every coordinator failed: name each with what it said, then what to do."""
    lines = [f"no coordinator could serve the request (tried {len(attempts)}):"]
    lines += [f"  {attempt.line()}" for attempt in attempts]
    lines.append(
        f"Is a coordinator running at one of them? Set {ADDR_SOURCE} to the coordinators'"
        " addresses, comma-separated."
    )
    return "\n".join(lines)


def outcome_unknown_message(method: str, path: str, broken: Attempt, before: list[Attempt]) -> str:
    """A changing request whose connection broke after it was sent: it was not sent again."""
    lines = [
        f"the connection to {broken.addr} broke after the request was sent ({broken.problem}):"
        f" {method} {path} may or may not have been applied, so it was not sent to another"
        " coordinator.",
        "  Check before retrying: `fleetwave audit` lists every change a coordinator accepted"
        " (with its result), and the read commands (`fleetwave job status NAME`, `fleetwave"
        " node show NODE`, `fleetwave token list`) show the current state.",
    ]
    if before:
        lines.append("  Tried before it:")
        lines += [f"    {attempt.line()}" for attempt in before]
    return "\n".join(lines)
