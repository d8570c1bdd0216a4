"""Tests for workload log files and their size cap."""

from __future__ import annotations

import os
from pathlib import Path

from agent.logs import LogRotator, open_log, rotate_log
from agent.runtime import LaunchSpec
from agent.runtime.exec import ExecRuntime
from shared.clock import FakeClock, SystemClock
from tests.agent.factories import data_dir_writes
from tests.helpers import eventually


class TestRotateLog:
    def test_under_cap_untouched(self, tmp_path: Path) -> None:
        """A file within its cap is left alone."""
        path = tmp_path / "stdout.log"
        path.write_bytes(b"x" * 100)
        assert not rotate_log(path, 100)
        assert path.stat().st_size == 100
        assert not (tmp_path / "stdout.log.1").exists()

    def test_over_cap_keeps_tail_in_dot_one(self, tmp_path: Path) -> None:
        """Over the cap, the last max_bytes move to .1 and the file starts empty."""
        path = tmp_path / "stdout.log"
        path.write_bytes(b"a" * 50 + b"b" * 100)
        assert rotate_log(path, 100)
        assert (tmp_path / "stdout.log.1").read_bytes() == b"b" * 100
        assert path.stat().st_size == 0

    def test_writer_keeps_appending_after_truncate(self, tmp_path: Path) -> None:
        """An O_APPEND writer continues at the start of the truncated file, without a hole."""
        path = tmp_path / "stdout.log"
        fd = open_log(path)
        try:
            os.write(fd, b"z" * 200)
            assert rotate_log(path, 100)
            os.write(fd, b"after\n")
        finally:
            os.close(fd)
        assert path.read_bytes() == b"after\n"


class TestLogRotator:
    def test_unwritable_rotation_is_retried_not_fatal(self, tmp_path: Path) -> None:
        """A log that cannot be rotated (a directory stands where ``.1`` goes) is left as
        it is and counts as a pending data dir write; the next turn that works clears it.
        A stray file in the logs dir is not a job's log directory."""
        logs = tmp_path / "logs"
        (logs / "web").mkdir(parents=True)
        (logs / "stray").write_text("not a job")
        stdout = logs / "web" / "stdout.log"
        stdout.write_bytes(b"x" * 2048)
        (logs / "web" / "stdout.log.1").mkdir()
        writes = data_dir_writes(tmp_path)
        rotator = LogRotator(logs, 1024, clock=FakeClock(), writes=writes)
        assert rotator.step() == []
        assert stdout.stat().st_size == 2048
        assert writes.degraded
        (logs / "web" / "stdout.log.1").rmdir()
        assert rotator.step() == [stdout]
        assert not writes.degraded

    def test_missing_logs_dir_is_nothing_to_do(self, tmp_path: Path) -> None:
        """Before any job ran there is nothing to rotate, and nothing is wrong."""
        writes = data_dir_writes(tmp_path)
        rotator = LogRotator(tmp_path / "logs", 1024, clock=FakeClock(), writes=writes)
        assert rotator.step() == []
        assert not writes.degraded

    async def test_rotates_a_running_process_log(self, tmp_path: Path) -> None:
        """A live process's log is capped by the periodic check and the process keeps logging."""
        logs = tmp_path / "logs"
        runtime = ExecRuntime(SystemClock())
        handle = await runtime.start(
            LaunchSpec(
                job="chatty",
                version=1,
                command=["sh", "-c", "while true; do echo 0123456789abcdef; sleep 0.01; done"],
                env={"PATH": os.environ["PATH"]},
                working_dir=tmp_path,
                stdout_path=logs / "chatty" / "stdout.log",
                stderr_path=logs / "chatty" / "stderr.log",
            )
        )
        stdout = logs / "chatty" / "stdout.log"
        rotator = LogRotator(logs, 1024, clock=FakeClock(), writes=data_dir_writes(tmp_path))
        try:
            await eventually(lambda: stdout.exists() and stdout.stat().st_size > 1024)
            assert rotator.step() == [stdout]
            # Checked at once (no await in between): the writer refills it at ~1.7 KB/s.
            assert stdout.stat().st_size < 1024
            assert (logs / "chatty" / "stdout.log.1").stat().st_size == 1024
            await eventually(lambda: stdout.stat().st_size > 0)  # it writes on into the new file
        finally:
            await handle.stop(2.0)
