"""Capped, jittered exponential backoff as a pure function of the attempt number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """``base * 2**attempt`` seconds, capped at ``cap``, with the upper half jittered."""

    base: float = 0.5
    cap: float = 30.0


def backoff_delay(attempt: int, policy: BackoffPolicy, rand: Callable[[], float]) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based); ``rand`` returns [0, 1).

    Equal jitter: half of the capped exponential delay is fixed, the other half random,
    so a fleet that lost its coordinator at the same moment does not retry in lockstep.
    """
    ceiling = min(policy.cap, policy.base * 2.0 ** min(max(attempt, 0), 62))
    return ceiling / 2 + ceiling / 2 * min(max(rand(), 0.0), 1.0)
