"""Endpoint: one node's sessions, the demultiplexer and the pump (protocol.md §3, §6).

The endpoint owns the session table, demultiplexes incoming datagrams by
connection id, runs the handshake on both sides (``connector.py`` for the
initiator, ``acceptor.py`` for the responder: stateless replies, cookies,
replay cache), keeps one heap of session deadlines so ``next_timer`` costs
O(log n) and not O(sessions), and collects outgoing datagrams only from
sessions that have something to do.

The pump contract, for every binding:

1. Feed input: ``receive_datagram`` (never raises on bad input) or
   ``handle_timer`` when ``next_timer()`` is reached, or issue a command.
2. Drain ``next_event()`` until it returns None.
3. Send everything ``datagrams_to_send(now)`` returns.
4. Re-arm one timer at ``next_timer()``.

Commands only queue; their bytes appear at the next ``datagrams_to_send``.
"""

from __future__ import annotations

import heapq
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from . import acceptor, connector, packetizer, stream_io
from .config import Config
from .crypto import derive_psk
from .errors import DropReason, InvalidStateError, SessionClosedError
from .events import Address, Event, SessionRef
from .resumption import TokenIssuer
from .scratch import ScratchBuffers
from .session import Session
from .states import PathProperties, SessionState, SessionStats
from .trace import NULL_TRACE, TraceSink
from .wire import HANDSHAKE_TYPES, Header, PacketType, WireError, parse_header

__all__ = ["Endpoint", "EndpointStats"]

PMTU_CACHE_SIZE = 4096
"""Peer addresses whose path MTU the endpoint remembers."""


@dataclass(slots=True)
class EndpointStats:
    """Endpoint-wide counters; drops are keyed by ``DropReason.value``."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    sessions_accepted: int = 0
    sessions_connected: int = 0
    handshakes_rejected: int = 0
    retries_sent: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def datagrams_dropped(self) -> int:
        """Total datagrams dropped for any reason."""
        return sum(self.drops.values())


class Endpoint:
    """All sessions of one node. See the module docstring for the pump contract."""

    def __init__(self, config: Config, *, now: float,
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 trace: TraceSink = NULL_TRACE) -> None:
        if not isinstance(config, Config):
            raise TypeError("config must be a stt_core.Config")
        self.config = config
        self.random_bytes = random_bytes
        self.trace = trace
        self.psk = derive_psk(bytes(config.shared_seed))
        self.stats = EndpointStats()
        self.sessions: dict[SessionRef, Session] = {}
        self.by_session_id: dict[bytes, Session] = {}
        self.by_handshake_id: dict[bytes, Session] = {}
        self.paths: dict[Address, PathProperties] = {}
        self.pmtu_cache: OrderedDict[Address, int] = OrderedDict()
        self.stateless_out: list[tuple[bytes | memoryview, Address]] = []
        self.acceptor = acceptor.Acceptor(self, now)
        self.tokens = TokenIssuer(key=random_bytes(32), lifetime=config.resume_token_lifetime,
                                  capacity=max(4096, 2 * config.max_sessions),
                                  random_bytes=random_bytes)
        self._events: deque[Event] = deque()
        self._next_ref = 1
        self._dirty: dict[SessionRef, Session] = {}
        self._timer_heap: list[tuple[float, int]] = []
        self._timer_of: dict[SessionRef, float] = {}
        self._flush_again_at: float | None = None
        self.scratch = ScratchBuffers()  # every session's large packets pass through these

    # ------------------------------------------------------------------ internals

    def new_session(self, *, initiator: bool, address: Address, now: float) -> Session:
        """Create a session object with a fresh ref (not yet in the id tables)."""
        ref = SessionRef(self._next_ref)
        self._next_ref += 1
        session = Session(ref=ref, config=self.config, initiator=initiator, address=address,
                          path=self.path_for(address), now=now,
                          random_bytes=self.random_bytes, emit=self._events.append,
                          path_for=self.path_for, trace=self.trace,
                          pmtu_learned=self.pmtu_learned, scratch=self.scratch,
                          pmtu_lost=self.pmtu_lost)
        self.sessions[ref] = session
        return session

    def path_for(self, address: Address) -> PathProperties:
        """What we know about the path to ``address`` (UDP defaults otherwise)."""
        path = self.paths.get(address)
        if path is None:
            # Start from what an earlier session proved the path carries, if any.
            size = max(self.config.max_datagram_size, self.pmtu_cache.get(address, 0))
            return PathProperties(size, False)
        return path

    def pmtu_learned(self, address: Address, size: int) -> None:
        """A session proved ``address`` carries ``size``-byte datagrams: remember it,
        so later sessions to the same address start there instead of probing again."""
        cache = self.pmtu_cache
        cache[address] = max(size, cache.get(address, 0))
        cache.move_to_end(address)
        while len(cache) > PMTU_CACHE_SIZE:
            cache.popitem(last=False)

    def pmtu_lost(self, address: Address) -> None:
        """A session's larger datagrams stopped getting through to ``address``
        (protocol.md §8.3): forget the size, so later sessions start small again."""
        self.pmtu_cache.pop(address, None)

    def count_drop(self, reason: DropReason, now: float | None = None) -> None:
        """Count a dropped datagram under its reason (and trace it)."""
        drops = self.stats.drops
        drops[reason.value] = drops.get(reason.value, 0) + 1
        if self.trace.enabled:
            self.trace.event(now if now is not None else 0.0, 0, "packet_dropped",
                             {"trigger": reason.value})

    def touch(self, session: Session) -> None:
        """The session got input or a command: flush it and recompute its timer."""
        self._dirty[session.ref] = session

    def _reschedule(self, session: Session) -> None:
        deadline = session.next_timer()
        ref = session.ref
        if deadline is None:
            self._timer_of.pop(ref, None)
            return
        if self._timer_of.get(ref) != deadline:
            self._timer_of[ref] = deadline
            heapq.heappush(self._timer_heap, (deadline, ref))

    def forget(self, session: Session) -> None:
        """Remove a finished session from every table."""
        self.sessions.pop(session.ref, None)
        if not session.initiator:
            self.acceptor.pending_done(session)
        self._timer_of.pop(session.ref, None)
        self._dirty.pop(session.ref, None)
        if self.by_session_id.get(session.session_id) is session:
            del self.by_session_id[session.session_id]
        if self.by_handshake_id.get(session.handshake_id) is session:
            del self.by_handshake_id[session.handshake_id]

    def _session(self, ref: SessionRef) -> Session:
        session = self.sessions.get(ref)
        if session is None:
            raise SessionClosedError(f"no session with ref {ref}: it closed or never existed")
        return session

    # ------------------------------------------------------------------ pump

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Feed one datagram from ``addr``. Never raises on bad input; bad
        datagrams are counted in ``stats.drops``.

        ``data`` may be a view of the caller's receive buffer: it is read only
        during this call (a session packet is opened at once; a handshake
        packet, which the handshake may keep, is copied first), so the caller
        may overwrite the buffer as soon as this returns.
        """
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        try:
            header = parse_header(data)
        except WireError as exc:
            self.count_drop(DropReason.TOO_SHORT if len(data) < 10 else
                            DropReason.UNSUPPORTED_VERSION if "version" in str(exc)
                            else DropReason.BAD_HEADER)
            return
        packet_type = header.packet_type
        if packet_type in HANDSHAKE_TYPES:
            reason = self._receive_handshake(packet_type, header.connection_id, bytes(data),
                                             addr, now)
        else:
            reason = self._receive_session_packet(header, data, addr, now)
        if reason is not None:
            self.count_drop(reason, now)

    def _receive_handshake(self, packet_type: int, cid: bytes, data: bytes, addr: Address,
                           now: float) -> DropReason | None:
        if packet_type == PacketType.HELLO:
            return self.acceptor.on_hello(cid, data, addr, now)
        if packet_type == PacketType.AUTH_PROOF:
            return self.acceptor.on_auth_proof(cid, data, addr, now)
        if packet_type == PacketType.RESUME:
            return self.acceptor.on_resume(cid, data, addr, now)
        return connector.on_handshake_reply(self, packet_type, cid, data, addr, now)

    def _receive_session_packet(self, header: Header, data: bytes | memoryview, addr: Address,
                                now: float) -> DropReason | None:
        session = self.by_session_id.get(header.connection_id)
        if session is None:
            return DropReason.UNKNOWN_SESSION
        if session.send_protection is None:
            return DropReason.UNEXPECTED_PACKET
        reason = session.receive_packet(header, data, addr, now)
        self.touch(session)
        return reason

    @overload
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    @overload
    def datagrams_to_send(self, now: float, *,
                          lend: bool) -> list[tuple[bytes | memoryview, Address]]: ...

    def datagrams_to_send(self, now: float, *,
                          lend: bool = False) -> list[tuple[Any, Address]]:
        """Every datagram due now, with its destination address.

        With ``lend=True`` a large datagram (4 KiB of payload or more) may be
        a ``memoryview`` of a buffer the endpoint writes again from the next
        ``datagrams_to_send(..., lend=True)`` on: send or copy every datagram
        before that call. A bulk sender then reuses the same memory for every
        flush instead of allocating (and page-faulting) tens of 64 KiB blocks
        each time (``stt_core.scratch.PacketPool``). Without it every datagram
        is ``bytes`` of its own, which a caller may keep as long as it likes.
        """
        scratch = self.scratch
        scratch.lending = lend
        if lend:
            scratch.packets.restart()
        out = self.stateless_out
        self.stateless_out = []
        self._flush_again_at = None
        dirty = self._dirty
        self._dirty = {}
        for session in dirty.values():
            first_final = False
            if session.hs_send_due:
                session.hs_send_due = False
                if session.final_material:
                    # A responder's first FINAL: any session packet of this flush
                    # confirms the handshake in its place, since only a responder
                    # that verified AUTH_PROOF holds the traffic keys (protocol.md
                    # §6.3). One nearly always goes (the resume token, the window),
                    # so FINAL is neither sent nor built; a repeated AUTH_PROOF
                    # still gets it (acceptor.on_auth_proof).
                    first_final = True
                else:
                    self._handshake_packet(session, now, out)
            produced = packetizer.datagrams(session, now)
            if first_final and not produced:
                session.hs_packet = acceptor.final_packet(session)
                self._handshake_packet(session, now, out)
            if produced:
                out.extend(produced)
                if len(produced) >= packetizer.MAX_DATAGRAMS_PER_FLUSH:
                    self._dirty[session.ref] = session
                    self._flush_again_at = now
            if session.finished and session.drain_until is not None \
                    and now >= session.drain_until:
                self.forget(session)
            else:
                self._reschedule(session)
        scratch.lending = False
        stats = self.stats
        stats.datagrams_sent += len(out)
        for datagram, _ in out:
            stats.bytes_sent += len(datagram)
        return out

    @staticmethod
    def _handshake_packet(session: Session, now: float, out: list[tuple[Any, Address]]) -> None:
        if not session.hs_packet:
            return  # forgotten (a quiet, confirmed session): never an empty datagram
        session.note_handshake_sent(now)
        out.append((session.hs_packet, session.address))
        if not session.address_validated:
            session.amplification_sent += len(session.hs_packet)

    def next_timer(self) -> float | None:
        """The earliest absolute deadline at which ``handle_timer`` has work."""
        heap = self._timer_heap
        timer_of = self._timer_of
        earliest = None
        while heap:
            deadline, ref = heap[0]
            if timer_of.get(ref) == deadline:  # type: ignore[call-overload]
                earliest = deadline
                break
            heapq.heappop(heap)  # superseded by a later push for the same session
        # Plain comparisons, no list: a binding asks after every flush.
        for other in (self._flush_again_at, self.acceptor.next_timer()):
            if other is not None and (earliest is None or other < earliest):
                earliest = other
        return earliest

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``; harmless if early or repeated."""
        heap = self._timer_heap
        timer_of = self._timer_of
        while heap and heap[0][0] <= now:
            deadline, ref_int = heapq.heappop(heap)
            ref = SessionRef(ref_int)
            if timer_of.get(ref) != deadline:
                continue
            del timer_of[ref]
            session = self.sessions.get(ref)
            if session is None:
                continue
            session.handle_timer(now)
            self.touch(session)
        self.acceptor.handle_timer(now)

    def output_due(self, now: float, *, patient: bool = True) -> bool:
        """True unless ``datagrams_to_send(now)`` would certainly return nothing. Pure.

        False means a flush now would only recompute timers: a received
        request whose ACK may wait for the reply (which will carry it). A
        binding may then put the flush off briefly, for instance until the
        application had its turn, without holding back any datagram. Errs
        towards True, with one exception: an ACK the peer asked for at once
        (IMMEDIATE_ACK, a confirmed send) does not count, because a flush
        put off until the application had its turn sends it a moment later,
        and a reply written in that turn carries it in the same packet. A
        binding that relies on this must flush right after that turn; with
        ``patient=False`` such an ACK counts, so a binding can tell whether
        one is waiting.
        """
        return bool(self.stateless_out) or any(
            packetizer.output_due(session, now, patient=patient)
            for session in self._dirty.values())

    @property
    def flush_needed(self) -> bool:
        """True when a flush may produce datagrams or events or move the timer.

        False means ``datagrams_to_send`` would return nothing and
        ``next_timer`` is unchanged since the last flush: a binding may skip
        its flush (a request/response round trip issues several commands, most
        of which queue nothing). Pure.
        """
        return bool(self._dirty or self.stateless_out or self._events)

    def next_event(self) -> Event | None:
        """The next event, or None when there is nothing more (for now)."""
        events = self._events
        return events.popleft() if events else None

    # ------------------------------------------------------------------ paths

    def set_path_properties(self, addr: Address, *, max_datagram_size: int,
                            reliable: bool) -> None:
        """Describe a path before using it (WebSocket: reliable, large datagrams)."""
        if not 1200 <= max_datagram_size <= 65507 + 1024 * 64:
            raise ValueError("max_datagram_size must be between 1200 and 131043 bytes")
        self.paths[addr] = PathProperties(max_datagram_size, reliable)

    def path_closed(self, addr: Address) -> None:
        """The binding lost the path to ``addr``; sessions there wait to move or time out."""
        self.paths.pop(addr, None)

    def connection_refused(self, addr: Address, now: float) -> None:
        """The network reported ``addr`` unreachable: fail handshakes to it at once."""
        for session in list(self.by_handshake_id.values()):
            if session.initiator and session.address == addr \
                    and session.state is SessionState.HANDSHAKING:
                session.fail("refused", 0, f"{addr!r} refused the connection")
                self.touch(session)

    def migrate(self, ref: SessionRef, addr: Address, now: float) -> None:
        """Client side: move a session to a new local path (validated by the peer)."""
        session = self._session(ref)
        session.require_open()
        session.migrate_to(addr, now)
        session.control.append(packetizer.KEEP_ALIVE)
        self.touch(session)

    # ------------------------------------------------------------------ commands

    def connect(self, addr: Address, now: float, *, peer_node_id: bytes | None = None,
                timeout: float | None = None) -> SessionRef:
        """Start a handshake with ``addr``.

        Args:
            addr: the peer's address (opaque to the core).
            now: the current time.
            peer_node_id: if given, the peer must prove exactly this node id.
            timeout: seconds before ``SessionClosed(reason="timeout")``
                (default ``Config.connect_timeout``).

        Returns:
            The session's ref. Watch for ``SessionEstablished`` or
            ``SessionClosed(established=False)`` with that ref.
        """
        session = connector.start(self, addr, now, peer_node_id=peer_node_id,
                                  timeout=timeout)
        self.touch(session)
        return session.ref

    def resume(self, addr: Address, ticket: bytes, now: float, *,
               timeout: float | None = None) -> SessionRef:
        """Re-establish a session from a resume ticket in one round trip.

        ``ticket`` is the ``token`` of a ``ResumeTokenReceived`` event (it holds
        secret material: store it like a password). The outcome is reported like
        ``connect``'s: ``SessionEstablished(resumed=True)`` with the original
        session id, or ``SessionClosed(established=False, reason="auth_failure")``
        when the server refuses the token (expired, replayed, or not its own).

        Raises:
            ValueError: ``ticket`` is not a ticket.
        """
        session = connector.start_resume(self, addr, ticket, now, timeout=timeout)
        self.touch(session)
        return session.ref

    def open_stream(self, ref: SessionRef, *, purpose: str = "", stream_id: int | None = None,
                    priority: int = 0, max_frame_size: int | None = None) -> int:
        """Open a stream on an established session; returns its id.

        Opening an id that is open relabels that stream (both peers may name
        the same id). An id this side closed recently cannot be opened again
        for a while: the peer ignores frames for it (protocol.md §5.1).

        Raises:
            ValueError: an argument is out of range.
            InvalidStateError: the id closed recently, or this side has
                ``max_streams_per_session`` streams open on the session.
            StreamClosedError: the id names a stream that was reset.
            SessionClosedError: the session is not open.
        """
        session = self._session(ref)
        stream_id = stream_io.open_stream(session, purpose=purpose, stream_id=stream_id,
                                          priority=priority, max_frame_size=max_frame_size)
        self.touch(session)
        return stream_id

    def send_message(self, ref: SessionRef, stream_id: int, data: bytes, *,
                     ack_now: bool = False) -> int:
        """Queue one message; returns its id for ``MessageDelivered``.

        Pass ``ack_now=True`` when the caller will wait for this message's
        ``MessageDelivered``: the packet carrying its last byte then asks the
        peer to acknowledge at once (IMMEDIATE_ACK, protocol.md §4.5) instead
        of after its ``max_ack_delay``. A reply the peer sends anyway carries
        the ACK just as well, so leave it False for requests and bulk writes.

        Raises:
            BufferFullError: ``can_send`` is False; wait for ``StreamWritable``.
            StreamClosedError, SessionClosedError, InvalidStateError.
        """
        session = self._session(ref)
        message_id = stream_io.send_message(session, stream_id, data, ack_now=ack_now)
        self.touch(session)
        return message_id

    def can_send(self, ref: SessionRef, stream_id: int) -> bool:
        """True when ``send_message`` on this stream would be accepted now."""
        session = self.sessions.get(ref)
        return session is not None and stream_io.can_send(session, stream_id)

    def close_stream(self, ref: SessionRef, stream_id: int) -> None:
        """Gracefully end our direction of the stream after queued messages."""
        session = self._session(ref)
        stream_io.close_stream(session, stream_id)
        self.touch(session)

    def reset_stream(self, ref: SessionRef, stream_id: int, code: int = 0x10) -> None:
        """Abort a stream in both directions."""
        session = self._session(ref)
        stream_io.reset_stream(session, stream_id, code)
        self.touch(session)

    def consume(self, ref: SessionRef, stream_id: int, nbytes: int) -> bool:
        """Return flow-control credit for ``nbytes`` the application took.

        Returns:
            True when that queued a credit update (the session then needs a
            flush); False when the credit waits for more to be taken.
        """
        session = self.sessions.get(ref)
        if session is None or session.state is not SessionState.ESTABLISHED:
            return False
        queued = len(session.control)
        stream_io.consume(session, stream_id, nbytes)
        if len(session.control) == queued:
            # Only a credit update gives the flush something to do; most
            # small messages return credit without one, and then the session
            # need not be flushed nor its timer recomputed.
            return False
        self.touch(session)
        return True

    def close_session(self, ref: SessionRef, *, code: int = 0, reason: str = "",
                      now: float | None = None) -> None:
        """Gracefully close: SESSION_CLOSE, acknowledged by the peer."""
        session = self.sessions.get(ref)
        if session is None:
            return
        session.close(now if now is not None else session.last_received, code=code,
                      reason=reason)
        self.touch(session)

    # ------------------------------------------------------------------ queries

    def session_state(self, ref: SessionRef) -> SessionState:
        """Current state; CLOSED for sessions already forgotten."""
        session = self.sessions.get(ref)
        return SessionState.CLOSED if session is None else session.state

    def session_id(self, ref: SessionRef) -> bytes | None:
        """The 8-byte session id once the handshake produced it."""
        session = self.sessions.get(ref)
        return session.session_id if session is not None and session.session_id else None

    def peer_node_id(self, ref: SessionRef) -> bytes | None:
        """The node id the peer proved, once established."""
        session = self.sessions.get(ref)
        return session.peer_node_id if session is not None and session.peer_node_id else None

    def peer_address(self, ref: SessionRef) -> Address | None:
        """Where the session currently sends."""
        session = self.sessions.get(ref)
        return session.address if session is not None else None

    def session_stats(self, ref: SessionRef) -> SessionStats:
        """A snapshot of the session's counters."""
        session = self._session(ref)
        stats = session.stats
        rtt = session.recovery.rtt
        stats.min_rtt = rtt.min_rtt if rtt.min_rtt != float("inf") else 0.0
        stats.smoothed_rtt = rtt.smoothed_rtt
        stats.rttvar = rtt.rttvar
        stats.congestion_window = session.recovery.congestion.congestion_window
        stats.bytes_in_flight = session.recovery.bytes_in_flight
        stats.streams_open = len(session.streams)
        return stats

    def sessions_list(self) -> list[SessionRef]:
        """Refs of every session the endpoint holds (any state)."""
        return list(self.sessions)

    def require(self, ref: SessionRef) -> None:
        """Raise unless the session is established (for bindings' fast checks)."""
        session = self._session(ref)
        if session.state is not SessionState.ESTABLISHED:
            raise InvalidStateError(f"session {ref} is {session.state.value}")
