"""Resource caps and a malicious peer holding the seed (docs/security.md §3.6, §4.3).

``fuzz.harness.RawPeer`` seals crafted frames with a real session's keys, so
they reach the server's frame handlers as a seed-holding peer's would. Each
attack checks that the offender is closed with the right code (or only its
stream is reset), that memory stays bounded (tracemalloc peak) and that a
bystander session on the same server keeps working.
"""

from __future__ import annotations

import pytest

from fuzz.harness import SERVER_ADDR as RAW_SERVER_ADDR
from fuzz.harness import RawPeer, establish
from fuzz.harness import make_config as raw_config
from fuzz.make_corpus import capture_plaintexts
from stt_core import (
    Endpoint,
    ErrorCode,
    SessionClosed,
    SessionState,
    StreamClosed,
)
from stt_core.events import Address
from stt_core.wire import (
    DataFrame,
    PacketType,
    SimpleFrame,
    encode_varint,
)

from .helpers import make_config, seeded_random
from .security_helpers import (
    attacked_pair,
    bystander_works,
    closed_events,
    hello_from_new_client,
    open_pair,
    peak_memory,
    received,
    stream_open_frames,
)


def test_too_many_streams_closes_only_that_session() -> None:
    limit = 16
    server_config = raw_config(b"server", server=True, max_streams_per_session=limit)
    offender = establish(seed=31, server=server_config)
    other = establish(seed=32, net=offender.net, client_addr=("192.0.2.77", 1234))
    # An honest opener refuses past the limit the server announced (§5.1); this
    # one ignores it, so the server's own check is what stops it.
    offender.client.sessions[offender.client_ref].streams.set_local_stream_limit(1 << 30)
    for i in range(limit + 1):
        stream = offender.client.open_stream(offender.client_ref, purpose=f"s{i}")
        offender.client.send_message(offender.client_ref, stream, b"m")
    stream = other.client.open_stream(other.client_ref, purpose="bystander")
    offender.net.run(2.0)
    (closed,) = closed_events(offender.client_events, offender.client_ref)
    assert closed.reason == "error" and closed.by_peer
    assert closed.code == ErrorCode.STREAM_LIMIT_ERROR
    assert offender.server.session_state(offender.server_ref) is SessionState.CLOSED
    other.client.send_message(other.client_ref, stream, b"still served")
    offender.net.run(1.0)
    assert b"still served" in received(offender.server_events)
    assert offender.server.session_state(other.server_ref) is SessionState.ESTABLISHED


def test_message_over_max_message_size_resets_only_that_stream() -> None:
    server = make_config(b"server", server_mode=True, max_message_size=1000)
    pair, ref, server_ref = open_pair(server=server)
    big = pair.client.open_stream(ref, purpose="big")
    small = pair.client.open_stream(ref, purpose="small")
    pair.client.send_message(ref, small, b"before")
    pair.client.send_message(ref, big, b"x" * 5000)
    pair.client.send_message(ref, small, b"after")
    pair.run_for(2.0)
    resets = [e for e in pair.client_events if isinstance(e, StreamClosed)]
    assert [(e.stream_id, e.code) for e in resets] == [(big, ErrorCode.MESSAGE_TOO_LARGE)]
    assert received(pair.server_events, small) == [b"before", b"after"]
    assert received(pair.server_events, big) == []
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED
    pair.client.send_message(ref, small, b"x" * 1000)  # exactly the limit is fine
    pair.run_for(1.0)
    assert received(pair.server_events, small)[-1] == b"x" * 1000


def test_max_sessions_is_respected() -> None:
    net_pair = establish(seed=41, server=raw_config(b"server", server=True, max_sessions=3))
    net = net_pair.net
    for i in range(2):
        establish(seed=42 + i, net=net, client_addr=(f"192.0.2.{80 + i}", 1))
    late = net.add(("192.0.2.90", 1), Endpoint(raw_config(b"late"), now=net.now,
                                               random_bytes=seeded_random(99)))
    ref = late.connect(RAW_SERVER_ADDR, net.now, timeout=3.0)
    net.run(4.0)
    assert len(net_pair.server.sessions) == 3
    (closed,) = closed_events(net.events[("192.0.2.90", 1)], ref)
    assert not closed.established and closed.reason == "timeout"  # REJECT(busy): retried
    assert net_pair.server.stats.drops["session_limit"] >= 1


def test_max_pending_handshakes_is_respected() -> None:
    server = Endpoint(make_config(b"server", server_mode=True, max_pending_handshakes=5,
                                  cookie_threshold=100), now=1000.0,
                      random_bytes=seeded_random(3))
    for i in range(40):
        server.receive_datagram(hello_from_new_client(i), ("198.51.100.5", 20_000 + i), 1000.0)
    kinds = [d[0] for d, _ in server.datagrams_to_send(1000.0)]
    assert kinds.count(PacketType.CHALLENGE) == 5
    assert kinds.count(PacketType.REJECT) == 35
    assert len(server.sessions) == 5
    assert server.stats.drops["session_limit"] == 35
    server.handle_timer(1000.0 + 2 * server.config.connect_timeout)
    server.datagrams_to_send(1000.0 + 2 * server.config.connect_timeout)
    assert not server.sessions and server.acceptor.pending == 0  # slots come back


def test_malicious_peer_opening_100000_streams() -> None:
    offender, bystander = attacked_pair(51)
    raw = RawPeer(offender)
    with peak_memory() as peak:
        for first in range(1, 200_000, 2 * 150):
            raw.send(stream_open_frames(first, 150))
        offender.net.run(0.5)
    assert peak[0] < 24 * 1024 * 1024
    closed = closed_events(offender.client_events, offender.client_ref)
    assert closed and closed[0].code == ErrorCode.STREAM_LIMIT_ERROR
    assert offender.server.session_state(offender.server_ref) is SessionState.CLOSED
    assert bystander_works(bystander, b"after 100k streams")


def test_malicious_peer_churning_streams_stays_bounded() -> None:
    """Open-and-reset cycles never hit the stream limit, and memory stays flat."""
    from stt_core.wire import StreamCloseFrame
    offender, bystander = attacked_pair(53)
    raw = RawPeer(offender)
    with peak_memory() as peak:
        for first in range(1, 24_000, 2 * 60):
            ids = range(first, first + 2 * 60, 2)
            raw.send(stream_open_frames(first, 60)
                     + b"".join(StreamCloseFrame(i, 16, 0).encode() for i in ids))
        offender.net.run(0.5)
    assert peak[0] < 24 * 1024 * 1024
    session = offender.server.sessions[offender.server_ref]
    assert len(session.streams) <= 60
    assert offender.server.session_state(offender.server_ref) is SessionState.ESTABLISHED
    assert bystander_works(bystander, b"after churn")


def test_malicious_peer_announcing_huge_messages() -> None:
    """Each stream announcing a message over the limit is reset alone (MESSAGE_TOO_LARGE)."""
    from stt_core.wire import StreamCloseFrame, StreamOpenFrame, parse_frames
    offender, bystander = attacked_pair(55)
    raw = RawPeer(offender)
    huge = encode_varint((1 << 62) - 1)
    with capture_plaintexts() as sealed, peak_memory() as peak:
        for i in range(2000):
            announce = StreamOpenFrame(2 * i + 1, 0, 1024, "big").encode() if i % 2 else b""
            raw.send(announce + DataFrame(2 * i + 1, 0, huge + b"z" * 900).encode())
        offender.net.run(1.0)
    assert peak[0] < 24 * 1024 * 1024
    resets = [f for payload in sealed for f in parse_frames(payload)[0]
              if isinstance(f, StreamCloseFrame)]
    assert len({f.stream_id for f in resets}) == 2000
    assert {f.code for f in resets} == {ErrorCode.MESSAGE_TOO_LARGE}
    reported = [e for e in offender.server_events if isinstance(e, StreamClosed)]
    assert len(reported) == 1000  # the announced half; the others were never shown
    assert {(e.code, e.by_peer) for e in reported} == {(ErrorCode.MESSAGE_TOO_LARGE, False)}
    assert offender.server.session_state(offender.server_ref) is SessionState.ESTABLISHED
    assert len(offender.server.sessions[offender.server_ref].streams) == 0
    assert received(offender.server_events) == []
    assert bystander_works(bystander, b"after huge")


def test_malicious_peer_sending_past_the_flow_control_window() -> None:
    offender, bystander = attacked_pair(57)
    raw = RawPeer(offender)
    window = offender.server.config.stream_receive_window
    raw.send(DataFrame(1, window + 10_000, b"w" * 100).encode())
    offender.net.run(1.0)
    (closed,) = closed_events(offender.client_events, offender.client_ref)
    assert closed.code == ErrorCode.FLOW_CONTROL_ERROR and closed.by_peer
    assert bystander_works(bystander, b"after window")


def test_malicious_peer_exceeding_the_session_window_across_streams() -> None:
    offender, bystander = attacked_pair(59)
    raw = RawPeer(offender)
    session_window = offender.server.config.session_receive_window
    per_stream = offender.server.config.stream_receive_window - 1
    chunk = 1000
    for i in range(session_window // per_stream + 2):
        for offset in range(0, per_stream - chunk, 16 * chunk):
            raw.send(DataFrame(2 * i + 1, offset, b"q" * chunk).encode())
    offender.net.run(1.0)
    (closed,) = closed_events(offender.client_events, offender.client_ref)
    assert closed.code == ErrorCode.FLOW_CONTROL_ERROR and closed.by_peer
    # Nothing was consumed past the window: the server buffered at most the window.
    session = offender.server.sessions.get(offender.server_ref)
    assert session is None or session.state is SessionState.CLOSED
    assert bystander_works(bystander, b"after session window")


def test_malicious_peer_withholding_acks_keeps_the_server_bounded() -> None:
    """The peer stays alive with bare KEEP_ALIVEs but never acknowledges anything."""
    offender, bystander = attacked_pair(61)
    raw = RawPeer(offender)
    client_addr = offender.client_addr

    def silence_client(datagram: bytes, src: Address, dst: Address) -> bool:
        return src == client_addr  # the real client's ACKs never reach the server

    offender.net.drop = silence_client
    server, sref = offender.server, offender.server_ref
    stream = server.open_stream(sref, purpose="push")
    queued = refused = 0
    with peak_memory() as peak:
        for _ in range(60):
            while server.can_send(sref, stream):
                server.send_message(sref, stream, b"p" * 60_000)
                queued += 1
            refused += 1
            raw.send(SimpleFrame(0x13).encode())  # KEEP_ALIVE, no ACK frame
            offender.net.run(1.0)
    session = server.sessions[sref]
    stats = server.session_stats(sref)
    assert server.session_state(sref) is SessionState.ESTABLISHED  # alive, but stalled
    assert session.send_buffered <= server.config.session_send_buffer_bytes + 60_000
    # Without ACKs only the first window plus a few PTO probes (exponential
    # backoff, RFC 9002 §6.2) ever leave: 60 s of stalling cost ~30 KB.
    assert stats.bytes_in_flight <= 64 * 1024
    assert stats.stream_bytes_sent <= 64 * 1024
    assert stats.packets_sent < 200
    assert queued * 60_000 <= server.config.stream_send_buffer_bytes + 60_000
    assert peak[0] < 32 * 1024 * 1024
    offender.net.drop = None
    assert bystander_works(bystander, b"after withheld acks")
    del refused


def test_other_session_keeps_its_data_through_every_attack() -> None:
    """One bystander exchanges messages while an offender runs every attack above."""
    from stt_core.wire import StreamCloseFrame
    offender, bystander = attacked_pair(63)
    raw = RawPeer(offender)
    stream = bystander.client.open_stream(bystander.client_ref, purpose="steady")
    sent: list[bytes] = []
    huge = encode_varint((1 << 62) - 1)
    attacks: list[bytes] = [
        DataFrame(1001, 0, huge + b"h" * 100).encode(),
        stream_open_frames(5001, 100) + StreamCloseFrame(5001, 1, 0).encode(),
        b"\x00" * 500 + SimpleFrame(0x13).encode(),
    ]
    for i in range(60):
        message = b"steady-%d-" % i + bytes(1000)
        bystander.client.send_message(bystander.client_ref, stream, message)
        sent.append(message)
        raw.send(attacks[i % len(attacks)])
        offender.net.run(0.05)
    raw.send(DataFrame(7, 10 << 20, b"!").encode())  # finally, a fatal violation
    offender.net.run(2.0)
    assert received(bystander.server_events, stream) == sent
    assert closed_events(offender.client_events, offender.client_ref)[0].code \
        == ErrorCode.FLOW_CONTROL_ERROR


def test_nack_claiming_a_huge_range_costs_nothing() -> None:
    """A NACK range's length is the peer's claim: it must not be expanded (Appendix B)."""
    from stt_core.wire import NackFrame
    offender, bystander = attacked_pair(65)
    raw = RawPeer(offender)
    with peak_memory() as peak:
        raw.send(NackFrame([range(0, 1 << 22), range(1 << 30, 1 << 40)]).encode())
        offender.net.run(0.5)
    assert peak[0] < 8 * 1024 * 1024  # the expanded list alone would be ~150 MB
    assert offender.server.session_state(offender.server_ref) is SessionState.ESTABLISHED
    assert bystander_works(bystander, b"after nack")


@pytest.mark.parametrize("closing", [0x30, 0xFF])
def test_frames_after_a_close_in_the_same_packet_reach_nobody(closing: int) -> None:
    """SessionClosed is the last event of a session, whatever follows in the packet."""
    from stt_core.wire import CloseFrame, StreamOpenFrame
    pair = establish(seed=79)
    raw = RawPeer(pair)
    before = len(pair.server_events)
    raw.send(CloseFrame(closing, 2, "bye").encode()
             + StreamOpenFrame(1, 0, 1024, "late").encode()
             + DataFrame(1, 0, encode_varint(5) + b"hello").encode())
    pair.net.run(5.0)
    events = [e for e in pair.server_events[before:] if e.ref == pair.server_ref]
    assert [type(e) for e in events] == [SessionClosed]
