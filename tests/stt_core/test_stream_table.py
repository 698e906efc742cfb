"""The stream table's memory of closed ids: what a receiver ignores, what an opener refuses."""

from __future__ import annotations

import pytest

from stt_core.errors import InvalidStateError
from stt_core.stream_table import RECENTLY_CLOSED_MEMORY, REOPEN_GUARD, StreamTable


def table() -> StreamTable:
    return StreamTable(initiator=True, max_peer_streams=8, send_buffer_bytes=1 << 20,
                       receive_window=1 << 20, max_message_size=1 << 20, max_frame_size=16384)


def open_and_close(streams: StreamTable, stream_id: int) -> None:
    streams.remove(streams.open_local(stream_id=stream_id, purpose="", priority=0,
                                      max_frame_size=None))


def close_others(streams: StreamTable, count: int, first_id: int) -> None:
    for stream_id in range(first_id, first_id + count):
        open_and_close(streams, stream_id)


def test_a_closed_id_is_ignored_from_the_peer_and_refused_to_the_opener() -> None:
    streams = table()
    open_and_close(streams, 7)
    assert streams.get_or_open_remote(7) is None  # a late frame does not reopen it
    with pytest.raises(InvalidStateError, match="stream 7 was closed"):
        streams.open_local(stream_id=7, purpose="again", priority=0, max_frame_size=None)


def test_stream_zero_is_not_reopened_after_it_closed() -> None:
    streams = table()
    open_and_close(streams, 0)
    with pytest.raises(InvalidStateError, match="stream 0 was closed"):
        streams.open_local(stream_id=0, purpose="", priority=0, max_frame_size=None)


def test_the_opener_refuses_an_id_for_longer_than_the_receiver_ignores_it() -> None:
    """Between the two memories the peer may still be ignoring the id (its closes
    can run a little behind ours), so only the opener's guard is still up."""
    streams = table()
    open_and_close(streams, 7)
    close_others(streams, RECENTLY_CLOSED_MEMORY, first_id=100_000)
    reopened = streams.get_or_open_remote(7)
    assert reopened is not None  # past the receiver's memory
    streams.remove(reopened)
    # 7 is now the most recent close: refused, and ignored, again.
    assert streams.get_or_open_remote(7) is None
    other = table()
    open_and_close(other, 7)
    close_others(other, RECENTLY_CLOSED_MEMORY, first_id=100_000)
    with pytest.raises(InvalidStateError):
        other.open_local(stream_id=7, purpose="", priority=0, max_frame_size=None)
    close_others(other, REOPEN_GUARD - 1, first_id=200_000)
    with pytest.raises(InvalidStateError):
        other.open_local(stream_id=7, purpose="", priority=0, max_frame_size=None)
    close_others(other, 1, first_id=300_000)
    assert other.open_local(stream_id=7, purpose="", priority=0, max_frame_size=None)


def test_automatic_ids_skip_every_id_the_opener_still_refuses() -> None:
    streams = table()
    first = streams.open_local(stream_id=None, purpose="", priority=0, max_frame_size=None)
    streams.remove(first)
    close_others(streams, RECENTLY_CLOSED_MEMORY, first_id=100_000)
    again = streams.open_local(stream_id=None, purpose="", priority=0, max_frame_size=None)
    assert again.stream_id != first.stream_id


def test_the_memory_stays_bounded_when_ids_close_again_and_again() -> None:
    """Ids cycle: each is opened again as soon as the opener allows, and the peer
    reopens some inside the guard (an id then sits in the close order twice)."""
    streams = table()
    limit = RECENTLY_CLOSED_MEMORY + REOPEN_GUARD
    refused = 0
    for n in range(3 * (limit + 1)):
        try:
            open_and_close(streams, 1_000 + n % (limit + 1))
        except InvalidStateError:  # the peer's reopens pushed it back in the order
            refused += 1
            open_and_close(streams, 10_000_000 + n)
        if n % 7 == 0:
            in_guard = 1_000 + (n - RECENTLY_CLOSED_MEMORY - 1) % (limit + 1)
            reopened = streams.get_or_open_remote(in_guard)
            if reopened is not None:
                streams.remove(reopened)
    assert 0 < refused < limit
    assert len(streams._closed or {}) <= limit
    assert len(streams._closed_order or ()) <= limit


def test_a_reset_of_an_unseen_stream_is_remembered_as_a_close() -> None:
    streams = table()
    streams.note_reset_unseen(6)
    assert streams.get_or_open_remote(6) is None  # its late frames open nothing
    open_and_close(streams, 8)
    streams.note_reset_unseen(8)  # already remembered: not counted twice
    assert streams._closes == 2
