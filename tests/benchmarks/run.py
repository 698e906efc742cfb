"""Entry point of the side-by-side benchmark: ``python -m tests.benchmarks.run``.

This module owns the list of cases and their sizes, the command line, the loop over
(case, implementation, repeat), and the report. It must not know how any transport is driven
(``stt_cases``, ``aioquic_cases``, ``udp_baseline``) nor how processes are started
(``common.run_pair``). The method is written down in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

if __package__ in (None, ""):
    # Started as ``python tests/benchmarks/run.py``: make ``tests.benchmarks`` importable here
    # and in the spawned children (they inherit ``sys.path``).
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(os.path.dirname(_here)))

from stt_core import flavour
from tests.benchmarks.common import (
    BenchError,
    Impl,
    MiB,
    Workload,
    pick_cores,
    run_pair,
)
from tests.benchmarks.report import (
    METRICS,
    Outcome,
    format_summary,
    is_compared,
    metric_label,
    render_table,
    summarize_ratio,
)

STT_MODULE = "tests.benchmarks.stt_cases"
AIOQUIC_MODULE = "tests.benchmarks.aioquic_cases"
BASELINE_MODULE = "tests.benchmarks.udp_baseline"
LOOPBACK_MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4, which loopback's 64 KiB MTU lets through unfragmented."""
RTT_TARGET = 1.5
"""The performance issue's target: STT's small-message round trip within 1.5x of bare UDP."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One row group of the report: a named case and the workloads one repeat runs."""

    name: str
    group: str
    workloads: tuple[Workload, ...]
    timeout: float
    settle: float = 0.0
    families: frozenset[str] = frozenset({"stt", "aioquic"})


def build_variants(quick: bool, trace_10k: bool = False) -> list[Variant]:
    """Every case of the performance issue, at full size or at ``--quick`` size.

    The tracemalloc figure is taken at 1,000 sessions only unless ``trace_10k``: under tracing
    10,000 handshakes take several minutes per repeat, and the per-session Python allocation it
    counts does not depend on the number of sessions (the RSS figure shows the scaling).
    """
    bulk_bytes = 16 * MiB if quick else 64 * MiB
    sessions = 50 if quick else 200
    iterations = 500 if quick else 2000
    variants = [
        Variant("handshake", "handshake", (Workload("handshake", sessions=sessions),), 300.0),
        Variant("bulk_1200", "bulk", (Workload("bulk", total_bytes=bulk_bytes),), 900.0),
        Variant(
            "bulk_max",
            "bulk",
            (Workload("bulk", total_bytes=bulk_bytes, datagram_size=LOOPBACK_MAX_DATAGRAM),),
            900.0,
        ),
        Variant(
            "streams16",
            "streams",
            (Workload("streams", total_bytes=bulk_bytes, streams=16),),
            900.0,
        ),
        Variant(
            "rtt",
            "rtt",
            (Workload("rtt", iterations=iterations, warmup=100),),
            300.0,
            families=frozenset({"stt", "aioquic", "baseline"}),
        ),
    ]
    counts = [1000] if quick else [1000, 10_000]
    for n in counts:
        plain = Workload("memory", sessions=n, idle_timeout=600.0, connect_concurrency=8)
        runs = (plain, replace(plain, tracemalloc=True)) if n < 10_000 or trace_10k else (plain,)
        label = f"memory_{n // 1000}k"
        variants.append(Variant(label, "memory", runs, 1800.0, settle=1.0))
    return variants


def build_impls(only: str | None, backends: Sequence[str]) -> list[Impl]:
    """Columns of the report, in order: STT per backend, aioquic, then the bare-UDP floor."""
    impls: list[Impl] = []
    if only in (None, "stt"):
        impls += [Impl(f"stt-{b}", STT_MODULE, b, "stt") for b in backends]
    if only in (None, "aioquic"):
        impls.append(Impl("aioquic", AIOQUIC_MODULE, "asyncio", "aioquic"))
    # The round-trip floor on each loop an STT column runs on: the target compares like with like.
    for loop in ["asyncio", *(b for b in backends if b != "asyncio")]:
        impls.append(Impl(_floor_name(loop), BASELINE_MODULE, loop, "baseline"))
    return impls


def _floor_name(loop: str) -> str:
    """The column of the bare UDP echo on ``loop`` (asyncio's keeps its historical name)."""
    return "bare-udp" if loop == "asyncio" else f"bare-udp-{loop}"


def default_backends() -> list[str]:
    """asyncio and trio always; uvloop when it is installed."""
    backends = ["asyncio", "trio"]
    if importlib.util.find_spec("uvloop") is not None:
        backends.append("uvloop")
    return backends


def stt_unavailable() -> str | None:
    """Why the STT columns cannot run yet, or None when ``stt_anyio.open_node`` exists."""
    try:
        module = importlib.import_module("stt_anyio")
    except Exception as exc:
        return f"import stt_anyio failed: {type(exc).__name__}: {exc}"
    if not hasattr(module, "open_node"):
        return "stt_anyio has no open_node yet"
    return None


@dataclass(slots=True)
class Report:
    """All outcomes of one invocation, keyed by (variant name, implementation name)."""

    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def _merge_workloads(impl: Impl, variant: Variant, report: Report) -> None:
    """One repeat: run each workload of the variant and merge their metrics into one run."""
    outcome = report.outcomes.setdefault((variant.name, impl.name), Outcome())
    merged: dict[str, float] = {}
    for workload in variant.workloads:
        started = time.perf_counter()
        try:
            metrics = run_pair(impl, workload, variant.timeout, variant.settle)
        except BenchError as exc:
            outcome.errors.append(str(exc))
            print(f"  {variant.name:<10} {impl.name:<12} FAILED: {exc}", file=sys.stderr)
            return
        for key, value in metrics.items():
            merged.setdefault(key, value)  # the first (untraced) workload wins a tie
        took = time.perf_counter() - started
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        print(f"  {variant.name:<10} {impl.name:<12} {took:6.1f}s  {shown}", file=sys.stderr)
    outcome.runs.append(merged)


def run_all(
    variants: Sequence[Variant], impls: Sequence[Impl], repeat: int, report: Report
) -> None:
    """Repeat every (variant, implementation) pair; repeats are interleaved across columns.

    Why interleaved: a slow phase of the machine (another job, thermal state) then spreads over
    every column instead of penalising whichever ran during it.
    """
    reason = stt_unavailable() if any(i.family == "stt" for i in impls) else None
    for impl in impls:
        if impl.family == "stt" and reason is not None:
            report.skipped[impl.name] = reason
    for variant in variants:
        for r in range(repeat):
            print(f"[{variant.name}] repeat {r + 1}/{repeat}", file=sys.stderr)
            for impl in impls:
                if impl.family in variant.families and impl.name not in report.skipped:
                    _merge_workloads(impl, variant, report)


def format_report(variants: Sequence[Variant], impls: Sequence[Impl], report: Report) -> str:
    """The table: one row per (case, metric), median (min..max) per column, STT/aioquic."""
    shown = [i for i in impls if any(k[1] == i.name for k in report.outcomes)]
    stt = [i.name for i in shown if i.family == "stt"]
    has_aioquic = any(i.name == "aioquic" for i in shown)
    headers = ["case", "metric", *(i.name for i in shown)]
    if has_aioquic:
        headers += [f"{name}/aioquic" for name in stt]
    rows: list[list[str]] = []
    for variant in variants:
        summaries = {
            i.name: report.outcomes[(variant.name, i.name)].summary()
            for i in shown
            if (variant.name, i.name) in report.outcomes
        }
        names = sorted({m for s in summaries.values() for m in s}, key=_metric_order)
        for metric in names:
            row = [variant.name, metric_label(metric)]
            row += [format_summary(summaries.get(i.name, {}).get(metric)) for i in shown]
            if has_aioquic:
                base = summaries.get("aioquic", {}).get(metric) if is_compared(metric) else None
                row += [summarize_ratio(summaries.get(n, {}).get(metric), base) for n in stt]
            rows.append(row)
    parts = [render_table(headers, rows)] if rows else ["(no results)"]
    parts += _targets(report, stt)
    parts += [f"{name}: skipped ({why})" for name, why in report.skipped.items()]
    if report.interrupted:
        parts.append("INTERRUPTED: cases after the last finished run are missing")
    for (variant_name, impl_name), outcome in report.outcomes.items():
        for err in outcome.errors:
            parts.append(f"{variant_name} / {impl_name}: FAILED: {err}")
    return "\n".join(parts)


def _metric_order(name: str) -> int:
    """Rows follow the order of ``report.METRICS``; unknown names go last."""
    order = list(METRICS)
    return order.index(name) if name in order else len(order)


def _targets(report: Report, stt: Sequence[str]) -> list[str]:
    """The issue's round-trip target, checked for every STT column that has numbers."""
    lines: list[str] = []
    for name in stt:
        loop = name.removeprefix("stt-")
        floor = report.outcomes.get(("rtt", _floor_name(loop)))
        udp = floor.summary().get("rtt_p50_us") if floor is not None and floor.runs else None
        outcome = report.outcomes.get(("rtt", name))
        mine = outcome.summary().get("rtt_p50_us") if outcome else None
        if mine is None or udp is None or udp.median == 0:
            continue
        ratio = mine.median / udp.median
        verdict = "meets" if ratio <= RTT_TARGET else "misses"
        lines.append(f"target: {name} rtt p50 is {ratio:.2f}x bare UDP on {loop} "
                     f"({verdict} the {RTT_TARGET}x goal)")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the performance issue, plus ``--backends``, ``--json``, ``--list``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.run",
        description="STT vs aioquic, side by side, on this machine.",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--only", choices=("stt", "aioquic"), help="run one side only")
    parser.add_argument("--cases", help="comma-separated case or group names (see --list)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--backends", help="STT event loops, comma-separated (asyncio,trio,uvloop)")
    parser.add_argument(
        "--timeout", type=float, help="seconds allowed per run, overriding each case's own"
    )
    parser.add_argument(
        "--trace-10k", action="store_true", help="also run memory_10k under tracemalloc (slow)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every raw run to PATH")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def select_variants(all_variants: Sequence[Variant], spec: str | None) -> list[Variant]:
    """Variants named by ``--cases`` (a variant name or a group name), all when absent."""
    if not spec:
        return list(all_variants)
    wanted = {name.strip() for name in spec.split(",") if name.strip()}
    known = {v.name for v in all_variants} | {v.group for v in all_variants}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}; known: {sorted(known)}")
    return [v for v in all_variants if v.name in wanted or v.group in wanted]


def _write_json(path: str, report: Report, args: argparse.Namespace) -> None:
    """Raw runs for whoever fills in ``docs/performance.md``."""
    data = {
        "machine": {"platform": platform.platform(), "python": sys.version, "cpus": os.cpu_count(),
                    "stt_core": flavour.describe()},
        "args": vars(args),
        "skipped": report.skipped,
        "results": [
            {"case": case, "impl": impl, **asdict(outcome)}
            for (case, impl), outcome in report.outcomes.items()
        ],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected cases and print the table; exit 1 if any run failed."""
    args = parse_args(argv)
    variants = select_variants(build_variants(args.quick, args.trace_10k), args.cases)
    if args.timeout is not None:
        variants = [replace(v, timeout=args.timeout) for v in variants]
    if args.list:
        for v in build_variants(args.quick, args.trace_10k):
            print(f"{v.name:<12} group={v.group:<10} {v.workloads[0]}")
        return 0
    backends = args.backends.split(",") if args.backends else default_backends()
    impls = build_impls(args.only, backends)
    server_cpu, client_cpu = pick_cores()
    print(f"pinning: server -> cpu {server_cpu}, client -> cpu {client_cpu}", file=sys.stderr)
    print(f"stt_core: {flavour.describe()}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)
    report = Report()
    try:
        run_all(variants, impls, args.repeat, report)
    except KeyboardInterrupt:
        print("interrupted: the table has the runs finished so far", file=sys.stderr)
        report.interrupted = True
    print(f"stt_core: {flavour.describe()}")
    print(format_report(variants, impls, report))
    if args.json:
        _write_json(args.json, report, args)
    failed = report.interrupted or any(o.errors for o in report.outcomes.values())
    return 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: children stopped, partial table printed."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
