"""Prometheus metrics of one agent in the text exposition format 0.0.4, without a library.

The agent has a handful of counters, one histogram and one gauge, read on a scrape of its
local endpoint; prometheus_client (with the HTTP servers, WSGI and ASGI adapters it imports)
cost it 1.5 MB of RSS for that. This module keeps the same output: the same names, HELP and
TYPE lines, ``_total`` counters, cumulative ``_bucket``/``_count``/``_sum`` histograms, and the
``process_*``, ``python_info`` and ``python_gc_*`` metrics of the process.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import resource
from collections.abc import Iterable, Iterator, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[str, Mapping[str, str], float]
"""(name, labels, value) of one line."""


def format_value(value: float) -> str:
    """A sample value as Prometheus reads it: ``+Inf``, ``-Inf``, ``NaN`` or a float."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> Iterator[str]:
    """The HELP and TYPE lines of one metric family, then one line per sample."""
    help_line = help_text.replace("\\", r"\\").replace("\n", r"\n")
    yield f"# HELP {name} {help_line}\n"
    yield f"# TYPE {name} {kind}\n"
    for sample, labels, value in samples:
        if labels:
            pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            yield f"{sample}{{{pairs}}} {format_value(value)}\n"
        else:
            yield f"{sample} {format_value(value)}\n"


class Family:
    """A metric family with label names; its children are keyed by label values."""

    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def render(self) -> Iterator[str]:
        return render_family(self.name, self.kind, self.help, self.samples())

    def _labels(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return tuple(str(value) for value in values)


class CounterValue:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Counter(Family):
    """A counter, exposed as ``<name>_total``."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(f"{name.removesuffix('_total')}_total", help_text, labelnames)
        self._children: dict[tuple[str, ...], CounterValue] = {}

    def labels(self, *values: str) -> CounterValue:
        return self._children.setdefault(self._labels(values), CounterValue())

    def samples(self) -> Iterator[Sample]:
        for key, child in self._children.items():
            yield self.name, dict(zip(self.labelnames, key, strict=True)), child.value


class Gauge(Family):
    """A gauge without labels."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def samples(self) -> Iterator[Sample]:
        yield self.name, {}, self.value


class HistogramValue:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.count += 1
        self.sum += value


class Histogram(Family):
    """A histogram with fixed buckets (``+Inf`` added)."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.bounds = (*sorted(float(b) for b in buckets if not math.isinf(b)), math.inf)
        self._children: dict[tuple[str, ...], HistogramValue] = {}

    def labels(self, *values: str) -> HistogramValue:
        return self._children.setdefault(self._labels(values), HistogramValue(self.bounds))

    def samples(self) -> Iterator[Sample]:
        for key, child in self._children.items():
            labels = dict(zip(self.labelnames, key, strict=True))
            running = 0
            for bound, count in zip(self.bounds, child.counts, strict=True):
                running += count
                yield f"{self.name}_bucket", {**labels, "le": format_value(bound)}, running
            yield f"{self.name}_count", labels, child.count
            yield f"{self.name}_sum", labels, child.sum


class Fixed(Family):
    """A family whose samples are computed at render time (state gauges, process figures)."""

    def __init__(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        super().__init__(name, help_text)
        self.kind = kind
        self._samples = list(samples)

    def samples(self) -> Iterator[Sample]:
        return iter(self._samples)


def process_families() -> Iterator[Fixed]:
    """The ``process_*`` metrics of this process, from /proc (Linux)."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as boot_file:
            boot = next(float(line.split()[1]) for line in boot_file if line.startswith(b"btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    # Fields after the command name: utime is the 12th, stime 13th, starttime 20th,
    # vsize 21st, rss 22nd (proc(5), counting from the state field as the 1st).
    figures = [
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", fields[20]),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", fields[21]),
    ]
    yield Fixed(*figures[0][:3], [(figures[0][0], {}, float(figures[0][3]))])
    yield Fixed(*figures[1][:3], [(figures[1][0], {}, float(figures[1][3]) * page)])
    yield Fixed(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        [("process_start_time_seconds", {}, boot + float(fields[19]) / ticks)],
    )
    yield Fixed(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        [("process_cpu_seconds_total", {}, (float(fields[11]) + float(fields[12])) / ticks)],
    )
    try:
        fds = float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return
    yield Fixed(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        [("process_open_fds", {}, fds)],
    )
    soft = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    yield Fixed(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        [("process_max_fds", {}, soft)],
    )


def python_families() -> Iterator[Fixed]:
    """``python_info`` and the garbage collector's ``python_gc_*`` counters."""
    major, minor, patch = platform.python_version_tuple()
    info = {
        "implementation": platform.python_implementation(),
        "major": major,
        "minor": minor,
        "patchlevel": patch,
        "version": platform.python_version(),
    }
    yield Fixed("python_info", "gauge", "Python platform information", [("python_info", info, 1.0)])
    stats = gc.get_stats()
    for key, name, help_text in (
        ("collected", "python_gc_objects_collected_total", "Objects collected during gc"),
        (
            "uncollectable",
            "python_gc_objects_uncollectable_total",
            "Uncollectable objects found during GC",
        ),
        (
            "collections",
            "python_gc_collections_total",
            "Number of times this generation was collected",
        ),
    ):
        yield Fixed(
            name,
            "counter",
            help_text,
            [(name, {"generation": str(gen)}, float(s[key])) for gen, s in enumerate(stats)],
        )
