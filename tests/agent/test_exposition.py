"""Tests for the agent's Prometheus text exposition (agent/exposition.py), checked against
prometheus_client's parser (the coordinator's library, which the agent no longer imports)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.exposition import (
    Counter,
    Gauge,
    Histogram,
    format_value,
    process_families,
    python_families,
)


def text(*families: Counter | Gauge | Histogram) -> str:
    return "".join(line for family in families for line in family.render())


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


class TestExposition:
    @pytest.mark.parametrize(
        ("value", "text_value"),
        [(1, "1.0"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN")],
    )
    def test_values(self, value: float, text_value: str) -> None:
        """Values are floats; infinities and NaN are spelled as Prometheus reads them."""
        assert format_value(value) == text_value

    def test_counter_with_labels_and_escaping(self) -> None:
        """A counter is exposed as <name>_total, one line per label set, label values escaped."""
        counter = Counter("jobs_started", "Jobs\\started\nso far.", ["job"])
        counter.labels('we"b\\1').inc()
        counter.labels('we"b\\1').inc(2)
        out = text(counter)
        assert out.startswith("# HELP jobs_started_total Jobs\\\\started\\nso far.\n")
        assert "# TYPE jobs_started_total counter\n" in out
        assert samples(out) == {("jobs_started_total", (("job", 'we"b\\1'),)): 3.0}
        with pytest.raises(ValueError, match="only goes up"):
            counter.labels("x").inc(-1)
        with pytest.raises(ValueError, match="takes labels"):
            counter.labels("a", "b")

    def test_histogram_is_cumulative(self) -> None:
        """Bucket counts are cumulative up to +Inf; _count and _sum follow."""
        histogram = Histogram("probe_seconds", "Probe time.", ["job"], buckets=(0.1, 1.0))
        for value in (0.05, 0.5, 5.0):
            histogram.labels("web").observe(value)
        got = samples(text(histogram))
        web = (("job", "web"),)
        assert got[("probe_seconds_bucket", (*web, ("le", "0.1")))] == 1
        assert got[("probe_seconds_bucket", (*web, ("le", "1.0")))] == 2
        assert got[("probe_seconds_bucket", (*web, ("le", "+Inf")))] == 3
        assert got[("probe_seconds_count", web)] == 3
        assert got[("probe_seconds_sum", web)] == pytest.approx(5.55)

    def test_gauge(self) -> None:
        """A gauge without labels holds the last value set."""
        gauge = Gauge("last_sync_timestamp_seconds", "Last sync.")
        gauge.set(12)
        assert samples(text(gauge)) == {("last_sync_timestamp_seconds", ()): 12.0}

    def test_process_and_python_metrics(self) -> None:
        """This process's figures are there and plausible: RSS, fds, start time, gc."""
        got = samples(
            "".join(line for f in [*process_families(), *python_families()] for line in f.render())
        )
        assert got[("process_resident_memory_bytes", ())] > 1 << 20
        assert got[("process_open_fds", ())] >= 3
        assert got[("process_start_time_seconds", ())] > 1.6e9
        assert ("python_gc_collections_total", (("generation", "0"),)) in got
        assert any(name == "python_info" for name, _ in got)
