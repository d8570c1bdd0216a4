"""What the agent measures about its host (psutil), behind a small port for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import psutil

from shared.nodes import Load, Resources


class HostProbe(Protocol):
    """Capacity and current load of the host."""

    def resources(self) -> Resources: ...

    def load(self) -> Load: ...


class PsutilHost:
    """Reads CPU count, memory, the data dir's disk, CPU percent and load average."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def resources(self) -> Resources:
        try:
            disk = psutil.disk_usage(str(self._data_dir)).total
        except OSError:
            disk = 0
        return Resources(
            cpu_count=psutil.cpu_count() or 0,
            memory_bytes=psutil.virtual_memory().total,
            disk_bytes=disk,
        )

    def load(self) -> Load:
        return Load(
            cpu_percent=max(0.0, psutil.cpu_percent(interval=None)),
            load1=max(0.0, os.getloadavg()[0]),
            memory_used_bytes=psutil.virtual_memory().used,
        )
