"""Session and Stream: the application's handles on the core's sessions and streams.

Owns the waiting: every ``await`` the application does on a session or a
stream (receive a message, wait for an acknowledgement, wait for buffer room,
accept a stream, wait for the close) and the queues of what the pump already
dispatched. It must not know about sockets, carriers or the timer: commands go
to the core's ``Endpoint`` and then :meth:`_Link._kick` wakes the node's pump,
which flushes them. Events reach these objects only through the ``_on_*``
methods the pump calls.

Rules:

1. State lives in the core; these objects only mirror what the events said
   (messages not yet taken, delivered message ids, closes) so that waiters
   can decide without asking the core.
2. Waiters loop "check, then wait for a change". One :class:`ChangeSignal` per
   object wakes all its waiters on any change; they re-check. That keeps
   every wake-up path (event, close, node shutdown) in one place.
3. A message taken by the application returns its flow-control credit
   (``Endpoint.consume``) at that moment, so a slow reader pushes back on the
   sender instead of growing a queue here (the core runs with
   ``auto_consume=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from stt_core import Endpoint, ReceivedMessage, SessionState, SessionStats
from stt_core.errors import (
    AuthenticationError,
    BufferFullError,
    ConnectionRefusedError,
    ConnectionTimeoutError,
    SendTimeoutError,
    SessionClosedError,
    StreamClosedError,
    STTError,
)
from stt_core.events import Address, SessionClosed, SessionRef

from . import clock
from .timeouts import time_limit

__all__ = ["Session", "Stream"]


class _Link(Protocol):
    """What sessions and streams need from their node."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def auto_consume(self) -> bool: ...

    def _kick(self) -> None: ...

    def _kick_write(self) -> None: ...

    async def _migrate(self, session: Session, transport: str,
                       address: tuple[str, int] | None, timeout: float | None) -> None: ...


class ChangeSignal:
    """Wakes every current waiter when something changed; waiters re-check.

    Nothing is created until someone waits, so objects can be built outside a
    running event loop, and each ``fire`` starts over so a later waiter blocks.

    On asyncio each waiter awaits a future of its own, made on the running
    loop: an ``anyio.Event`` there is an ``asyncio.Event`` behind two layers,
    and making and waiting on one cost about 190 bytecodes per round trip on
    the server side of the round-trip probe. Own futures, not one shared: the
    cancellation of a waiter cancels the future it awaits. On trio (no asyncio
    loop running) a ``trio.Event`` is the waiters' shared event: trio's own,
    since anyio's wrapper would look its backend up at every wait.
    """

    __slots__ = ("_event", "_futures")

    def __init__(self) -> None:
        self._event: Any = None  # a trio.Event while someone waits on trio
        self._futures: list[asyncio.Future[None]] | None = None

    def fire(self) -> None:
        futures = self._futures
        if futures is not None:
            self._futures = None
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio
            if self._event is None:
                self._event = sys.modules["trio"].Event()
            await self._event.wait()
            return
        future: asyncio.Future[None] = loop.create_future()
        futures = self._futures
        if futures is None:
            futures = self._futures = [future]
        else:
            futures.append(future)
        try:
            await future
        finally:
            if not future.done() or future.cancelled():  # cancelled or timed out
                with contextlib.suppress(ValueError):
                    futures.remove(future)


def _deadline(timeout: float | None) -> float:
    """Absolute event-loop deadline for an optional timeout in seconds."""
    if timeout is None:
        return math.inf
    if timeout < 0:
        raise ValueError("timeout must be >= 0 seconds or None")
    return anyio.current_time() + timeout


def closed_error(event: SessionClosed | None) -> STTError:
    """The exception that tells the application why a session ended.

    Before establishment the reason picks the exception ``connect`` raises
    (protocol.md §4: auth failure, timeout, refusal); afterwards every use of
    a closed session raises :class:`SessionClosedError` carrying the reason.
    """
    if event is None:
        return SessionClosedError("session is closed")
    detail = event.message or event.reason
    if not event.established:
        if event.reason == "auth_failure":
            return AuthenticationError(f"authentication failed: {detail}")
        if event.reason == "timeout":
            return ConnectionTimeoutError(f"handshake timed out: {detail}")
        if event.reason == "refused":
            return ConnectionRefusedError(f"connection refused: {detail}")
    return SessionClosedError(f"session closed ({detail})", reason=event.reason,
                              code=event.code)


class Stream:
    """One message stream of a session. Obtain it from :class:`Session`.

    ``send`` is a confirmed send (returns when the peer acknowledged the whole
    message); ``write`` is the buffered path (returns once queued, waiting while
    the send buffer is full). ``receive`` returns whole messages in order.
    """

    def __init__(self, session: Session, stream_id: int, *, purpose: str = "",
                 priority: int = 0) -> None:
        self.session = session
        self.stream_id = stream_id
        self.purpose = purpose
        self.priority = priority
        # Unread messages stay in the core's reassembly buffer until taken:
        # one copy of a message is alive at a time (ReceivedMessage).
        self._messages: deque[ReceivedMessage] = deque()
        self._awaited: set[int] = set()
        self._delivered: set[int] = set()
        self._eof = False
        self._reset_code: int | None = None
        self._local_closed = False
        self._changed = ChangeSignal()

    def __repr__(self) -> str:
        return (f"<Stream {self.stream_id} purpose={self.purpose!r} "
                f"session={self.session.ref}>")

    # -- sending -------------------------------------------------------------

    async def write(self, data: bytes, *, timeout: float | None = None) -> int:
        """Queue one message; returns its message id once the core accepted it.

        Waits while the send buffer is full (backpressure).

        Raises:
            StreamClosedError: the stream was closed or reset.
            SessionClosedError: the session ended.
            TimeoutError: no buffer room within ``timeout`` seconds.
        """
        with time_limit(timeout):
            return await self._queue(bytes(data))

    async def send(self, data: bytes, *, timeout: float | None = None) -> None:
        """Send one message and wait until the peer acknowledged all of it.

        Raises:
            SendTimeoutError: not acknowledged within ``timeout`` seconds (the
                message stays queued; it may still be delivered later).
            StreamClosedError, SessionClosedError: as for :meth:`write`.
        """
        with anyio.CancelScope(deadline=_deadline(timeout)) as scope:
            message_id = await self._queue(bytes(data), ack_now=True)
            self._awaited.add(message_id)
            try:
                await self._wait_delivered(message_id)
            finally:
                self._awaited.discard(message_id)
                self._delivered.discard(message_id)
        if scope.cancelled_caught:
            raise SendTimeoutError(
                f"message on stream {self.stream_id} not acknowledged within {timeout} s")

    async def _queue(self, data: bytes, *, ack_now: bool = False) -> int:
        link = self.session._link
        ref = self.session.ref
        while True:
            self._raise_if_unwritable()
            # Always attempt the send rather than asking can_send() first: a
            # refused send_message is what makes the core emit StreamWritable
            # once room frees up.
            try:
                message_id = link.endpoint.send_message(ref, self.stream_id, data,
                                                        ack_now=ack_now)
            except BufferFullError:
                await self._changed.wait()
            else:
                link._kick_write()
                return message_id

    async def _wait_delivered(self, message_id: int) -> None:
        while message_id not in self._delivered:
            if self._reset_code is not None:
                raise StreamClosedError(
                    f"stream {self.stream_id} was reset (code {self._reset_code})")
            self.session._raise_if_closed()
            await self._changed.wait()

    def _raise_if_unwritable(self) -> None:
        self.session._raise_if_closed()
        if self._reset_code is not None:
            raise StreamClosedError(
                f"stream {self.stream_id} was reset (code {self._reset_code})")
        if self._local_closed:
            raise StreamClosedError(f"stream {self.stream_id} is closed for sending")

    # -- receiving -----------------------------------------------------------

    def receive_nowait(self) -> bytes | None:
        """The next message if one is already here, else None (never waits).

        Raises the same errors as :meth:`receive` when nothing more can come.
        """
        if self._messages:
            return self._take()
        self._raise_if_finished()
        return None

    async def receive(self, *, timeout: float | None = None) -> bytes:
        """The next whole message, in order.

        Raises:
            StreamClosedError: the peer ended the stream (after its last
                message was returned) or reset it.
            SessionClosedError: the session ended and no message is left.
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        with time_limit(timeout):
            while not self._messages:
                self._raise_if_finished()
                await self._changed.wait()
        return self._take()

    def _take(self) -> bytes:
        message = self._messages.popleft().data
        link = self.session._link
        if not link.auto_consume and not self.session.closed \
                and link.endpoint.consume(self.session.ref, self.stream_id, len(message)):
            # Only a queued credit update needs a flush: anything else pending
            # (the ACK of the packet that brought the message) is flushed by
            # the node after the receive batch or rides on the reply.
            link._kick()
        self._forget_if_done()
        return message

    def _forget_if_done(self) -> None:
        """Drop the session's reference once nothing can happen on this stream.

        Keeps a long session that opens many streams from growing without
        bound; whoever still holds this handle keeps a working object.
        """
        finished = self._eof or self._reset_code is not None
        if finished and self._local_closed and not self._messages and not self._awaited:
            self.session._forget_stream(self)

    def _raise_if_finished(self) -> None:
        if self._reset_code is not None:
            raise StreamClosedError(
                f"stream {self.stream_id} was reset (code {self._reset_code})")
        if self._eof:
            raise StreamClosedError(f"stream {self.stream_id} ended")
        self.session._raise_if_closed()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        """Messages until the peer ends the stream (a graceful end stops iteration)."""
        while True:
            try:
                yield await self.receive()
            except StreamClosedError:
                if self._reset_code is not None:
                    raise
                return

    # -- closing -------------------------------------------------------------

    async def close(self) -> None:
        """End our direction gracefully: the peer sees the end after queued messages.

        Returns once the end is queued. Idempotent; a no-op on a closed session.
        """
        if self._local_closed or self._reset_code is not None or self.session.closed:
            self._local_closed = True
            return
        self._local_closed = True
        link = self.session._link
        try:
            link.endpoint.close_stream(self.session.ref, self.stream_id)
        except (StreamClosedError, SessionClosedError):
            return
        finally:
            self._changed.fire()
        link._kick()
        self._forget_if_done()
        await anyio.lowlevel.checkpoint()

    async def reset(self, code: int = 0x10) -> None:
        """Abort the stream in both directions, discarding unsent data."""
        if self._reset_code is not None or self.session.closed:
            return
        self._reset_code = code
        self._local_closed = True
        link = self.session._link
        with contextlib.suppress(StreamClosedError, SessionClosedError):
            link.endpoint.reset_stream(self.session.ref, self.stream_id, code)
        self._changed.fire()
        link._kick()
        self._forget_if_done()
        await anyio.lowlevel.checkpoint()

    @property
    def readable(self) -> bool:
        """True while messages may still arrive or are waiting to be taken."""
        return bool(self._messages) or not (self._eof or self._reset_code is not None
                                            or self.session.closed)

    # -- called by the pump --------------------------------------------------

    def _on_message(self, message: ReceivedMessage) -> None:
        self._messages.append(message)
        self._changed.fire()

    def _on_delivered(self, message_id: int) -> None:
        if message_id in self._awaited:
            self._delivered.add(message_id)
            self._changed.fire()

    def _on_closed(self, code: int) -> None:
        if code == 0:
            self._eof = True
        else:
            self._reset_code = code
            self._local_closed = True
        self._changed.fire()
        self._forget_if_done()

    def _wake(self) -> None:
        self._changed.fire()


class Session:
    """One established STT session. Obtain it from ``Node.connect``/``Node.accept``."""

    # Slots: a server holds one handle per idle session, thousands of them.
    __slots__ = ("_changed", "_close_event", "_confirmed", "_incoming", "_last_stats", "_link",
                 "_peer_address", "_peer_node_id", "_session_id", "_streams", "ref",
                 "resume_token")

    def __init__(self, link: _Link, ref: SessionRef) -> None:
        self._link = link
        self.ref = ref
        self._session_id: bytes | None = None
        self._peer_node_id: bytes | None = None
        self._peer_address: Address | None = None
        self._streams: dict[int, Stream] = {}
        # Created with the first stream the peer opens (an empty deque is ~0.7 KiB,
        # and an idle session never needs one).
        self._incoming: deque[Stream] | None = None
        self._close_event: SessionClosed | None = None
        self._confirmed = False
        # The stats kept once the core forgot the session; taken at close.
        self._last_stats: SessionStats | None = None
        self._changed = ChangeSignal()
        self.resume_token: bytes | None = None
        """The latest resume token the server issued for this session, if any."""

    def __repr__(self) -> str:
        sid = self.session_id.hex() if self.session_id else "-"
        return f"<Session {sid} peer={self.peer_node_id!r} state={self.state.value}>"

    # -- identity and state --------------------------------------------------

    @property
    def session_id(self) -> bytes:
        """The 8-byte session id both peers share (empty before establishment)."""
        return self._session_id or b""

    @property
    def peer_node_id(self) -> bytes | None:
        """The node id the peer proved during the handshake."""
        return self._peer_node_id

    @property
    def peer_address(self) -> Address | None:
        """Where the session currently sends (follows path changes)."""
        return self._peer_address

    @property
    def state(self) -> SessionState:
        """The core's view of the session; CLOSED once it ended."""
        if self._close_event is not None:
            return SessionState.CLOSED
        return self._link.endpoint.session_state(self.ref)

    @property
    def closed(self) -> bool:
        """True once the session ended (for any reason)."""
        return self._close_event is not None

    @property
    def close_reason(self) -> SessionClosed | None:
        """The ``SessionClosed`` event that ended the session, if it ended."""
        return self._close_event

    @property
    def stats(self) -> SessionStats:
        """Counters of the session (the last snapshot once it closed)."""
        if self._close_event is None:
            with contextlib.suppress(SessionClosedError):
                self._last_stats = self._link.endpoint.session_stats(self.ref)
        return self._last_stats if self._last_stats is not None else SessionStats()

    # -- streams -------------------------------------------------------------

    def open_stream(self, purpose: str = "", *, stream_id: int | None = None,
                    priority: int = 0, max_frame_size: int | None = None) -> Stream:
        """Open a stream to the peer; returns at once (the peer learns of it with the
        first packet that carries it).

        Raises:
            SessionClosedError: the session ended.
            ValueError: an argument is out of range (see ``Endpoint.open_stream``).
            InvalidStateError: ``stream_id`` closed recently on this session
                (pick another), or this side already has as many streams open
                as the peer allows (its ``max_streams_per_session``, announced
                in the handshake).
        """
        self._raise_if_closed()
        sid = self._link.endpoint.open_stream(self.ref, purpose=purpose, stream_id=stream_id,
                                              priority=priority,
                                              max_frame_size=max_frame_size)
        self._link._kick()
        stream = self._streams.get(sid)
        if stream is None:
            stream = self._streams[sid] = Stream(self, sid, purpose=purpose,
                                                 priority=priority)
        else:
            stream.purpose, stream.priority = purpose, priority
        return stream

    @property
    def streams(self) -> list[Stream]:
        """Handles of the streams that are not finished in both directions yet."""
        return list(self._streams.values())

    def stream(self, stream_id: int) -> Stream:
        """The handle of a stream by id (stream 0 always exists implicitly)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = Stream(self, stream_id)
            if self._close_event is None:  # a closed session keeps no handles (_on_closed)
                self._streams[stream_id] = stream
        return stream

    @property
    def default_stream(self) -> Stream:
        """Stream 0, which exists without being opened."""
        return self.stream(0)

    async def accept_stream(self, *, timeout: float | None = None) -> Stream:
        """The next stream the peer opened.

        Raises:
            SessionClosedError: the session ended.
            TimeoutError: none within ``timeout`` seconds.
        """
        with time_limit(timeout):
            while not self._incoming:
                self._raise_if_closed()
                await self._changed.wait()
        return self._incoming.popleft()

    def _queue_incoming(self, stream: Stream) -> None:
        """Hand a stream the peer opened to the next ``accept_stream``."""
        if self._incoming is None:
            self._incoming = deque()
        self._incoming.append(stream)

    # -- paths ---------------------------------------------------------------

    async def migrate(self, transport: str = "websocket", address: tuple[str, int] | None = None,
                      *, timeout: float | None = None) -> None:
        """Move this session to another transport or address of the same server.

        Only the side that opened the session moves it; the server validates
        the new path and follows. Opens the carrier if needed (a WebSocket to
        the server's listener), switches, and returns once the server
        acknowledged a packet sent on the new path. Streams, message order
        and unacknowledged data carry over. Details: docs/continuity.md.

        Args:
            transport: ``"udp"`` or ``"websocket"``.
            address: the server's ``(host, port)`` on that transport; default:
                the address given to ``node.connect`` (``addr``, ``paths=`` or
                ``failover=``) or used by the last move there.
            timeout: seconds for the whole move (default 5).

        Raises:
            ConnectionTimeoutError: no acknowledgement in time; the session is
                back on its previous path.
            ConnectionRefusedError: the carrier could not be opened.
            InvalidStateError: this side accepted the session, or the node
                lacks that transport.
            ValueError: no address known for ``transport``.
            SessionClosedError: the session ended.
        """
        self._raise_if_closed()
        await self._link._migrate(self, transport, address, timeout)

    # -- closing -------------------------------------------------------------

    async def close(self, code: int = 0, reason: str = "", *,
                    timeout: float | None = None) -> None:
        """Close gracefully and wait until the peer acknowledged the close.

        Waits at most ``timeout`` seconds. By default it waits for the core,
        which ends the session within the config's ``close_timeout`` whether
        the peer answers or not, so no cancel scope of the binding's own
        repeats that deadline (one costs about 300 bytecodes and an event-loop
        timer on asyncio). Idempotent.
        """
        if self._close_event is None:
            self._link.endpoint.close_session(self.ref, code=code, reason=reason,
                                              now=clock.now())
            self._link._kick()
        if timeout is None:
            await self.wait_closed()
            return
        with anyio.move_on_after(timeout):
            await self.wait_closed()

    async def wait_closed(self) -> SessionClosed:
        """Wait until the session ended; returns the closing event."""
        while self._close_event is None:
            await self._changed.wait()
        return self._close_event

    @property
    def confirmed(self) -> bool:
        """True once the peer is known to have established the session too.

        ``connect`` returns one round trip before that (protocol.md §6.3):
        the session may be used at once, and the core resends what the peer
        was not ready for. An accepted or resumed session is confirmed from
        the start.
        """
        return self._confirmed

    async def wait_confirmed(self, *, timeout: float | None = None) -> None:
        """Wait until :attr:`confirmed` (for code that needs the peer to know
        the session, such as a count of the server's sessions).

        Raises:
            SessionClosedError: the session ended first.
            TimeoutError: not confirmed within ``timeout`` seconds.
        """
        with time_limit(timeout):
            while not self._confirmed:
                self._raise_if_closed()
                await self._changed.wait()

    def _raise_if_closed(self) -> None:
        if self._close_event is not None:
            raise closed_error(self._close_event)

    # -- called by the pump --------------------------------------------------

    def _on_established(self, session_id: bytes, peer_node_id: bytes,
                        address: Address, confirmed: bool) -> None:
        self._session_id = session_id
        self._peer_node_id = peer_node_id
        self._peer_address = address
        self._confirmed = confirmed
        self._changed.fire()

    def _on_confirmed(self) -> None:
        self._confirmed = True
        self._changed.fire()

    def _on_stream_opened(self, stream_id: int, purpose: str, priority: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(self, stream_id, purpose=purpose,
                                                       priority=priority)
            self._queue_incoming(stream)
        else:
            stream.purpose, stream.priority = purpose, priority
        self._changed.fire()

    def _stream_for_message(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            # The core announces streams before their messages; this covers a
            # peer stream that arrives without STREAM_OPEN (stream 0 included).
            stream = self._streams[stream_id] = Stream(self, stream_id)
            if stream_id != 0:
                self._queue_incoming(stream)
                self._changed.fire()
        return stream

    def _forget_stream(self, stream: Stream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]

    def _on_path_changed(self, address: Address) -> None:
        self._peer_address = address
        self._changed.fire()

    def _on_closed(self, event: SessionClosed) -> None:
        if self._close_event is not None:
            return
        with contextlib.suppress(SessionClosedError):
            self._last_stats = self._link.endpoint.session_stats(self.ref)
        self._close_event = event
        if event.session_id and not self._session_id:
            self._session_id = event.session_id
        for stream in self._streams.values():
            stream._wake()
        # No event reaches a stream through the session any more. Dropping the
        # handles leaves no session <-> stream reference cycle behind, so reference
        # counting frees a closed session as soon as the application lets go of it,
        # without the cyclic collector (docs/guides/tuning.md, "The garbage collector").
        self._streams = {}
        self._changed.fire()
