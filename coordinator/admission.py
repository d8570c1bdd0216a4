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

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from shared.clock import ZERO_TIME, Clock

AGENT_PATHS = frozenset(
    {"/v1/agent/assignments", "/v1/agent/report", "/v1/agent/register", "/v1/agent/token"}
)

AGENT_REQUEST_LIMIT = 256
"""Agent requests worked on at once (held long-polls not counted). A report or a poll takes
well under a millisecond of the loop: 256 queued are a quarter of a second of work."""

REGISTRATION_LIMIT = 64
"""Registrations worked on at once, within AGENT_REQUEST_LIMIT: each is several writes."""

RETRY_AFTER_MAX = 5
"""A shed request is told to come back after 1 to this many seconds, at random, or over a
longer spread when more agents are refused each second than are admitted (``retry_after``)."""

RETRY_AFTER_CEILING = 60
"""The longest spread: agents refused in a storm return within a minute. (No node is marked
down meanwhile: the node monitor counts silence only from the last refusal.)"""

ADMITTED_FLOOR = 50
"""The admission rate assumed when fewer were admitted in the last second (a start)."""

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
        *,
        clock: Clock | None = None,
    ) -> None:
        self._rand = rand
        self._clock = clock
        self.limit = limit
        self.registration_limit = registrations
        self.retry_after_max = retry_after_max
        self.working = 0
        self.registering = 0
        self.stats = AdmissionStats()
        self.last_shed_at: datetime = ZERO_TIME
        """When an agent request was last refused (wall clock; ZERO_TIME: never)."""
        # Refused and admitted agent requests in this second and the one before it.
        self._second = 0
        self._counts = [0, 0]  # this second: shed, admitted
        self._before = [0, 0]  # the second before

    def admit(self, request: web.Request) -> bool:
        """Whether to work on ``request`` now; an admitted one must be ``release``d."""
        path = request.path
        if path not in AGENT_PATHS:
            return True
        registering = path == "/v1/agent/register"
        self._roll()
        if self.working >= self.limit or (
            registering and self.registering >= self.registration_limit
        ):
            self.stats.shed += 1
            self._counts[0] += 1
            if self._clock is not None:
                self.last_shed_at = self._clock.now()
            return False
        self._counts[1] += 1
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

    def _roll(self) -> None:
        if self._clock is None:
            return
        second = int(self._clock.monotonic())
        if second != self._second:
            self._before = self._counts if second == self._second + 1 else [0, 0]
            self._counts = [0, 0]
            self._second = second

    def spread(self) -> int:
        """Seconds over which refused agents are told to come back: ``retry_after_max``,
        or, when more are refused each second than admitted, as many seconds as it takes
        to admit them at the rate of the last second (so that a storm of 10,000 agents
        does not knock 10,000 times every few seconds: refusals cost work too)."""
        shed = max(self._counts[0], self._before[0])
        admitted = max(self._counts[1], self._before[1], ADMITTED_FLOOR)
        needed = math.ceil(shed / admitted) + 1
        return max(1, self.retry_after_max, min(RETRY_AFTER_CEILING, needed))

    def retry_after(self) -> int:
        """Whole seconds (as ``Retry-After`` requires), 1 to ``spread()``, at random."""
        spread = self.spread()
        return 1 + min(spread - 1, int(self._rand() * spread))
