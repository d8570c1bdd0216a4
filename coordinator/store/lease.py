"""Leadership as the database keeps it: the lease, its epoch, the coordinators sharing the
database, and the error a write of a deposed leader raises (fencing).

Plain values, no database code: the election loop and the API read them without knowing
which store produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.errors import StoreError, StoreUnavailable


@dataclass(frozen=True)
class LeaseState:
    """The lease as one member sees it after trying to take or renew it."""

    holder: str
    """The member holding the lease (it may have expired); "" when nobody ever held it."""
    address: str
    """Where the holder serves the API."""
    epoch: int
    """Increases each time the lease changes hands (or is taken again after it expired)."""
    held: bool
    """Whether the member that asked holds the lease now."""
    expires_in: float
    """Seconds until the lease expires by the database's clock (0 when it has expired)."""


@dataclass(frozen=True)
class Member:
    """A coordinator that shares the database; ``leader`` when it holds the live lease."""

    id: str
    address: str
    started_at: datetime
    last_seen: datetime
    leader: bool


class DuplicateMember(StoreError):
    """Another running coordinator uses this member id: a configuration error. This one
    never leads while that one is alive."""

    code = "duplicate_member"


class Fenced(StoreUnavailable):
    """An engine write carried an epoch that no longer holds the lease: this coordinator was
    deposed (paused or partitioned past its lease). The write changed nothing; the caller
    must stop acting as leader."""

    code = "fenced"
