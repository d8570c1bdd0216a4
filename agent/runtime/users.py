"""Who a workload and its exec checks run as: the job's user with that user's own groups."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from agent.errors import LaunchError


@dataclass(frozen=True)
class RunAs:
    """The credentials a root agent gives a child: uid, primary gid and the supplementary
    groups ``initgroups(3)`` would set, so nothing of root's groups is kept."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def run_as(user: str | None, *, euid: int | None = None) -> RunAs | None:
    """The credentials for a job's ``user``; None when the child keeps the agent's own: no
    ``user`` (the host policy decides whether that may be root), or an agent that is not
    root (it can only run jobs as itself; ``check_user`` refuses any other user).

    Raise LaunchError when the user does not exist."""
    if user is None or (os.geteuid() if euid is None else euid) != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LaunchError(f"user {user!r} does not exist on this node") from None
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid, groups=tuple(dict.fromkeys(groups)))
