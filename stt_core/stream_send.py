"""Stream send side: message framing, the retransmission buffer, per-message delivery.

This module owns one stream's outgoing byte sequence (protocol.md §5): each
application message is appended as ``varint(len(message)) || message``
(RFC 9000 §16 variable-length integers), the bytes are cut into chunks for
DATA frames, lost chunks are queued again, acknowledged bytes are freed, and a
message is reported delivered once *every* byte of it is acknowledged (what
``MessageDelivered`` and confirmed sends rest on).

It must not know about packets, frames, timers, congestion or crypto: the
session asks :meth:`StreamSender.next_frame` for ``(offset, payload, fin)``,
puts it in a packet, and later reports that range ACKED or LOST with
:meth:`~StreamSender.on_acked` / :meth:`~StreamSender.on_lost`.

Memory: the unacknowledged bytes live in a :class:`~stt_core.send_buffer.SendBuffer`
(immutable chunks: a large message is kept as the caller's ``bytes``, freed
chunk by chunk as acknowledgements arrive, and payloads handed out are views
of it where they fit in one chunk).

Flow control: ``next_frame`` takes ``credit``, the number of *new* bytes
beyond :attr:`StreamSender.highest_sent` that both the session limit
(MAX_DATA) and this stream's limit (MAX_STREAM_DATA, kept here as
:attr:`StreamSender.peer_max_stream_data`, see :attr:`StreamSender.stream_credit`)
allow. Retransmissions never consume credit: those bytes were already counted.
"""

from __future__ import annotations

from collections import deque

from .errors import BufferFullError, StreamClosedError
from .flow import ByteRanges
from .send_buffer import SendBuffer
from .wire import encode_varint

__all__ = ["StreamSender"]


class StreamSender:
    """The send half of one stream.

    Lifecycle: ``write_message`` any number of times, then ``finish`` (a FIN
    follows the last byte), or ``reset`` at any point (everything dropped).
    The stream's send side is complete when :attr:`fin_acked` and
    :attr:`all_acked` are both true.
    """

    __slots__ = (
        "_ack_request_end",
        "_acked",
        "_acked_offset",
        "_buf",
        "_buffer_limit",
        "_delivered_id",
        "_fin_acked",
        "_fin_pending",
        "_final_size",
        "_highest_sent",
        "_lost",
        "_max_frame_size",
        "_message_ends",
        "_next_id",
        "_peer_max_stream_data",
        "_reset",
        "_write_offset",
        "stream_id",
    )

    def __init__(self, stream_id: int, *, buffer_limit: int, max_frame_size: int,
                 peer_max_stream_data: int = 0) -> None:
        """Args:
        stream_id: the stream this buffer belongs to (kept for the caller).
        buffer_limit: unacknowledged bytes above which :attr:`writable` turns
            False (``Config.stream_send_buffer_bytes``).
        max_frame_size: largest payload of one DATA frame.
        peer_max_stream_data: the peer's initial credit for this stream.
        """
        if buffer_limit < 1:
            raise ValueError("buffer_limit must be >= 1")
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be >= 1")
        self.stream_id = stream_id
        self._buffer_limit = buffer_limit
        self._max_frame_size = max_frame_size
        self._peer_max_stream_data = max(0, peer_max_stream_data)
        self._buf = SendBuffer()
        self._write_offset = 0  # end of everything written so far
        self._highest_sent = 0  # end of the highest byte ever sent
        self._acked_offset = 0  # every byte below this is acknowledged
        self._acked = ByteRanges()  # acknowledged ranges above _acked_offset
        self._lost = ByteRanges()  # ranges waiting for retransmission
        self._message_ends: deque[int] = deque()  # end offsets of undelivered messages
        self._next_id = 0
        self._delivered_id = 0  # id of the oldest undelivered message
        self._ack_request_end = 0  # end of the newest message whose writer awaits its ACK
        self._final_size: int | None = None
        self._fin_pending = False  # a frame carrying FIN must (still) be sent
        self._fin_acked = False
        self._reset = False

    # ------------------------------------------------------------ application side

    @property
    def writable(self) -> bool:
        """True when a message may be written (held bytes below the limit)."""
        return (not self._reset and self._final_size is None
                and self._write_offset - self._acked_offset < self._buffer_limit)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in memory: written and not yet acknowledged in order.

        Zero after :meth:`reset`. The session sums this over its streams for
        the session-level send buffer limit.
        """
        if self._reset:
            return 0
        return self._write_offset - self._acked_offset

    @property
    def held_bytes(self) -> int:
        """Bytes actually held for the buffer, including acknowledged bytes of a chunk
        not yet acknowledged to its end."""
        return self._buf.held

    @property
    def ack_request_end(self) -> int:
        """End offset of the newest message marked by :meth:`request_ack`, or 0.

        The packetizer adds IMMEDIATE_ACK to every packet whose DATA frame
        carries the byte just below it (the first send and any retransmission).
        """
        return self._ack_request_end

    def request_ack(self) -> None:
        """The writer of the message just written waits for its acknowledgement.

        Without this the peer holds its ACK of a lone packet for
        ``max_ack_delay`` (25 ms), and a loop of confirmed sends runs at one
        message per 25 ms whatever the path.
        """
        self._ack_request_end = self._write_offset

    def write_message(self, data: bytes | bytearray | memoryview) -> int:
        """Append one message to the stream.

        A message may overshoot ``buffer_limit`` (so a message larger than the
        buffer still goes); the write after it waits for acknowledgements.

        Returns:
            The message id (0, 1, 2, ... on this stream); the session reports
            ``MessageDelivered`` with it once :meth:`on_acked` returns it.

        Raises:
            StreamClosedError: after :meth:`finish` or :meth:`reset`.
            BufferFullError: :attr:`writable` is False; wait for
                ``StreamWritable`` and retry.
        """
        if self._reset:
            raise StreamClosedError(f"stream {self.stream_id} was reset")
        if self._final_size is not None:
            raise StreamClosedError(f"stream {self.stream_id} is finished for sending")
        if self._write_offset - self._acked_offset >= self._buffer_limit:
            raise BufferFullError(
                f"stream {self.stream_id} holds {self.buffered_bytes} unacknowledged "
                f"bytes (limit {self._buffer_limit})"
            )
        header = encode_varint(len(data))
        self._buf.append(header)
        self._buf.append(data)
        self._write_offset += len(header) + len(data)
        self._message_ends.append(self._write_offset)
        message_id = self._next_id
        self._next_id += 1
        return message_id

    def finish(self) -> None:
        """No more messages: a FIN goes out after the last byte.

        Calling it twice is harmless. Raises StreamClosedError after reset.
        """
        if self._reset:
            raise StreamClosedError(f"stream {self.stream_id} was reset")
        if self._final_size is None:
            self._final_size = self._write_offset
            self._fin_pending = True

    def reset(self) -> None:
        """Abandon the stream: drop every byte, stop sending, deliver nothing more.

        The final size to announce in STREAM_CLOSE is :attr:`highest_sent`.
        """
        self._reset = True
        self._buf.clear(self._write_offset)
        self._lost.clear()
        self._acked.clear()
        self._message_ends.clear()
        self._fin_pending = False

    # ------------------------------------------------------------------- state

    @property
    def is_reset(self) -> bool:
        """True after :meth:`reset`."""
        return self._reset

    @property
    def final_size(self) -> int | None:
        """Total stream bytes once :meth:`finish` was called, else None."""
        return self._final_size

    @property
    def highest_sent(self) -> int:
        """End of the highest byte ever handed out by :meth:`next_frame`."""
        return self._highest_sent

    @property
    def acked_offset(self) -> int:
        """Every byte below this offset is acknowledged."""
        return self._acked_offset

    @property
    def all_acked(self) -> bool:
        """Every byte written so far is acknowledged."""
        return self._acked_offset == self._write_offset

    @property
    def fin_acked(self) -> bool:
        """The peer acknowledged a frame carrying our FIN."""
        return self._fin_acked

    @property
    def unacknowledged_bytes(self) -> int:
        """Bytes written that the peer has not acknowledged (sent or not)."""
        above = sum(end - start for start, end in self._acked)
        return self._write_offset - self._acked_offset - above

    @property
    def complete(self) -> bool:
        """The send side is over: the FIN and every byte before it are acknowledged.

        The FIN rides on the last frame, whose ACK can arrive while an earlier
        frame is still lost and waiting to be sent again; only both together
        let the stream be forgotten.
        """
        return self._fin_acked and self.all_acked

    @property
    def unsent_bytes(self) -> int:
        """Written bytes never sent yet (each needs credit)."""
        return self._write_offset - self._highest_sent

    @property
    def has_data_to_send(self) -> bool:
        """True when :meth:`next_frame` would return something given enough credit."""
        if self._reset:
            return False
        return (bool(self._lost) or self._write_offset > self._highest_sent
                or self._fin_pending)

    @property
    def max_frame_size(self) -> int:
        """Largest payload of one DATA frame from this stream."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        """Change the frame size (a stream reopened with new options); affects later frames."""
        if value < 1:
            raise ValueError("max_frame_size must be >= 1")
        self._max_frame_size = value

    @property
    def peer_max_stream_data(self) -> int:
        """The peer's credit for this stream: the highest offset we may send."""
        return self._peer_max_stream_data

    @property
    def stream_credit(self) -> int:
        """New bytes this stream's own limit still allows (>= 0)."""
        return max(0, self._peer_max_stream_data - self._highest_sent)

    @property
    def flow_blocked(self) -> bool:
        """True when unsent data waits only for the peer's stream credit."""
        return (not self._reset and self._write_offset > self._highest_sent
                and self._highest_sent >= self._peer_max_stream_data)

    def on_max_stream_data(self, limit: int) -> None:
        """Apply MAX_STREAM_DATA from the peer (monotonic: smaller values ignored)."""
        if limit > self._peer_max_stream_data:
            self._peer_max_stream_data = limit

    # -------------------------------------------------------------- session side

    def next_frame(self, max_payload: int, credit: int, *, whole: bool = False
                   ) -> tuple[int, bytes | memoryview, bool] | None:
        """The next chunk to put in a DATA frame, or None when nothing is due.

        Lost ranges go first (retransmissions cost no credit), then new data
        up to ``credit`` new bytes. The payload is at most
        ``min(max_payload, max_frame_size)``, or ``max_payload`` when
        ``whole`` (the stream has the packet to itself: the frame size only
        exists to let other streams interleave). The FIN rides on the chunk
        that ends at the final size, or goes alone as an empty chunk.

        Returns:
            ``(offset, payload, fin)``. The caller sends it and later reports
            the same ``(offset, len(payload), fin)`` to on_acked or on_lost.
        """
        if self._reset:
            return None
        limit = max_payload if whole else min(max_payload, self._max_frame_size)
        if self._lost and limit > 0:
            taken = self._lost.take_first(limit)
            if taken is not None:
                return self._chunk(taken[0], taken[1])
        start = self._highest_sent
        count = min(self._write_offset - start, limit, credit)
        if count > 0:
            self._highest_sent = start + count
            return self._chunk(start, start + count)
        if self._fin_pending and start == self._final_size:
            self._fin_pending = False
            return start, b"", True
        return None

    def _chunk(self, start: int, end: int) -> tuple[int, bytes | memoryview, bool]:
        """``[start, end)`` of the buffer (a view where possible), with FIN at the final size."""
        payload = self._buf.read(start, end)
        fin = end == self._final_size
        if fin:
            self._fin_pending = False
        return start, payload, fin

    def on_acked(self, offset: int, length: int, fin: bool) -> list[int]:
        """The frame ``(offset, length, fin)`` was acknowledged.

        Returns:
            Ids of messages whose every byte is now acknowledged, oldest
            first; emit ``MessageDelivered`` for each.
        """
        if self._reset:
            return []
        if fin and self._final_size is not None:
            self._fin_acked = True
            self._fin_pending = False
        end = min(offset + length, self._highest_sent)
        if end <= self._acked_offset:
            return []
        if self._lost:
            self._lost.subtract(offset, end)
        if offset <= self._acked_offset and not self._acked:
            self._acked_offset = end  # in-order fast path
        else:
            self._acked.add(max(offset, self._acked_offset), end)
            self._acked_offset = self._acked.pop_prefix(self._acked_offset)
        self._free_acked_prefix()
        return self._pop_delivered()

    def _pop_delivered(self) -> list[int]:
        ends = self._message_ends
        acked = self._acked_offset
        delivered: list[int] = []
        while ends and ends[0] <= acked:
            ends.popleft()
            delivered.append(self._delivered_id)
            self._delivered_id += 1
        return delivered

    def _free_acked_prefix(self) -> None:
        """Let go of every chunk the in-order acknowledged offset has passed."""
        self._buf.free_below(self._acked_offset)

    def on_lost(self, offset: int, length: int, fin: bool) -> None:
        """The frame ``(offset, length, fin)`` was declared lost: queue it again.

        Parts already acknowledged (by another copy of the same bytes) are not
        queued; a lost FIN is resent unless a FIN was acknowledged meanwhile.
        """
        if self._reset:
            return
        if fin and not self._fin_acked and self._final_size is not None:
            self._fin_pending = True
        start = max(offset, self._acked_offset)
        end = min(offset + length, self._highest_sent)
        if start >= end:
            return
        if not self._acked:
            self._lost.add(start, end)
            return
        for gap_start, gap_end in self._acked.missing(start, end):
            self._lost.add(gap_start, gap_end)
