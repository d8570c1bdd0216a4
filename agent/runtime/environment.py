"""The environment a workload sees: a minimal clean base with the job's env on top."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_environment(
    job_env: Mapping[str, str],
    *,
    user: str | None = None,
    agent_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """PATH, HOME and LANG, then ``job_env``; nothing else of the agent's environment.

    The agent's own variables (NOTIFY_SOCKET, WATCHDOG_*, FLEETWAVE_*, tokens) must never
    leak into workloads, hence an allow-list rather than a deny-list.
    """
    source = os.environ if agent_env is None else agent_env
    home = source.get("HOME", "/")
    if user is not None:
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            home = "/"
    env = {
        "PATH": source.get("PATH", DEFAULT_PATH),
        "HOME": home,
        "LANG": source.get("LANG", "C.UTF-8"),
    }
    env.update(job_env)
    return env
