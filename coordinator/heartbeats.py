"""The heartbeat intervals this coordinator hands out, and the loop that sizes them to the
fleet. Runs on every coordinator: each sizes by the fleet it reads from the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import timedelta

import structlog

from coordinator.domain.heartbeats import (
    HeartbeatPolicy,
    fleet_interval,
    is_heartbeating,
    jittered,
    longest_handed_out,
    node_ttl,
    offered_rate,
)
from coordinator.engine.observation import ObservationWindow
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import Store
from shared.clock import Clock
from shared.errors import StoreUnavailable

log = structlog.get_logger("fleetwave.heartbeats")

RESIZE_SECONDS = 5.0
"""How often the fleet is counted again. A fleet that grows faster than this overshoots the
budget by what joined meanwhile, until the next count."""


class Heartbeats:
    """The interval for the fleet as last counted, and what each node was last handed.

    The last two intervals handed to each node are kept in memory: an agent may not have
    received the latest answer yet, so it may still be using the one before. A node this
    coordinator has not answered since it started (or that another coordinator answered) is
    judged by the longest interval any answer for the current fleet carries.
    """

    def __init__(self, policy: HeartbeatPolicy, rand: Callable[[], float]) -> None:
        self.policy = policy
        self._rand = rand
        self._handed: dict[str, tuple[float, float]] = {}
        self.resize(0)

    @classmethod
    def fixed(cls, interval: float) -> Heartbeats:
        """Always ``interval``, without jitter or budget: the TTL is 3 intervals (tests)."""
        return cls(HeartbeatPolicy(interval=interval, jitter=0.0), rand=lambda: 0.0)

    def resize(self, fleet: int, heartbeating: Collection[str] | None = None) -> None:
        """Size the interval for ``fleet`` nodes; forget what was handed to nodes no longer
        ``heartbeating`` (down, revoked, purged: a node that comes back is answered anew)."""
        self.fleet = fleet
        self.interval = fleet_interval(fleet, self.policy)
        # Most nodes were last handed an interval for the current fleet: their TTL is this
        # one, computed once (the node monitor asks for every node at every tick).
        self._fleet_longest = longest_handed_out(self.interval, self.policy)
        self._fleet_ttl = node_ttl(self.policy, self.interval)
        if heartbeating is not None:
            self._handed = {n: p for n, p in self._handed.items() if n in heartbeating}
        self._peak = max((max(pair) for pair in self._handed.values()), default=0.0)

    def hand_out(self, node_id: str) -> float:
        """The interval for one answer to ``node_id``, remembered for its TTL."""
        interval = jittered(self.interval, self.policy, self._rand)
        previous = self._handed.get(node_id, (0.0, 0.0))[1]
        self._handed[node_id] = (previous, interval)
        self._peak = max(self._peak, interval)
        return interval

    def ttl(self, node_id: str) -> timedelta:
        """How long ``node_id`` may be silent before it is down."""
        pair = self._handed.get(node_id)
        if pair is None or max(pair) <= self._fleet_longest:
            return self._fleet_ttl
        return node_ttl(self.policy, self.interval, max(pair))

    def longest(self) -> timedelta:
        """The longest interval any agent may be using now."""
        return timedelta(seconds=max(self._fleet_longest, self._peak))

    def longest_ttl(self) -> timedelta:
        """The TTL of a node on the longest interval: the grace a coordinator gives every
        node after its own start or pause."""
        return node_ttl(self.policy, self.interval, self._peak)

    def shortest_ttl(self) -> timedelta:
        """The TTL of a node on an interval for the current fleet."""
        return self._fleet_ttl

    @property
    def offered_rate(self) -> float:
        """Heartbeats per second the fleet sends at most (jitter only lowers it)."""
        return offered_rate(self.fleet, self.interval)


class HeartbeatPacer:
    """Counts the heartbeating fleet every RESIZE_SECONDS and resizes the interval; tells
    the observation window how long agents may now be silent, and the metrics."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        heartbeats: Heartbeats,
        window: ObservationWindow,
        metrics: CoordinatorMetrics,
    ) -> None:
        self._store = store
        self._clock = clock
        self._heartbeats = heartbeats
        self._window = window
        self._metrics = metrics

    async def tick(self) -> None:
        """Count the fleet once and apply what follows from it."""
        beats = self._heartbeats
        before = beats.interval
        live = {node.id for node in await self._store.list_nodes() if is_heartbeating(node)}
        beats.resize(len(live), live)
        self._window.pace(heartbeat=beats.longest(), grace=beats.longest_ttl())
        self._metrics.pace_heartbeats(
            interval=beats.interval,
            ttl=beats.longest_ttl().total_seconds(),
            rate=beats.offered_rate,
            budget=beats.policy.budget,
        )
        if beats.interval != before:
            log.info(
                "heartbeat_interval_resized",
                nodes=beats.fleet,
                interval_seconds=round(beats.interval, 3),
                ttl_seconds=round(beats.longest_ttl().total_seconds(), 3),
            )

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("heartbeat_resize_postponed", error=exc.message)
            except Exception:
                log.exception("heartbeat_resize_failed")
            await self._clock.sleep(RESIZE_SECONDS)
