"""Benchmark report: metric names, statistics over repeats, and the text table.

This module owns what the parent does with the numbers once the runs are over: which metrics
exist and which way is better, median (min..max) over repeats, number formatting, ratios and
the table layout. It must not know how the numbers were produced (``common``, the case modules)
nor which cases exist (``run``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .common import Metrics

__all__ = [
    "METRICS",
    "MetricInfo",
    "Outcome",
    "Summary",
    "format_number",
    "format_summary",
    "is_compared",
    "metric_label",
    "render_table",
    "summarize_ratio",
]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """How a metric is labelled and which way is better."""

    label: str
    unit: str
    higher_is_better: bool
    compared: bool = True
    """False for diagnostic rows (drops, sizes used): no ratio, no better/worse."""


METRICS: dict[str, MetricInfo] = {
    "handshake_ms": MetricInfo("handshake latency p50", "ms", False),
    "handshake_p99_ms": MetricInfo("handshake latency p99", "ms", False),
    "client_cpu_ms_per_handshake": MetricInfo("client CPU per handshake", "ms", False),
    "server_cpu_ms_per_handshake": MetricInfo("server CPU per handshake", "ms", False),
    "goodput_mib_s": MetricInfo("goodput", "MiB/s", True),
    "client_cpu_ms_per_mib": MetricInfo("sender CPU per MiB", "ms", False),
    "server_cpu_ms_per_mib": MetricInfo("receiver CPU per MiB", "ms", False),
    "rtt_p50_us": MetricInfo("round trip p50", "us", False),
    "rtt_p99_us": MetricInfo("round trip p99", "us", False),
    "rss_kib_per_session": MetricInfo("server RSS per idle session", "KiB", False),
    "traced_kib_per_session": MetricInfo("server tracemalloc per idle session", "KiB", False),
    "connect_all_s": MetricInfo("time to open all sessions", "s", False),
    "sessions_pending": MetricInfo(
        "sessions still handshaking on the server", "sessions", False, compared=False
    ),
    "datagram_bytes": MetricInfo("largest datagram used", "bytes", True, compared=False),
    "udp_rcvbuf_drops": MetricInfo(
        "UDP receive-buffer drops (whole host)", "datagrams", False, compared=False
    ),
    "packets_lost": MetricInfo("packets declared lost (sender)", "packets", False, compared=False),
    "spurious_losses": MetricInfo(
        "losses later found spurious (sender)", "packets", False, compared=False
    ),
    "congestion_window_kib": MetricInfo(
        "congestion window at the end (sender)", "KiB", False, compared=False
    ),
}
"""Every metric a case may report. Cases report only names from this table."""



@dataclass(slots=True)
class Summary:
    """Median, min and max of one metric over the repeats of one case and implementation."""

    median: float
    low: float
    high: float
    runs: int


@dataclass(slots=True)
class Outcome:
    """Everything one (case, implementation) pair produced over its repeats."""

    runs: list[Metrics] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Summary]:
        """Per-metric median (min..max) over the successful runs."""
        names = sorted({name for run in self.runs for name in run})
        out: dict[str, Summary] = {}
        for name in names:
            values = [run[name] for run in self.runs if name in run]
            out[name] = Summary(statistics.median(values), min(values), max(values), len(values))
        return out


def format_number(value: float) -> str:
    """About three significant figures, never in exponent notation (easier to scan)."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_summary(s: Summary | None) -> str:
    """``median (min..max)``, or ``-`` when the column has no number for this row."""
    if s is None:
        return "-"
    return f"{format_number(s.median)} ({format_number(s.low)}..{format_number(s.high)})"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain left-aligned text table: no dependency, readable in a terminal and in a log."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def summarize_ratio(numerator: Summary | None, denominator: Summary | None) -> str:
    """Median ratio of two columns, ``-`` when either is missing or zero."""
    if numerator is None or denominator is None or denominator.median == 0:
        return "-"
    return f"{numerator.median / denominator.median:.2f}x"


def metric_label(name: str) -> str:
    """Row label of a metric: description, unit and which way is better."""
    info: Mapping[str, MetricInfo] = METRICS
    if name not in info:
        return name
    m = info[name]
    if not m.compared:
        return f"{m.label} [{m.unit}, for information]"
    arrow = "higher" if m.higher_is_better else "lower"
    return f"{m.label} [{m.unit}, {arrow} is better]"


def is_compared(name: str) -> bool:
    """Whether a ratio between columns means anything for this metric."""
    info = METRICS.get(name)
    return info is None or info.compared
