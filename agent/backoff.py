"""Capped, jittered exponential backoff as a pure function of the attempt number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """``base * 2**attempt`` seconds, capped at ``cap``, with the upper half jittered.

    The first retry after losing a coordinator that answered is drawn from the whole of
    ``[0, reconnect_spread)`` instead (never more than ``cap``)."""

    base: float = 0.5
    cap: float = 30.0
    reconnect_spread: float = 5.0


def backoff_delay(attempt: int, policy: BackoffPolicy, rand: Callable[[], float]) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based); ``rand`` returns [0, 1).

    Equal jitter: half of the capped exponential delay is fixed, the other half random,
    so a fleet that lost its coordinator at the same moment does not retry in lockstep.
    """
    ceiling = min(policy.cap, policy.base * 2.0 ** min(max(attempt, 0), 62))
    return ceiling / 2 + ceiling / 2 * min(max(rand(), 0.0), 1.0)


def retry_delay(
    failures: int,
    policy: BackoffPolicy,
    rand: Callable[[], float],
    *,
    reconnecting: bool = False,
    retry_after: float | None = None,
) -> float:
    """Seconds before the next try after ``failures`` failed tries in a row.

    ``reconnecting``: the coordinator answered before these failures. Its first retry is
    then spread over all of ``reconnect_spread`` (full jitter): a restarted coordinator
    drops every agent at the same instant, and equal jitter would bring the whole fleet
    back within a quarter of a second of each other (0.25-0.5 s at the default policy).
    A ``retry_after`` the coordinator asked for (a 503 while it sheds load) is waited out:
    never retry sooner.
    """
    if reconnecting and failures == 0:
        spread = min(policy.reconnect_spread, policy.cap)
        delay = spread * min(max(rand(), 0.0), 1.0)
    else:
        delay = backoff_delay(failures, policy, rand)
    return delay if retry_after is None else max(delay, retry_after)
