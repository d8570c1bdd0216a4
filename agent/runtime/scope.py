"""Exec workloads in a systemd scope of their own, so the agent's unit holds the agent only.

An exec workload is the agent's child, so it starts in the agent's cgroup; with
``KillMode=process`` it would stay there, and a ``MemoryMax=`` on the agent's unit would count
every job (and an OOM kill there would hit a job or the agent). With ``workload_slice`` set
(the unit file sets ``fleetwave-workloads.slice``) the exec driver starts the command behind
a gate (``GATE``) waiting on a pipe; asks systemd (``StartTransientUnit``, through
``busctl``) to make a scope of that pid in the slice; then opens the gate and the gate
``exec``\\ s the command: the same pid, session and start time, still the agent's child, but
in its own cgroup before it ran a single instruction of its own. If systemd cannot be asked
(no systemd, no D-Bus system bus) the workload runs anyway, in the agent's cgroup, and a
warning says so.
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from agent.runtime import LaunchSpec

log = structlog.get_logger("agent.runtime.scope")

_GATE_CODE = (
    "import os, sys\n"
    "if not os.read(0, 1): sys.exit(125)\n"
    "fd = os.open(os.devnull, os.O_RDONLY)\n"
    "os.dup2(fd, 0)\n"
    "os.close(fd)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
GATE = (sys.executable, "-I", "-S", "-c", _GATE_CODE)
"""Prefix of a gated command: wait for a byte on stdin (a pipe from the agent), then become the
command with stdin on /dev/null, as ungated workloads have it. If the agent dies before
opening the gate, the read sees end-of-file and the gate exits 125: the command never runs.
The agent's own interpreter, isolated and without ``site``, rather than ``/bin/sh``: a shell
adds variables of its own (PWD; bash also SHLVL and _) to the job's exact environment."""
BUSCTL_TIMEOUT = 10.0
"""Seconds systemd has to create the scope; the workload waits behind the gate meanwhile."""


def scope_unit(spec: LaunchSpec, pid: int) -> str:
    """``fleetwave-<instance>-<job>-<version>-<generation>-<pid>.scope``: unique per start."""
    instance = spec.instance or "agent"
    return f"fleetwave-{instance}-{spec.job}-{spec.version}-{spec.generation}-{pid}.scope"


def service_of(proc_cgroup: str) -> str | None:
    """The service unit a process runs in, from its ``/proc/<pid>/cgroup`` text, else None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            name = line.rstrip().rpartition("/")[2]
            return name if name.endswith(".service") else None
    return None


def agent_service() -> str | None:
    """The agent's own service unit (``fleetwave-agent.service`` under the shipped unit)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as cgroup:
            return service_of(cgroup.read())
    except OSError:
        return None


def start_scope_command(
    unit: str, slice_name: str, pid: int, *, before: str | None = None
) -> list[str]:
    """The ``busctl`` call that makes ``unit`` a scope of ``pid`` in ``slice_name``.

    ``before`` (the agent's own service) orders the scope before it, so that on shutdown
    systemd stops the agent first and the workloads after it, as it did when they lived in
    the agent's cgroup: the agent never sees its jobs killed and never restarts one then.

    Through the D-Bus system bus: systemd's private socket answers this call with EBADR
    ("Invalid request descriptor"; systemd 252), so hosts without a bus daemon keep their
    exec workloads in the agent's cgroup (logged as ``workload_scope_failed``).
    """
    return [
        "busctl",
        "--quiet",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        unit,
        "fail",
        "4" if before else "3",
        "PIDs",
        "au",
        "1",
        str(pid),
        "Slice",
        "s",
        slice_name,
        # A scope whose processes are gone is unloaded, failed or not: names never pile up.
        "CollectMode",
        "s",
        "inactive-or-failed",
        *(["Before", "as", "1", before] if before else []),
        "0",
    ]


async def move_to_scope(
    spec: LaunchSpec, pid: int, slice_name: str, *, before: str | None
) -> str | None:
    """Put ``pid`` into a new scope in ``slice_name`` (ordered before the service ``before``);
    the scope's name, or None if it failed."""
    unit = scope_unit(spec, pid)
    argv = start_scope_command(unit, slice_name, pid, before=before)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(BUSCTL_TIMEOUT):
                _, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    except (OSError, TimeoutError) as exc:
        log.warning("workload_scope_failed", job=spec.job, pid=pid, error=str(exc))
        return None
    if proc.returncode != 0:
        error = err.decode(errors="replace").strip()
        log.warning("workload_scope_failed", job=spec.job, pid=pid, error=error)
        return None
    return unit
