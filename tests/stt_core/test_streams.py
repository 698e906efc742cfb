"""Tests for stt_core.streams: sender, receiver and the pair over a hostile channel."""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stt_core import stream_receive
from stt_core.errors import (
    BufferFullError,
    ErrorCode,
    InvalidStateError,
    ProtocolError,
    StreamClosedError,
)
from stt_core.send_buffer import SMALL_WRITE, TAIL_CHUNK
from stt_core.stream_receive import LAZY_MIN_SIZE, ReceivedMessage
from stt_core.streams import SessionFlowControl, StreamReceiver, StreamSender
from stt_core.wire import encode_varint

Frame = tuple[int, bytes, bool]


def frame(chunk: tuple[int, bytes | memoryview, bool] | None) -> Frame:
    """Normalise a next_frame() result for comparisons."""
    assert chunk is not None, "expected a frame"
    offset, payload, fin = chunk
    return offset, bytes(payload), fin


def framed(*messages: bytes) -> bytes:
    return b"".join(encode_varint(len(m)) + m for m in messages)


# --------------------------------------------------------------------------- channel


@dataclass
class Channel:
    """A sender/receiver pair over a lossy, duplicating, reordering link.

    Acknowledgements can be lost too (then the sender declares the frame lost
    and retransmits bytes the receiver already has).
    """

    rng: random.Random
    sender: StreamSender
    receiver: StreamReceiver
    session: SessionFlowControl
    loss: float = 0.0
    dup: float = 0.0
    ack_loss: float = 0.0
    reorder: bool = False
    payloads: tuple[int, ...] = (1200,)
    consume: bool = True
    window: int = 0
    in_flight: list[Frame] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    unconsumed: int = 0
    max_memory: int = 0
    lazy: bool = False
    """Keep popped messages unread (ReceivedMessage) and read them at random moments."""
    handles: list[ReceivedMessage] = field(default_factory=list)
    max_allocation: int = 0

    def send_some(self) -> None:
        for _ in range(self.rng.randint(1, 8)):
            chunk = self.sender.next_frame(self.rng.choice(self.payloads),
                                           self.sender.stream_credit)
            if chunk is None:
                return
            self.in_flight.append(frame(chunk))

    def deliver_one(self) -> None:
        index = self.rng.randrange(len(self.in_flight)) if self.reorder else 0
        offset, payload, fin = self.in_flight.pop(index)
        if self.rng.random() < self.loss:
            self.sender.on_lost(offset, len(payload), fin)
            return
        if self.rng.random() < self.dup:
            self.in_flight.append((offset, payload, fin))
        self.session.on_new_bytes(self.receiver.on_data(offset, payload, fin))
        if not self.lazy:  # lazily, unread messages are in both terms: see max_allocation
            self.max_memory = max(self.max_memory,
                                  self.unconsumed + self.receiver.buffered_bytes)
        self.max_allocation = max(self.max_allocation, len(self.receiver._buf))
        if self.lazy:
            self._pop_lazily()
        for message in [] if self.lazy else self.receiver.pop_messages():
            self.received.append(message)
            if self.consume:
                self.receiver.consume(len(message))
            else:
                self.unconsumed += len(message)
        self.session.consume(self.receiver.take_released())
        self.session.credit_update()
        limit = self.receiver.credit_update()
        if limit is not None:
            self.sender.on_max_stream_data(limit)
        if self.rng.random() < self.ack_loss:
            self.sender.on_lost(offset, len(payload), fin)
        else:
            self.delivered += self.sender.on_acked(offset, len(payload), fin)

    def _pop_lazily(self) -> None:
        for handle in self.receiver.pop_received():
            self.handles.append(handle)
            if self.consume:
                self.receiver.consume(handle.size)  # consumed before it is read
            else:
                self.unconsumed += handle.size
        if self.handles and self.rng.random() < 0.3:
            _ = self.rng.choice(self.handles).data  # any one, in or out of order

    def consume_all(self) -> None:
        """The slow application finally reads everything it was given."""
        self.receiver.consume(self.unconsumed)
        self.unconsumed = 0
        self.session.consume(self.receiver.take_released())
        limit = self.receiver.credit_update()
        if limit is not None:
            self.sender.on_max_stream_data(limit)

    def run(self, messages: list[bytes], max_steps: int = 200_000,
            allow_stall: bool = False) -> bool:
        """Transfer ``messages`` (appended to what is still pending).

        Returns True when everything is acknowledged, False when the transfer
        stalled and ``allow_stall`` is set (a reader that does not consume).
        """
        self.pending.extend(messages)
        pending = self.pending
        for _ in range(max_steps):
            while pending and self.sender.writable:
                self.sender.write_message(pending.pop(0))
            if not pending and self.sender.final_size is None:
                self.sender.finish()
            self.send_some()
            if not self.in_flight:
                if self.sender.fin_acked and self.sender.all_acked:
                    return True
                if allow_stall:
                    return False
                raise AssertionError("deadlock: nothing in flight and nothing to send")
            self.deliver_one()
        raise AssertionError("transfer did not finish")


def make_channel(seed: int, *, window: int = 64 * 1024, buffer_limit: int = 256 * 1024,
                 payloads: tuple[int, ...] = (1200,), loss: float = 0.0, dup: float = 0.0,
                 ack_loss: float = 0.0, reorder: bool = False,
                 consume: bool = True, lazy: bool = False) -> Channel:
    receiver = StreamReceiver(4, window=window, max_message_size=1 << 23)
    sender = StreamSender(4, buffer_limit=buffer_limit, max_frame_size=16384,
                          peer_max_stream_data=receiver.advertised_limit)
    session = SessionFlowControl(receive_window=1 << 40)
    return Channel(random.Random(seed), sender, receiver, session, loss=loss, dup=dup,
                   ack_loss=ack_loss, reorder=reorder, payloads=payloads, consume=consume,
                   window=window, lazy=lazy)


def check_complete(channel: Channel, messages: list[bytes]) -> None:
    assert channel.received == messages
    assert channel.delivered == list(range(len(messages)))
    assert channel.receiver.is_finished
    assert channel.sender.held_bytes == 0, "everything acked: no memory held"
    assert channel.sender.buffered_bytes == 0
    # Memory bound of the flow-control rule: window + largest message (+ its prefix).
    largest = max((len(m) for m in messages), default=0)
    assert channel.max_memory <= channel.window + largest + 8


sizes_st = st.one_of(
    st.sampled_from([0, 1, 2, 63, 64, 65, 16383, 16384, 16385]),
    st.integers(0, 3000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(sizes_st, max_size=10),
    seed=st.integers(0, 2**32 - 1),
    payloads=st.lists(st.integers(1, 20000), min_size=1, max_size=4).map(tuple),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    dup=st.sampled_from([0.0, 0.2]),
    ack_loss=st.sampled_from([0.0, 0.1]),
    reorder=st.booleans(),
    window=st.sampled_from([100, 4096, 65536]),
)
def test_round_trip_over_hostile_channel(sizes: list[int], seed: int, payloads: tuple[int, ...],
                                         loss: float, dup: float, ack_loss: float,
                                         reorder: bool, window: int) -> None:
    rng = random.Random(seed)
    messages = [rng.randbytes(size) for size in sizes]
    channel = make_channel(seed, window=window, payloads=payloads, loss=loss, dup=dup,
                           ack_loss=ack_loss, reorder=reorder, buffer_limit=8192)
    channel.run(messages)
    check_complete(channel, messages)


def test_round_trip_4_mib_messages_with_loss_and_reordering() -> None:
    rng = random.Random(7)
    messages = [rng.randbytes(4 * 1024 * 1024), b"", b"tail", rng.randbytes(4 * 1024 * 1024 + 1)]
    channel = make_channel(7, window=1 << 20, payloads=(1200, 16384, 60000),
                           loss=0.05, dup=0.05, ack_loss=0.05, reorder=True)
    channel.run(messages)
    check_complete(channel, messages)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(sizes_st, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from([0.0, 0.2]),
    reorder=st.booleans(),
    window=st.sampled_from([100, 4096, 65536]),
    consume_before_reading=st.booleans(),
)
# An old unread message once pinned every byte read and consumed after it, and the
# buffer grew with the transfer (196,744 bytes here, against a bound of 163,854).
@example(sizes=[0, 16383, 63, 16383, 16383, 16383, 16383, 16383], seed=0, loss=0.2,
         reorder=False, window=65536, consume_before_reading=False)
def test_messages_read_late_and_out_of_order_are_intact_and_memory_stays_bounded(
        sizes: list[int], seed: int, loss: float, reorder: bool, window: int,
        consume_before_reading: bool) -> None:
    """Popped messages stay in the reassembly buffer until read, while more data
    lands, the buffer slides and grows. Held ones are within the flow-control
    bound; consumed-but-unread ones (auto_consume) are copied out before the
    buffer would grow for them."""
    rng = random.Random(seed)
    messages = [rng.randbytes(size) for size in sizes]
    channel = make_channel(seed, window=window, payloads=(700, 5000), loss=loss,
                           reorder=reorder, buffer_limit=8192, lazy=True,
                           consume=consume_before_reading)
    # Every non-empty message stays in the buffer until read, not only large ones.
    with mock.patch.object(stream_receive, "LAZY_MIN_SIZE", 1):
        finished = channel.run(messages, allow_stall=not consume_before_reading)
        while not finished:
            channel.consume_all()  # the reader takes its credit back in bursts
            finished = channel.run([], allow_stall=True)
    channel.received = [handle.data for handle in channel.handles]
    check_complete(channel, messages)
    largest = max((len(m) for m in messages), default=0)
    assert channel.max_allocation <= 2 * (window + largest + 8)


@pytest.mark.parametrize("window", [1000, 64 * 1024])
def test_reader_that_does_not_consume_stalls_the_sender_within_the_bound(window: int) -> None:
    rng = random.Random(window)
    messages = [rng.randbytes(rng.choice([10, 5000, 50_000])) for _ in range(40)]
    channel = make_channel(5, window=window, consume=False, payloads=(1200, 9000),
                           loss=0.1, reorder=True)
    assert not channel.run(messages, allow_stall=True), "the sender must stall"
    assert len(channel.received) < len(messages)
    largest = max(len(m) for m in messages)
    assert channel.max_memory <= window + largest + 8
    # Once the application reads, the transfer completes.
    channel.consume = True
    channel.consume_all()
    assert channel.run([])
    check_complete(channel, messages)


def test_slow_reader_does_not_deadlock_a_message_larger_than_the_window() -> None:
    """Rule (a): an incomplete message releases credit as its bytes arrive."""
    rng = random.Random(3)
    messages = [rng.randbytes(50_000), rng.randbytes(10)]
    channel = make_channel(3, window=1000, consume=False, payloads=(500,))
    channel.run(messages)
    assert channel.received == messages


@pytest.mark.parametrize("window", [1, 2, 7])
def test_windows_smaller_than_a_length_prefix_do_not_deadlock(window: int) -> None:
    """Prefix bytes release credit one by one, before the prefix is whole."""
    rng = random.Random(window)
    messages = [b"", rng.randbytes(70), rng.randbytes(300), b"z", rng.randbytes(16400)]
    channel = make_channel(window, window=window, payloads=(1, 3, 1200), loss=0.2,
                           dup=0.1, reorder=True)
    channel.run(messages)
    check_complete(channel, messages)


# ---------------------------------------------------------------------------- sender


def new_sender(buffer_limit: int = 1 << 20, max_frame_size: int = 1000,
               credit: int = 1 << 30) -> StreamSender:
    return StreamSender(1, buffer_limit=buffer_limit, max_frame_size=max_frame_size,
                        peer_max_stream_data=credit)


def test_message_ids_and_framing() -> None:
    sender = new_sender()
    assert sender.write_message(b"hello") == 0
    assert sender.write_message(b"") == 1
    assert sender.write_message(bytearray(b"x" * 64)) == 2
    expected = framed(b"hello", b"", b"x" * 64)
    assert sender.buffered_bytes == len(expected)
    assert frame(sender.next_frame(1000, 1000)) == (0, expected, False)
    assert sender.next_frame(1000, 1000) is None


def test_next_frame_respects_payload_frame_size_and_credit() -> None:
    sender = new_sender(max_frame_size=10)
    sender.write_message(b"a" * 100)  # 2-byte prefix + 100 bytes
    assert len(frame(sender.next_frame(50, 1000))[1]) == 10, "max_frame_size caps"
    assert len(frame(sender.next_frame(4, 1000))[1]) == 4, "max_payload caps"
    assert frame(sender.next_frame(50, 3))[0:2] == (14, b"a" * 3), "credit caps new bytes"
    assert sender.next_frame(50, 0) is None
    assert sender.highest_sent == 17
    assert sender.unsent_bytes == 102 - 17


def test_stream_credit_and_flow_blocked() -> None:
    sender = new_sender(credit=5)
    sender.write_message(b"0123456789")
    assert sender.stream_credit == 5
    frame(sender.next_frame(100, sender.stream_credit))
    assert sender.stream_credit == 0
    assert sender.flow_blocked
    sender.on_max_stream_data(3)
    assert sender.peer_max_stream_data == 5, "MAX_STREAM_DATA is monotonic"
    sender.on_max_stream_data(20)
    assert sender.stream_credit == 15
    assert not sender.flow_blocked


def test_retransmissions_go_first_and_cost_no_credit() -> None:
    sender = new_sender(max_frame_size=4)
    sender.write_message(b"abcdefghij")  # 11 bytes on the wire
    first = frame(sender.next_frame(4, 100))
    frame(sender.next_frame(4, 100))
    sender.on_lost(first[0], len(first[1]), first[2])
    assert frame(sender.next_frame(4, 0)) == first, "resent although credit is 0"
    assert frame(sender.next_frame(4, 100))[0] == 8, "then new data"


def test_on_acked_reports_messages_only_when_every_byte_is_acked() -> None:
    sender = new_sender(max_frame_size=3)
    for message in (b"aa", b"bbbbb", b"c"):  # wire: [0,3) [3,9) [9,11)
        sender.write_message(message)
    frames = []
    while (chunk := sender.next_frame(3, 100)) is not None:
        frames.append(frame(chunk))
    assert [f[0] for f in frames] == [0, 3, 6, 9]

    def acks(f: Frame) -> list[int]:
        return sender.on_acked(f[0], len(f[1]), f[2])

    assert acks(frames[3]) == [], "message 2 acked, but 0 and 1 are not"
    assert acks(frames[1]) == [], "out of order: nothing delivered before offset 0"
    assert acks(frames[0]) == [0], "message 1 still misses [6, 9)"
    assert acks(frames[0]) == [], "a duplicate ack delivers nothing twice"
    assert acks(frames[2]) == [1, 2], "in order"
    assert sender.all_acked
    assert sender.held_bytes == 0


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 70), min_size=1, max_size=8),
       cuts=st.lists(st.integers(1, 40), min_size=1, max_size=5),
       order=st.randoms(use_true_random=False))
def test_delivery_ids_follow_acked_bytes_under_any_ack_order(
        sizes: list[int], cuts: list[int], order: random.Random) -> None:
    sender = new_sender(max_frame_size=1000)
    ends = []
    for size in sizes:
        sender.write_message(b"d" * size)
        ends.append(sender.buffered_bytes)
    frames = []
    i = 0
    while (chunk := sender.next_frame(cuts[i % len(cuts)], 1 << 20)) is not None:
        frames.append(frame(chunk))
        i += 1
    order.shuffle(frames)
    acked: set[int] = set()
    delivered: list[int] = []
    for offset, payload, fin in frames:
        acked.update(range(offset, offset + len(payload)))
        delivered += sender.on_acked(offset, len(payload), fin)
        # Exactly the messages whose bytes (and all earlier bytes) are acked.
        expected = [n for n, end in enumerate(ends) if set(range(end)) <= acked]
        assert delivered == expected
    assert delivered == list(range(len(sizes)))
    assert sender.held_bytes == 0


def test_on_lost_requeues_only_unacked_parts() -> None:
    sender = new_sender(max_frame_size=100)
    sender.write_message(b"x" * 98)  # 100 bytes on the wire
    frame(sender.next_frame(100, 100))
    # A retransmission by another path (or a smaller copy) got [20, 40) and [60, 70) acked.
    sender.on_acked(20, 20, False)
    sender.on_acked(60, 10, False)
    sender.on_lost(0, 100, False)
    resent = []
    while (chunk := sender.next_frame(100, 0)) is not None:
        resent.append(frame(chunk)[:2])
    assert [(off, len(data)) for off, data in resent] == [(0, 20), (40, 20), (70, 30)]
    sender.on_lost(0, 100, False)  # never sent again beyond what is unacked
    sender.on_acked(0, 100, False)
    assert sender.next_frame(100, 0) is None, "an ack cancels pending retransmissions"


def test_on_lost_ignores_acked_prefix_and_unsent_bytes() -> None:
    sender = new_sender()
    sender.write_message(b"y" * 50)
    frame(sender.next_frame(30, 100))
    sender.on_acked(0, 10, False)
    sender.on_lost(0, 200, False)
    assert frame(sender.next_frame(100, 0))[0:2] == (10, b"y" * 20)
    assert sender.next_frame(100, 0) is None


def test_writable_and_backpressure() -> None:
    sender = new_sender(buffer_limit=100)
    writable = [sender.writable]
    sender.write_message(b"z" * 150)  # may overshoot once
    writable.append(sender.writable)
    assert writable == [True, False]
    with pytest.raises(BufferFullError):
        sender.write_message(b"more")
    offset, payload, fin = frame(sender.next_frame(1000, 1000))
    sender.on_acked(offset, 40, fin)
    writable.append(sender.writable)  # still 112 of 152 bytes held
    sender.on_acked(offset + 40, len(payload) - 40, fin)
    writable.append(sender.writable)
    assert writable == [True, False, False, True]
    assert sender.buffered_bytes == 0


def test_finish_attaches_fin_to_last_chunk() -> None:
    sender = new_sender()
    sender.write_message(b"bye")
    sender.finish()
    sender.finish()  # idempotent
    assert sender.final_size == 4
    assert frame(sender.next_frame(100, 100)) == (0, framed(b"bye"), True)
    assert sender.next_frame(100, 100) is None
    with pytest.raises(StreamClosedError):
        sender.write_message(b"late")
    assert sender.on_acked(0, 4, True) == [0]
    assert sender.fin_acked
    assert sender.all_acked


def test_fin_alone_when_all_data_was_already_sent() -> None:
    sender = new_sender()
    sender.write_message(b"a")
    frame(sender.next_frame(100, 100))
    sender.finish()
    assert frame(sender.next_frame(100, 0)) == (2, b"", True), "an empty FIN needs no credit"
    assert not sender.has_data_to_send


def test_lost_fin_is_resent_unless_acked() -> None:
    sender = new_sender()
    sender.finish()
    assert frame(sender.next_frame(100, 0)) == (0, b"", True)
    sender.on_lost(0, 0, True)
    assert sender.has_data_to_send
    assert frame(sender.next_frame(100, 0)) == (0, b"", True)
    sender.on_acked(0, 0, True)
    sender.on_lost(0, 0, True)  # a late loss report of the first copy
    assert sender.next_frame(100, 0) is None
    assert sender.fin_acked


def test_the_send_side_is_complete_only_when_the_fin_and_every_byte_are_acked() -> None:
    sender = new_sender()
    sender.write_message(b"a" * 10)
    first = frame(sender.next_frame(4, 100))
    sender.finish()
    last = frame(sender.next_frame(100, 100))
    assert last[2]  # the FIN rides on the last frame
    sender.on_lost(first[0], len(first[1]), False)
    sender.on_acked(last[0], len(last[1]), True)
    assert sender.fin_acked and not sender.complete  # the first frame is still lost
    again = frame(sender.next_frame(100, 100))
    assert again[0] == first[0]
    sender.on_acked(again[0], len(again[1]), again[2])
    assert sender.complete


def test_lost_data_with_fin_is_resent_with_fin() -> None:
    sender = new_sender()
    sender.write_message(b"abc")
    sender.finish()
    offset, payload, fin = frame(sender.next_frame(100, 100))
    sender.on_lost(offset, len(payload), fin)
    assert frame(sender.next_frame(100, 0)) == (offset, payload, True)


def test_reset_drops_everything() -> None:
    sender = new_sender()
    sender.write_message(b"abcdef")
    frame(sender.next_frame(3, 100))
    sender.reset()
    assert sender.is_reset
    assert sender.next_frame(100, 100) is None
    assert sender.buffered_bytes == 0
    assert sender.held_bytes == 0
    assert sender.on_acked(0, 3, False) == []
    assert not sender.has_data_to_send
    assert not sender.writable
    with pytest.raises(StreamClosedError):
        sender.write_message(b"x")
    with pytest.raises(StreamClosedError):
        sender.finish()


def test_sender_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        StreamSender(0, buffer_limit=0, max_frame_size=10)
    with pytest.raises(ValueError):
        StreamSender(0, buffer_limit=10, max_frame_size=0)


def test_acked_chunks_are_freed_as_acknowledgements_pass_them() -> None:
    sender = new_sender(max_frame_size=1000)
    for _ in range(100):
        sender.write_message(b"m" * 998)  # 1000 bytes each
    while (chunk := sender.next_frame(1000, 1 << 20)) is not None:
        offset, payload, _ = frame(chunk)
        sender.on_acked(offset, len(payload), False)
        # Acknowledged bytes are held only inside a chunk not yet acknowledged to
        # its end: short messages share chunks of at most TAIL_CHUNK + SMALL_WRITE.
        assert sender.held_bytes - sender.buffered_bytes < TAIL_CHUNK + SMALL_WRITE
    assert sender.held_bytes == 0


# -------------------------------------------------------------------------- receiver


def new_receiver(window: int = 1000, max_message_size: int = 10_000,
                 max_gaps: int = 4096) -> StreamReceiver:
    return StreamReceiver(2, window=window, max_message_size=max_message_size,
                          max_gaps=max_gaps)


def test_receiver_reuses_its_buffer_across_messages_and_frees_it_at_the_end() -> None:
    """The reassembly buffer is an arena: a steady stream of large messages is
    written into the same memory (no reallocation per message), the popped
    messages are bytes of their own, and the stream's end frees the arena."""
    rng = random.Random(5)
    messages = [rng.randbytes(40_000) for _ in range(12)]
    data = framed(*messages)
    receiver = StreamReceiver(2, window=100_000, max_message_size=50_000)
    popped: list[bytes] = []
    buffers = set()
    chunk = len(data) // len(messages) // 2  # every other chunk ends a message
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        receiver.on_data(start, piece, start + len(piece) == len(data))
        out = receiver.pop_messages()
        receiver.consume(sum(len(m) for m in out))
        receiver.credit_update()
        popped.extend(out)
        if len(popped) >= 3:
            buffers.add(id(receiver._buf))
    assert popped == messages
    assert all(type(m) is bytes for m in popped)
    assert len(buffers) <= 2  # at most one growth once it fits the live bytes
    assert len(receiver._buf) == 0 and receiver.is_finished


def test_popped_message_is_made_once_on_first_read() -> None:
    big, other = b"h" * LAZY_MIN_SIZE, b"w" * (LAZY_MIN_SIZE + 1)
    receiver = new_receiver(window=100_000, max_message_size=100_000)
    receiver.on_data(0, framed(big, b"", b"small", other), False)
    first, empty, small, last = receiver.pop_received()
    assert (first.size, empty.size, small.size, last.size) == (len(big), 0, 5, len(other))
    # Large messages wait in the buffer; small ones were copied out at once.
    assert "unread" in repr(first) and "unread" in repr(last)
    assert "unread" not in repr(small) and "unread" not in repr(empty)
    data = first.data
    assert data == big and first.data is data  # made once, then kept
    assert last.data == other and empty.data == b"" and small.data == b"small"
    assert first == ReceivedMessage.of(big) and first != last


def test_messages_handed_out_stay_readable_after_discard() -> None:
    """A reset stream drops its buffer; what the application was already given
    is copied out first, so its queued messages still read correctly."""
    receiver = new_receiver(window=100_000, max_message_size=100_000)
    messages = [b"a" * LAZY_MIN_SIZE, b"b" * 2 * LAZY_MIN_SIZE]
    receiver.on_data(0, framed(*messages), False)
    handed_out = receiver.pop_received()
    assert receiver._pending is not None
    assert [ref() for ref in receiver._pending] == handed_out  # both unread, in the buffer
    receiver.discard()
    assert len(receiver._buf) == 0
    assert [m.data for m in handed_out] == messages


def test_a_message_dropped_unread_is_freed_at_once_and_stops_pinning_the_buffer() -> None:
    """No reference cycle through the receiver: an application that drops an
    unread message (a closed session's queue) frees it without the cyclic GC,
    and the buffer may restart behind it."""
    receiver = new_receiver(window=100_000, max_message_size=100_000)
    receiver.on_data(0, framed(b"a" * LAZY_MIN_SIZE), False)
    (message,) = receiver.pop_received()
    assert receiver.buffered_bytes == LAZY_MIN_SIZE  # pinned while unread
    alive = weakref.ref(message)
    del message
    assert alive() is None  # freed by reference counting alone
    assert receiver.buffered_bytes == 0
    data = framed(b"b" * 10)
    receiver.on_data(LAZY_MIN_SIZE + 2, data, False)
    assert receiver.pop_messages() == [b"b" * 10]


def test_receiver_slides_live_bytes_when_the_parsed_prefix_is_dead() -> None:
    message = bytes(range(256)) * 40  # 10,240 bytes
    data = framed(message, message, message)
    receiver = StreamReceiver(2, window=4096, max_message_size=20_000)
    popped: list[bytes] = []
    # Out of order within each window: the tail of a piece lands before its head.
    step = 3000
    for start in range(0, len(data), step):
        piece = data[start:start + step]
        half = len(piece) // 2
        receiver.on_data(start + half, piece[half:], False)
        receiver.on_data(start, piece[:half], False)
        out = receiver.pop_messages()
        receiver.consume(sum(len(m) for m in out))
        receiver.credit_update()
        popped.extend(out)
        assert len(receiver._buf) <= 2 * (4096 + 20_000 + 8)
    assert popped == [message] * 3
    assert popped[0] is not popped[1]


def test_receiver_parses_prefixes_across_chunk_boundaries() -> None:
    data = framed(b"", b"a" * 64, b"b" * 200)  # 2-byte prefixes split below
    receiver = new_receiver()
    for i in range(len(data)):
        receiver.on_data(i, data[i:i + 1], False)
        if i == 0:
            assert receiver.pop_messages() == [b""]
        elif i == len(data) - 1:
            assert receiver.pop_messages() == [b"b" * 200]
        elif i == 66:
            assert receiver.pop_messages() == [b"a" * 64]
        else:
            assert receiver.pop_messages() == []


def test_out_of_order_and_overlapping_data() -> None:
    data = framed(b"hello", b"world")
    receiver = new_receiver()
    assert receiver.on_data(6, data[6:], False) == len(data)
    assert receiver.pop_messages() == []
    assert receiver.on_data(3, data[3:9], False) == 0, "overlap adds nothing new"
    assert receiver.pop_messages() == []
    assert receiver.on_data(0, data[:4], False) == 0
    assert receiver.pop_messages() == [b"hello", b"world"]
    assert receiver.on_data(0, data, False) == 0, "a late duplicate is ignored"
    assert receiver.pop_messages() == []


def test_flow_control_violation_raises() -> None:
    receiver = new_receiver(window=100)
    receiver.on_data(0, b"\x00" * 100, False)
    with pytest.raises(ProtocolError) as info:
        receiver.on_data(100, b"\x00", False)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(ProtocolError) as info:
        new_receiver(window=100).on_data(200, b"", False)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_huge_length_prefix_raises_before_buffering() -> None:
    receiver = new_receiver(window=1 << 20, max_message_size=1000)
    receiver.on_data(0, encode_varint(1001), False)
    with pytest.raises(ProtocolError) as info:
        receiver.pop_messages()
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert receiver.buffered_bytes <= 8
    ok = new_receiver(window=1 << 20, max_message_size=1000)
    ok.on_data(0, framed(b"q" * 1000), False)
    assert ok.pop_messages() == [b"q" * 1000]


def test_fin_semantics() -> None:
    receiver = new_receiver()
    data = framed(b"one", b"two")
    receiver.on_data(4, data[4:], True)
    assert receiver.final_size == len(data)
    finished = [receiver.is_finished]
    receiver.on_data(0, data[:4], False)
    assert receiver.pop_messages() == [b"one", b"two"]
    finished.append(receiver.is_finished)
    assert finished == [False, True]
    receiver.on_data(4, data[4:], True)  # a duplicate FIN is fine
    assert receiver.credit_update() is None, "no credit once the final size is known"


@pytest.mark.parametrize(
    ("offset", "data", "fin"),
    [(0, b"\x01abc", False), (2, b"", True), (10, b"", True), (7, b"z", False)],
)
def test_final_size_violations(offset: int, data: bytes, fin: bool) -> None:
    receiver = new_receiver()
    receiver.on_data(0, framed(b"abc", b"de"), True)  # final size 7
    if offset == 0:  # data past the final size
        data = framed(b"abc", b"def")
    with pytest.raises(ProtocolError) as info:
        receiver.on_data(offset, data, fin)
    assert info.value.code == ErrorCode.STREAM_STATE_ERROR


def test_fin_below_received_data_is_a_violation() -> None:
    receiver = new_receiver()
    receiver.on_data(10, b"x", False)
    with pytest.raises(ProtocolError) as info:
        receiver.on_data(0, b"abc", True)
    assert info.value.code == ErrorCode.STREAM_STATE_ERROR


def test_fin_inside_a_message_is_a_violation() -> None:
    receiver = new_receiver()
    receiver.on_data(0, framed(b"abcdef")[:4], True)
    with pytest.raises(ProtocolError) as info:
        receiver.pop_messages()
    assert info.value.code == ErrorCode.PROTOCOL_VIOLATION
    cut_prefix = new_receiver()
    cut_prefix.on_data(0, encode_varint(300)[:1], True)
    with pytest.raises(ProtocolError):
        cut_prefix.pop_messages()


def test_empty_stream_with_fin_is_finished() -> None:
    receiver = new_receiver()
    receiver.on_data(0, b"", True)
    assert receiver.pop_messages() == []
    assert receiver.is_finished


def test_completed_messages_hold_credit_until_consumed() -> None:
    receiver = new_receiver(window=100)
    receiver.on_data(0, framed(b"a" * 59, b"b" * 38), False)  # 60 + 39 bytes
    messages = receiver.pop_messages()
    assert messages == [b"a" * 59, b"b" * 38]
    assert receiver.take_released() == 2, "only the length prefixes"
    assert receiver.credit_update() is None
    receiver.consume(59)
    assert receiver.take_released() == 59
    assert receiver.credit_update() == 161
    assert receiver.advertised_limit == 161
    receiver.consume(38)
    assert receiver.credit_update() is None, "moved by 38 < half the window"
    with pytest.raises(InvalidStateError):
        receiver.consume(1)


def test_partial_length_prefix_releases_credit() -> None:
    receiver = new_receiver(window=1, max_message_size=1 << 20)
    data = framed(b"k" * 20000)  # 4-byte prefix
    for offset in range(4):
        receiver.on_data(offset, data[offset:offset + 1], False)
        assert receiver.pop_messages() == []
        assert receiver.credit_update() == offset + 2
    receiver.on_data(4, data[4:5], False)
    assert receiver.credit_update() == 6, "payload of an incomplete message"


def test_incomplete_message_releases_credit_as_it_arrives() -> None:
    receiver = new_receiver(window=100, max_message_size=1000)
    data = framed(b"m" * 498)  # 500 bytes on the wire
    receiver.on_data(0, data[:100], False)
    assert receiver.pop_messages() == []
    assert receiver.credit_update() == 200
    receiver.on_data(100, data[100:200], False)
    assert receiver.credit_update() == 300
    receiver.on_data(200, data[200:300], False)
    assert receiver.credit_update() == 400
    receiver.on_data(300, data[300:400], False)
    assert receiver.credit_update() == 500
    receiver.on_data(400, data[400:], False)
    assert receiver.pop_messages() == [b"m" * 498]
    # Complete: the whole payload now waits for consume(); only the prefix
    # stays released. The advertised limit does not shrink.
    assert receiver.take_released() == 2
    assert receiver.credit_update() is None
    assert receiver.advertised_limit == 500
    receiver.consume(398)
    assert receiver.take_released() == 398
    assert receiver.credit_update() is None, "400 + 100 is no more than advertised"
    receiver.consume(100)
    assert receiver.take_released() == 100
    assert receiver.credit_update() == 600
    assert receiver.buffered_bytes == 0


def test_out_of_order_fragmentation_is_capped() -> None:
    receiver = new_receiver(window=1000, max_gaps=3)
    for offset in (10, 20, 30):
        receiver.on_data(offset, b"x", False)
    with pytest.raises(ProtocolError) as info:
        receiver.on_data(40, b"x", False)
    assert info.value.code == ErrorCode.RESOURCE_LIMIT


def test_discard_returns_unreleased_session_credit() -> None:
    receiver = new_receiver(window=1000)
    receiver.on_data(0, framed(b"abc"), False)
    receiver.on_data(100, b"x" * 50, False)
    receiver.pop_messages()
    released = receiver.take_released()
    assert released + receiver.discard() == 150
    assert receiver.buffered_bytes == 0
    assert receiver.on_data(150, b"late", False) == 4, "still counted for the session"
    assert receiver.take_released() == 4, "and released at once"
    assert receiver.pop_messages() == []
    assert receiver.buffered_bytes == 0


def test_receiver_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StreamReceiver(0, window=0, max_message_size=1)
    with pytest.raises(ProtocolError):
        new_receiver().on_data(-1, b"x", False)
    with pytest.raises(InvalidStateError):
        new_receiver().consume(-1)


def test_max_frame_size_can_change() -> None:
    sender = new_sender(max_frame_size=5)
    sender.write_message(b"x" * 20)
    assert len(frame(sender.next_frame(100, 100))[1]) == 5
    sender.max_frame_size = 8
    assert sender.max_frame_size == 8
    assert len(frame(sender.next_frame(100, 100))[1]) == 8
    with pytest.raises(ValueError):
        sender.max_frame_size = 0


@pytest.mark.slow
@pytest.mark.parametrize("block", range(10))
def test_seed_sweep(block: int) -> None:
    """Long sweep over random channels; a failure names its seed, which replays exactly."""
    for seed in range(block * 100, block * 100 + 100):
        rng = random.Random(seed)
        sizes = [rng.choice([0, 1, 63, 64, 16383, 16384, rng.randint(0, 3000),
                             rng.randint(0, 70000)]) for _ in range(rng.randint(0, 12))]
        messages = [rng.randbytes(size) for size in sizes]
        channel = make_channel(
            seed, window=rng.choice([7, 100, 4096, 65536]),
            buffer_limit=rng.choice([1, 100, 8192, 1 << 20]),
            payloads=tuple(rng.randint(1, 20000) for _ in range(rng.randint(1, 4))),
            loss=rng.choice([0.0, 0.1, 0.3, 0.5]), dup=rng.choice([0.0, 0.2, 0.5]),
            ack_loss=rng.choice([0.0, 0.1, 0.4]), reorder=rng.random() < 0.7)
        try:
            channel.run(messages, max_steps=2_000_000)
            check_complete(channel, messages)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
