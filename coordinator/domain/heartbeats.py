"""Heartbeat pacing: how often agents report and how long silence is allowed, as pure
functions of the fleet's size (Nomad's adaptive heartbeats).

The coordinator hands every agent its interval: the configured one, or longer when the
fleet is so large that it would send more heartbeats per second than the budget. Each
answer stretches it by a random fraction, so agents drift apart instead of beating in
step. A node is down only after a multiple of the longest interval it may still be using.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from coordinator.domain.records import NodeRecord
from shared.nodes import NodeStatus

JITTER = 0.1
"""By default an answer's interval is the fleet interval times U(1, 1 + JITTER). Only ever
longer: the rate stays within the budget and no agent beats faster than configured."""


@dataclass(frozen=True)
class HeartbeatPolicy:
    """What the operator configured: ``heartbeat_interval``, ``heartbeat_budget``,
    ``heartbeat_ttl_multiplier`` and ``heartbeat_ttl`` (0: none)."""

    interval: float
    """Seconds: the shortest interval ever handed out."""
    budget: float = math.inf
    """Heartbeats per second the whole fleet may send (inf: the interval never grows)."""
    ttl_multiplier: float = 3.0
    """A node is down after this many of the longest intervals it may be using."""
    ttl_floor: float = 0.0
    """Seconds: an explicit ``heartbeat_ttl``; no node is down sooner."""
    jitter: float = JITTER
    """Each answer's interval is stretched by up to this fraction."""


def fleet_interval(fleet: int, policy: HeartbeatPolicy) -> float:
    """The interval for a fleet of ``fleet`` heartbeating nodes: never below the configured
    one, and long enough that ``fleet / interval`` stays within the budget."""
    return max(policy.interval, fleet / policy.budget)


def jittered(interval: float, policy: HeartbeatPolicy, rand: Callable[[], float]) -> float:
    """The interval one answer carries: ``interval`` stretched by ``rand()`` (in [0, 1])
    times the policy's jitter, in whole milliseconds but never below ``interval``."""
    return max(interval, round(interval * (1 + policy.jitter * rand()), 3))


def longest_handed_out(interval: float, policy: HeartbeatPolicy) -> float:
    """The longest interval an answer for this fleet interval can carry."""
    return max(interval, round(interval * (1 + policy.jitter), 3))


def offered_rate(fleet: int, interval: float) -> float:
    """Heartbeats per second the fleet sends at most on ``interval`` (jitter only lowers it)."""
    return fleet / interval if interval > 0 else 0.0


def node_ttl(policy: HeartbeatPolicy, interval: float, handed: float = 0.0) -> timedelta:
    """How long a node may be silent before it is ``down``.

    ``ttl_multiplier`` times the longest interval it may still be using: the longest an
    answer for the current fleet ``interval`` carries, or ``handed``, a longer one it was
    given before the fleet shrank (an agent learns a new interval only from its next
    answer). Never less than the configured ``heartbeat_ttl``.
    """
    may_use = max(longest_handed_out(interval, policy), handed)
    return timedelta(seconds=max(policy.ttl_floor, policy.ttl_multiplier * may_use))


def is_heartbeating(node: NodeRecord) -> bool:
    """Whether the node counts toward the fleet the interval is sized for: every node
    expected to report (pending ones too), not those ``down`` or revoked."""
    return node.status != NodeStatus.DOWN and node.revoked_at is None
