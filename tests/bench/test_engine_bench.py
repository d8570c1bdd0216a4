"""The engine benchmark runs, and its three ways of planning agree at every evaluation."""

from __future__ import annotations

from bench.engine import run


def test_engine_bench_smoke() -> None:
    """A 200-node rollout and steady fleet, planned full, by comparing records and from the
    change log: the bench checks the plans equal each time (it stops otherwise) and reports
    every evaluation of each way."""
    result = run(200, batch=25)
    assert result["nodes"] == 200
    for part in ("rollout", "steady"):
        row = result[part]
        assert row["evaluations"] > 10
        for mode in ("full", "compare", "log"):
            assert row[mode]["p50_ms"] >= 0
