"""The systemd driver: every job version runs as a transient service unit.

The unit is named ``fleetwave-<instance>-<job>-<version>-<generation>.service``, so a restarted
agent finds its workloads by name alone and several agents on one host never collide. The
unit carries the job's command, user, environment, working directory, log files and stop
timeout; restarts stay with the agent's supervisor (``Restart=no`` on the unit), so backoff,
the restart window and the counts reported to the coordinator behave exactly as with exec.
``RemainAfterExit=yes`` keeps an exited unit loaded until the agent has read how it ended.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import structlog

from agent.errors import LaunchError
from agent.restart import ExitStatus
from agent.runtime import Discovered, LaunchSpec
from agent.runtime.exec import check_user, marked_environment
from agent.runtime.users import RunAs, run_as
from shared.clock import Clock

if TYPE_CHECKING:
    from agent.executions import ExecutionRecord

log = structlog.get_logger("agent.runtime.systemd")

UNIT_PREFIX = "fleetwave-"
POLL_INTERVAL = 1.0
"""Seconds between unit state reads while a workload runs (one ``systemctl show``)."""
COMMAND_TIMEOUT = 60.0
"""Seconds a systemctl call may take before the driver gives up on it."""
PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
)
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3  # ExecMainCode values (siginfo si_code)
RUNNING = frozenset({"active", "activating", "reloading", "deactivating"})


def unit_name(instance: str, job: str, version: int, generation: int) -> str:
    return f"{UNIT_PREFIX}{instance}-{job}-{version}-{generation}.service"


def parse_unit_name(instance: str, unit: str) -> tuple[str, int, int] | None:
    """(job, version, generation) of one of this instance's units, else None."""
    prefix = f"{UNIT_PREFIX}{instance}-"
    if not unit.startswith(prefix) or not unit.endswith(".service"):
        return None
    job, _, rest = unit[len(prefix) : -len(".service")].rpartition("-")
    job, _, version = job.rpartition("-")
    if not job or not version.isdigit() or not rest.isdigit():
        return None
    return job, int(version), int(rest)


def parse_show(output: str) -> dict[str, str]:
    """``systemctl show`` KEY=VALUE lines as a dict."""
    props = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def exit_status(props: Mapping[str, str]) -> ExitStatus:
    """How the unit's main process ended, from ExecMainCode/ExecMainStatus."""
    code = props.get("ExecMainCode", "0")
    status = props.get("ExecMainStatus", "")
    if not status.lstrip("-").isdigit():
        return ExitStatus()
    if code in (str(_CLD_KILLED), str(_CLD_DUMPED)):
        return ExitStatus(signal=int(status))
    if code == str(_CLD_EXITED):
        return ExitStatus(code=int(status))
    return ExitStatus()


def has_ended(props: Mapping[str, str]) -> bool:
    if props.get("LoadState") == "not-found":
        return True
    active = props.get("ActiveState", "")
    return active in ("failed", "inactive") or (
        active == "active" and props["SubState"] == "exited"
    )


def unit_properties(spec: LaunchSpec, creds: RunAs | None) -> list[str]:
    """``systemd-run`` arguments that give the unit the job's settings.

    ``creds`` (the job's user): ``User=`` makes systemd set the user's groups from the group
    database (initgroups) and ``Group=`` names its primary group, so nothing of root's stays.
    """
    args = [
        f"--description=Fleetwave job {spec.job} version {spec.version}",
        "--property=Type=exec",
        "--property=Restart=no",
        "--property=RemainAfterExit=yes",
        "--property=KillMode=control-group",
        f"--property=TimeoutStopSec={max(1, round(spec.kill_timeout))}s",
        "--property=SendSIGKILL=yes",
    ]
    if spec.working_dir is not None:
        args.append(f"--working-directory={spec.working_dir}")
    if spec.user is not None and creds is not None:
        args += [f"--uid={spec.user}", f"--gid={creds.gid}"]
    if spec.stdout_path is not None:
        args.append(f"--property=StandardOutput=append:{spec.stdout_path}")
    if spec.stderr_path is not None:
        args.append(f"--property=StandardError=append:{spec.stderr_path}")
    for key, value in sorted(marked_environment(spec, "systemd").items()):
        args.append(f"--setenv={key}={value}")
    return args


class Systemctl:
    """Runs ``systemctl``/``systemd-run`` against the system manager."""

    def __init__(self, timeout: float = COMMAND_TIMEOUT) -> None:
        self._timeout = timeout

    async def run(self, *argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self._timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OSError(f"{argv[0]} {argv[1]} took longer than {self._timeout:g}s") from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def show(self, unit: str) -> dict[str, str]:
        _, out, _ = await self.run(
            "systemctl", "show", "--no-pager", f"--property={','.join(PROPERTIES)}", unit
        )
        return parse_show(out)


class SystemdHandle:
    """A workload running as a transient unit; watched by polling the unit's state."""

    def __init__(
        self, unit: str, pid: int, start_time: float, systemctl: Systemctl, clock: Clock
    ) -> None:
        self._unit = unit
        self._pid = pid
        self._start_time = start_time
        self._systemctl = systemctl
        self._clock = clock

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def start_time(self) -> float:
        return self._start_time

    @property
    def unit(self) -> str:
        return self._unit

    async def wait(self) -> ExitStatus:
        while True:
            props = await self._systemctl.show(self._unit)
            if has_ended(props):
                status = exit_status(props)
                await self._release()
                return status
            await self._clock.sleep(POLL_INTERVAL)

    async def stop(self, kill_timeout: float) -> ExitStatus:
        # The unit's TimeoutStopSec (the job's kill_timeout) makes systemd send SIGKILL.
        code, _, err = await self._systemctl.run("systemctl", "stop", "--no-block", self._unit)
        if code != 0:
            log.warning("unit_stop_failed", unit=self._unit, error=err.strip())
        deadline = self._clock.monotonic() + kill_timeout + 5.0
        props = await self._systemctl.show(self._unit)
        while not has_ended(props) and self._clock.monotonic() < deadline:
            await self._clock.sleep(0.2)
            props = await self._systemctl.show(self._unit)
        status = exit_status(props)
        await self._release()
        return status if status != ExitStatus() else ExitStatus(signal=signal.SIGTERM)

    async def _release(self) -> None:
        """Unload the ended unit (stop an exited one, forget a failed one)."""
        await self._systemctl.run("systemctl", "stop", "--no-block", self._unit)
        await self._systemctl.run("systemctl", "reset-failed", self._unit)


def _start_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


class SystemdRuntime:
    """Starts ``LaunchSpec`` commands as transient units of the system manager."""

    def __init__(
        self,
        clock: Clock,
        *,
        systemctl: Systemctl | None = None,
        run_dir: Path = Path("/run/systemd/system"),
    ) -> None:
        self._clock = clock
        self._systemctl = systemctl or Systemctl()
        self._run_dir = run_dir

    def available(self) -> bool:
        """Whether systemd runs this host (the check sd_booted(3) makes)."""
        return self._run_dir.is_dir()

    async def start(self, spec: LaunchSpec) -> SystemdHandle:
        if not self.available():
            raise LaunchError(
                "the systemd driver needs systemd as the init system on this node"
                f' ({self._run_dir} is missing); use driver = "exec"'
            )
        if os.geteuid() != 0:
            raise LaunchError("the systemd driver needs the agent to run as root")
        check_user(spec.user)
        creds = run_as(spec.user)
        if spec.working_dir is not None and not spec.working_dir.is_dir():
            raise LaunchError(f"working_dir {spec.working_dir} does not exist")
        for path in (spec.stdout_path, spec.stderr_path):
            if path is not None:  # systemd opens them, but only inside existing directories
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        unit = unit_name(spec.instance, spec.job, spec.version, spec.generation)
        # A previous run of this execution (a restart) may have left the ended unit loaded.
        await self._systemctl.run("systemctl", "stop", unit)
        await self._systemctl.run("systemctl", "reset-failed", unit)
        code, _, err = await self._systemctl.run(
            "systemd-run", "--quiet", "--no-ask-password", f"--unit={unit}",
            *unit_properties(spec, creds), "--", *spec.command,
        )  # fmt: skip
        if code != 0:
            raise LaunchError(f"could not start {unit}: {await self._why(unit, err)}")
        props = await self._systemctl.show(unit)
        pid = int(props.get("MainPID", "0") or 0)
        log.info("unit_started", job=spec.job, version=spec.version, unit=unit, pid=pid)
        return SystemdHandle(unit, pid, _start_time(pid), self._systemctl, self._clock)

    async def _why(self, unit: str, err: str) -> str:
        """The reason a unit did not start: systemd-run's error, else the unit's journal."""
        if err.strip():
            return err.strip()
        _, out, _ = await self._systemctl.run(
            "journalctl", "--no-pager", "-o", "cat", "-n", "3", "-u", unit
        )
        props = await self._systemctl.show(unit)
        await self._systemctl.run("systemctl", "reset-failed", unit)
        lines = " / ".join(line for line in out.splitlines() if line.strip())
        return f"{props.get('Result', 'failed')}: {lines}" if lines else props.get("Result", "?")

    async def adopt(self, record: ExecutionRecord) -> SystemdHandle | None:
        if record.unit is None or not self.available():
            return None
        props = await self._systemctl.show(record.unit)
        if props.get("LoadState") != "loaded" or props.get("ActiveState") not in RUNNING:
            return None
        if props.get("SubState") == "exited":
            return None
        pid = int(props.get("MainPID", "0") or 0)
        return SystemdHandle(record.unit, pid, _start_time(pid), self._systemctl, self._clock)

    async def discover(self, instance: str) -> list[Discovered]:
        """This instance's running units, by name; ended leftovers are unloaded."""
        if not self.available():
            return []
        code, out, err = await self._systemctl.run(
            "systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
            "--type=service", f"{UNIT_PREFIX}{instance}-*",
        )  # fmt: skip
        if code != 0:
            raise OSError(f"systemctl list-units failed: {err.strip() or code}")
        found = []
        for line in out.splitlines():
            unit = line.split(maxsplit=1)[0] if line.strip() else ""
            parsed = parse_unit_name(instance, unit)
            if parsed is None:
                continue
            props = await self._systemctl.show(unit)
            pid = int(props.get("MainPID", "0") or 0)
            handle = SystemdHandle(unit, pid, _start_time(pid), self._systemctl, self._clock)
            if has_ended(props) or props.get("ActiveState") not in RUNNING:
                await handle.stop(0)
                continue
            found.append(Discovered(*parsed, handle=handle))
        return found
