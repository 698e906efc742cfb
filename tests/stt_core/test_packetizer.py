"""What the packetizer puts in packets: here, IMMEDIATE_ACK with a confirmed message.

A writer that waits for ``MessageDelivered`` passes ``ack_now=True``; the packet
carrying the message's last byte (and any retransmission of it) then asks the
peer to acknowledge at once instead of after its 25 ms ``max_ack_delay``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stt_core import MessageDelivered, SessionEstablished, SessionRef
from stt_core.session import Session
from stt_core.wire import Frame, FrameType

from .helpers import SERVER_ADDR, Pair

DELAY = 0.010
"""One-way delay of the test link: a round trip is 20 ms, the ACK delay 25 ms."""


@pytest.fixture
def immediate_acks_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The times at which any endpoint received an IMMEDIATE_ACK frame."""
    seen: list[float] = []
    handler = Session.handlers[FrameType.IMMEDIATE_ACK]

    def counting(session: Session, frame: Frame, now: float) -> None:
        seen.append(now)
        handler(session, frame, now)

    monkeypatch.setitem(Session.handlers, FrameType.IMMEDIATE_ACK, counting)
    yield seen


def connected(pair: Pair) -> tuple[SessionRef, int]:
    """An established session and a stream that has already carried one message
    (whichever packet the receiver would acknowledge at once anyway is behind us)."""
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)  # established, confirmed, and the grants' ACKs exchanged
    assert any(isinstance(e, SessionEstablished) for e in pair.server_events)
    stream = pair.client.open_stream(ref, purpose="confirmed")
    pair.client.send_message(ref, stream, b"first")
    pair.run_for(1.0)
    return ref, stream


def time_to_delivery(pair: Pair, ref: SessionRef, stream: int, size: int, *,
                     ack_now: bool) -> float:
    """Send one message; virtual seconds until its MessageDelivered."""
    start = pair.now
    message_id = pair.client.send_message(ref, stream, bytes(size), ack_now=ack_now)

    def delivered() -> bool:
        return any(isinstance(e, MessageDelivered) and e.message_id == message_id
                   and e.stream_id == stream for e in pair.client_events)

    assert pair.run_for(2.0, stop=delivered)
    return pair.now - start


def test_a_confirmed_message_is_acknowledged_after_one_round_trip(
        immediate_acks_seen: list[float]) -> None:
    pair = Pair(delay=DELAY)
    ref, stream = connected(pair)
    assert time_to_delivery(pair, ref, stream, 100, ack_now=True) == pytest.approx(2 * DELAY)
    assert len(immediate_acks_seen) == 1


def test_without_ack_now_the_peer_holds_its_ack_for_the_ack_delay(
        immediate_acks_seen: list[float]) -> None:
    """The default stays as it was: a lone packet's ACK waits max_ack_delay, which
    a reply sent in the meantime would carry for free."""
    pair = Pair(delay=DELAY)
    ref, stream = connected(pair)
    assert time_to_delivery(pair, ref, stream, 100, ack_now=False) > 2 * DELAY + 0.024
    assert immediate_acks_seen == []


@pytest.mark.parametrize("size", range(1395, 1426))
def test_a_message_ending_where_the_packet_is_full_still_asks(
        size: int, immediate_acks_seen: list[float]) -> None:
    """At the default 1452-byte datagrams one of these sizes (1410 today) ends
    exactly at the end of its packet's capacity: the request then goes in the
    next packet, and delivery still takes one round trip. The others end with
    room to spare, or spill into a second packet."""
    pair = Pair(delay=DELAY)
    ref, stream = connected(pair)
    assert time_to_delivery(pair, ref, stream, size, ack_now=True) < 2 * DELAY + 0.005
    assert immediate_acks_seen


def test_the_retransmitted_last_byte_asks_again(immediate_acks_seen: list[float]) -> None:
    pair = Pair(delay=DELAY)
    ref, stream = connected(pair)
    dropped: list[float] = []

    def drop_first_data(datagram: bytes, source: object, destination: object) -> bool:
        # The message's packet is the client's first 100-plus-byte session packet.
        if destination == SERVER_ADDR and len(datagram) > 100 and not dropped:
            dropped.append(pair.now)
            return True
        return False

    pair.drop = drop_first_data
    elapsed = time_to_delivery(pair, ref, stream, 100, ack_now=True)
    assert dropped
    assert len(immediate_acks_seen) == 1  # only the retransmission arrived
    resent_at = immediate_acks_seen[0] - DELAY
    assert pair.now - resent_at == pytest.approx(2 * DELAY)  # acknowledged at once
    assert elapsed > 2 * DELAY  # it did take the loss detour


def test_output_due_lets_a_requested_ack_wait_for_the_reply() -> None:
    """A binding may put its flush off until the application had its turn when
    only a requested ACK is due (Endpoint.output_due); a flush sends it."""
    pair = Pair(delay=DELAY)
    ref, stream = connected(pair)
    pair.client.send_message(ref, stream, b"confirmed", ack_now=True)
    (packet,) = [d for d, _ in pair.client.datagrams_to_send(pair.now)]
    pair.now += DELAY
    pair.server.receive_datagram(packet, pair.addr[id(pair.client)], pair.now)
    assert not pair.server.output_due(pair.now)
    assert len(pair.server.datagrams_to_send(pair.now)) == 1  # the ACK, at once
