"""Flow: byte-offset bookkeeping shared by both stream directions, and session credit.

This module owns two small things that the stream buffers and the session
both lean on:

* :class:`ByteRanges`, a sorted set of disjoint half-open ``[start, end)``
  byte ranges. The sender keeps its acknowledged-but-not-contiguous ranges and
  its ranges waiting for retransmission in it; the receiver keeps the
  out-of-order ranges it holds beyond its contiguous prefix. It is exact
  and never forgets: ``stt_core.ranges.RangeSet`` drops its lowest ranges
  when capped, which suits packet numbers but would silently lose bytes
  here, so the stream buffers cap their range counts themselves instead.
* :class:`SessionFlowControl`, the session-level credit of protocol.md §5
  (MAX_DATA): on the receive side, how many stream bytes the peer may send
  across all streams; on the send side, how many the peer lets us send.

It must not know about frames, packets, timers or streams: callers hand it
plain byte counts. The per-stream rule for *when* received bytes release
credit lives in :mod:`stt_core.stream_receive`; the session passes the bytes
each stream releases (``StreamReceiver.take_released()``) to
:meth:`SessionFlowControl.consume`, so both levels follow the same rule.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from .errors import ErrorCode, ProtocolError

__all__ = ["ByteRanges", "SessionFlowControl"]


class ByteRanges:
    """Disjoint, merged, sorted half-open byte ranges.

    Two parallel lists of starts and ends keep every lookup a ``bisect``
    (O(log n)) and every change one list splice (O(n) pointer moves in C,
    which beats a tree in Python for the few thousand ranges we allow).
    Adjacent ranges are merged, so ``len()`` is the number of gaps-separated
    pieces, which is what callers cap against hostile fragmentation.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(zip(self._starts, self._ends, strict=True)))

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int):
            return False
        i = bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def __repr__(self) -> str:
        return f"ByteRanges({list(self)!r})"

    def first(self) -> tuple[int, int] | None:
        """The lowest range, or None when empty."""
        if not self._starts:
            return None
        return self._starts[0], self._ends[0]

    def add(self, start: int, end: int) -> None:
        """Insert ``[start, end)``, merging with overlapping or touching ranges."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # Ranges i..j-1 touch or overlap the new one: end >= start and start <= end.
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            return
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        starts[i:j] = (new_start,)
        ends[i:j] = (new_end,)

    def subtract(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` from the set (parts not present are ignored)."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # Ranges i..j-1 overlap the removed one: end > start and start < end.
        i = bisect_right(ends, start)
        j = bisect_left(starts, end)
        if i >= j:
            return
        new_starts: list[int] = []
        new_ends: list[int] = []
        if starts[i] < start:
            new_starts.append(starts[i])
            new_ends.append(start)
        if ends[j - 1] > end:
            new_starts.append(end)
            new_ends.append(ends[j - 1])
        starts[i:j] = new_starts
        ends[i:j] = new_ends

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that are *not* in the set, in order."""
        starts, ends = self._starts, self._ends
        out: list[tuple[int, int]] = []
        i = bisect_right(ends, start)
        pos = start
        while pos < end and i < len(starts) and starts[i] < end:
            if starts[i] > pos:
                out.append((pos, starts[i]))
            pos = max(pos, ends[i])
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def take_first(self, limit: int) -> tuple[int, int] | None:
        """Remove and return up to ``limit`` bytes from the front of the lowest range."""
        if not self._starts or limit <= 0:
            return None
        start = self._starts[0]
        end = self._ends[0]
        if end - start > limit:
            end = start + limit
            self._starts[0] = end
        else:
            del self._starts[0]
            del self._ends[0]
        return start, end

    def pop_prefix(self, offset: int) -> int:
        """If the lowest range starts at or before ``offset``, remove it.

        Returns the new contiguous end: ``max(offset, end of that range)``, or
        ``offset`` unchanged. This is how a contiguous prefix (acked offset,
        in-order receive offset) swallows ranges that arrived early.
        """
        if self._starts and self._starts[0] <= offset:
            end = self._ends[0]
            del self._starts[0]
            del self._ends[0]
            return max(offset, end)
        return offset

    def clear(self) -> None:
        """Forget every range."""
        self._starts.clear()
        self._ends.clear()


class SessionFlowControl:
    """Session-level flow credit (MAX_DATA) in both directions.

    Receive side: the peer may send stream bytes up to :attr:`advertised_limit`
    in total (counted as the bytes that extend each stream's highest received
    offset, which :meth:`StreamReceiver.on_data` returns). Credit returns as
    streams release bytes (see :mod:`stt_core.stream_receive` for the rule)
    and is re-advertised once it has moved by half a window, so a steady
    stream costs one MAX_DATA per half window, not one per packet.

    Send side: :attr:`peer_limit` is the peer's latest MAX_DATA, :attr:`sent`
    the new (never retransmitted) bytes we sent on all streams, and
    :meth:`available` what the session may still hand to
    ``StreamSender.next_frame`` as ``credit``.
    """

    __slots__ = ("_advertised", "_peer_limit", "_received", "_released", "_sent", "_window")

    def __init__(self, *, receive_window: int, peer_limit: int = 0) -> None:
        """Args:
        receive_window: bytes the peer may have outstanding on the session
            beyond what streams released (``Config.session_receive_window``).
        peer_limit: the peer's initial session credit (from the handshake).
        """
        if receive_window < 1:
            raise ValueError("receive_window must be >= 1")
        if peer_limit < 0:
            raise ValueError("peer_limit must be >= 0")
        self._window = receive_window
        self._advertised = receive_window
        self._received = 0
        self._released = 0
        self._peer_limit = peer_limit
        self._sent = 0

    # ------------------------------------------------------------- receive side

    @property
    def advertised_limit(self) -> int:
        """The session limit we last told the peer (total stream bytes)."""
        return self._advertised

    @property
    def received(self) -> int:
        """Stream bytes received so far, counted once each."""
        return self._received

    def on_new_bytes(self, nbytes: int) -> None:
        """Count bytes that extended a stream's highest received offset.

        Raises:
            ProtocolError: FLOW_CONTROL_ERROR when the total passes the
                advertised limit; the session closes with that code.
        """
        self._received += nbytes
        if self._received > self._advertised:
            raise ProtocolError(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"session data {self._received} exceeds advertised limit {self._advertised}",
            )

    def consume(self, nbytes: int) -> None:
        """Apply a stream's change of released bytes (``take_released()``/``discard()``).

        Positive values return credit. Negative values take back credit that
        a stream's incomplete message had released once that message
        completes and waits for the application (the advertised limit never
        shrinks; later updates are just smaller).
        """
        released = self._released + nbytes
        if not 0 <= released <= self._received:
            raise ValueError(
                f"cannot release {nbytes} bytes: {self._released} of "
                f"{self._received} received bytes are released"
            )
        self._released = released

    def credit_update(self) -> int | None:
        """New MAX_DATA to send, or None while the window moved less than half.

        Calling it commits the new limit: send the frame it returns (and
        resend the latest limit if that frame is lost).
        """
        candidate = self._released + self._window
        if candidate - self._advertised >= max(1, self._window // 2):
            self._advertised = candidate
            return candidate
        return None

    # ---------------------------------------------------------------- send side

    @property
    def peer_limit(self) -> int:
        """The peer's latest session credit (MAX_DATA)."""
        return self._peer_limit

    @property
    def sent(self) -> int:
        """New stream bytes we sent on all streams (retransmissions excluded)."""
        return self._sent

    def on_max_data(self, limit: int) -> None:
        """Apply a MAX_DATA from the peer; smaller values than known are ignored."""
        if limit > self._peer_limit:
            self._peer_limit = limit

    def on_sent(self, nbytes: int) -> None:
        """Count new bytes a stream sent (its ``highest_sent`` advanced by this)."""
        if nbytes < 0 or self._sent + nbytes > self._peer_limit:
            raise ValueError(
                f"sending {nbytes} new bytes exceeds the peer's session credit "
                f"({self.available()} available)"
            )
        self._sent += nbytes

    def available(self) -> int:
        """New stream bytes we may still send before the peer raises MAX_DATA."""
        return self._peer_limit - self._sent

    @property
    def blocked(self) -> bool:
        """True when the peer's credit is used up (a DATA_BLOCKED moment)."""
        return self._sent >= self._peer_limit
