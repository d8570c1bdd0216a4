"""The exec driver: each workload is a child process in its own session and process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import structlog

from agent.errors import LaunchError
from agent.logs import open_log
from agent.policy import is_executable_file, resolve_program
from agent.restart import ExitStatus
from agent.runtime import INSTANCE_ENV, Discovered, LaunchSpec
from agent.runtime.scope import GATE, agent_service, move_to_scope
from agent.runtime.users import run_as

if TYPE_CHECKING:
    from agent.executions import ExecutionRecord
from shared.clock import Clock

log = structlog.get_logger("agent.runtime.exec")

DRIVER_ENV = "FLEETWAVE_DRIVER"

POLL_INTERVAL = 0.05
"""Seconds between checks for leftover group members; only used while stopping."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group ``pgid``."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


async def _first(clock: Clock, waiter: Awaitable[object], seconds: float) -> bool:
    """Await ``waiter`` for at most ``seconds`` on ``clock``; True when it finished in time."""
    wait_task = asyncio.ensure_future(waiter)
    sleep_task = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait([wait_task, sleep_task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleep_task.cancel()
        if not wait_task.done():
            wait_task.cancel()
        await asyncio.wait([wait_task, sleep_task])
    return wait_task.done() and not wait_task.cancelled()


class _GroupHandle:
    """Stop logic shared by started and adopted processes: the pid is the group id."""

    def __init__(self, pid: int, start_time: float, clock: Clock) -> None:
        self._pid = pid
        self._start_time = start_time
        self._clock = clock

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def start_time(self) -> float:
        return self._start_time

    @property
    def unit(self) -> str | None:
        return None

    async def wait(self) -> ExitStatus:
        status = await self._wait_leader()
        if group_alive(self._pid):
            # Leftovers of an exited workload are orphans nobody supervises: kill them.
            log.info("killing_group_leftovers", pgid=self._pid)
            _signal_group(self._pid, signal.SIGKILL)
        return status

    async def stop(self, kill_timeout: float) -> ExitStatus:
        deadline = self._clock.monotonic() + kill_timeout
        _signal_group(self._pid, signal.SIGTERM)
        leader = asyncio.ensure_future(self._wait_leader())
        if not await _first(self._clock, asyncio.shield(leader), kill_timeout):
            log.warning("stop_timeout_sigkill", pgid=self._pid, kill_timeout=kill_timeout)
            _signal_group(self._pid, signal.SIGKILL)
        status = await leader
        while group_alive(self._pid) and self._clock.monotonic() < deadline:
            await self._clock.sleep(POLL_INTERVAL)
        if group_alive(self._pid):
            _signal_group(self._pid, signal.SIGKILL)
        return status

    async def _wait_leader(self) -> ExitStatus:
        raise NotImplementedError


class ExecHandle(_GroupHandle):
    """A workload this agent started as its own child."""

    def __init__(self, proc: asyncio.subprocess.Process, start_time: float, clock: Clock) -> None:
        super().__init__(proc.pid, start_time, clock)
        self._proc = proc

    async def _wait_leader(self) -> ExitStatus:
        code = await self._proc.wait()
        return ExitStatus(signal=-code) if code < 0 else ExitStatus(code=code)


class AdoptedHandle(_GroupHandle):
    """A workload started before the agent restarted; not our child, so polled via psutil."""

    async def _wait_leader(self) -> ExitStatus:
        while _same_process(self.pid, self.start_time):
            await self._clock.sleep(0.5)
        return ExitStatus()  # the real status went to whoever reaped it


def _same_process(pid: int, start_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - start_time) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def check_user(user: str | None, *, euid: int | None = None) -> None:
    """Raise LaunchError unless an agent running as ``euid`` may run a job as ``user``."""
    if user is None:
        return
    euid = os.geteuid() if euid is None else euid
    try:
        wanted = pwd.getpwnam(user)
    except KeyError:
        raise LaunchError(f"user {user!r} does not exist on this node") from None
    if euid != 0 and wanted.pw_uid != euid:
        try:
            me = pwd.getpwuid(euid).pw_name
        except KeyError:
            me = str(euid)
        raise LaunchError(f"cannot run as user {user!r}: the agent runs as {me!r}, not root")


class ExecRuntime:
    """Starts ``LaunchSpec`` commands with ``asyncio.create_subprocess_exec``.

    With ``workload_slice`` each workload gets a systemd scope of its own in that slice
    (agent/runtime/scope.py), so it leaves the agent's cgroup before it runs.
    """

    def __init__(self, clock: Clock, *, workload_slice: str = "") -> None:
        self._clock = clock
        self._slice = workload_slice
        self._service = agent_service() if workload_slice else None

    async def start(self, spec: LaunchSpec) -> ExecHandle:
        check_user(spec.user)
        # The user's own uid, gid and groups: `user=` alone would keep root's gid and groups.
        creds = run_as(spec.user)
        if spec.working_dir is not None and not spec.working_dir.is_dir():
            raise LaunchError(f"working_dir {spec.working_dir} does not exist")
        env = marked_environment(spec)
        argv: list[str] = list(spec.command)
        stdin: int = asyncio.subprocess.DEVNULL
        gate = None
        if self._slice:
            # Behind the gate the shell starts even if the program is missing; say so here.
            _check_program(spec.command[0], env, spec.working_dir)
            gate = os.pipe()
            argv, stdin = [*GATE, *spec.command], gate[0]
        fds = [open_log(path) for path in (spec.stdout_path, spec.stderr_path) if path]
        stdout = fds[0] if spec.stdout_path else asyncio.subprocess.DEVNULL
        stderr = fds[-1] if spec.stderr_path else asyncio.subprocess.DEVNULL
        try:
            # The child gets the log files themselves (O_APPEND), not pipes, so its output
            # does not depend on the agent being alive.
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=spec.working_dir,
                user=creds.uid if creds else None,
                group=creds.gid if creds else None,
                extra_groups=list(creds.groups) if creds else None,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise LaunchError(f"command not found: {spec.command[0]!r}") from None
        except PermissionError as exc:
            raise LaunchError(f"cannot start {spec.command[0]!r}: {exc.strerror}") from None
        except OSError as exc:
            raise LaunchError(f"cannot start {spec.command[0]!r}: {exc}") from None
        except BaseException:
            if gate is not None:
                os.close(gate[1])
            raise
        finally:
            for fd in fds if gate is None else [*fds, gate[0]]:
                os.close(fd)
        if gate is not None:
            await self._open_gate(spec, proc.pid, gate[1])
        try:
            start_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            start_time = 0.0  # it already exited; wait() reports how
        log.info("process_started", job=spec.job, version=spec.version, pid=proc.pid)
        return ExecHandle(proc, start_time, self._clock)

    async def _open_gate(self, spec: LaunchSpec, pid: int, gate: int) -> None:
        """Move the gated workload into its scope, then let it run (also if that failed)."""
        try:
            unit = await move_to_scope(spec, pid, self._slice, before=self._service)
            if unit is not None:
                log.info("workload_scope_started", job=spec.job, pid=pid, scope=unit)
            with contextlib.suppress(BrokenPipeError):  # it was killed meanwhile
                os.write(gate, b"\n")
        finally:
            os.close(gate)

    async def adopt(self, record: ExecutionRecord) -> AdoptedHandle | None:
        """The process the record names, if it still runs: same pid *and* start time, so a
        reused pid is never mistaken for the workload."""
        if record.pid is None or record.start_time is None:
            return None
        if not _same_process(record.pid, record.start_time):
            return None
        return AdoptedHandle(record.pid, record.start_time, self._clock)

    async def discover(self, instance: str) -> list[Discovered]:
        """Session leaders whose environment carries this instance's marker."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) != proc.pid or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                env = proc.environ()
                if env.get(INSTANCE_ENV) != instance or env.get(DRIVER_ENV, "exec") != "exec":
                    continue  # not ours, or a systemd unit's process (that driver finds those)
                marker = _parse_marker(env)
                if marker is None:
                    continue
                handle = AdoptedHandle(proc.pid, proc.create_time(), self._clock)
            except (OSError, psutil.Error):
                continue  # gone meanwhile, or not ours to read
            found.append(Discovered(*marker, handle=handle))
        return found


def _check_program(program: str, env: Mapping[str, str], cwd: Path | None) -> None:
    """LaunchError unless ``program`` is found the way ``execvpe`` will look for it."""
    where = str(cwd) if cwd is not None else os.getcwd()
    search = os.pathsep.join(os.get_exec_path(dict(env)))
    found = resolve_program(
        program, search_path=search, cwd=where, is_executable=is_executable_file
    )
    if found is None or not os.path.exists(os.path.join(where, found)):
        raise LaunchError(f"command not found: {program!r}")


def marked_environment(spec: LaunchSpec, driver: str = "exec") -> dict[str, str]:
    """The job's environment plus the variables naming its execution (and the marker)."""
    if not spec.instance:
        return spec.env
    return {
        **spec.env,
        DRIVER_ENV: driver,
        "FLEETWAVE_JOB": spec.job,
        "FLEETWAVE_JOB_VERSION": str(spec.version),
        "FLEETWAVE_JOB_GENERATION": str(spec.generation),
        INSTANCE_ENV: spec.instance,
    }


def _parse_marker(env: Mapping[str, str]) -> tuple[str, int, int] | None:
    try:
        return (
            env["FLEETWAVE_JOB"],
            int(env["FLEETWAVE_JOB_VERSION"]),
            int(env["FLEETWAVE_JOB_GENERATION"]),
        )
    except (KeyError, ValueError):
        return None
