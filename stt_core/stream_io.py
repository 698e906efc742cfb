"""Stream I/O: stream commands and stream frame handlers of a session.

Owns what happens to a stream when the application acts on it (open, send a
message, finish, reset, consume) and when a stream frame arrives (DATA,
STREAM_OPEN, STREAM_FIN, STREAM_CLOSE, MAX_DATA, MAX_STREAM_DATA), including
flow-control accounting at stream and session level (protocol.md §5).

Flow-control start (protocol.md §5.4): before a peer has advertised anything,
a sender may put ``INITIAL_STREAM_CREDIT`` bytes on a stream and
``INITIAL_SESSION_CREDIT`` on the session. Every receiver accepts at least
that much and raises the limits to its configured windows with MAX_STREAM_DATA
and MAX_DATA as soon as the stream (or the session) exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import INITIAL_STREAM_CREDIT
from .errors import (
    BufferFullError,
    ErrorCode,
    InvalidStateError,
    ProtocolError,
    StreamClosedError,
)
from .events import MessageReceived, StreamClosed, StreamOpened, StreamWritable
from .stream_table import Stream
from .wire import (
    DataFrame,
    Frame,
    FrameType,
    LimitFrame,
    StreamCloseFrame,
    StreamFinFrame,
    StreamOpenFrame,
)

if TYPE_CHECKING:
    from .session import Session

MAX_PRIORITY = 255
MAX_EARLY_CREDITS = 64
"""MAX_STREAM_DATA frames kept for streams not seen yet (reordering, bounded)."""
MAX_PURPOSE_BYTES = 255
MAX_CONTROL_FOR_ANSWERS = 1024
"""A STREAM_CLOSE is answered only while fewer control frames than this wait to be
sent: a peer resetting streams faster than we can answer cannot grow the queue.
The answers skipped only cost that peer the credit of its stopped bytes."""
MAX_RESETS_AWAITING = 1024
"""Streams this side reset whose peer's final size has not come back yet (bounded:
past it the oldest is forgotten, and with it the credit of its stopped bytes)."""


# ---------------------------------------------------------------- application commands


def open_stream(session: Session, *, purpose: str, stream_id: int | None, priority: int,
                max_frame_size: int | None) -> int:
    """Open (or re-label) a stream; see ``Endpoint.open_stream``."""
    session.require_open()
    if stream_id is not None and not 0 <= stream_id < (1 << 62):
        raise ValueError("stream_id must be between 0 and 2**62-1")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be 0-{MAX_PRIORITY} (lower is sent first)")
    if max_frame_size is not None and not 64 <= max_frame_size <= 65536:
        raise ValueError("max_frame_size must be 64-65536 bytes")
    if not isinstance(purpose, str) or len(purpose.encode("utf-8")) > MAX_PURPOSE_BYTES:
        raise ValueError(f"purpose must be a str of at most {MAX_PURPOSE_BYTES} UTF-8 bytes")
    existing = session.streams.get(stream_id) if stream_id is not None else None
    held = False
    if existing is not None:
        if existing.reset:
            raise StreamClosedError(f"stream {stream_id} was reset")
        if existing.sender.final_size is not None:
            # Relabelling it would hand back a stream nobody can write on, and its
            # id is refused as soon as both sides finish it: say so now.
            raise InvalidStateError(
                f"stream {stream_id} was closed for sending on this side and cannot be "
                f"opened again; open another id, or let open_stream pick one")
        held = not existing.announced
    stream = session.streams.open_local(stream_id=stream_id, purpose=purpose,
                                        priority=priority, max_frame_size=max_frame_size)
    if held:
        # The peer's frames came before its STREAM_OPEN, so the stream was not
        # announced and its messages (and a FIN) were held for that moment.
        # This side opening the id itself is that moment: no StreamOpened
        # (the application opened it), but what was held is delivered now.
        _deliver(session, stream)
    if stream.sender.peer_max_stream_data == 0:
        stream.sender.on_max_stream_data(INITIAL_STREAM_CREDIT)
    if stream.open_frame_pending:
        session.control.append(StreamOpenFrame(stream.stream_id, stream.priority,
                                               stream.max_frame_size, stream.purpose))
        stream.open_frame_pending = False
    if existing is None:  # after STREAM_OPEN, so the peer knows the stream it credits
        _grant_stream_window(session, stream)
    return stream.stream_id


def _grant_stream_window(session: Session, stream: Stream) -> None:
    """Tell the peer our real stream window (it starts from INITIAL_STREAM_CREDIT)."""
    limit = stream.receiver.advertised_limit
    if limit > INITIAL_STREAM_CREDIT:
        session.control.append(LimitFrame(FrameType.MAX_STREAM_DATA, stream.stream_id, limit))


def _writable_stream(session: Session, stream_id: int) -> Stream:
    session.require_open()
    stream = session.streams.get(stream_id)
    if stream is None:
        if stream_id != 0:
            raise StreamClosedError(f"stream {stream_id} is not open; call open_stream first")
        open_stream(session, purpose="", stream_id=0, priority=0, max_frame_size=None)
        stream = session.streams.get(0)
        if stream is None:
            raise InvalidStateError("stream 0 could not be created")
    if stream.reset:
        raise StreamClosedError(f"stream {stream_id} was reset")
    return stream


def can_send(session: Session, stream_id: int) -> bool:
    """True when ``send_message`` would accept a message now."""
    if not session.is_open:
        return False
    stream = session.streams.get(stream_id)
    if stream is None:
        return stream_id == 0
    return (stream.sender.writable and not stream.reset
            and session.send_buffered < session.config.session_send_buffer_bytes)


def send_message(session: Session, stream_id: int, data: bytes, *,
                 ack_now: bool = False) -> int:
    """Queue one message; see ``Endpoint.send_message``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"message must be bytes-like, not {type(data).__name__}")
    stream = _writable_stream(session, stream_id)
    if stream.sender.final_size is not None:
        raise StreamClosedError(f"stream {stream_id} is closed for sending "
                                f"(close_stream was called on it)")
    if not can_send(session, stream_id):
        stream.was_blocked = True
        raise BufferFullError(
            f"send buffer of stream {stream_id} is full; wait for StreamWritable")
    before = stream.sender.buffered_bytes
    message_id = stream.sender.write_message(bytes(data))
    if ack_now:
        stream.sender.request_ack()
    session.send_buffered += stream.sender.buffered_bytes - before
    stream.messages_sent += 1
    session.stats.messages_sent += 1
    session.streams.mark_ready(stream)
    return message_id


def close_stream(session: Session, stream_id: int) -> None:
    """Finish our direction of a stream after its queued messages."""
    stream = _writable_stream(session, stream_id)
    stream.sender.finish()
    session.streams.mark_ready(stream)


def reset_stream(session: Session, stream_id: int, code: int) -> None:
    """Abort a stream in both directions, discarding unsent data."""
    session.require_open()
    stream = session.streams.get(stream_id)
    if stream is None or stream.reset:
        return
    _reset_here(session, stream, code)


def _reset_here(session: Session, stream: Stream, code: int) -> None:
    """Reset a stream on this side's initiative (§4.7).

    The STREAM_CLOSE carries how far our direction got. The peer answers with
    its own, whose final size tells us how many of its bytes the reset stopped
    on the way: until then we keep what we had counted of its direction, so
    that their session credit can be returned when the answer comes.
    """
    receiver = stream.receiver
    if receiver.final_size is None:  # else the peer's FIN arrived: all its bytes are counted
        awaiting = session.reset_awaiting
        if awaiting is None:
            awaiting = session.reset_awaiting = {}
        awaiting[stream.stream_id] = (receiver.highest_received, receiver.advertised_limit)
        if len(awaiting) > MAX_RESETS_AWAITING:
            del awaiting[next(iter(awaiting))]  # the oldest: its answer is long overdue
    _drop_stream(session, stream)
    session.control.append(StreamCloseFrame(stream.stream_id, code, stream.sender.highest_sent))


def _drop_stream(session: Session, stream: Stream) -> None:
    session.send_buffered -= stream.sender.buffered_bytes
    stream.sender.reset()
    stream.reset = True
    unreported = stream.receiver.discard()
    if unreported:
        _release_session_credit(session, unreported)
    session.streams.remove(stream)


def consume(session: Session, stream_id: int, nbytes: int) -> None:
    """The application took ``nbytes`` of message payload: return credit."""
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")
    stream = session.streams.get(stream_id)
    if stream is None:
        _consume_forgotten(session, stream_id, nbytes)
        return
    if stream.reset:
        return
    stream.receiver.consume(nbytes)
    _return_credit(session, stream)


def _consume_forgotten(session: Session, stream_id: int, nbytes: int) -> None:
    """The application took a message of a stream that ended before it did:
    return the message's session credit (there is no stream credit left to give)."""
    forgotten = session.forgotten_unconsumed
    if not forgotten or stream_id not in forgotten:
        return  # a reset stream (its credit went back at the reset), or unknown
    held = forgotten[stream_id]
    taken = min(nbytes, held)
    if taken == held:
        del forgotten[stream_id]
    else:
        forgotten[stream_id] = held - taken
    _release_session_credit(session, taken)


def _return_credit(session: Session, stream: Stream) -> None:
    """Give released bytes back to the peer at stream and session level (§5.4)."""
    receiver = stream.receiver
    limit = receiver.credit_update()
    if limit is not None:
        session.control.append(LimitFrame(FrameType.MAX_STREAM_DATA, stream.stream_id, limit))
    released = receiver.take_released()
    if released:
        _release_session_credit(session, released)


def _release_session_credit(session: Session, nbytes: int) -> None:
    """Count ``nbytes`` more (or, negative, fewer) received bytes as released, and
    grant the peer a new MAX_DATA once the window moved by half (§5.4)."""
    session.data_consumed += nbytes
    window = session.config.session_receive_window
    target = session.data_consumed + window
    if target - session.local_max_data >= window // 2:
        session.local_max_data = target
        session.control.append(session.max_data_frame())


def release_send_buffer(session: Session, stream: Stream, before: int) -> None:
    """Account freed send-buffer bytes and wake a blocked writer."""
    session.send_buffered -= before - stream.sender.buffered_bytes
    if stream.was_blocked and stream.sender.writable \
            and session.send_buffered < session.config.session_send_buffer_bytes:
        stream.was_blocked = False
        session.emit(StreamWritable(ref=session.ref, stream_id=stream.stream_id))


# ---------------------------------------------------------------- frames from the peer


def _remote_stream(session: Session, stream_id: int) -> Stream | None:
    stream = session.streams.get(stream_id)
    if stream is not None:
        return stream
    stream = session.streams.get_or_open_remote(stream_id)
    if stream is None:
        return None
    stream.sender.on_max_stream_data(
        max(INITIAL_STREAM_CREDIT, session.early_credit.pop(stream_id, 0)))
    _grant_stream_window(session, stream)
    return stream


def on_data_frame(session: Session, frame: Frame, now: float) -> None:
    """DATA: reassemble, enforce flow control, deliver whole messages."""
    if not isinstance(frame, DataFrame):
        return
    stream = _remote_stream(session, frame.stream_id)
    if stream is None or stream.reset:
        if session.reset_awaiting:
            _count_after_reset(session, frame.stream_id, frame.offset + len(frame.data),
                               frame.fin)
        return
    _accept_bytes(session, stream, frame.offset, frame.data, frame.fin)


def _accept_bytes(session: Session, stream: Stream, offset: int, data: bytes | memoryview,
                  fin: bool) -> None:
    try:
        _accept_bytes_unchecked(session, stream, offset, data, fin)
    except ProtocolError as exc:
        if exc.code != ErrorCode.MESSAGE_TOO_LARGE:
            raise
        # Too large a message is the stream's fault, not the session's: reset it alone.
        announced = stream.announced
        _reset_here(session, stream, int(exc.code))
        if announced:
            session.emit(StreamClosed(ref=session.ref, stream_id=stream.stream_id,
                                      code=int(exc.code), by_peer=False))


def _accept_bytes_unchecked(session: Session, stream: Stream, offset: int,
                            data: bytes | memoryview, fin: bool) -> None:
    new_bytes = stream.receiver.on_data(offset, data, fin)
    if new_bytes:
        _count_session_bytes(session, new_bytes)
        stream.bytes_received += new_bytes
        session.stats.stream_bytes_received += new_bytes
    _deliver(session, stream)


def _deliver(session: Session, stream: Stream) -> None:
    """Hand complete messages to the application, then report a finished peer."""
    messages = stream.receiver.pop_received()
    if not stream.announced:
        stream.held_messages.extend(messages)
        return
    if stream.held_messages:
        messages = stream.held_messages + messages
        stream.held_messages = []
    auto = session.config.auto_consume
    for message in messages:
        stream.messages_received += 1
        session.stats.messages_received += 1
        session.emit(MessageReceived(ref=session.ref, stream_id=stream.stream_id,
                                     message=message))
        if auto:
            stream.receiver.consume(message.size)
    _return_credit(session, stream)
    if stream.receiver.is_finished and not stream.remote_closed:
        stream.remote_closed = True
        session.emit(StreamClosed(ref=session.ref, stream_id=stream.stream_id, code=0,
                                  by_peer=True))
        maybe_forget(session, stream)


def maybe_forget(session: Session, stream: Stream) -> None:
    """Drop a stream once both directions are over.

    Its last messages may still wait in the application's queue (a binding
    consumes a message when its reader takes it): their bytes are kept on
    the session's books, so that taking them later still returns their
    credit. Without that, every stream that ended before its reader caught
    up shrank the session window for good (Appendix B, item 27).
    """
    if stream.remote_closed and stream.sender.complete:
        unconsumed = stream.receiver.unconsumed_bytes
        if unconsumed:
            if session.forgotten_unconsumed is None:
                session.forgotten_unconsumed = {}
            session.forgotten_unconsumed[stream.stream_id] = unconsumed
        session.streams.remove(stream)


def on_stream_open_frame(session: Session, frame: Frame, now: float) -> None:
    """STREAM_OPEN: learn the purpose label and announce the stream."""
    if not isinstance(frame, StreamOpenFrame):
        return
    stream = _remote_stream(session, frame.stream_id)
    if stream is None or stream.reset:
        return
    if not stream.local or stream.stream_id == 0:
        stream.purpose = frame.purpose
        stream.priority = min(frame.priority, MAX_PRIORITY)
    if not stream.announced:
        stream.announced = True
        session.emit(StreamOpened(ref=session.ref, stream_id=stream.stream_id,
                                  purpose=stream.purpose, priority=stream.priority))
        _deliver(session, stream)


def on_stream_fin_frame(session: Session, frame: Frame, now: float) -> None:
    """STREAM_FIN: the peer's direction ends at ``final_size``."""
    if not isinstance(frame, StreamFinFrame):
        return
    stream = _remote_stream(session, frame.stream_id)
    if stream is None or stream.reset:
        if session.reset_awaiting:
            _count_after_reset(session, frame.stream_id, frame.final_size, True)
        return
    _accept_bytes(session, stream, frame.final_size, b"", True)


def on_stream_close_frame(session: Session, frame: Frame, now: float) -> None:
    """STREAM_CLOSE: the peer aborted the stream."""
    if not isinstance(frame, StreamCloseFrame):
        return
    stream_id = frame.stream_id
    stream = session.streams.get(stream_id)
    if stream is None:
        awaited = session.reset_awaiting.pop(stream_id, None) if session.reset_awaiting else None
        if awaited is not None:
            # The answer to our own reset, or the peer's crossing it. A final
            # size below what we received means the peer had forgotten the
            # stream (finished both ways, beyond its memory of closes), so
            # everything it sent has arrived: nothing to count.
            received, limit = awaited
            if frame.final_size >= received:
                _count_stopped_bytes(session, stream_id, frame.final_size, received, limit,
                                     None)
        elif session.streams.note_reset_unseen(stream_id):
            # A stream reset before any of its other frames got here: remember
            # the id as closed, so its STREAM_OPEN or DATA arriving late
            # (reordered) does not open a stream the peer has already
            # forgotten, count its bytes, and answer for our (empty) side.
            _count_stopped_bytes(session, stream_id, frame.final_size, 0,
                                 session.config.stream_receive_window, None)
            _answer_reset(session, stream_id, frame.code, 0)
        return
    if stream.reset:
        return
    receiver = stream.receiver
    _count_stopped_bytes(session, stream_id, frame.final_size, receiver.highest_received,
                         receiver.advertised_limit, receiver.final_size)
    announced = stream.announced
    _drop_stream(session, stream)
    _answer_reset(session, stream_id, frame.code, stream.sender.highest_sent)
    if announced:
        session.emit(StreamClosed(ref=session.ref, stream_id=stream_id,
                                  code=frame.code or int(ErrorCode.APPLICATION_ERROR),
                                  by_peer=True))


def _count_after_reset(session: Session, stream_id: int, end: int, fin: bool) -> None:
    """DATA of a stream we reset, while its peer's final size is still unknown.

    The bytes are dropped, but counted (and released) like the stopped bytes
    of §4.7. A FIN settles the count: the peer may have finished the stream
    normally and forgotten it before our STREAM_CLOSE arrived (it saw its last
    packet acknowledged), and then it has nothing to answer with.
    """
    awaiting = session.reset_awaiting
    if not awaiting or stream_id not in awaiting:
        return
    received, limit = awaiting[stream_id]
    if end > received:
        _count_stopped_bytes(session, stream_id, end, received, limit, None)
        received = end
    if fin:
        del awaiting[stream_id]
    else:
        awaiting[stream_id] = (received, limit)


def _answer_reset(session: Session, stream_id: int, code: int, final_size: int) -> None:
    """Tell the peer that reset a stream how far our direction got (§4.7), unless
    the control queue is already long (see MAX_CONTROL_FOR_ANSWERS)."""
    if len(session.control) < MAX_CONTROL_FOR_ANSWERS:
        session.control.append(StreamCloseFrame(stream_id, code, final_size))


def _count_stopped_bytes(session: Session, stream_id: int, final_size: int, received: int,
                         limit: int, known_final_size: int | None) -> None:
    """Count, and return at once, the session credit of a reset stream's bytes
    that never arrived: those between what we received and the peer's final size.

    The peer counted them against our limit when it sent them; without this
    the session window would shrink by them for good (Appendix B, item 8).
    """
    if final_size < received or (known_final_size is not None
                                 and final_size != known_final_size):
        raise ProtocolError(
            ErrorCode.STREAM_STATE_ERROR,
            f"stream {stream_id}: STREAM_CLOSE final size {final_size} conflicts with "
            f"{received} bytes received (final size {known_final_size})")
    if final_size > limit:
        raise ProtocolError(
            ErrorCode.FLOW_CONTROL_ERROR,
            f"stream {stream_id}: STREAM_CLOSE final size {final_size} exceeds limit {limit}")
    stopped = final_size - received
    if stopped:
        _count_session_bytes(session, stopped)
        _release_session_credit(session, stopped)


def _count_session_bytes(session: Session, nbytes: int) -> None:
    """Count ``nbytes`` that extended a stream's highest received offset against
    the session limit we advertised (§5.4)."""
    session.data_received += nbytes
    if session.data_received > session.local_max_data:
        raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR,
                            "peer exceeded the session flow-control limit")


def on_limit_frame(session: Session, frame: Frame, now: float) -> None:
    """MAX_DATA / MAX_STREAM_DATA: more credit to send."""
    if not isinstance(frame, LimitFrame):
        return
    if frame.frame_type == FrameType.MAX_DATA:
        if frame.limit > session.peer_max_data:
            session.peer_max_data = frame.limit
            for stream in session.streams:
                session.streams.mark_ready(stream)
        return
    stream = session.streams.get(frame.stream_id)
    if stream is None:
        # Credit can overtake the STREAM_OPEN it follows when packets reorder:
        # keep it (bounded) until that stream appears, instead of opening it.
        early = session.early_credit
        early[frame.stream_id] = max(frame.limit, early.get(frame.stream_id, 0))
        if len(early) > MAX_EARLY_CREDITS:
            del early[next(iter(early))]
        return
    if not stream.reset:
        stream.sender.on_max_stream_data(frame.limit)
        session.streams.mark_ready(stream)
