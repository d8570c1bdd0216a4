"""Tests for the exec driver with real processes."""

from __future__ import annotations

import json
import os
import pwd
import signal
from pathlib import Path

import psutil
import pytest

from agent.errors import LaunchError
from agent.executions import ExecutionRecord
from agent.runtime import LaunchSpec
from agent.runtime.environment import child_environment
from agent.runtime.exec import ExecHandle, ExecRuntime, check_user, group_alive
from shared.clock import SystemClock
from shared.protocol import ExecutionState
from tests.agent.factories import PYTHON
from tests.helpers import eventually


def is_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def runtime() -> ExecRuntime:
    return ExecRuntime(SystemClock())


def launch(tmp_path: Path, command: list[str], **extra: object) -> LaunchSpec:
    values: dict[str, object] = {
        "job": "web",
        "version": 1,
        "command": command,
        "env": child_environment({}),
        "working_dir": tmp_path,
        "stdout_path": tmp_path / "logs" / "stdout.log",
        "stderr_path": tmp_path / "logs" / "stderr.log",
    }
    values.update(extra)
    return LaunchSpec(**values)  # type: ignore[arg-type]


class TestStart:
    async def test_env_and_cwd_applied(
        self, runtime: ExecRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The child gets the job env over a clean base, the working dir, and none of the
        agent's NOTIFY_SOCKET / WATCHDOG_* / FLEETWAVE_* variables."""
        monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
        monkeypatch.setenv("WATCHDOG_USEC", "1000")
        monkeypatch.setenv("FLEETWAVE_JOIN_TOKEN", "secret")
        work = tmp_path / "work"
        work.mkdir()
        script = "import os, json; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
        spec = launch(
            tmp_path,
            [PYTHON, "-c", script],
            env=child_environment({"GREETING": "hi", "PATH": os.environ["PATH"]}),
            working_dir=work,
        )
        handle = await runtime.start(spec)
        status = await handle.wait()
        assert status.succeeded
        out = json.loads((tmp_path / "logs" / "stdout.log").read_text())
        assert out["cwd"] == str(work)
        assert out["env"]["GREETING"] == "hi"
        env_keys = set(out["env"])
        assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "FLEETWAVE_JOIN_TOKEN"} & env_keys
        assert {"PATH", "HOME", "LANG", "GREETING"} <= env_keys

    async def test_output_appended_to_log_files(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """stdout and stderr go to their own files and successive runs append."""
        for word in ("one", "two"):
            spec = launch(tmp_path, ["sh", "-c", f"echo {word}; echo err-{word} >&2"])
            assert (await (await runtime.start(spec)).wait()).succeeded
        assert (tmp_path / "logs" / "stdout.log").read_text() == "one\ntwo\n"
        assert (tmp_path / "logs" / "stderr.log").read_text() == "err-one\nerr-two\n"

    async def test_exit_code_and_signal(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """Exit codes and killing signals are reported distinctly."""
        status = await (await runtime.start(launch(tmp_path, ["sh", "-c", "exit 3"]))).wait()
        assert status.describe() == "exited with code 3"
        status = await (await runtime.start(launch(tmp_path, ["sh", "-c", "kill -9 $$"]))).wait()
        assert status.describe() == "killed by signal 9"

    async def test_missing_program(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """A program that does not exist is a launch error naming it."""
        with pytest.raises(LaunchError, match="command not found: 'no-such-program-x'"):
            await runtime.start(launch(tmp_path, ["no-such-program-x"]))

    async def test_missing_working_dir(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """A working dir that does not exist is a launch error naming it."""
        with pytest.raises(LaunchError, match=r"working_dir .* does not exist"):
            await runtime.start(launch(tmp_path, ["true"], working_dir=tmp_path / "nope"))

    async def test_unknown_user(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """A user that does not exist is a launch error naming it."""
        with pytest.raises(LaunchError, match="user 'no-such-user-x' does not exist"):
            await runtime.start(launch(tmp_path, ["true"], user="no-such-user-x"))

    def test_other_user_needs_root(self) -> None:
        """A non-root agent cannot run a job as another user, but may name itself."""
        with pytest.raises(LaunchError, match=r"cannot run as user 'root': .* not root"):
            check_user("root", euid=65534)
        check_user("nobody", euid=65534)
        check_user("root", euid=0)

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent")
    async def test_runs_as_user_with_its_own_groups(
        self, runtime: ExecRuntime, tmp_path: Path
    ) -> None:
        """A root agent runs the job as the given user, with that user's primary group and
        supplementary groups (initgroups), keeping nothing of root's (no gid 0)."""
        os.chmod(tmp_path, 0o755)  # noqa: S103 - the job user must reach its log dir
        command = ["sh", "-c", "id -un; id -g; id -G"]
        spec = launch(tmp_path, command, user="nobody", working_dir=Path("/"))
        assert (await (await runtime.start(spec)).wait()).succeeded
        entry = pwd.getpwnam("nobody")
        groups = dict.fromkeys(os.getgrouplist("nobody", entry.pw_gid))
        name, gid, all_groups = (tmp_path / "logs" / "stdout.log").read_text().splitlines()
        assert (name, gid) == ("nobody", str(entry.pw_gid))
        assert all_groups.split() == [str(g) for g in groups]
        assert "0" not in all_groups.split()


class TestStop:
    async def test_group_killed_including_grandchildren(
        self, runtime: ExecRuntime, tmp_path: Path
    ) -> None:
        """Stopping SIGTERMs the whole process group, so grandchildren die too."""
        pids = tmp_path / "pids"
        script = f"sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; wait"
        handle = await runtime.start(launch(tmp_path, ["sh", "-c", script]))
        await eventually(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        grandchildren = [int(p) for p in pids.read_text().split()]
        status = await handle.stop(5.0)
        assert status.signal == signal.SIGTERM
        for pid in [handle.pid, *grandchildren]:
            assert is_gone(pid)
        assert not group_alive(handle.pid)

    async def test_sigkill_after_kill_timeout(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """A process that ignores SIGTERM is SIGKILLed once kill_timeout has passed."""
        ready = tmp_path / "ready"
        script = (
            "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            f" pathlib.Path({str(ready)!r}).touch(); time.sleep(300)"
        )
        handle = await runtime.start(launch(tmp_path, [PYTHON, "-c", script]))
        await eventually(ready.exists)
        status = await handle.stop(0.3)
        assert status.signal == signal.SIGKILL
        assert is_gone(handle.pid)

    async def test_leftovers_killed_when_leader_exits(
        self, runtime: ExecRuntime, tmp_path: Path
    ) -> None:
        """When the main process exits on its own, the rest of its group is killed."""
        pids = tmp_path / "pids"
        handle = await runtime.start(
            launch(tmp_path, ["sh", "-c", f"sleep 300 & echo $! > {pids}; exit 4"])
        )
        status = await handle.wait()
        assert status.code == 4
        await eventually(lambda: is_gone(int(pids.read_text())))


class TestAdopt:
    async def test_adopt_and_stop_running_process(
        self, runtime: ExecRuntime, tmp_path: Path
    ) -> None:
        """A process started earlier is found by pid + start time and can be stopped."""
        handle = await runtime.start(launch(tmp_path, ["sleep", "300"]))
        assert isinstance(handle, ExecHandle)
        adopted = await runtime.adopt(record(handle.pid, handle.start_time))
        assert adopted is not None
        await adopted.stop(2.0)
        await handle.wait()
        assert is_gone(handle.pid)

    async def test_adopt_gone_or_reused_pid(self, runtime: ExecRuntime, tmp_path: Path) -> None:
        """A pid whose start time does not match is not adopted."""
        handle = await runtime.start(launch(tmp_path, ["sleep", "300"]))
        assert await runtime.adopt(record(handle.pid, handle.start_time - 100)) is None
        await handle.stop(2.0)
        assert await runtime.adopt(record(handle.pid, handle.start_time)) is None

    async def test_discover_finds_only_this_instances_leaders(
        self, runtime: ExecRuntime, tmp_path: Path
    ) -> None:
        """Workloads are found by their instance marker; another instance's are not."""
        ours = await runtime.start(launch(tmp_path, ["sleep", "300"], instance="aaa"))
        theirs = await runtime.start(launch(tmp_path, ["sleep", "300"], instance="bbb"))
        try:
            found = await runtime.discover("aaa")
            assert [(d.job, d.version, d.generation, d.handle.pid) for d in found] == [
                ("web", 1, 0, ours.pid)
            ]
        finally:
            await ours.stop(2.0)
            await theirs.stop(2.0)


def record(pid: int, start_time: float) -> ExecutionRecord:
    return ExecutionRecord(
        job="web", version=1, state=ExecutionState.HEALTHY, pid=pid, start_time=start_time
    )
