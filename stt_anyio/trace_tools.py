"""Trace tools: read, summarise and plot the JSON-lines trace files.

Owns reading the ``stt-trace-jsonl`` format (:func:`read_trace`), the numbers
a person asks first about a session (:func:`summarize`,
:func:`format_summary`), the four-panel plot (:func:`plot`, with matplotlib,
the optional ``plot`` extra) and the ``stt trace`` command group. It must not
know how traces are written (:mod:`stt_anyio.tracing`) nor anything about
sockets or the event loop: it works on finished files, offline.

What is derived, and how (docs/observability.md):

* losses are the core's own verdicts (``packets_lost``), not guesses;
* a retransmission is stream data whose bytes were already sent once
  (``packet_sent.stream_data`` ranges overlap earlier ones);
* RTT samples are the ``latest_rtt`` of the ``metrics_updated`` events that
  acknowledged something.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .tracing import TRACE_FORMAT

__all__ = [
    "THROUGHPUT_BUCKET_INTERVAL",
    "Trace",
    "TraceEvent",
    "TraceFormatError",
    "format_summary",
    "plot",
    "read_trace",
    "summarize",
    "trace_group",
]

THROUGHPUT_BUCKET_INTERVAL = 0.1
"""Width in seconds of the throughput plot's buckets."""


class TraceFormatError(ValueError):
    """The file is not an ``stt-trace-jsonl`` trace (no or wrong header)."""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One event line: seconds since the trace's start, name and data."""

    time: float
    name: str
    data: dict[str, Any]


@dataclass(slots=True)
class Trace:
    """A whole trace file in memory."""

    path: Path
    header: dict[str, Any]
    events: list[TraceEvent] = field(default_factory=list)
    skipped_lines: int = 0
    """Lines that were not valid events (e.g. the last line of a crashed writer)."""

    def named(self, name: str) -> list[TraceEvent]:
        """The events with this name, in file order."""
        return [event for event in self.events if event.name == name]


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Load a trace file; malformed event lines are counted and skipped.

    Raises:
        TraceFormatError: the first line is not an ``stt-trace-jsonl`` header.
        OSError: the file cannot be read.
    """
    file_path = Path(path)
    with file_path.open(encoding="utf-8") as file:
        try:
            header = json.loads(file.readline())
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != TRACE_FORMAT:
            raise TraceFormatError(f"{file_path} is not an {TRACE_FORMAT} trace file")
        trace = Trace(file_path, header)
        for line in file:
            event = _parse_event(line)
            if event is None:
                trace.skipped_lines += 1
            else:
                trace.events.append(event)
    return trace


def _parse_event(line: str) -> TraceEvent | None:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    time, name, data = raw.get("time"), raw.get("name"), raw.get("data", {})
    if not isinstance(time, int | float) or not isinstance(name, str) \
            or not isinstance(data, dict):
        return None
    return TraceEvent(float(time), name, data)


def _load(source: str | os.PathLike[str] | Trace) -> Trace:
    return source if isinstance(source, Trace) else read_trace(source)


# -- derived series ----------------------------------------------------------------------


class _Coverage:
    """Byte ranges of one stream already sent: sorted, disjoint ``[start, end)`` pairs."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> int:
        """Cover ``[start, end)``; return how many of its bytes were covered before."""
        if end <= start:
            return 0
        lo = bisect_left(self.ends, start)  # first range that ends at or after start
        hi = bisect_right(self.starts, end)  # ranges from lo to hi touch [start, end)
        overlap = sum(max(0, min(end, self.ends[i]) - max(start, self.starts[i]))
                      for i in range(lo, hi))
        if lo < hi:
            start = min(start, self.starts[lo])
            end = max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]
        return overlap


@dataclass(slots=True)
class _Sent:
    """The stream data of the packets sent, and which of it was sent before."""

    points: list[tuple[float, float, bool]] = field(default_factory=list)
    """``(time, end offset, retransmission)`` per stream data chunk."""
    end_of_packet: dict[int, float] = field(default_factory=dict)
    """Highest stream offset each data-carrying packet carried."""
    retransmitted_packets: int = 0
    retransmitted_bytes: int = 0
    unique_stream_bytes: int = 0


def _stream_data(trace: Trace) -> _Sent:
    sent = _Sent()
    coverage: dict[int, _Coverage] = {}
    for event in trace.named("packet_sent"):
        chunks = event.data.get("stream_data") or []
        retransmitted = False
        for stream_id, offset, length in chunks:
            again = coverage.setdefault(stream_id, _Coverage()).add(offset, offset + length)
            sent.retransmitted_bytes += again
            sent.unique_stream_bytes += length - again
            retransmitted = retransmitted or again > 0
            sent.points.append((event.time, float(offset + length), again > 0))
        if chunks:
            pn = event.data.get("packet_number")
            if isinstance(pn, int):
                sent.end_of_packet[pn] = max(float(o + n) for _, o, n in chunks)
        sent.retransmitted_packets += retransmitted
    return sent


def _rtt_samples(trace: Trace) -> list[tuple[float, float, float, float]]:
    """``(time, latest, smoothed, min)`` RTT in seconds, from ACKs that acked something."""
    samples = []
    for event in trace.named("metrics_updated"):
        data = event.data
        latest = data.get("latest_rtt")
        if data.get("acked") and isinstance(latest, int | float) and latest > 0:
            min_rtt = data.get("min_rtt", latest)
            samples.append((event.time, float(latest), float(data.get("smoothed_rtt", latest)),
                            float(min_rtt) if math.isfinite(min_rtt) else float(latest)))
    return samples


# -- summary ------------------------------------------------------------------------------


def summarize(source: str | os.PathLike[str] | Trace) -> dict[str, Any]:
    """The headline numbers of one trace file, as plain JSON-able data.

    Keys: ``file``, ``scope``, ``node_id``, ``session_id``, ``events``,
    ``skipped_lines``, ``duration_s``, ``packets_sent``, ``packets_received``,
    ``bytes_sent``, ``bytes_received``, ``packets_lost``, ``loss_rate``
    (lost / sent), ``retransmitted_packets``, ``retransmitted_bytes``,
    ``stream_bytes_sent`` (unique), ``send_rate_mbps``, ``rtt_ms`` (``min``,
    ``median``, ``max``, ``last_smoothed``, or None without samples),
    ``max_congestion_window``, ``max_bytes_in_flight``, ``key_updates``,
    ``path_changes``, ``drops_by_trigger``, ``states``.

    Raises:
        TraceFormatError, OSError: as for :func:`read_trace`.
    """
    trace = _load(source)
    events = trace.events
    duration = (events[-1].time - events[0].time) if events else 0.0
    sent = trace.named("packet_sent")
    received = trace.named("packet_received")
    lost = sum(len(e.data.get("packet_numbers", [])) for e in trace.named("packets_lost"))
    stream = _stream_data(trace)
    metrics = [e.data for e in trace.named("metrics_updated")]
    rtts = [latest * 1000.0 for _, latest, _, _ in _rtt_samples(trace)]
    bytes_sent = sum(int(e.data.get("size", 0)) for e in sent)
    return {
        "file": str(trace.path),
        "scope": trace.header.get("scope"),
        "node_id": trace.header.get("node_id"),
        "session_id": trace.header.get("session_id"),
        "events": len(events),
        "skipped_lines": trace.skipped_lines,
        "duration_s": round(duration, 6),
        "packets_sent": len(sent),
        "packets_received": len(received),
        "bytes_sent": bytes_sent,
        "bytes_received": sum(int(e.data.get("size", 0)) for e in received),
        "packets_lost": lost,
        "loss_rate": round(lost / len(sent), 6) if sent else 0.0,
        "retransmitted_packets": stream.retransmitted_packets,
        "retransmitted_bytes": stream.retransmitted_bytes,
        "stream_bytes_sent": stream.unique_stream_bytes,
        "send_rate_mbps": round(bytes_sent * 8 / duration / 1e6, 3) if duration > 0 else 0.0,
        "rtt_ms": None if not rtts else {
            "min": round(min(rtts), 3), "median": round(statistics.median(rtts), 3),
            "max": round(max(rtts), 3),
            "last_smoothed": round(float(metrics[-1].get("smoothed_rtt", 0.0)) * 1000, 3)},
        "max_congestion_window": max((int(m.get("congestion_window", 0)) for m in metrics),
                                     default=0),
        "max_bytes_in_flight": max((int(m.get("bytes_in_flight", 0)) for m in metrics),
                                   default=0),
        "key_updates": len(trace.named("key_updated")),
        "path_changes": len(trace.named("path_changed")),
        "drops_by_trigger": dict(Counter(str(e.data.get("trigger"))
                                         for e in trace.named("packet_dropped"))),
        "states": [f"{e.data.get('old')}->{e.data.get('new')}"
                   for e in trace.named("session_state_changed")],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of :func:`summarize`'s result (aligned lines)."""
    rtt = summary.get("rtt_ms")
    drops = summary.get("drops_by_trigger") or {}
    rows = [
        ("trace", f"{summary['file']} ({summary['scope']}, {summary['events']} events)"),
        ("session id", summary.get("session_id") or "-"),
        ("duration", f"{summary['duration_s']:.3f} s"),
        ("packets sent / received",
         f"{summary['packets_sent']:,} / {summary['packets_received']:,}"),
        ("bytes sent / received", f"{summary['bytes_sent']:,} / {summary['bytes_received']:,}"),
        ("packets lost", f"{summary['packets_lost']:,} ({summary['loss_rate']:.2%} of sent)"),
        ("retransmissions", f"{summary['retransmitted_packets']:,} packets, "
                            f"{summary['retransmitted_bytes']:,} bytes"),
        ("stream bytes sent (unique)", f"{summary['stream_bytes_sent']:,}"),
        ("send rate", f"{summary['send_rate_mbps']:.3f} Mbit/s"),
        ("RTT min / median / max", "-" if not rtt else
         f"{rtt['min']:.3f} / {rtt['median']:.3f} / {rtt['max']:.3f} ms "
         f"(smoothed at end {rtt['last_smoothed']:.3f} ms)"),
        ("max cwnd / bytes in flight",
         f"{summary['max_congestion_window']:,} / {summary['max_bytes_in_flight']:,} bytes"),
        ("key updates / path changes", f"{summary['key_updates']} / {summary['path_changes']}"),
        ("drops by trigger", ", ".join(f"{k}: {v}" for k, v in sorted(drops.items())) or "-"),
        ("states", ", ".join(summary.get("states") or []) or "-"),
    ]
    if summary.get("skipped_lines"):
        rows.append(("skipped lines", str(summary["skipped_lines"])))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


# -- plot -----------------------------------------------------------------------------------


def _throughput(trace: Trace) -> tuple[list[float], list[float], list[float]]:
    """Bucket starts, Mbit/s sent and Mbit/s of retransmitted stream data per bucket."""
    sent = trace.named("packet_sent")
    if not sent:
        return [], [], []
    width = THROUGHPUT_BUCKET_INTERVAL
    count = int(sent[-1].time // width) + 1
    total = [0.0] * count
    again = [0.0] * count
    coverage: dict[int, _Coverage] = {}
    for event in sent:
        bucket = int(event.time // width)
        total[bucket] += float(event.data.get("size", 0))
        for stream_id, offset, length in event.data.get("stream_data") or []:
            again[bucket] += coverage.setdefault(stream_id, _Coverage()).add(
                offset, offset + length)
    scale = 8 / width / 1e6
    return ([i * width for i in range(count)], [b * scale for b in total],
            [b * scale for b in again])


def plot(source: str | os.PathLike[str] | Trace, out_png: str | os.PathLike[str], *,
         title: str | None = None, dpi: int = 100) -> Path:
    """Draw the trace's four panels into a PNG and return its path.

    Panels, all against time since the trace's start: stream offsets sent
    (retransmissions highlighted), acknowledged and lost; congestion window
    and bytes in flight; RTT (latest, smoothed, min); send rate per 100 ms.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'stt[plot]'``).
        TraceFormatError, OSError: as for :func:`read_trace`, or writing the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trace = _load(source)
    figure = Figure(figsize=(10, 11), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(4, 1, sharex=True)
    _plot_sequence(axes[0], trace)
    _plot_window(axes[1], trace)
    _plot_rtt(axes[2], trace)
    _plot_throughput(axes[3], trace)
    axes[3].set_xlabel("time since trace start (s)")
    sid = trace.header.get("session_id") or trace.header.get("scope", "")
    figure.suptitle(title or f"STT trace {sid} ({trace.path.name})", fontsize=11)
    out = Path(out_png)
    figure.savefig(out, dpi=dpi)
    return out


_Points = list[tuple[float, float]]


def _plot_sequence(ax: Any, trace: Trace) -> None:
    sent = _stream_data(trace)
    mib = 1024 * 1024
    first = [(t, y / mib) for t, y, again in sent.points if not again]
    again = [(t, y / mib) for t, y, again in sent.points if again]
    acked = [(e.time, sent.end_of_packet[pn] / mib) for e in trace.named("metrics_updated")
             for pn in e.data.get("acked", []) if pn in sent.end_of_packet]
    lost = [(e.time, sent.end_of_packet[pn] / mib) for e in trace.named("packets_lost")
            for pn in e.data.get("packet_numbers", []) if pn in sent.end_of_packet]
    series = (first, acked, again, lost)
    _scatter_sequence(ax, series, scale=1.0)
    ax.set_ylabel("stream offset (MiB)")
    ax.set_title("sequence / ACK progress", fontsize=10, loc="left")
    _legend(ax)
    if lost and first:
        _zoom_on_a_loss(ax, series)


def _scatter_sequence(ax: Any, series: tuple[_Points, ...], *, scale: float) -> None:
    styles: tuple[dict[str, Any], ...] = (
        {"s": 2, "color": "tab:blue", "label": "sent"},
        {"s": 2, "color": "tab:green", "label": "acknowledged"},
        {"s": 6, "color": "tab:orange", "label": "retransmitted"},
        {"s": 14, "color": "tab:red", "marker": "x", "label": "declared lost"})
    for points, style in zip(series, styles, strict=True):
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], linewidths=0.8,
                       rasterized=True, **{**style, "s": style["s"] * scale})


def _zoom_on_a_loss(ax: Any, series: tuple[_Points, ...]) -> None:
    """An inset around the first loss past 40% of the trace: what repair looks like.

    The whole transfer squeezes thousands of packets into one line; the inset
    shows about 1/50 of the trace's duration, where the loss, its
    retransmission and the ACKs that follow are told apart.
    """
    first, _, _, lost = series
    start, end = first[0][0], max(p[0] for p in first)
    span = max((end - start) / 50, 1e-3)
    middle = start + 0.4 * (end - start)
    focus = next((t for t, _ in lost if t >= middle), lost[-1][0])
    lo, hi = focus - span / 2, focus + span / 2
    window = tuple([p for p in points if lo <= p[0] <= hi] for points in series)
    offsets = [y for points in window for _, y in points]
    if not offsets:
        return
    inset = ax.inset_axes((0.62, 0.07, 0.36, 0.5))
    _scatter_sequence(inset, window, scale=3.0)
    inset.set_xlim(lo, hi)
    pad = (max(offsets) - min(offsets)) * 0.05 or 0.01
    inset.set_ylim(min(offsets) - pad, max(offsets) + pad)
    inset.tick_params(labelsize=7)
    inset.set_title(f"zoom: {lo:.2f}-{hi:.2f} s", fontsize=8)
    inset.grid(True, alpha=0.3)
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


def _plot_window(ax: Any, trace: Trace) -> None:
    metrics = trace.named("metrics_updated")
    times = [e.time for e in metrics]
    for key, label, color in (("congestion_window", "congestion window", "tab:purple"),
                              ("bytes_in_flight", "bytes in flight", "tab:gray")):
        ax.step(times, [float(e.data.get(key, 0)) / 1024 for e in metrics], where="post",
                label=label, color=color, linewidth=0.9)
    ax.set_ylabel("KiB")
    ax.set_title("congestion window and bytes in flight", fontsize=10, loc="left")
    _legend(ax)


def _plot_rtt(ax: Any, trace: Trace) -> None:
    samples = _rtt_samples(trace)
    times = [s[0] for s in samples]
    ax.scatter(times, [s[1] * 1000 for s in samples], s=3, color="tab:blue",
               label="latest", rasterized=True)
    ax.plot(times, [s[2] * 1000 for s in samples], color="tab:orange", linewidth=1.2,
            label="smoothed")
    ax.plot(times, [s[3] * 1000 for s in samples], color="tab:green", linewidth=1.0,
            linestyle="--", label="min")
    ax.set_ylabel("RTT (ms)")
    ax.set_title("round-trip time", fontsize=10, loc="left")
    _legend(ax)


def _plot_throughput(ax: Any, trace: Trace) -> None:
    starts, total, again = _throughput(trace)
    width = THROUGHPUT_BUCKET_INTERVAL
    if starts:  # one artist per series (a bar per bucket is slow on long traces)
        edges = [*starts, starts[-1] + width]
        ax.stairs(total, edges, fill=True, color="tab:blue", label="sent (all packets)")
        ax.stairs(again, edges, fill=True, color="tab:orange",
                  label="retransmitted stream data")
    ax.set_ylabel("Mbit/s")
    ax.set_title(f"send rate per {width * 1000:.0f} ms", fontsize=10, loc="left")
    _legend(ax)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, markerscale=2)
    ax.grid(True, alpha=0.3)


# -- command line ---------------------------------------------------------------------------


@click.group("trace")
def trace_group() -> None:
    """Read trace files (written with $STT_TRACE_DIR or open_node(trace_dir=...))."""


@trace_group.command("summarize")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summarize_command(file: Path, as_json: bool) -> None:
    """Packets, losses, retransmissions, RTT and congestion numbers of FILE."""
    try:
        summary = summarize(file)
    except (TraceFormatError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@trace_group.command("plot")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="PNG to write (default: FILE with a .png suffix).")
@click.option("--title", default=None, help="Figure title.")
def plot_command(file: Path, output: Path | None, title: str | None) -> None:
    """Draw FILE's sequence, window, RTT and send-rate panels into a PNG."""
    out = output or file.with_suffix(".png")
    try:
        written = plot(file, out, title=title)
    except ImportError:
        raise click.ClickException(
            "plotting needs matplotlib: pip install 'stt[plot]'") from None
    except (TraceFormatError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written}")
