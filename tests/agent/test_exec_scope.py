"""Tests for exec workloads moved into a systemd scope (``workload_slice``), with real processes.

``busctl`` is replaced on PATH by a script that records its arguments (and the cgroup it
would move, as the pid's state at that moment): the systemd side itself is tested under a
real systemd in tests/e2e/systemd/test_agent_memory.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from agent.errors import LaunchError
from agent.runtime.exec import ExecRuntime
from agent.runtime.scope import GATE, scope_unit, service_of, start_scope_command
from shared.clock import SystemClock
from tests.agent.test_exec_runtime import launch

SLICE = "fleetwave-workloads.slice"


def fake_busctl(bin_dir: Path, record: Path, *, exit_code: int) -> None:
    """A ``busctl`` that writes its argv and the gated pid's command line to ``record``."""
    bin_dir.mkdir()
    script = bin_dir / "busctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {record}\n'
        # The pid is the argument after "au 1": the gated shell, not yet the command.
        f'pid=$(echo "$@" | sed -n "s/.* au 1 \\([0-9]*\\) .*/\\1/p")\n'
        f'tr "\\0" " " < /proc/$pid/cmdline >> {record}\n'
        f"exit {exit_code}\n"
    )
    script.chmod(0o755)


def recorded(record: Path) -> tuple[str, str] | None:
    """What the fake busctl wrote: its arguments, and the gated pid's command line."""
    if not record.exists():
        return None
    argv, held = record.read_text().split("\n", 1)
    return argv, held


@pytest.fixture
def busctl_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    record = tmp_path / "busctl.txt"
    fake_busctl(tmp_path / "bin", record, exit_code=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return record


class TestScope:
    def test_scope_names_are_unique_per_start(self) -> None:
        """The scope is named after the instance, job, version, generation and pid."""
        spec = launch(Path("/tmp"), ["true"], instance="i1", generation=2)
        assert scope_unit(spec, 4242) == "fleetwave-i1-web-1-2-4242.scope"

    def test_scope_call_names_the_pid_and_slice(self) -> None:
        """The busctl call asks for a scope of exactly the workload's pid, in the slice."""
        argv = start_scope_command("u.scope", SLICE, 7)
        assert argv[argv.index("PIDs") : argv.index("PIDs") + 4] == ["PIDs", "au", "1", "7"]
        assert argv[argv.index("Slice") : argv.index("Slice") + 3] == ["Slice", "s", SLICE]

    def test_scope_ordered_before_the_agents_service(self) -> None:
        """With the agent's service known, the scope is ordered before it (4 properties)."""
        argv = start_scope_command("u.scope", SLICE, 7, before="fleetwave-agent.service")
        assert argv[argv.index("u.scope") + 2] == "4"
        assert argv[-5:] == ["Before", "as", "1", "fleetwave-agent.service", "0"]
        assert start_scope_command("u.scope", SLICE, 7)[argv.index("u.scope") + 2] == "3"

    @pytest.mark.parametrize(
        ("cgroup", "service"),
        [
            ("0::/system.slice/fleetwave-agent.service\n", "fleetwave-agent.service"),
            ("4:memory:/\n0::/system.slice/fleetwave-agent.service\n", "fleetwave-agent.service"),
            ("0::/user.slice/user-0.slice/session-3.scope\n", None),
            ("0::/\n", None),
            ("4:memory:/x.service\n", None),
        ],
    )
    def test_agent_service_from_its_cgroup(self, cgroup: str, service: str | None) -> None:
        """The agent's service is the last part of its cgroup v2 path, if it is a service."""
        assert service_of(cgroup) == service

    async def test_workload_is_moved_before_it_runs(
        self, tmp_path: Path, busctl_record: Path
    ) -> None:
        """systemd is asked while the gate still holds the command back; the command then
        runs under the same pid, with stdin on /dev/null."""
        runtime = ExecRuntime(SystemClock(), workload_slice=SLICE)
        script = 'readlink /proc/self/fd/0; echo "$$"; env'
        handle = await runtime.start(launch(tmp_path, ["sh", "-c", script]))
        assert (await handle.wait()).succeeded
        call = recorded(busctl_record)
        assert call is not None
        argv, held = call
        assert f"StartTransientUnit ssa(sv)a(sa(sv)) fleetwave-agent-web-1-0-{handle.pid}" in argv
        assert f"Slice s {SLICE}" in argv
        assert held.startswith(f"{sys.executable} -I -S -c")  # still the gate when moved
        stdin, pid, *env = (tmp_path / "logs" / "stdout.log").read_text().splitlines()
        assert (stdin, pid) == ("/dev/null", str(handle.pid))
        assert {line.split("=", 1)[0] for line in env} <= {"PWD", *launch(tmp_path, []).env}

    async def test_workload_runs_when_systemd_cannot_be_asked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failing busctl leaves the workload in the agent's cgroup, but it runs."""
        fake_busctl(tmp_path / "bin", tmp_path / "busctl.txt", exit_code=1)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        runtime = ExecRuntime(SystemClock(), workload_slice=SLICE)
        handle = await runtime.start(launch(tmp_path, ["sh", "-c", "echo ran"]))
        assert (await handle.wait()).succeeded
        assert (tmp_path / "logs" / "stdout.log").read_text() == "ran\n"

    async def test_missing_program_is_a_launch_error(
        self, tmp_path: Path, busctl_record: Path
    ) -> None:
        """Behind the gate a missing program is still a launch error, not an exit code."""
        runtime = ExecRuntime(SystemClock(), workload_slice=SLICE)
        with pytest.raises(LaunchError, match="command not found: 'no-such-program-x'"):
            await runtime.start(launch(tmp_path, ["no-such-program-x"]))
        assert recorded(busctl_record) is None

    async def test_gate_never_opens_when_the_agent_is_gone(self, tmp_path: Path) -> None:
        """A gate whose pipe closes without a line exits 125 and never runs the command."""
        read_end, write_end = os.pipe()
        os.close(write_end)
        proc = psutil.Popen([*GATE, "sh", "-c", f"touch {tmp_path / 'ran'}"], stdin=read_end)
        os.close(read_end)
        assert proc.wait(10) == 125
        assert not (tmp_path / "ran").exists()
