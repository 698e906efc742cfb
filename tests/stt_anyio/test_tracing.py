"""Trace files, the trace tools and the STT_TRACE_DIR switch.

The big case is a real lossy transfer: 4 MiB through ``stt_core.sim`` at 5%
loss with the JSON-lines writer as the client's trace sink; the file it
produces is summarised and plotted. The node cases run real nodes over
loopback with a seeded lossy UDP relay, under asyncio and trio.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stt_anyio import open_node
from stt_anyio.cli import cli
from stt_anyio.cli_relay import LossyRelay
from stt_anyio.trace_tools import (
    _Coverage,
    format_summary,
    plot,
    read_trace,
    summarize,
)
from stt_anyio.tracing import (
    TRACE_DIR_ENV_VAR,
    TRACE_FORMAT,
    TraceWriter,
    resolve_trace_dir,
)
from stt_core import (
    BufferFullError,
    Config,
    Endpoint,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
    SessionStats,
)
from stt_core.events import SessionRef
from stt_core.sim import LinkConfig, Network

SEED = b"tracing test shared seed 0123456789"
MIB = 1024 * 1024
SIM_DELAY = 0.020
"""One-way delay of the simulated link: every RTT sample is at least 40 ms."""



# -- the writer ---------------------------------------------------------------------------


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def writer(tmp_path: Path, **kwargs: int) -> TraceWriter:
    ids = {1: b"\x01" * 8, 2: b"\x02" * 8}
    return TraceWriter(tmp_path, node_id=b"node-a", now=100.0, wall_clock=lambda: 1.7e9,
                       session_id_of=lambda ref: ids.get(ref), **kwargs)


def test_header_then_events_with_times_since_the_first_event(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.event(100.5, 1, "session_state_changed", {"old": "init", "new": "handshaking"})
    w.event(101.0, 1, "packet_sent", {"packet_number": 0, "size": 40})
    w.close()
    [path] = w.paths
    assert path.name == "20231114T221320.500Z-node-a-ref1-0101010101010101.jsonl"
    header, *events = lines(path)
    assert header == {"format": TRACE_FORMAT, "version": 1, "node_id": b"node-a".hex(),
                      "scope": "session", "ref": 1, "session_id": "01" * 8,
                      "start_time": 1.7e9 + 0.5,
                      "start_time_utc": "2023-11-14T22:13:20.500000+00:00"}
    assert events == [
        {"time": 0.0, "name": "session_state_changed",
         "data": {"old": "init", "new": "handshaking"}},
        {"time": 0.5, "name": "packet_sent", "data": {"packet_number": 0, "size": 40}}]


def test_one_file_per_session_and_one_for_the_endpoint(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.event(100.0, 1, "packet_sent", {"packet_number": 0})
    w.event(100.1, 2, "packet_sent", {"packet_number": 0})
    w.event(100.2, 0, "packet_dropped", {"trigger": "too_short"})
    w.event(100.3, 1, "packet_sent", {"packet_number": 1})
    w.close()
    names = sorted(p.name.split("-", 1)[1] for p in w.paths)
    assert names == ["node-a-endpoint.jsonl", "node-a-ref1-0101010101010101.jsonl",
                     "node-a-ref2-0202020202020202.jsonl"]
    endpoint = next(p for p in w.paths if "endpoint" in p.name)
    header, event = lines(endpoint)
    assert header["scope"] == "endpoint" and header["session_id"] is None
    assert event["data"] == {"trigger": "too_short"}
    assert w.stats.events_written == 4 and w.stats.files_created == 3


def test_nothing_is_written_until_a_batch_is_full_or_the_session_closes(tmp_path: Path) -> None:
    w = writer(tmp_path, batch_events=3)
    w.event(100.0, 1, "a", {})
    w.event(100.0, 1, "b", {})
    assert list(tmp_path.iterdir()) == []
    w.event(100.0, 1, "c", {})
    [path] = w.paths
    assert len(lines(path)) == 4
    w.event(100.0, 1, "d", {})
    w.session_closed(SessionRef(1))
    assert [e["name"] for e in lines(path)[1:]] == ["a", "b", "c", "d"]
    w.event(100.0, 1, "draining", {})  # late events of a closed session: same file
    w.close()
    assert lines(path)[-1]["name"] == "draining"
    w.event(100.0, 1, "after close", {})  # ignored
    assert not w.enabled and len(lines(path)) == 6


def test_a_closed_state_change_writes_the_session_out(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.event(100.0, 1, "session_state_changed", {"old": "established", "new": "closed"})
    [path] = w.paths
    assert lines(path)[1]["data"] == {"old": "established", "new": "closed"}


def test_a_session_id_learnt_after_the_first_batch_renames_the_file(tmp_path: Path) -> None:
    known: dict[int, bytes] = {}
    w = TraceWriter(tmp_path, node_id=b"\xff\x00binary", now=0.0, batch_events=1,
                    session_id_of=lambda ref: known.get(ref))
    w.event(0.0, 7, "session_state_changed", {"old": "init", "new": "handshaking"})
    [first] = w.paths
    assert first.name.endswith("-ff0062696e617279-ref7.jsonl")  # non-ASCII id: hex label
    known[7] = bytes(range(8))
    w.event(0.1, 7, "session_state_changed", {"old": "handshaking", "new": "established"})
    [renamed] = w.paths
    assert renamed.name.endswith("-ref7-0001020304050607.jsonl") and not first.exists()
    assert [e["name"] for e in lines(renamed)[1:]] == [
        "session_state_changed", "session_identified", "session_state_changed"]


def test_bytes_never_reach_a_file(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.event(100.0, 1, "odd", {"secret": b"\x13\x37" * 16, "pair": (1, 2)})
    w.close()
    data = lines(w.paths[0])[1]["data"]
    assert data == {"secret": {"redacted_bytes": 32}, "pair": [1, 2]}


def test_memory_is_bounded(tmp_path: Path) -> None:
    w = writer(tmp_path, batch_events=10_000, max_buffered_bytes=2_000)
    for i in range(200):
        w.event(100.0, 1 + i % 2, "packet_sent", {"packet_number": i})
    assert w.stats.events_written > 150  # flushed on the byte bound, not at the end
    w.close()
    assert w.stats.events_written == 200


def test_closed_sessions_are_forgotten_beyond_the_cap(tmp_path: Path) -> None:
    w = writer(tmp_path, max_closed_sessions=2)
    for ref in (1, 2, 3):
        w.event(100.0, ref, "x", {})
        w.session_closed(SessionRef(ref))
    w.event(100.0, 1, "late", {})  # ref 1 was forgotten: dropped, not a new file
    w.event(100.0, 3, "late", {})  # ref 3 is remembered
    w.close()
    assert w.stats.files_created == 3 and w.stats.events_dropped == 1
    ref3 = next(p for p in w.paths if "-ref3" in p.name)
    assert [e["name"] for e in lines(ref3)[1:]] == ["x", "late"]


def test_a_write_error_switches_tracing_off_without_raising(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    w = writer(directory, batch_events=1)
    shutil.rmtree(directory)
    with caplog.at_level(logging.WARNING, logger="stt.anyio.tracing"):
        w.event(100.0, 1, "x", {})
    assert not w.enabled
    assert any("tracing off" in r.getMessage() for r in caplog.records)
    w.event(100.0, 1, "y", {})
    w.close()


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TraceWriter(tmp_path, node_id=b"n", now=0.0, batch_events=0)
    with pytest.raises(FileNotFoundError):
        TraceWriter(tmp_path / "missing", node_id=b"n", now=0.0)


def test_two_writers_in_one_directory_never_share_a_file(tmp_path: Path) -> None:
    a = TraceWriter(tmp_path, node_id=b"same", now=0.0, wall_clock=lambda: 1.7e9)
    b = TraceWriter(tmp_path, node_id=b"same", now=0.0, wall_clock=lambda: 1.7e9)
    for w in (a, b):
        w.event(0.0, 1, "x", {})
        w.close()
    assert a.paths[0] != b.paths[0] and b.paths[0].name.endswith("-ref1-2.jsonl")


def test_the_trace_dir_comes_from_the_argument_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(TRACE_DIR_ENV_VAR, raising=False)
    assert resolve_trace_dir(None) is None
    assert resolve_trace_dir(tmp_path / "new") == tmp_path / "new"
    assert (tmp_path / "new").is_dir()
    monkeypatch.setenv(TRACE_DIR_ENV_VAR, str(tmp_path / "env"))
    assert resolve_trace_dir(None) == tmp_path / "env"
    assert resolve_trace_dir("") is None  # explicit off wins over the environment
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(TRACE_DIR_ENV_VAR, str(blocker / "sub"))
    with caplog.at_level(logging.WARNING, logger="stt.anyio.tracing"):
        assert resolve_trace_dir(None) is None
    assert "tracing off" in caplog.text
    with pytest.raises(OSError):
        resolve_trace_dir(blocker / "sub")


# -- range bookkeeping behind the retransmission count -----------------------------------


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=40))
def test_coverage_counts_bytes_sent_before(chunks: list[tuple[int, int]]) -> None:
    coverage = _Coverage()
    model: set[int] = set()
    for start, length in chunks:
        span = set(range(start, start + length))
        assert coverage.add(start, start + length) == len(span & model)
        model |= span
    assert sum(e - s for s, e in zip(coverage.starts, coverage.ends, strict=True)) == len(model)
    assert all(e < s for e, s in zip(coverage.ends, coverage.starts[1:], strict=False))


# -- a real lossy transfer through the simulator -------------------------------------------


@dataclass
class SimRun:
    path: Path
    session_id: bytes
    stats: SessionStats
    """The client session's counters when it closed."""
    secrets: list[bytes]


def _sim_transfer(directory: Path, *, total: int = 4 * MIB, loss: float = 0.05) -> SimRun:
    """``total`` bytes client -> server on a 40 Mbit/s, 20 ms link with ``loss``."""
    net = Network(seed=7, default_link=LinkConfig(delay=SIM_DELAY, loss=loss,
                                                  bandwidth_bps=40e6, queue_bytes=200_000))
    tracer = TraceWriter(directory, node_id=b"sim-client", now=net.now)
    client = Endpoint(Config(shared_seed=SEED, node_id=b"sim-client"), now=net.now,
                      random_bytes=net.random_bytes_for("client"), trace=tracer)
    tracer.session_id_of = client.session_id
    server = Endpoint(Config(shared_seed=SEED, node_id=b"sim-server", server_mode=True),
                      now=net.now, random_bytes=net.random_bytes_for("server"))
    net.add_node("server", server, [("10.0.0.2", 9000)])
    net.add_node("client", client, [("10.0.0.1", 40000)])
    ref = net.call("client", lambda: client.connect(("10.0.0.2", 9000), net.now))
    assert net.run_until(lambda: any(isinstance(e, SessionEstablished)
                                     for e in net.events("client")), 5.0)
    stream = net.call("client", lambda: client.open_stream(ref, purpose="bulk"))
    chunk, queued, received = 64 * 1024, [0], [0]
    closing_stats: list[SessionStats] = []

    def feed(event: object = None) -> None:
        if isinstance(event, SessionClosed):
            closing_stats.append(copy.copy(client.session_stats(ref)))
        while queued[0] < total:
            try:
                client.send_message(ref, stream, bytes(chunk))
            except BufferFullError:
                return  # the core reports StreamWritable later
            queued[0] += chunk

    def count(event: object) -> None:
        if isinstance(event, MessageReceived):
            received[0] += len(event.data)

    net.on_event("client", feed)
    net.on_event("server", count)
    net.call("client", feed)
    assert net.run_until(lambda: received[0] >= total, 300.0), f"seed={net.seed}"
    session = client.sessions[ref]
    secrets = [session.send_secret, session.recv_secret, SEED]
    net.call("client", lambda: client.close_session(ref, now=net.now))
    net.run(net.now + 2.0)
    tracer.close()
    [path] = tracer.paths
    [stats] = closing_stats
    return SimRun(path, session.session_id, stats, secrets)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    return _sim_transfer(tmp_path_factory.mktemp("sim-trace"))


def test_a_lossy_transfer_produces_a_trace_file(sim_run: SimRun) -> None:
    trace = read_trace(sim_run.path)
    assert sim_run.session_id.hex() in sim_run.path.name
    assert trace.header["session_id"] == sim_run.session_id.hex()
    assert trace.skipped_lines == 0
    names = {e.name for e in trace.events}
    assert {"packet_sent", "packet_received", "packets_lost", "metrics_updated",
            "session_state_changed"} <= names
    times = [e.time for e in trace.events]
    assert times == sorted(times) and times[0] == 0.0


def test_summary_reports_losses_and_plausible_rtts(sim_run: SimRun) -> None:
    summary = summarize(sim_run.path)
    stats = sim_run.stats
    assert summary["packets_lost"] == stats.packets_lost > 0
    assert 0.02 < summary["loss_rate"] < 0.10
    assert summary["packets_sent"] == stats.packets_sent
    assert summary["bytes_sent"] == stats.bytes_sent
    # Unique stream bytes (message framing included), retransmissions excluded.
    assert summary["stream_bytes_sent"] == stats.stream_bytes_sent >= 4 * MIB
    assert summary["retransmitted_bytes"] > 0 and summary["retransmitted_packets"] > 0
    rtt = summary["rtt_ms"]
    assert 2 * SIM_DELAY * 1000 <= rtt["min"] <= rtt["median"] <= rtt["max"] < 500
    assert rtt["median"] < 2 * SIM_DELAY * 1000 + 50
    assert summary["max_congestion_window"] > 0 and summary["duration_s"] > 1.0
    assert "handshaking->established" in summary["states"]
    text = format_summary(summary)
    assert f"{summary['packets_lost']:,}" in text and "RTT min / median / max" in text


def test_plot_renders_a_png_with_content(sim_run: SimRun, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    out = plot(sim_run.path, tmp_path / "trace.png")
    assert out.exists() and out.stat().st_size > 20_000
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    # Four panels of colored data, not just axes: several distinct hues.
    assert len({tuple(p) for p in (pixels[::7, ::7, :3] * 8).astype(int).reshape(-1, 3)}) > 20


def test_no_secret_appears_in_the_trace(sim_run: SimRun) -> None:
    text = sim_run.path.read_bytes()
    for secret in sim_run.secrets:
        assert secret and secret not in text
        for encoded in (secret.hex(), base64.b64encode(secret).decode()):
            assert encoded.encode() not in text


def test_cli_summarize_and_plot(sim_run: SimRun, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["trace", "summarize", str(sim_run.path)])
    assert result.exit_code == 0, result.output
    assert "packets lost" in result.output
    result = runner.invoke(cli, ["trace", "summarize", "--json", str(sim_run.path)])
    assert result.exit_code == 0 and json.loads(result.output)["packets_lost"] > 0
    pytest.importorskip("matplotlib")
    out = tmp_path / "cli.png"
    result = runner.invoke(cli, ["trace", "plot", str(sim_run.path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 20_000


def test_cli_rejects_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    result = CliRunner().invoke(cli, ["trace", "summarize", str(other)])
    assert result.exit_code == 1 and "not an stt-trace-jsonl trace" in result.output


def test_a_truncated_last_line_is_skipped(sim_run: SimRun, tmp_path: Path) -> None:
    copy = tmp_path / "cut.jsonl"
    copy.write_bytes(sim_run.path.read_bytes() + b'{"time": 99.0, "na')
    summary = summarize(copy)
    assert summary["skipped_lines"] == 1
    assert summary["packets_lost"] == summarize(sim_run.path)["packets_lost"]


# -- real nodes over loopback ---------------------------------------------------------------


@pytest.fixture
def trace_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "traces"
    monkeypatch.setenv(TRACE_DIR_ENV_VAR, str(directory))
    yield directory


FAST = {"max_datagram_size": 1452, "close_timeout": 1.0}


@pytest.mark.anyio
async def test_stt_trace_dir_switches_tracing_on_for_a_node(trace_env: Path) -> None:
    payload = bytes(range(256)) * 2048  # 512 KiB
    async with open_node(node_id=b"traced-server", shared_seed=SEED,
                         config_overrides=FAST) as server, \
            anyio.create_task_group() as tg:
        relay = await LossyRelay.open(server.local_address, loss=0.05, seed=3)
        tg.start_soon(relay.run)
        async with open_node(node_id=b"traced-client", shared_seed=SEED, server_mode=False,
                             config_overrides=FAST) as client:
            with anyio.fail_after(30):
                session = await client.connect(relay.address)
                accepted = await server.accept()
                stream = session.open_stream(purpose="bulk")
                await stream.send(payload)
                incoming = await accepted.accept_stream()
                assert await incoming.receive() == payload
                secrets = [SEED, client.endpoint.sessions[session.ref].send_secret]
                await session.close()
        await relay.aclose()
        tg.cancel_scope.cancel()
    files = sorted(trace_env.iterdir())
    sid = session.session_id.hex()
    client_file = next(p for p in files if "traced-client" in p.name)
    server_file = next(p for p in files if "traced-server" in p.name and "ref" in p.name)
    assert sid in client_file.name and sid in server_file.name
    summary = summarize(client_file)
    assert summary["stream_bytes_sent"] >= len(payload)
    assert summary["packets_lost"] > 0 or relay.stats.dropped_to_server == 0
    assert summary["rtt_ms"] is not None and 0 < summary["rtt_ms"]["min"] < 1000
    for path in files:
        text = path.read_bytes()
        assert all(s not in text and s.hex().encode() not in text for s in secrets)


@pytest.mark.anyio
async def test_an_empty_trace_dir_switches_tracing_off(trace_env: Path) -> None:
    async with open_node(node_id=b"quiet", shared_seed=SEED, trace_dir="") as node:
        assert node.tracer is None
    assert not trace_env.exists()


@pytest.mark.anyio
async def test_nodes_log_start_session_and_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stt"):
        async with open_node(node_id=b"log-server", shared_seed=SEED, trace_dir=tmp_path,
                             config_overrides=FAST) as server, \
                open_node(node_id=b"log-client", shared_seed=SEED, server_mode=False,
                          config_overrides=FAST) as client:
            with anyio.fail_after(10):
                session = await client.connect(server.local_address)
                await server.accept()
                await session.close()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("stt.")]
    sid = session.session_id.hex()
    assert any("started on" in m and "log-server" in m for m in messages)
    assert any(sid in m and "established" in m for m in messages)
    assert any(sid in m and "closed: graceful" in m for m in messages)
    assert any("stopped" in m for m in messages)
    assert not any(SEED.hex() in m or repr(SEED) in m for m in messages)
    assert all(r.levelno <= logging.INFO for r in caplog.records if r.name.startswith("stt."))
