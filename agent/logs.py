"""Workload log files: opened O_APPEND for the child, size-capped by copy-and-truncate rotation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import structlog

from agent.fsutil import atomic_write
from agent.writes import DataDirWrites
from shared.clock import Clock

log = structlog.get_logger("agent.logs")

STREAMS = ("stdout.log", "stderr.log")


def open_log(path: Path) -> int:
    """An O_APPEND file descriptor for ``path`` (created 0640 with its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def ensure_log_files(paths: Sequence[Path]) -> None:
    """Create the log files if missing; raise OSError when one cannot be opened to append."""
    for path in paths:
        os.close(open_log(path))


def should_rotate(size: int, max_bytes: int) -> bool:
    """Whether a log file of ``size`` bytes is over its cap."""
    return size > max_bytes


def rotate_log(path: Path, max_bytes: int) -> bool:
    """If ``path`` exceeds ``max_bytes``, keep its last ``max_bytes`` in ``<path>.1``, empty it.

    Copy-then-truncate, because the child holds the file open and must keep writing to
    it; with O_APPEND its next write lands at the new end. Lines written between the copy
    and the truncation are lost, as with logrotate's ``copytruncate``.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if not should_rotate(size, max_bytes):
        return False
    with path.open("rb") as source:
        source.seek(max(0, size - max_bytes))
        tail = source.read(max_bytes)
    atomic_write(path.with_name(path.name + ".1"), tail, mode=0o640)
    os.truncate(path, 0)
    log.info("log_rotated", path=str(path), size=size)
    return True


class LogRotator:
    """Checks every job's stdout/stderr logs under ``logs_dir`` at a fixed interval.

    A log that cannot be rotated (a full or read-only data dir) is left as it is and tried
    again at the next turn; the failure counts as a failed data dir write.
    """

    def __init__(
        self,
        logs_dir: Path,
        max_bytes: int,
        *,
        clock: Clock,
        writes: DataDirWrites,
        interval: float = 5.0,
    ) -> None:
        self._logs_dir = logs_dir
        self._max_bytes = max_bytes
        self._clock = clock
        self._writes = writes
        self._interval = interval

    def step(self) -> list[Path]:
        """Rotate every log over its cap once; return the rotated paths."""
        rotated: list[Path] = []
        try:
            job_dirs = sorted(d for d in self._logs_dir.iterdir() if d.is_dir())
        except OSError as exc:  # missing, or unreadable: nothing to rotate this turn
            if self._logs_dir.exists():
                log.warning("log_dir_unreadable", path=str(self._logs_dir), error=str(exc))
            return rotated
        for job_dir in job_dirs:
            for name in STREAMS:
                path = job_dir / name
                item = f"{job_dir.name}/{name}"
                try:
                    if rotate_log(path, self._max_bytes):
                        rotated.append(path)
                except OSError as exc:
                    retry = partial(rotate_log, path, self._max_bytes)
                    self._writes.failed("log_rotation", exc, retry=retry, item=item)
                else:
                    self._writes.succeeded("log_rotation", item=item)
        return rotated

    async def run(self) -> None:
        while True:
            self.step()
            await self._clock.sleep(self._interval)
