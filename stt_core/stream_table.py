"""Stream table: the per-session set of streams and their send scheduling.

Owns which streams exist, who opened them, the limits on how many a peer may
open, stream-id allocation, and the order in which streams get to send
(priority first, round-robin inside a priority). It knows nothing about
packets, keys or timers; ``session.py`` asks it for the next stream with data
and feeds it frames.

Stream ids (protocol.md §5.1): stream 0 exists implicitly on every session.
Other ids are chosen by the opener; ids picked automatically are odd on the
initiator and even on the responder so the two sides never collide. A frame
for an unknown id opens that stream on the receiving side (subject to
``max_streams_per_session``); its ``StreamOpened`` event waits for the
STREAM_OPEN frame that carries the purpose label, so the application sees the
label with the first message.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .errors import ErrorCode, InvalidStateError, ProtocolError
from .stream_receive import ReceivedMessage
from .streams import StreamReceiver, StreamSender

__all__ = ["Stream", "StreamTable"]

RECENTLY_CLOSED_MEMORY = 4096
"""How many closed stream ids a receiver remembers, so late frames do not reopen them."""
REOPEN_GUARD = 1024
"""How many closes longer an opener refuses to reopen an id than a receiver ignores it.

The two sides forget a stream at slightly different moments (up to a few
round trips apart), so their lists of recent closes can be in a slightly
different order. An opener that refused an id exactly as long as the peer
ignores it could reopen one the peer still ignores, at the edge of the
memory; the guard covers that many closes of skew.
"""


@dataclass(slots=True, eq=False)
class Stream:
    """One bidirectional stream: a sender, a receiver and its labels."""

    stream_id: int
    sender: StreamSender
    receiver: StreamReceiver
    purpose: str = ""
    priority: int = 0
    max_frame_size: int = 16384
    local: bool = True
    """True when this side opened the stream."""
    announced: bool = False
    """True once the application was told about the stream (StreamOpened)."""
    open_frame_pending: bool = False
    """STREAM_OPEN still has to be sent."""
    held_messages: list[ReceivedMessage] = field(default_factory=list)
    """Messages that arrived before the peer's STREAM_OPEN was seen."""
    was_blocked: bool = False
    """The application hit backpressure; emit StreamWritable when room returns."""
    remote_closed: bool = False
    """The peer finished (FIN) or reset its direction and we reported it."""
    reset: bool = False
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class StreamTable:
    """All streams of one session and the round-robin send order."""

    __slots__ = (
        "_by_id",
        "_closed",
        "_closed_order",
        "_closes",
        "_initiator",
        "_local_opened",
        "_max_frame_size",
        "_max_local_streams",
        "_max_message_size",
        "_max_peer_streams",
        "_next_auto_id",
        "_peer_opened",
        "_ready",
        "_send_buffer_bytes",
        "_window",
    )

    def __init__(self, *, initiator: bool, max_peer_streams: int, send_buffer_bytes: int,
                 receive_window: int, max_message_size: int, max_frame_size: int) -> None:
        self._by_id: dict[int, Stream] = {}
        # Created at the first close: most sessions never finish a stream, and an
        # empty dict and deque cost about 1 KiB per idle session between them.
        # Each closed id maps to its close count, so a receiver can ignore the
        # last RECENTLY_CLOSED_MEMORY of them while an opener refuses more.
        self._closed: dict[int, int] | None = None
        self._closed_order: deque[int] | None = None
        self._closes = 0
        self._initiator = initiator
        self._next_auto_id = 1 if initiator else 2
        self._max_peer_streams = max_peer_streams
        # What the peer lets us open, announced in the handshake (§5.1); our own
        # limit until then (the handshake sets it before any stream can open).
        self._max_local_streams = max_peer_streams
        self._peer_opened = 0
        self._local_opened = 0
        self._send_buffer_bytes = send_buffer_bytes
        self._window = receive_window
        self._max_message_size = max_message_size
        self._max_frame_size = max_frame_size
        self._ready: dict[int, deque[Stream]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_id.values()))

    def get(self, stream_id: int) -> Stream | None:
        """The stream with this id, or None."""
        return self._by_id.get(stream_id)

    def _create(self, stream_id: int, *, local: bool, max_frame_size: int) -> Stream:
        stream = Stream(
            stream_id=stream_id,
            sender=StreamSender(stream_id, buffer_limit=self._send_buffer_bytes,
                                max_frame_size=max_frame_size),
            receiver=StreamReceiver(stream_id, window=self._window,
                                    max_message_size=self._max_message_size),
            max_frame_size=max_frame_size,
            local=local,
            announced=local or stream_id == 0,
        )
        self._by_id[stream_id] = stream
        return stream

    def open_local(self, *, stream_id: int | None, purpose: str, priority: int,
                   max_frame_size: int | None) -> Stream:
        """Open a stream from this side (the caller validated arguments).

        Opening an id that already exists returns that stream with the new labels:
        both peers may name the same explicit id, and stream 0 always exists.
        """
        if stream_id is None:
            while self._next_auto_id in self._by_id or self._closed_here(self._next_auto_id):
                self._next_auto_id += 2
            stream_id = self._next_auto_id
            self._next_auto_id += 2
        stream = self._by_id.get(stream_id)
        frame_size = max_frame_size or self._max_frame_size
        if stream is None:
            if self._closed_here(stream_id):
                # The peer ignores frames for an id it closed recently (§5.1):
                # a reopened stream's messages would be acknowledged and dropped.
                raise InvalidStateError(
                    f"stream {stream_id} was closed on this session and its id cannot be "
                    f"reused yet (the peer would ignore it); open another id, or let "
                    f"open_stream pick one")
            if stream_id != 0:
                # The peer would close the whole session on one stream more than
                # the limit it announced (§5.1): refuse it here.
                if self._local_opened >= self._max_local_streams:
                    raise InvalidStateError(
                        f"this side already has {self._local_opened} streams open on the "
                        f"session, as many as the peer allows (its max_streams_per_session); "
                        f"a stream is freed once both directions ended: close or reset "
                        f"finished streams first")
                self._local_opened += 1
            stream = self._create(stream_id, local=True, max_frame_size=frame_size)
        stream.purpose = purpose
        stream.priority = priority
        stream.max_frame_size = frame_size
        stream.sender.max_frame_size = frame_size
        stream.open_frame_pending = stream_id != 0 or bool(purpose)
        stream.announced = True
        return stream

    def set_local_stream_limit(self, limit: int) -> None:
        """The peer announced how many streams it lets this side have open at once."""
        self._max_local_streams = limit

    def get_or_open_remote(self, stream_id: int) -> Stream | None:
        """The stream a peer frame refers to, creating it on first use.

        Returns None for a recently closed stream (late frames are ignored).

        Raises:
            ProtocolError: the peer exceeded ``max_streams_per_session``.
        """
        stream = self._by_id.get(stream_id)
        if stream is not None:
            return stream
        if self._was_closed(stream_id):
            return None
        if stream_id != 0:
            if self._peer_opened >= self._max_peer_streams:
                raise ProtocolError(ErrorCode.STREAM_LIMIT_ERROR,
                                    f"peer opened more than {self._max_peer_streams} streams")
            self._peer_opened += 1
        return self._create(stream_id, local=False, max_frame_size=self._max_frame_size)

    def remove(self, stream: Stream) -> None:
        """Forget a finished stream, remembering its id for late frames."""
        if self._by_id.pop(stream.stream_id, None) is None:
            return
        if stream.stream_id != 0:
            if stream.local:
                self._local_opened -= 1
            else:
                self._peer_opened -= 1
        self._remember_closed(stream.stream_id)

    def note_reset_unseen(self, stream_id: int) -> bool:
        """The peer reset a stream this side has no record of: remember its id
        as closed. False when the id was already among the recent closes (a
        repeated STREAM_CLOSE), True when it was news."""
        if stream_id in self._by_id or self._was_closed(stream_id):
            return False
        self._remember_closed(stream_id)
        return True

    def _remember_closed(self, stream_id: int) -> None:
        if self._closed is None or self._closed_order is None:
            self._closed, self._closed_order = {}, deque()
        self._closes += 1
        self._closed[stream_id] = self._closes
        self._closed_order.append(stream_id)
        if len(self._closed_order) > RECENTLY_CLOSED_MEMORY + REOPEN_GUARD:
            oldest = self._closed_order.popleft()
            if self._closes - self._closed.get(oldest, self._closes) >= (
                    RECENTLY_CLOSED_MEMORY + REOPEN_GUARD):
                del self._closed[oldest]

    def _was_closed(self, stream_id: int) -> bool:
        """Is ``stream_id`` among the last RECENTLY_CLOSED_MEMORY closes (late frames
        for it are ignored, not allowed to reopen it)?"""
        closed = self._closed
        if closed is None:
            return False
        closed_at = closed.get(stream_id)
        return closed_at is not None and self._closes - closed_at < RECENTLY_CLOSED_MEMORY

    def _closed_here(self, stream_id: int) -> bool:
        """Is ``stream_id`` too recently closed for this side to open it again?"""
        return self._closed is not None and stream_id in self._closed

    # ------------------------------------------------------------ send scheduling

    def mark_ready(self, stream: Stream) -> None:
        """The stream may have something to send (new data, loss, credit)."""
        queue = self._ready.get(stream.priority)
        if queue is None:
            queue = self._ready[stream.priority] = deque()
            self._ready = dict(sorted(self._ready.items()))
        if stream not in queue:
            queue.append(stream)

    def has_ready(self) -> bool:
        """True when some stream may have something to send (cheaper than
        :meth:`ready_streams` when the answer is all that is needed)."""
        return any(self._ready.values())

    def ready_streams(self) -> list[deque[Stream]]:
        """Queues of possibly-sendable streams, most urgent priority first."""
        return [queue for queue in self._ready.values() if queue]
