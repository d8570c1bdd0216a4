"""Tests for the command line: errors, help, and a real agent process shut down by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from agent.main import cli
from tests.agent.factories import PYTHON, assignment, job_spec
from tests.agent.fake_coordinator import FakeCoordinator
from tests.helpers import eventually


class TestCommandLine:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--listen", "nowhere"], "fleetwave-agent: listen: 'nowhere' must be HOST:PORT"),
            (["--label", "novalue"], "fleetwave-agent: labels: 'novalue' is not KEY=VALUE"),
            (["--config", "/nonexistent/agent.toml"], "fleetwave-agent: config_file: "),
            (["--listen", "off"], "fleetwave-agent: join_token: required for the first"),
            (
                ["--join-token", "t", "--coordinator", "http://10.0.0.7:7400"],
                "fleetwave-agent: coordinators: refusing plain HTTP to http://10.0.0.7:7400",
            ),
            (
                ["--join-token", "t", "--ca-file", "/nonexistent/ca.pem"],
                "fleetwave-agent: ca_file: cannot load the TLS files",
            ),
        ],
    )
    def test_bad_config_exits_2_with_one_line(
        self, args: list[str], message: str, tmp_path: Path
    ) -> None:
        """Invalid configuration prints one line naming the option and exits with 2."""
        result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), *args])
        assert result.exit_code == 2
        assert result.stderr.startswith(message)
        assert result.stderr.count("\n") == 1

    def test_help_documents_every_option(self) -> None:
        """--help describes every flag of the documented command line."""
        result = CliRunner().invoke(cli, ["--help"])
        assert result.exit_code == 0
        for flag in (
            "--config",
            "--coordinator",
            "--join-token",
            "--data-dir",
            "--name",
            "--label",
            "--listen",
            "--ca-file",
            "--tls-cert",
            "--tls-key",
            "--allow-plain-http",
        ):
            assert flag in result.output


class TestAgentProcess:
    @pytest.mark.parametrize("on_stop", ["", "stop-workloads"])
    async def test_sigterm_exits_0_and_keeps_or_stops_workloads(
        self, aiohttp_server: Any, tmp_path: Path, on_stop: str
    ) -> None:
        """A real `python -m agent` runs its assignment; on SIGTERM it exits 0 and, by
        default, leaves the workload running (on_stop = "stop-workloads" stops it first)."""
        coord = FakeCoordinator()
        server: TestServer = await aiohttp_server(coord.app(), host="127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
        env["FLEETWAVE_JOIN_TOKEN"] = coord.join_token
        env["FLEETWAVE_CONFIG"] = str(tmp_path / "agent.toml")
        config = 'poll_wait = "1s"\nlog_format = "json"\n'
        if on_stop:
            config += f'on_stop = "{on_stop}"\n'
        # The job sets no user, so it runs as whoever runs pytest: root in CI.
        config += "[policy]\nallow_root = true\n"
        (tmp_path / "agent.toml").write_text(config)
        pid: int | None = None
        log_file = tmp_path / "agent.log"
        with log_file.open("wb") as log_out:
            proc = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                "agent",
                "--coordinator",
                str(server.make_url("")),
                "--data-dir",
                str(tmp_path / "data"),
                "--name",
                "proc-node",
                "--label",
                "zone=z1",
                "--listen",
                "off",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_out,
            )
        try:
            await eventually(lambda: coord.node("proc-node") is not None)
            coord.assign("proc-node", [assignment(job_spec("sleeper"))])

            def workload_pid() -> int | None:
                for _, report in reversed(coord.reports):
                    for execution in report.executions:
                        if execution.state == "healthy":
                            return execution.pid
                return None

            await eventually(lambda: workload_pid() is not None)
            pid = workload_pid()
            assert pid is not None
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.wait()
            stderr = log_file.read_bytes()
            assert proc.returncode == 0, stderr.decode()
            stopped = has_ended(pid)
            assert stopped is (on_stop == "stop-workloads")
            assert b'"event": "agent_stopped"' in stderr
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def has_ended(pid: int) -> bool:
    """Gone, or a zombie only waiting to be collected."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
