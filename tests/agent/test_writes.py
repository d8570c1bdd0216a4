"""Failed data dir writes: counted, logged once per episode, retried, and reported as a
node condition until every one went through (real files; a directory where a file should
be is the failure, since the tests run as root and modes do not stop root)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.fsutil import atomic_write
from agent.metrics import AgentMetrics
from agent.writes import DataDirWrites
from shared.clock import FakeClock
from shared.nodes import DATA_DIR_UNWRITABLE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics()


@pytest.fixture
def writes(tmp_path: Path, clock: FakeClock, metrics: AgentMetrics) -> DataDirWrites:
    return DataDirWrites(tmp_path, clock=clock, metrics=metrics)


def errors(metrics: AgentMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "fleetwave_agent_data_dir_write_errors_total", {"kind": kind}
    )
    return value or 0.0


def blocked(path: Path) -> Path:
    """Make ``path`` unwritable as a file: a directory stands where the file would go."""
    path.mkdir()
    return path


class TestDataDirWrites:
    def test_a_good_write_changes_nothing(
        self, tmp_path: Path, writes: DataDirWrites, metrics: AgentMetrics
    ) -> None:
        """A write that works is done, with no condition, count or log line."""
        with capture_logs() as logs:
            assert writes.attempt("identity", partial(atomic_write, tmp_path / "a", b"1"))
        assert (tmp_path / "a").read_bytes() == b"1"
        assert (writes.degraded, writes.conditions(), logs) == (False, [], [])
        assert errors(metrics, "identity") == 0

    def test_failure_is_a_condition_until_the_retry_works(
        self, tmp_path: Path, writes: DataDirWrites, metrics: AgentMetrics, clock: FakeClock
    ) -> None:
        """The first failure starts an episode (its time and error are the condition's);
        retries that fail count but do not log again; the one that works ends it."""
        path = blocked(tmp_path / "report_seq.json")
        started = clock.now()
        with capture_logs() as logs:
            assert not writes.attempt("report_seq", partial(atomic_write, path, b"{}"))
            clock.advance(10)
            writes.retry()
            writes.retry()
        assert [entry["event"] for entry in logs] == ["data_dir_write_failed"]
        assert logs[0]["error"] == "[Errno 21] Is a directory"
        assert errors(metrics, "report_seq") == 3
        (condition,) = writes.conditions()
        assert condition.type == DATA_DIR_UNWRITABLE
        assert condition.message == f"cannot write {tmp_path}: [Errno 21] Is a directory"
        assert condition.since == started

        path.rmdir()
        clock.advance(5)
        with capture_logs() as logs:
            writes.retry()
        assert path.read_bytes() == b"{}"
        assert writes.conditions() == []
        assert [(e["event"], e["seconds"]) for e in logs] == [("data_dir_writable_again", 15.0)]
        assert list(tmp_path.iterdir()) == [path]  # no temp file left behind by the failures

    def test_the_latest_write_of_a_file_is_retried(
        self, tmp_path: Path, writes: DataDirWrites
    ) -> None:
        """Of several failed writes of one file only the newest is kept, so a retry never
        puts older state back."""
        path = blocked(tmp_path / "web.json")
        for data in (b"old", b"new"):
            writes.attempt("execution_record", partial(atomic_write, path, data), item="web")
        path.rmdir()
        writes.retry()
        assert path.read_bytes() == b"new"

    def test_episode_lasts_while_any_write_is_pending(
        self, tmp_path: Path, writes: DataDirWrites, clock: FakeClock
    ) -> None:
        """Each file logs its first failure; the condition keeps the episode's start and
        clears only when the last pending write went through."""
        first = blocked(tmp_path / "a.json")
        second = blocked(tmp_path / "b.json")
        started = clock.now()
        with capture_logs() as logs:
            writes.attempt("execution_record", partial(atomic_write, first, b"a"), item="a")
            clock.advance(timedelta(minutes=1))
            writes.attempt("execution_record", partial(atomic_write, second, b"b"), item="b")
        assert [e["item"] for e in logs] == ["a", "b"]
        first.rmdir()
        writes.retry()
        assert [c.since for c in writes.conditions()] == [started]
        second.rmdir()
        writes.retry()
        assert writes.conditions() == []

    def test_skipped_kinds_are_not_retried(self, tmp_path: Path, writes: DataDirWrites) -> None:
        """``retry(skip=...)`` leaves writes of those kinds to their owner."""
        path = blocked(tmp_path / "report_seq.json")
        writes.attempt("report_seq", partial(atomic_write, path, b"1"))
        path.rmdir()
        writes.retry(skip=("report_seq",))
        assert not path.exists()
        assert writes.degraded

    def test_long_data_dir_path_is_cut_to_the_message_limit(
        self, tmp_path: Path, clock: FakeClock, metrics: AgentMetrics
    ) -> None:
        """The condition's message stays within what the coordinator accepts."""
        deep = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200)
        deep.mkdir(parents=True)
        writes = DataDirWrites(deep, clock=clock, metrics=metrics)
        writes.attempt("identity", partial(atomic_write, blocked(deep / "identity.json"), b"x"))
        (condition,) = writes.conditions()
        assert len(condition.message) == 500

    def test_check_sees_a_data_dir_that_is_gone(
        self, tmp_path: Path, clock: FakeClock, metrics: AgentMetrics
    ) -> None:
        """The filesystem check (no write) reports a data dir it cannot look at, and clears
        once it can; a retry of pending writes does not repeat it."""
        root = tmp_path / "data"
        writes = DataDirWrites(root, clock=clock, metrics=metrics)
        writes.check()
        (condition,) = writes.conditions()
        assert condition.message == f"cannot write {root}: [Errno 2] No such file or directory"
        writes.retry()
        assert errors(metrics, "filesystem") == 1
        root.mkdir()
        writes.check()
        assert writes.conditions() == []
