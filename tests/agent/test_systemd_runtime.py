"""The systemd driver's naming, parsing and argument building (pure), and its refusal to run
without systemd. Units are started for real by the nspawn suite in tests/e2e/systemd/."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import LaunchError
from agent.restart import ExitStatus
from agent.runtime import LaunchSpec
from agent.runtime.systemd import (
    SystemdRuntime,
    exit_status,
    has_ended,
    parse_show,
    parse_unit_name,
    unit_name,
    unit_properties,
)
from agent.runtime.users import RunAs
from shared.clock import FakeClock


class TestNames:
    @pytest.mark.parametrize(
        ("job", "version", "generation"), [("web", 3, 0), ("my-api-2", 12, 4), ("a", 1, 10)]
    )
    def test_unit_name_round_trips(self, job: str, version: int, generation: int) -> None:
        """Job, version and generation are read back from the unit name, dashes included."""
        name = unit_name("abc123", job, version, generation)
        assert name.endswith(".service")
        assert parse_unit_name("abc123", name) == (job, version, generation)

    @pytest.mark.parametrize(
        "unit",
        [
            "fleetwave-other1-web-3-0.service",  # another agent instance
            "fleetwave-abc123-web-x-0.service",
            "fleetwave-abc123-web-3.service",
            "fleetwave-abc123-web-3-0.timer",
            "sshd.service",
        ],
    )
    def test_foreign_units_are_not_ours(self, unit: str) -> None:
        """Units of other instances or of other shapes are never taken for ours."""
        assert parse_unit_name("abc123", unit) is None


class TestUnitState:
    def test_parse_show(self) -> None:
        """systemctl show output becomes a dict (values may contain '=')."""
        props = parse_show("ActiveState=active\nSubState=running\nEnvironment=A=B\n\n")
        assert props == {"ActiveState": "active", "SubState": "running", "Environment": "A=B"}

    @pytest.mark.parametrize(
        ("props", "ended"),
        [
            ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, False),
            ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "start"}, False),
            ({"LoadState": "loaded", "ActiveState": "active", "SubState": "exited"}, True),
            ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed"}, True),
            ({"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead"}, True),
        ],
    )
    def test_has_ended(self, props: dict[str, str], ended: bool) -> None:
        """Running and starting units are live; exited, failed and unloaded ones ended."""
        assert has_ended(props) is ended

    @pytest.mark.parametrize(
        ("code", "status", "expected"),
        [
            ("1", "0", ExitStatus(code=0)),
            ("1", "3", ExitStatus(code=3)),
            ("2", "9", ExitStatus(signal=9)),
            ("3", "11", ExitStatus(signal=11)),
            ("0", "", ExitStatus()),
        ],
    )
    def test_exit_status(self, code: str, status: str, expected: ExitStatus) -> None:
        """ExecMainCode/ExecMainStatus map to an exit code or a signal."""
        assert exit_status({"ExecMainCode": code, "ExecMainStatus": status}) == expected


class TestArguments:
    def test_unit_carries_the_jobs_settings(self, tmp_path: Path) -> None:
        """User, working dir, env, logs and the stop timeout go into the unit; the agent
        keeps restarts (Restart=no) and the marker variables name the execution."""
        spec = LaunchSpec(
            job="web",
            version=2,
            generation=1,
            instance="abc123",
            kill_timeout=7.0,
            command=["/usr/bin/python3", "-m", "http.server"],
            env={"PATH": "/usr/bin", "GREETING": "hello world"},
            working_dir=tmp_path,
            user="nobody",
            stdout_path=tmp_path / "out.log",
            stderr_path=tmp_path / "err.log",
        )
        args = unit_properties(spec, RunAs(uid=65534, gid=65534, groups=(65534,)))
        assert "--property=Restart=no" in args
        assert "--property=TimeoutStopSec=7s" in args
        assert f"--working-directory={tmp_path}" in args
        assert "--uid=nobody" in args
        assert "--gid=65534" in args  # the user's own group, not root's
        assert f"--property=StandardOutput=append:{tmp_path / 'out.log'}" in args
        assert "--setenv=GREETING=hello world" in args
        assert "--setenv=FLEETWAVE_JOB_VERSION=2" in args
        assert "--setenv=FLEETWAVE_AGENT_INSTANCE=abc123" in args
        assert not any("NOTIFY_SOCKET" in a or "WATCHDOG" in a for a in args)


class TestWithoutSystemd:
    async def test_start_refuses_with_a_clear_reason(self, tmp_path: Path) -> None:
        """On a host not booted with systemd, start fails naming the cause and the fix."""
        runtime = SystemdRuntime(FakeClock(), run_dir=tmp_path / "absent")
        spec = LaunchSpec(job="web", version=1, command=["true"], instance="abc")
        with pytest.raises(LaunchError, match="systemd as the init system"):
            await runtime.start(spec)
        assert await runtime.discover("abc") == []
