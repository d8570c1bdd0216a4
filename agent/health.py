"""Health as a pure decision: per-check consecutive counts and thresholds give a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.spec import HealthCheck


class HealthState(StrEnum):
    STARTING = "starting"  # not every check has passed its success_threshold yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class CheckCounts:
    """Consecutive results of one check; a result of the other kind resets a counter."""

    successes: int = 0
    failures: int = 0
    last_error: str = ""

    def record(self, ok: bool, error: str = "") -> CheckCounts:
        """The counts after one more probe result."""
        if ok:
            return CheckCounts(successes=self.successes + 1)
        return CheckCounts(failures=self.failures + 1, last_error=error)


@dataclass(frozen=True)
class HealthVerdict:
    state: HealthState
    message: str = ""


def describe_check(check: HealthCheck) -> str:
    """A short name for a check in messages, e.g. ``http http://127.0.0.1:80/``."""
    if check.type == "http":
        return f"http {check.url}"
    if check.type == "tcp":
        return f"tcp {check.address}"
    return "exec " + " ".join(check.command)


def evaluate_health(
    counts: Sequence[CheckCounts], checks: Sequence[HealthCheck], previous: HealthState
) -> HealthVerdict:
    """The verdict for one execution; ``counts[i]`` belongs to ``checks[i]``.

    Any check at its ``failure_threshold`` of consecutive failures makes the execution
    unhealthy (also while starting, so a broken version is reported quickly). It is
    healthy once every check has passed ``success_threshold`` times in a row. Otherwise
    the previous state holds, so a single failure or success does not flap the verdict.
    """
    if not checks:
        return HealthVerdict(HealthState.HEALTHY)
    for check, count in zip(checks, counts, strict=True):
        if count.failures >= check.failure_threshold:
            # The message stays the same while the check keeps failing the same way, so
            # repeated failures do not trigger a report each.
            reason = count.last_error or "failed"
            return HealthVerdict(HealthState.UNHEALTHY, f"{describe_check(check)}: {reason}")
    if all(c.successes >= k.success_threshold for k, c in zip(checks, counts, strict=True)):
        return HealthVerdict(HealthState.HEALTHY)
    if previous is HealthState.STARTING:
        return HealthVerdict(HealthState.STARTING, "waiting for health checks to pass")
    if previous is HealthState.UNHEALTHY:
        return HealthVerdict(previous, "recovering: waiting for every check to pass again")
    return HealthVerdict(previous)
