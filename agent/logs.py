"""Workload log files: opened O_APPEND for the child, size-capped by copy-and-truncate rotation."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from agent.fsutil import atomic_write
from shared.clock import Clock

log = structlog.get_logger("agent.logs")

STREAMS = ("stdout.log", "stderr.log")


def open_log(path: Path) -> int:
    """An O_APPEND file descriptor for ``path`` (created 0640 with its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


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
    """Checks every job's stdout/stderr logs under ``logs_dir`` at a fixed interval."""

    def __init__(
        self, logs_dir: Path, max_bytes: int, *, clock: Clock, interval: float = 5.0
    ) -> None:
        self._logs_dir = logs_dir
        self._max_bytes = max_bytes
        self._clock = clock
        self._interval = interval

    def step(self) -> list[Path]:
        """Rotate every log over its cap once; return the rotated paths."""
        rotated: list[Path] = []
        if not self._logs_dir.is_dir():
            return rotated
        for job_dir in sorted(self._logs_dir.iterdir()):
            for name in STREAMS:
                path = job_dir / name
                try:
                    if rotate_log(path, self._max_bytes):
                        rotated.append(path)
                except OSError as exc:
                    log.warning("log_rotate_failed", path=str(path), error=str(exc))
        return rotated

    async def run(self) -> None:
        while True:
            self.step()
            await self._clock.sleep(self._interval)
