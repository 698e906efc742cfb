"""Tests of the benchmark harness (``tests/benchmarks``), which pytest does not collect itself.

The statistics and formatting are checked directly; the two-process choreography is checked
end to end with the bare-UDP case, which needs nothing beyond the standard library, so the
harness cannot rot between the (rare, long) full benchmark runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import statistics
import sys
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name: str) -> ModuleType:
    """Import ``tests.benchmarks.<name>`` by module name, as the spawned children will."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return importlib.import_module(f"tests.benchmarks.{name}")


common = _load("common")
report = _load("report")
run = _load("run")

samples = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200)


@given(samples, st.floats(0.0, 1.0))
def test_percentile_is_a_member_between_min_and_max(values: list[float], q: float) -> None:
    p = common.percentile(values, q)
    assert p in values
    assert min(values) <= p <= max(values)


@given(samples)
def test_percentile_extremes_are_min_and_max(values: list[float]) -> None:
    assert common.percentile(values, 0.0) == min(values)
    assert common.percentile(values, 1.0) == max(values)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 0.5) == 50.0
    assert common.percentile(values, 0.99) == 99.0
    assert common.percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        common.percentile([], 0.5)
    with pytest.raises(ValueError, match="fraction"):
        common.percentile([1.0], 1.5)


def test_outcome_summary_is_median_min_max_per_metric() -> None:
    outcome = report.Outcome(runs=[{"a": 3.0, "b": 1.0}, {"a": 1.0}, {"a": 2.0, "b": 5.0}])
    summary = outcome.summary()
    assert (summary["a"].median, summary["a"].low, summary["a"].high) == (2.0, 1.0, 3.0)
    assert summary["a"].runs == 3
    assert summary["b"].median == statistics.median([1.0, 5.0])
    assert summary["b"].runs == 2


def test_format_and_ratio() -> None:
    s = report.Summary(median=1234.5, low=1000.0, high=1500.0, runs=3)
    assert report.format_summary(s) == "1234 (1000..1500)"
    assert report.format_summary(None) == "-"
    assert report.format_number(0.01234) == "0.0123"
    half = report.Summary(median=617.25, low=1.0, high=1.0, runs=1)
    assert report.summarize_ratio(half, s) == "0.50x"
    assert report.summarize_ratio(s, None) == "-"


def test_render_table_aligns_columns() -> None:
    text = report.render_table(["a", "long header"], [["xxxxx", "1"], ["y", "22"]])
    lines = text.splitlines()
    assert len(lines) == 4
    assert len({line.index(cell) for line, cell in zip(lines[2:], ["1", "22"], strict=True)}) == 1


def test_check_count_fails_loudly() -> None:
    common.check_count("bytes", 5, 5)
    with pytest.raises(common.BenchError, match="expected 5, got 4"):
        common.check_count("bytes", 5, 4)


def test_pattern_bytes_has_the_size_asked() -> None:
    for size in (0, 1, 4095, 4096, 10_000):
        assert len(common.pattern_bytes(size)) == size


def test_case_selection_by_name_and_group() -> None:
    variants = run.build_variants(quick=True)
    names = [v.name for v in run.select_variants(variants, "bulk,rtt")]
    assert names == ["bulk_1200", "bulk_max", "rtt"]
    assert [v.name for v in run.select_variants(variants, "memory")] == ["memory_1k"]
    with pytest.raises(SystemExit):
        run.select_variants(variants, "nope")
    full = {v.name for v in run.build_variants(quick=False)}
    assert {"handshake", "streams16", "memory_1k", "memory_10k"} <= full


def test_only_selects_columns() -> None:
    assert [i.family for i in run.build_impls("aioquic", ["asyncio"])] == ["aioquic", "baseline"]
    stt = run.build_impls("stt", ["asyncio", "trio"])
    assert [i.name for i in stt] == ["stt-asyncio", "stt-trio", "bare-udp", "bare-udp-trio"]
    assert [i.backend for i in stt if i.family == "baseline"] == ["asyncio", "trio"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_pair_end_to_end_with_bare_udp_on_each_loop(backend: str) -> None:
    impl = common.Impl(f"bare-udp-{backend}", "tests.benchmarks.udp_baseline", backend,
                       "baseline")
    workload = common.Workload("rtt", iterations=50, warmup=5)
    metrics = common.run_pair(impl, workload, timeout=60.0)
    assert 0 < metrics["rtt_p50_us"] <= metrics["rtt_p99_us"]


def test_run_pair_reports_a_child_failure() -> None:
    impl = common.Impl("bare-udp", "tests.benchmarks.udp_baseline", "asyncio", "baseline")
    with pytest.raises(common.BenchError, match="no 'bulk' case"):
        common.run_pair(impl, common.Workload("bulk", total_bytes=1), timeout=60.0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("aioquic") is None, reason="needs the bench extra")
def test_aioquic_cases_run_and_count_bytes() -> None:
    impl = common.Impl("aioquic", "tests.benchmarks.aioquic_cases", "asyncio", "aioquic")
    bulk = common.run_pair(impl, common.Workload("bulk", total_bytes=common.MiB), timeout=120.0)
    assert bulk["goodput_mib_s"] > 0
    shakes = common.run_pair(impl, common.Workload("handshake", sessions=5), timeout=120.0)
    assert shakes["server_cpu_ms_per_handshake"] > 0


def test_stall_watch_fails_only_without_progress() -> None:
    progress = common.Progress("demo")
    watch = common.StallWatch(progress)
    progress.done = 3
    watch.check(limit=-1.0)  # progress since the last look: fine whatever the limit
    with pytest.raises(common.BenchError, match="demo: stalled at 3"):
        watch.check(limit=-1.0)
    watch.check(limit=3600.0)


def test_describe_error_flattens_groups() -> None:
    group = ExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [KeyError("b")])])
    assert common.describe_error(group) == "ValueError: a; KeyError: 'b'"


def test_format_report_ratios_targets_and_failures() -> None:
    variants = run.select_variants(run.build_variants(quick=True), "rtt")
    impls = run.build_impls(None, ["asyncio", "trio"])
    rep = run.Report()
    rep.outcomes[("rtt", "stt-trio")] = report.Outcome(runs=[{"rtt_p50_us": 200.0}])
    rep.outcomes[("rtt", "bare-udp-trio")] = report.Outcome(runs=[{"rtt_p50_us": 80.0}])
    rep.outcomes[("rtt", "stt-asyncio")] = report.Outcome(
        runs=[{"rtt_p50_us": 150.0, "udp_rcvbuf_drops": 0.0}]
    )
    rep.outcomes[("rtt", "aioquic")] = report.Outcome(
        runs=[{"rtt_p50_us": 300.0, "udp_rcvbuf_drops": 2.0}], errors=["boom"]
    )
    rep.outcomes[("rtt", "bare-udp")] = report.Outcome(runs=[{"rtt_p50_us": 100.0}])
    text = run.format_report(variants, impls, rep)
    p50_row = next(line for line in text.splitlines() if "round trip p50" in line)
    assert re.search(r"\b0\.50x\s+0\.67x\s*$", p50_row)  # one ratio per STT column
    drops_row = next(line for line in text.splitlines() if "drops" in line)
    assert "x" not in drops_row.split("]")[-1]  # diagnostic rows get no ratio
    assert "stt-asyncio rtt p50 is 1.50x bare UDP on asyncio (meets the 1.5x goal)" in text
    assert "stt-trio rtt p50 is 2.50x bare UDP on trio (misses the 1.5x goal)" in text
    assert "rtt / aioquic: FAILED: boom" in text
