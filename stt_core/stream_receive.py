"""Stream receive side: reassembly, message parsing, per-stream flow control.

This module owns one stream's incoming byte sequence (protocol.md §5): DATA
chunks arrive at any offset, in any order, duplicated or overlapping; they are
reassembled into the contiguous byte sequence, which is cut into messages at
their ``varint(len) || message`` boundaries (RFC 9000 §16 varints). It also
decides when credit (MAX_STREAM_DATA) can be returned to the peer.

It must not know about packets, frames, timers or crypto: the session calls
:meth:`StreamReceiver.on_data` for each DATA frame, then
:meth:`~StreamReceiver.pop_messages`, and sends whatever
:meth:`~StreamReceiver.credit_update` returns.

Flow-control rule (protocol.md §5). The peer may send up to
:attr:`~StreamReceiver.advertised_limit`, the highest value ever reached by
``window + released``, where *released* counts the in-order bytes that no
longer hold memory on the application's behalf:

(a) a byte is released as soon as it is in order when it is a length
    prefix, or part of a message that is still incomplete. Holding those back
    would deadlock a message larger than the window: the sender could never
    send its end;
(b) when a message completes, its whole payload is held until the
    application consumes it (:meth:`~StreamReceiver.consume`): the credit its
    bytes released under (a) is taken back (``released`` goes down; the
    advertised limit never does), so a slow reader pushes back on the sender
    instead of growing a queue.

Why this bounds memory by ``window + max_message_size``: when a limit L was
advertised, ``L - window`` was at most the bytes consumed then plus the part
of one incomplete message (<= max_message_size). Everything held now (the
unconsumed messages, the message being assembled, the out-of-order bytes) lies
between what is consumed now and L. Credit is re-advertised once it has moved
by at least half the window, and never once the final size is known. The
session applies the same (signed) changes to the session window
(:meth:`~StreamReceiver.take_released`).

Worst cases: each ``on_data`` costs one slice assignment plus O(log g) range
bookkeeping over g out-of-order pieces, and g is capped (``max_gaps``) so a
peer fragmenting its data on purpose is a protocol error, not a slow path.
Each message is copied out of the buffer once: when the application first
reads it (:class:`ReceivedMessage`), or earlier if the buffer must move.
"""

from __future__ import annotations

import weakref

from mypy_extensions import mypyc_attr

from .errors import ErrorCode, InvalidStateError, ProtocolError
from .flow import ByteRanges
from .wire import pull_varint

__all__ = ["DEFAULT_MAX_GAPS", "ReceivedMessage", "StreamReceiver"]

LAZY_MIN_SIZE = 4096
"""Messages at least this large stay in the buffer until read (:class:`ReceivedMessage`).

Smaller ones are copied out when they complete, as before: their bytes come
from the allocator's small-block pools, where nothing is trimmed and faulted
in again, and a request/response exchange of small messages would otherwise
pay for the bookkeeping (about 170 bytecodes per round trip).
"""

_IDLE_KEEP_WINDOWS = 4
"""A reassembly buffer larger than this many stream windows is freed as soon as it
holds no live byte; a smaller one is kept for the stream's next message."""

DEFAULT_MAX_GAPS = 4096
"""Out-of-order pieces one stream may hold before the peer is deemed abusive.

An honest sender creates one piece per lost frame still being repaired, far
below this with any sane window; 1-byte frames with 1-byte holes are not
honest.
"""


@mypyc_attr(native_class=False)  # compiled classes cannot be weakly referenced
class ReceivedMessage:
    """A completed message whose bytes are made on first read.

    Why: a receive batch can complete many large messages before the
    application takes the first. Copying each out at once kept them all alive
    together, and once the application had freed them glibc trimmed the heap
    and faulted the same pages in again for the next batch (docs/performance.md,
    "Messages made on first read"). Left in the reassembly buffer until read,
    one message's bytes are alive at a time and the allocator reuses them.

    The receiver guarantees the bytes stay valid: it never moves, overwrites
    or frees the part of its buffer an unread message lies in without copying
    that message out first.
    """

    __slots__ = ("__weakref__", "_data", "_receiver", "end", "start")

    def __init__(self, receiver: StreamReceiver | None, start: int, end: int,
                 data: bytes | None = None) -> None:
        self._receiver = receiver
        self._data = data
        self.start = start
        """Stream offset of the message's first payload byte."""
        self.end = end
        """Stream offset just past its last byte."""

    @classmethod
    def of(cls, data: bytes) -> ReceivedMessage:
        """A message that is already bytes (for tests and simulators)."""
        return cls(None, 0, len(data), data)

    @property
    def size(self) -> int:
        """Payload length, known without making the bytes."""
        return self.end - self.start

    @property
    def data(self) -> bytes:
        """The message payload (copied out of the reassembly buffer on first use)."""
        data = self._data
        if data is None:
            receiver = self._receiver
            assert receiver is not None
            data = receiver._read(self)
        return data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReceivedMessage):
            return self.data == other.data
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        state = "read" if self._data is not None else "unread"
        return f"ReceivedMessage({self.size} bytes, {state})"


class StreamReceiver:
    """The receive half of one stream."""

    __slots__ = (
        "_advertised",
        "_buf",
        "_buf_start",
        "_contig",
        "_discarded",
        "_final_size",
        "_gaps",
        "_held",
        "_highest",
        "_max_gaps",
        "_max_message_size",
        "_msg_end",
        "_msg_released",
        "_msg_start",
        "_parse_pos",
        "_pending",
        "_released",
        "_reported",
        "_window",
        "stream_id",
    )

    def __init__(self, stream_id: int, *, window: int, max_message_size: int,
                 max_gaps: int = DEFAULT_MAX_GAPS) -> None:
        """Args:
        stream_id: the stream this buffer belongs to (kept for the caller).
        window: bytes the peer may send beyond what was released
            (``Config.stream_receive_window``); also the initial limit.
        max_message_size: largest message accepted (``Config.max_message_size``).
        max_gaps: out-of-order pieces held at most (see DEFAULT_MAX_GAPS).
        """
        if window < 1:
            raise ValueError("window must be >= 1")
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.stream_id = stream_id
        self._window = window
        self._max_message_size = max_message_size
        self._max_gaps = max_gaps
        self._advertised = window
        self._buf = bytearray()
        self._buf_start = 0  # stream offset of self._buf[0]
        self._contig = 0  # every byte below this has arrived
        self._highest = 0  # end of the highest byte received
        self._gaps = ByteRanges()  # received ranges above _contig
        self._final_size: int | None = None
        self._discarded = False  # discard() ran: count bytes, keep none
        self._parse_pos = 0  # offset of the next unparsed length prefix
        self._msg_start = -1  # payload range of the message being assembled,
        self._msg_end = -1  # -1 while its length prefix is not parsed yet
        self._msg_released = 0  # offset up to which its bytes were released (rule a)
        self._released = 0  # total bytes released (credit returned)
        self._reported = 0  # part of _released already given to take_released()
        self._held = 0  # payload bytes of completed messages not yet consumed
        # Popped messages still in the buffer, oldest first; None when there
        # are none (most streams, most of the time: no list per idle stream).
        # Weak: a message the application drops unread frees at once (no
        # reference cycle through the receiver) and stops pinning the buffer.
        self._pending: list[weakref.ref[ReceivedMessage]] | None = None

    # ------------------------------------------------------------------ state

    @property
    def advertised_limit(self) -> int:
        """Highest offset (exclusive) the peer may send up to, as last advertised."""
        return self._advertised

    @property
    def highest_received(self) -> int:
        """End of the highest byte received."""
        return self._highest

    @property
    def contiguous_offset(self) -> int:
        """Every byte below this offset has arrived."""
        return self._contig

    @property
    def final_size(self) -> int | None:
        """The stream's total size once a FIN arrived, else None."""
        return self._final_size

    @property
    def unconsumed_bytes(self) -> int:
        """Payload bytes of popped messages the application has not consumed yet."""
        return self._held

    @property
    def buffered_bytes(self) -> int:
        """Live bytes of the reassembly buffer, holes included.

        Counted from the first byte still needed (the start of the message
        being assembled) to the highest byte received; it never exceeds
        ``window + max_message_size``. The allocation may be up to twice this,
        and is kept for the next message while it is at most a few windows
        (see :meth:`_compact`).
        """
        return max(0, self._highest - self._keep_offset())

    @property
    def is_finished(self) -> bool:
        """The FIN arrived and every message was popped: the peer sent its last."""
        return self._final_size is not None and self._parse_pos == self._final_size

    # ---------------------------------------------------------------- network

    def on_data(self, offset: int, data: bytes | bytearray | memoryview, fin: bool) -> int:
        """Take one DATA chunk.

        Duplicate and overlapping bytes are harmless; out-of-order bytes are
        held until the gap before them fills.

        Returns:
            How many bytes extended the highest received offset: pass them to
            ``SessionFlowControl.on_new_bytes``.

        Raises:
            ProtocolError: FLOW_CONTROL_ERROR past the advertised limit;
                STREAM_STATE_ERROR past the final size or when a FIN changes
                it; RESOURCE_LIMIT when the data is fragmented beyond max_gaps.
        """
        end = offset + len(data)
        self._check_limits(offset, end, fin)
        new_bytes = 0
        if end > self._highest:
            new_bytes = end - self._highest
            self._highest = end
        if self._discarded:
            self._released += new_bytes  # counted for flow control, then dropped
            self._buf_start = self._contig = self._parse_pos = self._highest
            return new_bytes
        contig = self._contig
        if end <= contig:
            return new_bytes  # duplicate
        start = max(offset, contig)
        self._store(start, memoryview(data)[start - offset:])
        if start == contig and not self._gaps:
            self._contig = end  # in-order fast path
        else:
            self._gaps.add(start, end)
            if len(self._gaps) > self._max_gaps:
                raise ProtocolError(
                    ErrorCode.RESOURCE_LIMIT,
                    f"stream {self.stream_id}: more than {self._max_gaps} out-of-order pieces",
                )
            self._contig = self._gaps.pop_prefix(contig)
        self._release_partial()
        return new_bytes

    def _check_limits(self, offset: int, end: int, fin: bool) -> None:
        """Flow-control and final-size rules (RFC 9000 §4.1, §4.5 in spirit)."""
        if offset < 0:
            raise ProtocolError(ErrorCode.FRAME_ENCODING_ERROR, "negative stream offset")
        if end > self._advertised:
            raise ProtocolError(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"stream {self.stream_id}: data up to {end} exceeds limit {self._advertised}",
            )
        final = self._final_size
        if final is not None:
            if end > final or (fin and end != final):
                raise ProtocolError(
                    ErrorCode.STREAM_STATE_ERROR,
                    f"stream {self.stream_id}: data up to {end} (fin={fin}) "
                    f"conflicts with final size {final}",
                )
        elif fin:
            if end < self._highest:
                raise ProtocolError(
                    ErrorCode.STREAM_STATE_ERROR,
                    f"stream {self.stream_id}: final size {end} below data "
                    f"already received up to {self._highest}",
                )
            self._final_size = end

    def _store(self, start: int, chunk: memoryview) -> None:
        """Copy ``chunk`` into the buffer at stream offset ``start``.

        The buffer is an arena: its length is its capacity, and the bytes
        past the highest one stored are stale, never read (a byte is read only
        below the contiguous offset, so only after it was written). Writing
        never resizes it; room comes from :meth:`_make_room`.
        """
        pos = start - self._buf_start
        end = pos + len(chunk)
        if end > len(self._buf):
            pos, end = self._make_room(pos, end)
        # Through a view: CPython copies anything but a bytearray assigned to a
        # bytearray slice into a temporary bytearray first (a second 64 KiB
        # copy). The temporary view is released as soon as the line ends.
        memoryview(self._buf)[pos:end] = chunk

    def _make_room(self, pos: int, end: int) -> tuple[int, int]:
        """Make the buffer hold relative range ``[pos, end)``; returns it rebased.

        The parsed prefix is dead. When it is at least half the buffer and
        dropping it leaves room, the live bytes slide to the front in place;
        otherwise a buffer twice the live size replaces this one. Each byte
        is thus moved O(1) times on average, and the buffer stops changing
        once it fits the stream's window: a bulk receiver writes into the
        same memory for the whole transfer. (Growing by resizing, or cutting
        the prefix with ``del``, made CPython reallocate and glibc hand pages
        back and fault them in again: see docs/performance.md.)

        Unread messages are copied out before the buffer grows, never carried
        into the new one: an old unread message would otherwise keep every
        byte read and consumed since it alive, and the buffer would grow with
        the whole transfer while the application left that one message
        unread (each message is still copied once, out instead of along).
        """
        if self._pending is not None:
            self._materialize_consumed()
        size = len(self._buf)
        dead = self._keep_offset() - self._buf_start
        slides = dead >= size // 2 and end - dead <= size
        if not slides and self._pending is not None:
            self._materialize_pending()
            dead = self._keep_offset() - self._buf_start
            slides = dead >= size // 2 and end - dead <= size
        buf = self._buf
        keep = self._buf_start + dead
        live = size - dead  # an upper bound: the tail past the highest byte is stale
        if slides:
            if live > 0:
                with memoryview(buf) as view:
                    view[:live] = view[dead:size]
        else:
            grown = bytearray(2 * (end - dead))
            if live > 0:
                with memoryview(buf) as view:
                    grown[:live] = view[dead:size]
            self._buf = grown
        self._buf_start = keep
        return pos - dead, end - dead

    def _release_partial(self) -> None:
        """Rule (a): release in-order bytes of the next length prefix and of the
        message still incomplete.

        ``_msg_released`` marks how far that was done, so no byte is released
        twice: a prefix counts here or in :meth:`_parse_header`, never both.
        Releasing a prefix before it is whole is what keeps a window smaller
        than a prefix (down to 1 byte) from deadlocking.
        """
        contig = self._contig
        if self._msg_end >= 0:
            if contig >= self._msg_end:
                return  # complete: its unreleased bytes wait for consume() (rule b)
            upto = contig
        elif contig > self._parse_pos:
            first = self._buf[self._parse_pos - self._buf_start]
            upto = min(contig, self._parse_pos + (1 << (first >> 6)))
        else:
            return
        gained = upto - max(self._msg_released, self._parse_pos)
        if gained > 0:
            self._released += gained
            self._msg_released = upto

    # ------------------------------------------------------------- application

    def pop_messages(self) -> list[bytes]:
        """Every message completed since the last call, in order, as bytes.

        The same as :meth:`pop_received` with each message read at once.
        """
        return [message.data for message in self.pop_received()]

    def pop_received(self) -> list[ReceivedMessage]:
        """Every message completed since the last call, in order.

        Each message's bytes are made when it is first read, so a caller that
        queues them holds one copy at a time (see :class:`ReceivedMessage`).

        Raises:
            ProtocolError: MESSAGE_TOO_LARGE as soon as a length prefix
                announces more than max_message_size (before its bytes are
                buffered); PROTOCOL_VIOLATION when the FIN cuts a message.
        """
        if self._contig < self._msg_end and self._final_size is None:
            # Mid-message, no FIN yet: nothing can complete, be cut or compacted
            # (on_data already released what rule (a) allows). The common case
            # of a bulk transfer: one packet of a large message.
            return []
        out: list[ReceivedMessage] = []
        while True:
            if self._msg_end < 0 and not self._parse_header():
                break
            if self._contig < self._msg_end:
                break
            start = self._msg_start
            end = self._msg_end
            if end - start < LAZY_MIN_SIZE:
                message = ReceivedMessage(None, start, end, self._copy_out(start, end))
            else:
                message = ReceivedMessage(self, start, end)
                if self._pending is None:
                    self._pending = [weakref.ref(message)]
                else:
                    self._pending.append(weakref.ref(message))
            out.append(message)
            # Rule (b): the whole completed payload is held until consumed, so
            # the credit its bytes released while incomplete is taken back.
            self._released -= self._msg_released - start
            self._held += end - start
            self._parse_pos = end
            self._msg_start = self._msg_end = -1
        self._release_partial()
        self._compact()
        self._check_truncated()
        return out

    def _keep_offset(self) -> int:
        """The lowest stream offset whose byte the buffer must still hold."""
        keep = self._msg_start if self._msg_end >= 0 else self._parse_pos
        if self._pending is not None:
            first = self._first_unread()
            if first is not None and first.start < keep:
                keep = first.start
        return keep

    def _first_unread(self) -> ReceivedMessage | None:
        """The oldest popped message still unread and alive; drops the rest before it."""
        pending = self._pending
        while pending:
            message = pending[0]()
            if message is not None and message._data is None:
                return message
            del pending[0]  # read, or dropped unread by the application
        self._pending = None
        return None

    def _copy_out(self, start: int, end: int) -> bytes:
        """The stream bytes ``[start, end)`` as ``bytes`` of their own (all in the buffer)."""
        base = self._buf_start
        return memoryview(self._buf)[start - base:end - base].tobytes()

    def _materialize(self, message: ReceivedMessage) -> bytes:
        """Copy one unread message out of the buffer and stop protecting it."""
        data = self._copy_out(message.start, message.end)
        message._data = data
        message._receiver = None
        if self._pending is not None:
            # Readers take messages in order, so this is nearly always the
            # first; any read or dropped ones before the first unread go too.
            self._first_unread()
        return data

    def _read(self, message: ReceivedMessage) -> bytes:
        """The application reads an unread message: copy it out, then let the
        buffer restart if that was the last byte it had to keep."""
        data = self._materialize(message)
        if self._pending is None:
            self._compact()
        return data

    def _materialize_consumed(self) -> None:
        """Copy out unread messages the caller already consumed (oldest first).

        An unread message that is not consumed yet is part of the held bytes
        flow control bounds, so it may stay while the buffer slides in place
        (growing copies every unread message out: :meth:`_make_room`). One
        consumed unread (``auto_consume``, or a caller that returns credit
        before reading) is not bounded: the peer was told it may send
        more, so it must not make the buffer grow.
        """
        unread = self._unread_bytes()
        while unread > self._held and (first := self._first_unread()) is not None:
            unread -= first.size
            self._materialize(first)

    def _unread_bytes(self) -> int:
        """Payload bytes of the popped messages still unread and alive."""
        total = 0
        for ref in self._pending or ():
            message = ref()
            if message is not None and message._data is None:
                total += message.size
        return total

    def _materialize_pending(self) -> None:
        """Copy every unread message out: the buffer is about to move or go."""
        while (first := self._first_unread()) is not None:
            self._materialize(first)

    def _parse_header(self) -> bool:
        """Parse the next length prefix if all its bytes are in; True on success."""
        pos = self._parse_pos - self._buf_start
        avail = self._contig - self._parse_pos
        if avail <= 0:
            return False
        size = 1 << (self._buf[pos] >> 6)
        if avail < size:
            return False
        length, _ = pull_varint(self._buf, pos)  # all ``size`` bytes are in (checked above)
        if length > self._max_message_size:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"stream {self.stream_id}: message of {length} bytes exceeds "
                f"the {self._max_message_size}-byte limit",
            )
        msg_start = self._parse_pos + size
        # Rule (a): prefixes never wait for the application (part may be out already).
        self._released += msg_start - max(self._msg_released, self._parse_pos)
        self._msg_start = self._msg_released = msg_start
        self._msg_end = msg_start + length
        if self._final_size is not None and self._msg_end > self._final_size:
            raise ProtocolError(
                ErrorCode.PROTOCOL_VIOLATION,
                f"stream {self.stream_id}: message runs past the final size",
            )
        return True

    def _check_truncated(self) -> None:
        """A FIN in the middle of a length prefix or message is a violation."""
        final = self._final_size
        if final is not None and self._contig == final and self._parse_pos != final:
            raise ProtocolError(
                ErrorCode.PROTOCOL_VIOLATION,
                f"stream {self.stream_id}: stream ends inside a message",
            )

    def _compact(self) -> None:
        """Once every stored byte is parsed, restart the buffer at the parse point.

        Costs nothing: no byte is live. The buffer itself is kept for the next
        message: a bulk sender that is limited by its application ends a
        packet at each message's end, so this point comes once per message,
        and freeing here made every message regrow the buffer (and glibc fault
        its pages in again). It is freed once the stream's last byte is in,
        or when it grew past :data:`_IDLE_KEEP_WINDOWS` windows (a message
        larger than the window passed through): what a quiet stream holds is
        then at most a few windows, memory its flow-control window lets it use
        whenever it is busy anyway.
        """
        keep = self._keep_offset()
        if keep == self._highest and keep != self._buf_start:
            self._buf_start = keep
            if (self._final_size is not None
                    or len(self._buf) > _IDLE_KEEP_WINDOWS * self._window):
                self._buf = bytearray()

    def consume(self, nbytes: int) -> None:
        """The application took ``nbytes`` of message payload: return their credit.

        Usually called once per message with its length; any split is fine.

        Raises:
            InvalidStateError: more bytes than popped and not yet consumed.
        """
        if nbytes < 0:
            raise InvalidStateError("cannot consume a negative byte count")
        if nbytes > self._held:
            raise InvalidStateError(
                f"stream {self.stream_id}: consumed {nbytes} bytes but only "
                f"{self._held} were received and not yet consumed"
            )
        self._held -= nbytes
        self._released += nbytes

    def credit_update(self) -> int | None:
        """New MAX_STREAM_DATA limit to advertise, or None.

        Returns a value once the limit can move by at least half the window,
        and never after the final size is known (the peer needs no more
        credit). Calling it commits the new limit: the caller must send it.
        """
        if self._final_size is not None:
            return None
        candidate = self._released + self._window
        if candidate - self._advertised >= max(1, self._window // 2):
            self._advertised = candidate
            return candidate
        return None

    def take_released(self) -> int:
        """Net change of released bytes since the last call, for the session window.

        Negative when a message completed and took back the credit its bytes
        had released while it was incomplete: the session window must follow
        the same rule or its memory bound would not hold.
        """
        delta = self._released - self._reported
        self._reported = self._released
        return delta

    def discard(self) -> int:
        """Drop every buffered byte and every later one (stream reset or abandoned).

        Later :meth:`on_data` calls still enforce the limits and count new
        bytes (the peer's data in flight must be paid for at session level),
        then release them at once; :meth:`pop_messages` returns nothing.

        Returns:
            Bytes received but never reported by :meth:`take_released`, so
            the session can return their share of the session window.
        """
        unreported = self._highest - self._reported
        if self._pending is not None:
            self._materialize_pending()  # messages already handed out stay readable
        self._discarded = True
        self._released = self._reported = self._highest
        self._buf = bytearray()
        self._buf_start = self._contig = self._parse_pos = self._highest
        self._gaps.clear()
        self._held = 0
        self._msg_start = self._msg_end = -1
        return unreported
