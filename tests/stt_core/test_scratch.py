"""Large packets are opened, assembled and sealed in reused buffers
(``stt_core.scratch``): nothing handed out may change when those buffers are
written again, and transfers through them must stay byte-exact under loss and
reordering."""

from __future__ import annotations

import hashlib
import heapq
import random

from stt_core import (
    BufferFullError,
    Config,
    Endpoint,
    MessageReceived,
    SessionEstablished,
    SessionRef,
)
from stt_core.scratch import LENT_PACKETS_MAX, SCRATCH_MIN_PLAINTEXT, PacketPool, Scratch
from stt_core.wire import (
    AppFrame,
    DataFrame,
    Frame,
    FrameType,
    PathFrame,
    ResumeTokenFrame,
    StreamOpenFrame,
    parse_frames,
)

from .helpers import SERVER_ADDR, Pair, make_config

BIG = 65000


def test_a_view_has_the_size_asked_for_and_reuses_the_buffer() -> None:
    scratch = Scratch()
    assert scratch.capacity == 0
    first = scratch.view(5000)
    assert len(first) == 5000 and not first.readonly
    second = scratch.view(3000)
    assert len(second) == 3000
    assert second.obj is first.obj  # the same buffer, not a new allocation
    assert scratch.capacity == 5000


def test_growing_leaves_an_old_view_untouched() -> None:
    scratch = Scratch()
    old = scratch.view(100)
    old[:] = b"a" * 100
    new = scratch.view(200)
    new[:] = b"b" * 200
    assert new.obj is not old.obj
    assert bytes(old) == b"a" * 100


def _plaintext_of(frames: list[bytes]) -> memoryview:
    """The frames laid out in a scratch buffer, as a large packet's plaintext is."""
    joined = b"".join(frames)
    view = Scratch().view(len(joined))
    view[:] = joined
    return view


def test_frames_parsed_from_a_view_keep_bytes_of_their_own() -> None:
    small = DataFrame(3, 0, b"x" * 100, False)
    large = DataFrame(3, 100, b"y" * SCRATCH_MIN_PLAINTEXT, True)
    frames: list[Frame] = [
        StreamOpenFrame(3, 1, 1200, "files"),
        PathFrame(FrameType.PATH_CHALLENGE, b"12345678"),
        ResumeTokenFrame(60, b"token-bytes"),
        AppFrame(FrameType.APP_MIN, b"app payload"),
        small,
        large,
    ]
    view = _plaintext_of([frame.encode() for frame in frames])
    parsed, _ = parse_frames(view)
    assert parsed == frames
    path, token, app, data_small, data_large = (parsed[1], parsed[2], parsed[3], parsed[4],
                                                parsed[5])
    assert isinstance(path, PathFrame) and type(path.data) is bytes
    assert isinstance(token, ResumeTokenFrame) and type(token.token) is bytes
    assert isinstance(app, AppFrame) and type(app.payload) is bytes
    assert isinstance(data_small, DataFrame) and type(data_small.data) is bytes
    # The one view: a large DATA payload, which the receiver copies at once.
    assert isinstance(data_large, DataFrame) and isinstance(data_large.data, memoryview)
    view[:] = bytes(len(view))  # the next packet overwrites the buffer
    assert path.data == b"12345678" and token.token == b"token-bytes"
    assert app.payload == b"app payload" and data_small.data == b"x" * 100


def test_padding_in_a_view_is_skipped() -> None:
    view = _plaintext_of([AppFrame(FrameType.APP_MIN, b"p").encode(), bytes(5000)])
    parsed, ack_eliciting = parse_frames(view)
    assert parsed == [AppFrame(FrameType.APP_MIN, b"p")] and ack_eliciting


class JitterPair(Pair):
    """A pair whose link delays each datagram by a random extra amount (so large
    packets arrive out of order) and drops a share of them."""

    def __init__(self, *, client: Config, server: Config, jitter: float, loss: float,
                 seed: int) -> None:
        super().__init__(client=client, server=server)
        self.rng = random.Random(seed)
        self.jitter = jitter
        self.loss = loss
        self.reordered = 0
        self.lossy = False
        self.lend = False
        self.lent_buffers: set[int] = set()
        self.lent = 0
        self._last_arrival = 0.0

    def _flush(self, endpoint: Endpoint) -> None:
        source = self.addr[id(endpoint)]
        for datagram, destination in endpoint.datagrams_to_send(self.now, lend=self.lend):
            if isinstance(datagram, memoryview):
                # Lent until this endpoint's next flush: "send" it, by copying, now.
                self.lent_buffers.add(id(datagram.obj))
                self.lent += 1
                datagram = bytes(datagram)
            target = self.client if destination == self.addr[id(self.client)] else self.server
            if self.lossy and self.rng.random() < self.loss:
                continue  # once the handshake is over: data packets are lost
            arrival = self.now + self.delay + self.rng.uniform(0, self.jitter)
            if arrival < self._last_arrival:
                self.reordered += 1
            self._last_arrival = max(self._last_arrival, arrival)
            self._seq += 1
            heapq.heappush(self.in_flight, (arrival, self._seq, datagram, source, target))


def _large_pair(*, jitter: float, loss: float, seed: int) -> tuple[JitterPair, SessionRef]:
    # Frequent key updates: large packets also open under the next and the
    # previous key (reordering across a key change).
    client = make_config(b"client", max_datagram_size=BIG, pmtu_probe_limit=BIG,
                         key_update_interval_packets=40)
    server = make_config(b"server", server_mode=True, max_datagram_size=BIG,
                         pmtu_probe_limit=BIG, key_update_interval_packets=40)
    pair = JitterPair(client=client, server=server, jitter=jitter, loss=loss, seed=seed)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    assert pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                              for e in pair.client_events))
    return pair, ref


def _transfer(pair: JitterPair, ref: SessionRef, messages: list[bytes]) -> list[bytes]:
    pair.lossy = True
    stream = pair.client.open_stream(ref, purpose="bulk")
    pending = list(messages)

    def done() -> bool:
        while pending:
            try:
                pair.client.send_message(ref, stream, pending[0])
            except BufferFullError:  # the send buffer is full: the link drains it
                return False
            pending.pop(0)
        return len(arrived()) == len(messages)

    def arrived() -> list[bytes]:
        return [e.data for e in pair.server_events
                if isinstance(e, MessageReceived) and e.stream_id == stream]

    assert pair.run_for(120.0, stop=done)
    return arrived()


def test_large_datagrams_reordered_and_lost_deliver_every_message_exactly() -> None:
    rng = random.Random(7)
    # Sizes that end inside, exactly at, and across 64 KiB packets.
    sizes = [1, 4000, 65000, 65536, 200_000, 262_144, 3, 700_000, 16_384, 131_072]
    messages = [rng.randbytes(size) for size in sizes * 3]
    pair, ref = _large_pair(jitter=0.004, loss=0.05, seed=11)
    received = _transfer(pair, ref, messages)
    assert pair.reordered > 0  # the link did reorder
    # Keys changed during the transfer: 2 or 3 changes in all (both directions), by
    # seed and by how many packets the session's start took.
    assert pair.server.sessions[next(iter(pair.server.sessions))].stats.key_updates >= 2
    assert [hashlib.sha256(m).digest() for m in received] == \
        [hashlib.sha256(m).digest() for m in messages]
    assert all(type(m) is bytes for m in received)
    # Every large packet passed through the same buffers on both sides.
    assert pair.server.scratch.opened.capacity >= BIG // 2
    assert pair.client.scratch.sealed.capacity >= BIG // 2


def test_messages_handed_out_do_not_change_when_the_buffers_are_reused() -> None:
    rng = random.Random(8)
    messages = [rng.randbytes(100_000) for _ in range(6)]
    pair, ref = _large_pair(jitter=0.0, loss=0.0, seed=12)
    first = _transfer(pair, ref, messages[:3])
    snapshot = [bytes(m) for m in first]
    second = _transfer(pair, ref, messages[3:])
    assert first == snapshot == messages[:3]
    assert second == messages[3:]


def test_a_packet_pool_lends_reused_buffers_up_to_its_cap() -> None:
    pool = PacketPool()
    first = pool.take(70_000)
    assert first is not None and len(first) == 70_000
    pool.restart()
    again = pool.take(60_000)
    assert again is not None and again.obj is first.obj  # written again, not reallocated
    taken = [pool.take(100) for _ in range(LENT_PACKETS_MAX)]
    assert taken[-1] is None and all(view is not None for view in taken[:-1])
    assert pool.capacity >= 70_000


def test_lent_packets_transfer_exactly_and_reuse_their_buffers() -> None:
    """A caller that sends (here: copies) each lent datagram before its next
    flush gets every message intact through loss and reordering, and the
    sender's large packets all came from a few reused buffers."""
    rng = random.Random(9)
    messages = [rng.randbytes(size) for size in [65_000, 300_000, 4, 131_072, 1_000_000] * 2]
    pair, ref = _large_pair(jitter=0.004, loss=0.05, seed=13)
    pair.lend = True
    received = _transfer(pair, ref, messages)
    assert [hashlib.sha256(m).digest() for m in received] == \
        [hashlib.sha256(m).digest() for m in messages]
    # Far fewer buffers than lent packets: each flush wrote the same ones again.
    assert 0 < len(pair.lent_buffers) < pair.lent // 2
    assert pair.client.scratch.packets.capacity > 0
