"""Run a server module with memory and garbage-collection probes, for ``bench.memory``.

``python -m bench.memprobe MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this process
after arming, from the environment:

- ``BENCH_MEMPROBE_OUT``: where SIGUSR1 writes a JSON dump (RSS, gc pauses by generation
  since the previous dump, and with tracing the live Python bytes by file and by line).
- ``BENCH_MEMPROBE_TRACE``: tracemalloc frames (0: off; tracing slows the server ~2x).
- ``BENCH_MEMPROBE_GC``: ``young,middle,old`` thresholds to use instead of the coordinator's
  ``GC_THRESHOLDS`` (its ``tune_gc`` reads them when it starts).
- ``BENCH_MEMPROBE_GC_WINDOWS``: ``young,middle,old;...``: after the second dump, each dump
  sets the next thresholds, so the pauses of several settings are counted over one fleet.

The first dump is the baseline the later dumps' tracemalloc figures are compared to.
SIGUSR2 times one full collection (``gc.collect()``) and writes it to the same file.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import runpy
import signal
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

TOP = 60


class Probe:
    """GC pauses by generation, and tracemalloc snapshots compared to the first one."""

    def __init__(self, out: Path, frames: int, windows: list[tuple[int, int, int]]) -> None:
        self.out = out
        self.frames = frames
        self.windows = windows
        self.dumps = 0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        self._baseline: tracemalloc.Snapshot | None = None
        if frames:
            tracemalloc.start(frames)
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def dump(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        data: dict[str, Any] = {
            "rss_mb": _rss_mb(),
            "gc_threshold": gc.get_threshold(),
            "gc_frozen": gc.get_freeze_count(),
            "gc_objects": len(gc.get_objects()),
            "types": _type_counts(),
            "gc_pauses_ms": {
                str(gen): sorted(round(p * 1000, 2) for p in pauses)
                for gen, pauses in self.pauses.items()
            },
        }
        self.pauses = {0: [], 1: [], 2: []}
        if self.frames:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            data["traced_mb"] = sum(s.size for s in snapshot.statistics("filename")) / 1e6
            if self._baseline is None:
                self._baseline = snapshot
            else:
                data["by_file"] = _diff(snapshot, self._baseline, "filename")
                data["by_line"] = _diff(snapshot, self._baseline, "lineno")
                if self.frames > 1:
                    data["by_trace"] = _diff(snapshot, self._baseline, "traceback", top=25)
        self.dumps += 1
        if self.dumps >= 3 and self.windows:  # after the empty, settled and held dumps
            gc.set_threshold(*self.windows.pop(0))
        self.out.write_text(json.dumps(data))

    def full(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        started = time.perf_counter()
        collected = gc.collect()
        elapsed = time.perf_counter() - started
        self.pauses = {0: [], 1: [], 2: []}
        data = {"full_collect_ms": round(elapsed * 1000, 1), "collected": collected}
        self.out.write_text(json.dumps(data | {"gc_objects": len(gc.get_objects())}))


def _type_counts(top: int = 40) -> dict[str, int]:
    """Objects the collector tracks (not frozen ones) by type: how many per node of each."""
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(top))


def _diff(
    new: tracemalloc.Snapshot, old: tracemalloc.Snapshot, key: str, top: int = TOP
) -> list[dict[str, Any]]:
    rows = []
    for stat in new.compare_to(old, key)[:top]:
        frames = [f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback]
        rows.append(
            {"where": " < ".join(frames), "bytes": stat.size_diff, "count": stat.count_diff}
        )
    return rows


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def main() -> None:
    module, *args = sys.argv[1:]
    out = Path(os.environ.get("BENCH_MEMPROBE_OUT", "memprobe.json"))
    windows = [
        (young, middle, old)
        for young, middle, old in (
            (int(x) for x in w.split(","))
            for w in os.environ.get("BENCH_MEMPROBE_GC_WINDOWS", "").split(";")
            if w
        )
    ]
    probe = Probe(out, int(os.environ.get("BENCH_MEMPROBE_TRACE", "0")), windows)
    signal.signal(signal.SIGUSR1, probe.dump)
    signal.signal(signal.SIGUSR2, probe.full)
    thresholds = os.environ.get("BENCH_MEMPROBE_GC")
    if thresholds:
        import coordinator.main

        young, middle, old = (int(x) for x in thresholds.split(","))
        coordinator.main.GC_THRESHOLDS = (young, middle, old)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
