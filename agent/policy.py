"""Host policy: whether this host runs a job version at all (DESIGN §10, agent config ``[policy]``).

:func:`decide` is the one decision, a pure function of what the job would run (a
:class:`LaunchRequest`), the policy and the agent's euid; every launch path (a start, a
restart, an adopted workload, its exec health checks) goes through it in the supervisor.
:func:`describe_launch` gathers the host facts it needs (users, programs on the PATH).
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agent.config import HostPolicy
from agent.runtime import LaunchSpec
from agent.runtime.environment import DEFAULT_PATH
from shared.spec import Driver, ExecCheck, HealthCheck

REFUSED = "refused by host policy: "
"""How every refusal's message starts (the execution's message, reported ``failed``)."""

RULES = ("allowed_drivers", "allow_root", "allowed_users", "allowed_commands", "denied_env")
"""The ``[policy]`` keys a refusal can name (its ``rule``), in the order they are checked."""


@dataclass(frozen=True)
class Program:
    """One program a job version would execute: the workload's or an exec check's."""

    role: str
    """What runs it, as a refusal names it: ``command`` or ``health check 2 command``."""
    given: str
    """``command[0]`` as the job gives it (placeholders filled in)."""
    found: str | None
    """What ``execve`` gets for it (see :func:`resolve_program`); None when not found."""
    path: str | None
    """``found`` made absolute (against the working directory) and normalised: what
    ``allowed_commands`` globs match."""


@dataclass(frozen=True)
class LaunchRequest:
    """What a job version would do on this host, with the host facts the policy needs."""

    driver: Driver
    user: str | None
    """``task.user``; None runs as the agent's user (exec) or root (systemd)."""
    user_uid: int | None
    """The uid of ``user`` on this host; None when there is no such user (or no ``user``)."""
    agent_user: str
    """The name of the agent's euid (the user of a job without ``user`` under exec)."""
    env_names: frozenset[str]
    """The names ``task.env`` sets; never the agent's own environment."""
    programs: tuple[Program, ...]


@dataclass(frozen=True)
class Refusal:
    """Why the policy refuses a job version: the ``[policy]`` key involved and the reason."""

    rule: str
    reason: str

    @property
    def message(self) -> str:
        """The execution's message: ``refused by host policy: <reason>``."""
        return REFUSED + self.reason


def decide(request: LaunchRequest, policy: HostPolicy, *, euid: int) -> Refusal | None:
    """None when ``policy`` lets an agent running as ``euid`` run ``request``, else the first
    rule it breaks (in :data:`RULES` order), naming the config key that would allow it."""
    if policy.allowed_drivers and request.driver not in policy.allowed_drivers:
        return Refusal(
            "allowed_drivers",
            f"driver {request.driver.value!r} is not in [policy] allowed_drivers"
            f" ({_listed(d.value for d in policy.allowed_drivers)});"
            " add it there on this host to allow it",
        )
    name, uid, runs_as = _runs_as(request, euid)
    if uid == 0 and not policy.allow_root:
        return Refusal(
            "allow_root",
            f"{runs_as} {'root' if name == 'root' else repr(name)} (uid 0); "
            + ("set a user in the job, or " if request.user is None else "")
            + "set [policy] allow_root = true on this host to allow it",
        )
    if policy.allowed_users and name not in policy.allowed_users:
        return Refusal(
            "allowed_users",
            f"{runs_as} {name!r}, which is not in [policy] allowed_users"
            f" ({_listed(policy.allowed_users)}); add it there on this host to allow it",
        )
    if policy.allowed_commands:
        for program in request.programs:
            if program.path is None:
                return Refusal(
                    "allowed_commands",
                    f"{program.role} {program.given!r} is not found on the job's PATH, so it"
                    " matches none of [policy] allowed_commands"
                    f" ({_listed(policy.allowed_commands)})",
                )
            if not any(glob_matches(p, program.path) for p in policy.allowed_commands):
                shown = program.path
                if program.path != program.given:
                    shown += f" (from {program.given!r})"
                return Refusal(
                    "allowed_commands",
                    f"{program.role} {shown} matches none of [policy] allowed_commands"
                    f" ({_listed(policy.allowed_commands)}); add a glob that matches it there"
                    " on this host to allow it",
                )
    denied = sorted(request.env_names & set(policy.denied_env))
    if denied:
        return Refusal(
            "denied_env",
            f"task.env sets {', '.join(denied)}, which [policy] denied_env lists;"
            " remove it from the job, or from denied_env on this host to allow it",
        )
    return None


def _runs_as(request: LaunchRequest, euid: int) -> tuple[str, int | None, str]:
    """(user name, its uid or None when unknown, the words a refusal puts before the name)."""
    if request.user is not None:
        return request.user, request.user_uid, "job runs as"
    if request.driver is Driver.SYSTEMD:  # a unit without User= runs as root, whoever asks
        return "root", 0, "job sets no user, so its systemd unit would run as"
    return request.agent_user, euid, "job sets no user, so it would run as the agent's user,"


def _listed(items: Iterable[str]) -> str:
    return ", ".join(repr(item) for item in items)


def glob_matches(pattern: str, path: str) -> bool:
    """Whether absolute ``path`` matches ``pattern``: ``*`` and ``?`` never cross a ``/``,
    ``**`` does, ``[...]`` is a character class (as in fnmatch)."""
    return _glob_regex(pattern).fullmatch(path) is not None


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(pattern, i)) != -1:
            body = pattern[i:end]
            negate = body.startswith("!")
            body = body.removeprefix("!").replace("\\", "\\\\").replace("[", "\\[")
            if body.startswith("^"):
                body = "\\" + body
            out.append(("[^" if negate else "[") + body + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def _class_end(pattern: str, start: int) -> int:
    """Where the ``[...]`` class whose body starts at ``start`` ends (a ``]`` right after
    ``[`` or ``[!`` belongs to the body), or -1 when it is not closed."""
    if pattern.startswith("!", start):
        start += 1
    if pattern.startswith("]", start):
        start += 1
    return pattern.find("]", start)


def resolve_program(
    program: str,
    *,
    search_path: str,
    cwd: str,
    is_executable: Callable[[str], bool],
) -> str | None:
    """What the runtime passes to ``execve`` for ``program``, as ``execvpe`` finds it: a
    name with a ``/`` is itself (relative to the working directory ``cwd``); a bare name is
    the first executable file in a ``search_path`` directory (an empty entry is ``cwd``).
    None when a bare name is found nowhere."""
    if "/" in program:
        return program
    for entry in search_path.split(os.pathsep):
        candidate = os.path.join(entry, program) if entry else program
        if is_executable(os.path.join(cwd, candidate)):
            return candidate
    return None


def is_executable_file(path: str) -> bool:
    """A regular file with an execute bit the agent may use (``shutil.which``'s test)."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def describe_launch(
    launch: LaunchSpec,
    checks: Iterable[HealthCheck],
    *,
    driver: Driver,
    job_env: Mapping[str, str],
    euid: int,
    is_executable: Callable[[str], bool] = is_executable_file,
) -> LaunchRequest:
    """The :class:`LaunchRequest` of a prepared launch: its programs found as the runtime
    finds them (the child's PATH, its working directory), the user looked up on this host.
    ``job_env`` is the job's own ``task.env`` (the variables the policy judges)."""
    cwd = str(launch.working_dir or Path.cwd())
    search_path = launch.env.get("PATH", DEFAULT_PATH)
    commands = [("command", launch.command)]
    commands += [
        (f"health check {index} command", check.command)
        for index, check in enumerate(checks, start=1)
        if isinstance(check, ExecCheck)
    ]
    programs = []
    for role, argv in commands:
        found = resolve_program(
            argv[0], search_path=search_path, cwd=cwd, is_executable=is_executable
        )
        # normpath: a `..` never walks out of an allowed directory unseen.
        path = None if found is None else os.path.normpath(os.path.join(cwd, found))
        programs.append(Program(role, argv[0], found, path))
    return LaunchRequest(
        driver=driver,
        user=launch.user,
        user_uid=_uid_of(launch.user),
        agent_user=_name_of(euid),
        env_names=frozenset(job_env),
        programs=tuple(programs),
    )


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
