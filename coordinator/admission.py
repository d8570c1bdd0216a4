"""Admission control for agent traffic: more than a coordinator can take at once is
answered at once with a 503 and a jittered ``Retry-After``, before any work.

A coordinator that starts under a whole fleet (a restart, a failover) is asked by every
agent at about the same moment. In one asyncio process each request that has arrived is a
task, and they queue for the one event loop: answered in turn, the last wait longer than
their deadline (10 s), give up, and ask again, so the queue never drains. Capping the
requests being worked on, and telling the rest when to come back (a random 1 to
``retry_after_max`` seconds, so they do not all come back together), keeps every answer
fast and spreads the fleet's return over a few seconds.

A long-poll counts while it is worked on (its token and its node read), not while it
waits: ten thousand held polls cost memory, not the event loop. A shed agent is not
marked down for it: the coordinator judges no silence until a whole TTL after its start
(``ObservationWindow``), and a storm is answered well within that (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

AGENT_PATHS = frozenset(
    {"/v1/agent/assignments", "/v1/agent/report", "/v1/agent/register", "/v1/agent/token"}
)

AGENT_REQUEST_LIMIT = 256
"""Agent requests worked on at once (held long-polls not counted). A report or a poll takes
well under a millisecond of the loop: 256 queued are a quarter of a second of work."""

REGISTRATION_LIMIT = 64
"""Registrations worked on at once, within AGENT_REQUEST_LIMIT: each is several writes."""

RETRY_AFTER_MAX = 5
"""A shed request is told to come back after 1 to this many seconds, at random."""

_ADMITTED = web.RequestKey("admitted", str)


@dataclass
class AdmissionStats:
    shed: int = 0
    admitted: int = 0


class AgentAdmission:
    """Counts the agent requests being worked on; refuses the ones over the limits."""

    def __init__(
        self,
        rand: Callable[[], float],
        limit: int = AGENT_REQUEST_LIMIT,
        registrations: int = REGISTRATION_LIMIT,
        retry_after_max: int = RETRY_AFTER_MAX,
    ) -> None:
        self._rand = rand
        self.limit = limit
        self.registration_limit = registrations
        self.retry_after_max = retry_after_max
        self.working = 0
        self.registering = 0
        self.stats = AdmissionStats()

    def admit(self, request: web.Request) -> bool:
        """Whether to work on ``request`` now; an admitted one must be ``release``d."""
        path = request.path
        if path not in AGENT_PATHS:
            return True
        registering = path == "/v1/agent/register"
        if self.working >= self.limit or (
            registering and self.registering >= self.registration_limit
        ):
            self.stats.shed += 1
            return False
        self.working += 1
        if registering:
            self.registering += 1
        request[_ADMITTED] = path
        self.stats.admitted += 1
        return True

    def release(self, request: web.Request) -> None:
        """The request's work is done (or it has started to wait); idempotent."""
        path = request.get(_ADMITTED)
        if path is None:
            return
        request[_ADMITTED] = ""
        if not path:
            return
        self.working -= 1
        if path == "/v1/agent/register":
            self.registering -= 1

    def retry_after(self) -> int:
        """Whole seconds (as ``Retry-After`` requires), 1 to ``retry_after_max``, at random."""
        spread = max(1, self.retry_after_max)
        return 1 + min(spread - 1, int(self._rand() * spread))
