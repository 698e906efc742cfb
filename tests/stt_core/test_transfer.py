"""Streams end to end over the scripted link: messages, fragmentation,
multiplexing, confirmed sends, backpressure and loss repair."""

from __future__ import annotations

import hashlib
import random
from typing import Unpack

import pytest

from stt_core import (
    BufferFullError,
    Endpoint,
    Event,
    MessageDelivered,
    MessageReceived,
    SessionEstablished,
    SessionRef,
    StreamClosed,
    StreamOpened,
    StreamWritable,
)
from stt_core.trace import ListTrace

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, PairOptions, make_config, seeded_random


def open_pair(**kwargs: Unpack[PairOptions]) -> tuple[Pair, SessionRef, SessionRef]:
    pair = Pair(**kwargs)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                       for e in pair.server_events))
    server_ref = next(e.ref for e in pair.server_events if isinstance(e, SessionEstablished))
    pair.run_for(0.1)
    return pair, ref, server_ref


def received(events: list[Event], stream_id: int | None = None) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)
            and (stream_id is None or e.stream_id == stream_id)]


def test_messages_of_many_sizes_arrive_whole_and_in_order() -> None:
    pair, ref, _ = open_pair()
    stream = pair.client.open_stream(ref, purpose="sizes")
    rng = random.Random(3)
    sizes = [0, 1, 63, 64, 1100, 1200, 16383, 16384, 70000, 300_000]
    messages = [rng.randbytes(n) for n in sizes]
    for message in messages:
        pair.client.send_message(ref, stream, message)
    pair.run_for(10.0, stop=lambda: len(received(pair.server_events)) == len(messages))
    assert received(pair.server_events) == messages
    opened = [e for e in pair.server_events if isinstance(e, StreamOpened)]
    assert [(e.stream_id, e.purpose) for e in opened] == [(stream, "sizes")]


def test_confirmed_send_reports_delivery_only_after_every_byte_is_acked() -> None:
    pair, ref, _ = open_pair()
    stream = pair.client.open_stream(ref)
    ids = [pair.client.send_message(ref, stream, bytes([i]) * 5000) for i in range(5)]
    pair.run_for(5.0)
    delivered = [e.message_id for e in pair.client_events if isinstance(e, MessageDelivered)]
    assert delivered == ids
    assert len(received(pair.server_events)) == 5


def test_streams_are_independent_and_both_sides_can_open() -> None:
    pair, ref, server_ref = open_pair()
    a = pair.client.open_stream(ref, purpose="a")
    b = pair.client.open_stream(ref, purpose="b")
    c = pair.server.open_stream(server_ref, purpose="c")
    assert a % 2 == 1 and b % 2 == 1 and c % 2 == 0
    for i in range(20):
        pair.client.send_message(ref, a, b"a%d" % i)
        pair.client.send_message(ref, b, b"b%d" % i)
        pair.server.send_message(server_ref, c, b"c%d" % i)
    pair.run_for(5.0)
    assert received(pair.server_events, a) == [b"a%d" % i for i in range(20)]
    assert received(pair.server_events, b) == [b"b%d" % i for i in range(20)]
    assert received(pair.client_events, c) == [b"c%d" % i for i in range(20)]


def test_stream_zero_is_implicit() -> None:
    pair, ref, _ = open_pair()
    pair.client.send_message(ref, 0, b"on stream zero")
    pair.run_for(1.0)
    assert received(pair.server_events, 0) == [b"on stream zero"]
    assert not [e for e in pair.server_events if isinstance(e, StreamOpened)]


@pytest.mark.parametrize("loss", [0.05, 0.2])
def test_bulk_transfer_survives_random_loss(loss: float) -> None:
    pair, ref, _ = open_pair(seed=11)
    rng = random.Random(int(loss * 100))
    pair.drop = lambda datagram, source, destination: rng.random() < loss
    stream = pair.client.open_stream(ref, purpose="bulk")
    payload = random.Random(5).randbytes(2 * 1024 * 1024)
    chunks = [payload[i:i + 100_000] for i in range(0, len(payload), 100_000)]
    pending = list(chunks)

    def feed() -> bool:
        while pending and pair.client.can_send(ref, stream):
            pair.client.send_message(ref, stream, pending.pop(0))
        pair.flush()
        return len(received(pair.server_events)) == len(chunks)

    pair.run_for(120.0, stop=feed)
    got = received(pair.server_events)
    assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(payload).digest()
    assert got == chunks
    stats = pair.client.session_stats(ref)
    assert stats.packets_lost > 0 and stats.retransmitted_bytes > 0


def test_backpressure_raises_buffer_full_then_reports_writable() -> None:
    config = make_config(b"client", stream_send_buffer_bytes=64 * 1024)
    pair, ref, _ = open_pair(client=config)
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"x" * 100_000)  # one message may overshoot
    assert not pair.client.can_send(ref, stream)
    with pytest.raises(BufferFullError):
        pair.client.send_message(ref, stream, b"more")
    pair.run_for(5.0)
    assert any(isinstance(e, StreamWritable) and e.stream_id == stream
               for e in pair.client_events)
    assert pair.client.can_send(ref, stream)


def test_graceful_stream_close_after_messages() -> None:
    pair, ref, _ = open_pair()
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"last words")
    pair.client.close_stream(ref, stream)
    pair.run_for(2.0)
    events = [e for e in pair.server_events if isinstance(e, (MessageReceived, StreamClosed))]
    assert isinstance(events[0], MessageReceived) and events[0].data == b"last words"
    assert isinstance(events[1], StreamClosed) and events[1].code == 0


def test_slow_reader_pushes_back_on_the_sender() -> None:
    server = make_config(b"server", server_mode=True, auto_consume=False)
    pair, ref, server_ref = open_pair(server=server)
    stream = pair.client.open_stream(ref)
    sent = 0
    for _ in range(200):
        if not pair.client.can_send(ref, stream):
            break
        pair.client.send_message(ref, stream, b"z" * 50_000)
        sent += 1
        pair.run_for(0.05)
    pair.run_for(2.0)
    got = received(pair.server_events)
    # nothing consumed: delivery stops at about the stream window
    assert 50_000 * len(got) <= 2 * 1024 * 1024
    assert len(got) < sent or sent < 200
    for message in got:
        pair.server.consume(server_ref, stream, len(message))
    before = len(got)
    pair.run_for(2.0)
    assert len(received(pair.server_events)) > before


def _traced_large_datagram_pair() -> tuple[Pair, ListTrace, SessionRef]:
    big = {"max_datagram_size": 60000, "pmtu_probe_limit": 60000,
           "stream_send_buffer_bytes": 4 * 1024 * 1024}
    trace = ListTrace()
    pair = Pair(client=make_config(b"client", **big),
                server=make_config(b"server", server_mode=True, **big))
    pair.client = Endpoint(make_config(b"client", **big), now=pair.now,
                           random_bytes=seeded_random(5), trace=trace)
    pair.addr[id(pair.client)] = CLIENT_ADDR
    pair.by_addr[SERVER_ADDR] = pair.client
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                       for e in pair.client_events))
    return pair, trace, ref


def _data_frames_per_packet(trace: ListTrace, stream_ids: set[int]) -> list[list[int]]:
    """Payload sizes of the DATA frames of each packet that carried any of these streams."""
    packets = []
    for data in trace.named("packet_sent"):
        records = data["stream_data"]
        assert isinstance(records, list)
        frames = [length for stream, _, length in records if stream in stream_ids]
        if frames:
            packets.append(frames)
    return packets


def test_a_stream_alone_fills_a_large_datagram_with_one_frame() -> None:
    pair, trace, ref = _traced_large_datagram_pair()
    stream = pair.client.open_stream(ref, purpose="alone", max_frame_size=16384)
    payload = bytes(range(256)) * 4096  # 1 MiB
    pair.client.send_message(ref, stream, payload)
    pair.run_for(5.0)
    assert received(pair.server_events, stream) == [payload]
    packets = _data_frames_per_packet(trace, {stream})
    assert all(len(frames) == 1 for frames in packets)
    assert max(frames[0] for frames in packets) > 50_000  # not cut at 16 KiB


def test_streams_of_equal_priority_keep_their_frame_size_and_share_packets() -> None:
    pair, trace, ref = _traced_large_datagram_pair()
    first = pair.client.open_stream(ref, purpose="a", max_frame_size=16384)
    second = pair.client.open_stream(ref, purpose="b", max_frame_size=16384)
    payload = b"s" * 512 * 1024
    pair.client.send_message(ref, first, payload)
    pair.client.send_message(ref, second, payload)
    pair.run_for(5.0)
    assert received(pair.server_events, first) == [payload]
    assert received(pair.server_events, second) == [payload]
    shared = []
    for data in trace.named("packet_sent"):
        records = data["stream_data"]
        assert isinstance(records, list)
        if len({stream for stream, _, _ in records}) == 2:
            shared.append([length for _, _, length in records])
    assert len(shared) > 10  # while both have data, they share packets...
    assert max(size for frames in shared for size in frames) <= 16384  # ...in 16 KiB frames
