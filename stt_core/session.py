"""Session: one authenticated peer relationship (protocol.md §5-§8).

Glue only. The handshake maths lives in ``handshake.py``, loss detection and
congestion in ``recovery.py``/``congestion.py``, buffers in ``streams.py``,
the byte layout in ``wire.py``; this module wires them together:

* the session state machine INIT -> HANDSHAKING -> ESTABLISHED -> CLOSING ->
  CLOSED (see ``_TRANSITIONS``; anything missing there is a bug),
* the receive path: decrypt, de-duplicate, decode the whole packet, then apply
  each frame through one handler per frame type,
* the send path (``packetizer.py``) and the timers (keep-alive, idle, close).

Rules:
1. Network input never raises out of this module. A frame handler that finds
   a violation raises ``ProtocolError``; exactly one boundary
   (``receive_packet``) catches it and closes the session with its code.
2. Commands only queue; bytes appear at the next ``datagrams()`` call.
3. Events are appended to the endpoint's queue through ``emit``; they are
   complete when built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from . import packetizer, stream_io
from .config import Config
from .congestion import create_congestion_controller
from .crypto import TAG_SIZE, DecryptError, PacketProtection, next_generation_secret
from .errors import (
    DropReason,
    ErrorCode,
    InvalidStateError,
    ProtocolError,
    SessionClosedError,
)
from .events import (
    Address,
    ApplicationFrameReceived,
    Event,
    HandshakeConfirmed,
    PathChanged,
    ResumeTokenReceived,
    SessionClosed,
    SessionEstablished,
    SessionRef,
)
from .recovery import AckTracker, LossRecovery
from .resumption import Ticket
from .scratch import SCRATCH_MIN_PLAINTEXT, ScratchBuffers
from .states import (
    AMPLIFICATION_FACTOR,
    TRANSITIONS,
    PathProperties,
    SessionState,
    SessionStats,
)
from .stream_table import StreamTable
from .trace import NULL_TRACE, TraceSink
from .wire import (
    AppFrame,
    CloseFrame,
    Frame,
    FrameType,
    Header,
    LimitFrame,
    PathFrame,
    ResumeTokenFrame,
    WireError,
    parse_frames,
)

if TYPE_CHECKING:
    from .handshake import HandshakeKeys

__all__ = ["AMPLIFICATION_FACTOR", "PathProperties", "Session", "SessionState", "SessionStats"]

@dataclass(slots=True)
class _PathProbe:
    """A new peer address we are validating before moving the session there."""

    challenge: bytes
    bytes_received: int = 0
    bytes_sent: int = 0
    sent_at: float = -1.0


AUTH_PROOF_ATTEMPTS = 5
"""AUTH_PROOF retransmissions without confirmation after which an initiator gives
the session up: the responder has forgotten the handshake (protocol.md §6.7)."""
MAX_HANDSHAKE_RETRANSMIT_INTERVAL = 2.0
"""Backoff cap for handshake retransmissions: a long connect timeout on a bad
path keeps trying every 2 s instead of waiting ever longer (protocol.md §6.7)."""
CIPHER_RELEASE_INTERVAL = 1.0
"""Seconds without a packet in or an ack-eliciting packet out after which an
established session frees its cipher contexts (``PacketProtection.release``).
They are about 2.5 KiB of OpenSSL memory each, most of what an idle session
holds; rebuilding one (HKDF for the key, then the context) costs about 10 us,
so a session quiet this long loses nothing measurable when it next speaks.
Keys and packet numbers are untouched: the very same AEAD key is rebuilt."""
CIPHER_RELEASE_GRANULARITY = 0.25
"""Release deadlines are rounded up to a multiple of this many seconds (see
``_release_due``); a power of two, so every multiple is an exact float."""


def _round_up_to_grid(deadline: float, step: float) -> float:
    """``deadline`` rounded up to a multiple of ``step``, a power of two (exact floats).

    Deadlines that many sessions set independently (cipher release, the end of
    a drain) go on a grid, so that those falling within one step share one
    timer wake-up of the binding instead of costing one each.
    """
    return math.ceil(deadline / step) * step


def _release_due(quiet_since: float) -> float:
    """When a session quiet since ``quiet_since`` releases: rounded up to the grid.

    Rounding makes sessions that went quiet within the same quarter second
    share one deadline, so a binding wakes at most four times a second for all
    of them instead of once per session (10,000 sessions opened in 10 s
    otherwise cost 10,000 extra timer wake-ups on each side, which slowed their
    opening measurably). A coarser grid holds contexts longer: with whole
    seconds a session released 1-2 s after going quiet, so a server accepting
    a burst of sessions held about a third more contexts at its peak.
    """
    return _round_up_to_grid(quiet_since + CIPHER_RELEASE_INTERVAL, CIPHER_RELEASE_GRANULARITY)


def drain_due(now: float, close_timeout: float) -> float:
    """When a session that starts draining at ``now`` is forgotten (protocol.md §7.2).

    At least ``close_timeout`` later, rounded up to a grid whose step is the
    largest power of two (so every multiple is an exact float) no longer than an
    eighth of ``close_timeout``: 0.25 s for the default 3 s. A server whose
    sessions end in a steady stream then forgets all that closed within one
    step at one timer, instead of waking once per session three seconds after
    each close (with a new session every 0.6 ms, that was about 20 us of the
    server's CPU per session; docs/performance.md, "Draining sessions").
    """
    step = 2.0 ** math.floor(math.log2(close_timeout / 8))
    return _round_up_to_grid(now + close_timeout, step)


def keep_alive_wait(config: Config, initiator: bool) -> float:
    """How long a session stays quiet before it sends a KEEP_ALIVE (protocol.md §4.5).

    The initiator waits ``keep_alive_interval``; the responder waits half as
    long again (capped halfway to its idle timeout), so that with equal
    settings only the initiator's keep-alives go. With equal waits both
    deadlines follow from the same exchange, one one-way delay apart, and the
    responder's KEEP_ALIVE reached the initiator just as the initiator's own
    fell due: in real time both went about half the time, four packets per
    interval instead of two. The responder still keeps the session alive
    alone when the initiator's keep-alives stop (a longer interval of its own).
    """
    interval = config.keep_alive_interval
    if initiator:
        return interval
    return min(1.5 * interval, (interval + config.idle_timeout) / 2)


_SCRATCH_MIN_SEALED = SCRATCH_MIN_PLAINTEXT + TAG_SIZE
"""Sealed payloads at least this long open into the endpoint's scratch buffer."""


class Session:
    """One session. Created and driven by ``Endpoint``; not used directly."""

    # Slots: a server holds thousands of idle sessions; no per-instance dict.
    __slots__ = (
        "acks", "address", "address_validated", "amplification_received", "amplification_sent",
        "auth_proof_packet", "auth_rejects", "cipher_release_mark", "close_deadline", "close_frame",
        "close_frame_queued", "close_reported", "config", "control", "counted_pending",
        "created_at", "data_consumed", "data_received", "data_sent", "drain_until",
        "early_credit", "emit", "expected_peer_node_id", "final_material", "final_packet",
        "forgotten_unconsumed",
        "grant_due", "handshake", "handshake_id", "hs_deadline", "hs_interval", "hs_packet",
        "hs_proof_attempts",
        "hs_retransmit_at", "hs_send_due", "hs_sent_at", "hs_timed", "initiator",
        "keep_alive_ack_due", "keep_alive_wait", "last_path_challenge", "last_received",
        "last_sent_ack_eliciting",
        "local_max_data", "nack_floor", "next_packet_number", "pacing_at", "packets_under_key",
        "path",
        "path_for", "peer_max_data", "peer_node_id", "pmtu_candidates", "pmtu_learned",
        "pmtu_lost",
        "pmtu_probe_size", "probe_packets", "probes", "random_bytes", "recovery", "recv_next",
        "recv_phase", "recv_phase_start", "recv_previous", "recv_protection", "recv_secret",
        "ref", "reset_awaiting", "resumed", "resumption_secret", "scratch", "send_buffered",
        "send_phase", "send_phase_start", "send_protection", "send_secret", "session_id", "state",
        "stats", "streams", "trace",
    )

    def __init__(self, *, ref: SessionRef, config: Config, initiator: bool,
                 address: Address, path: PathProperties, now: float,
                 random_bytes: Callable[[int], bytes], emit: Callable[[Event], None],
                 path_for: Callable[[Address], PathProperties] | None = None,
                 trace: TraceSink = NULL_TRACE,
                 pmtu_learned: Callable[[Address, int], None] | None = None,
                 scratch: ScratchBuffers | None = None,
                 pmtu_lost: Callable[[Address], None] | None = None) -> None:
        self.ref = ref
        self.config = config
        self.initiator = initiator
        self.address = address
        self.path = path
        self.random_bytes = random_bytes
        self.emit = emit
        self.trace = trace
        self.pmtu_learned = pmtu_learned
        self.pmtu_lost = pmtu_lost
        # Large packets are opened and sealed in these, shared by the endpoint's sessions.
        self.scratch = scratch if scratch is not None else ScratchBuffers()
        self.path_for: Callable[[Address], PathProperties] = path_for or (lambda _: path)
        self.state = SessionState.INIT
        self.session_id: bytes = b""
        self.handshake_id: bytes = b""
        self.peer_node_id: bytes = b""
        self.created_at = now
        self.stats = SessionStats()
        self.address_validated = initiator
        self.amplification_received = 0
        self.amplification_sent = 0
        self.last_received = now
        self.last_sent_ack_eliciting = now
        self.close_deadline: float | None = None
        self.drain_until: float | None = None
        self.close_reported = False
        self.close_frame: CloseFrame | None = None
        self.close_frame_queued = False
        self.probes: dict[Address, _PathProbe] = {}
        self.control: list[Frame] = []
        # The session window's MAX_DATA waits for a packet to ride on (connector).
        self.grant_due = False
        self.keep_alive_ack_due = False
        self.keep_alive_wait = keep_alive_wait(config, initiator)
        self.probe_packets = 0
        self.pacing_at: float | None = None
        self.nack_floor = 0
        self.last_path_challenge = b""
        # Path MTU discovery (protocol.md §8.3): sizes still to try, and the probe out.
        self.pmtu_candidates = packetizer.pmtu_candidates(path.max_datagram_size,
                                                          config.pmtu_probe_limit)
        self.pmtu_probe_size = 0
        self.streams = StreamTable(
            initiator=initiator,
            max_peer_streams=config.max_streams_per_session,
            send_buffer_bytes=config.stream_send_buffer_bytes,
            receive_window=config.stream_receive_window,
            max_message_size=config.max_message_size,
            max_frame_size=config.max_frame_size,
        )
        # Session-level flow control (protocol.md §5.4).
        self.peer_max_data = config.session_receive_window  # until the peer says otherwise
        self.data_sent = 0
        self.local_max_data = config.session_receive_window
        self.data_received = 0
        self.data_consumed = 0
        self.send_buffered = 0
        self.early_credit: dict[int, int] = {}
        # Streams this side reset, until the peer's STREAM_CLOSE says how far its
        # direction got: id -> (bytes received, limit). None until the first
        # reset: most sessions never reset a stream.
        self.reset_awaiting: dict[int, tuple[int, int]] | None = None
        # Streams that ended while their last messages were not consumed yet:
        # id -> payload bytes whose session credit returns as they are taken.
        self.forgotten_unconsumed: dict[int, int] | None = None
        self.recovery = self._new_recovery()
        self.acks = AckTracker()
        # Keys (protocol.md §6.4): per direction, rotated independently.
        self.send_protection: PacketProtection | None = None
        self.send_secret = b""
        self.send_phase = 0
        self.send_phase_start = 0
        self.packets_under_key = 0
        self.next_packet_number = 0
        self.recv_protection: PacketProtection | None = None
        self.recv_next: PacketProtection | None = None
        self.recv_previous: PacketProtection | None = None
        self.recv_secret = b""
        self.recv_phase = 0
        self.recv_phase_start = 0
        # The quiet-since time at which the cipher contexts were last released;
        # the release is due again only after fresh activity (no timer spin).
        self.cipher_release_mark = -math.inf
        self.resumption_secret = b""
        self.resumed = False
        # Handshake phase (protocol.md §6): the packet we (re)send and its timers.
        self.handshake: object | None = None
        self.hs_packet = b""
        self.hs_send_due = False
        self.hs_interval = config.handshake_retransmit_interval
        self.hs_retransmit_at: float | None = None
        self.hs_deadline: float | None = None
        # The handshake message being timed for an RTT sample, and when it left.
        self.hs_timed = b""
        self.hs_sent_at: float | None = None
        self.final_packet = b""
        # A responder's FINAL is built only if it has to go (acceptor.final_packet),
        # from these 64 bytes: a session packet sent in its place confirms the
        # handshake as well (§6.3).
        self.final_material = b""
        self.auth_proof_packet = b""
        self.counted_pending = initiator
        self.auth_rejects = 0
        self.expected_peer_node_id: bytes | None = None
        self.hs_proof_attempts = 0

    # ------------------------------------------------------------------ helpers

    def _new_recovery(self) -> LossRecovery:
        controller = create_congestion_controller(
            self.config.congestion_control, max_datagram_size=self.path.max_datagram_size)
        return LossRecovery(congestion=controller, reliable_path=self.path.reliable)

    def set_state(self, new: SessionState, now: float | None = None) -> None:
        """Move along the state machine; an illegal move is a bug in the core."""
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal session transition {self.state} -> {new}")
        self._trace_state(new, now)
        self.state = new

    def _trace_state(self, new: SessionState, now: float | None) -> None:
        if self.trace.enabled and new is not self.state:
            self.trace.event(now if now is not None else self.last_received, self.ref,
                             "session_state_changed",
                             {"old": self.state.value, "new": new.value})

    @property
    def is_open(self) -> bool:
        """True while application data may be sent."""
        return self.state is SessionState.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        """True once the session is CLOSED (a handler may have closed it mid-packet)."""
        return self.state is SessionState.CLOSED

    def require_open(self) -> None:
        """Raise the exception an application expects on a session not usable."""
        if self.state is SessionState.ESTABLISHED:
            return
        if self.state in (SessionState.INIT, SessionState.HANDSHAKING):
            raise InvalidStateError("session is not established yet; wait for SessionEstablished")
        raise SessionClosedError(f"session is {self.state.value}")

    def install_keys(self, keys: HandshakeKeys, now: float) -> None:
        """Switch to the traffic keys of a completed handshake."""
        aead = self.config.aead
        self.session_id = keys.session_id
        self.peer_node_id = keys.peer_node_id
        self.send_secret = keys.send_secret
        self.recv_secret = keys.receive_secret
        self.resumption_secret = keys.resumption_secret
        self.send_protection = PacketProtection(aead, keys.send_secret)
        self.recv_protection = PacketProtection(aead, keys.receive_secret)
        self.last_received = now
        self.last_sent_ack_eliciting = now

    def establish(self, now: float) -> None:
        """Enter ESTABLISHED and tell the application."""
        self.set_state(SessionState.ESTABLISHED, now)
        self.address_validated = True
        self.emit(SessionEstablished(
            ref=self.ref, session_id=self.session_id, peer_node_id=self.peer_node_id,
            address=self.address, initiator=self.initiator, resumed=self.resumed,
            confirmed=self.handshake is None))

    def max_data_frame(self) -> LimitFrame:
        """MAX_DATA advertising the session window as it stands now."""
        return LimitFrame(FrameType.MAX_DATA, -1, self.local_max_data)

    def confirm_handshake(self) -> None:
        """The responder has our AUTH_PROOF (FINAL, or a session packet from it).

        Until then an initiator established on CHALLENGE keeps its handshake
        and retransmits AUTH_PROOF (protocol.md §6.3, §6.7).
        """
        self.handshake = None
        self.stop_handshake_retransmission()
        self.emit(HandshakeConfirmed(ref=self.ref))

    def stop_handshake_retransmission(self) -> None:
        """Our last handshake message needs no more copies: the peer answered it
        in a way only a peer that processed it can (FINAL or a session packet
        for AUTH_PROOF, RESUME_OK for RESUME). Left armed, the timer would keep
        resending it and end an established session as unconfirmed."""
        self.hs_retransmit_at = None
        self.hs_send_due = False
        self.hs_packet = self.hs_timed = b""

    def note_handshake_sent(self, now: float) -> None:
        """Our handshake message left: time it, unless it is a retransmission.

        Karn's rule: the reply to a message sent twice cannot say which copy
        it answers, so a resent message is not timed at all.
        """
        if self.hs_timed is self.hs_packet:
            self.hs_sent_at = None
        else:
            self.hs_timed = self.hs_packet
            self.hs_sent_at = now

    def take_handshake_rtt(self, now: float) -> None:
        """The reply to our current handshake message arrived: an RTT sample.

        Called before the reply replaces ``hs_packet``. Without this sample a
        session's first one would come from an ACK the peer delayed, and
        ``min_rtt``, which RFC 9002 never corrects for ACK delay, would keep
        that delay until an undelayed ACK arrived (docs/protocol.md §10.2).
        """
        if self.hs_sent_at is not None and self.hs_timed is self.hs_packet:
            self.recovery.on_handshake_rtt(now - self.hs_sent_at, now)
        self.hs_sent_at = None
        self.hs_timed = b""

    # ------------------------------------------------------------------ closing

    def fail(self, reason: str, code: int, message: str, *, by_peer: bool = False) -> None:
        """End the session at once and report it (handshake failures, timeouts)."""
        if self.state is SessionState.CLOSED:
            return
        established = self.state in (SessionState.ESTABLISHED, SessionState.CLOSING)
        self._trace_state(SessionState.CLOSED, None)
        self.state = SessionState.CLOSED
        self.hs_send_due = False
        self.control.clear()
        if self.drain_until is None:
            self.drain_until = self.last_received
        self._report_closed(reason, code, message, established=established, by_peer=by_peer)

    def _report_closed(self, reason: str, code: int, message: str, *, established: bool,
                       by_peer: bool) -> None:
        if self.close_reported:
            return
        if not established and not self.initiator:
            return  # the application never saw this half-open session
        self.close_reported = True
        abandoned = sum(stream.sender.unacknowledged_bytes for stream in self.streams
                        if not stream.reset) if established else 0
        if abandoned and reason == "graceful" and not by_peer:
            message = (f"{message}; " if message else "") + (
                f"close_timeout passed with {abandoned} stream bytes unacknowledged")
        self.emit(SessionClosed(
            ref=self.ref, reason=reason, code=code, message=message,
            established=established, by_peer=by_peer, session_id=self.session_id,
            abandoned_bytes=abandoned))

    def close(self, now: float, *, code: int, reason: str) -> None:
        """Start a graceful close: SESSION_CLOSE goes out and must be acknowledged."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        if self.state is not SessionState.ESTABLISHED:
            self.fail("graceful", code, reason or "closed before establishment")
            return
        self.set_state(SessionState.CLOSING, now)
        # SESSION_CLOSE waits until every queued stream byte is acknowledged, so
        # "send, then close" loses nothing; close_timeout bounds the wait.
        self.close_frame = CloseFrame(FrameType.SESSION_CLOSE, code, reason)
        self.close_deadline = now + self.config.close_timeout

    def close_frame_due(self) -> bool:
        """True once a closing session has flushed its streams (queue SESSION_CLOSE)."""
        if self.close_frame is None or self.close_frame_queued:
            return False
        return all(stream.sender.all_acked or stream.reset for stream in self.streams)

    def close_with_error(self, error: ProtocolError, now: float) -> None:
        """The peer violated the protocol: send ERROR once and drop the session."""
        if self.state is SessionState.CLOSED:
            return
        was_open = self.state in (SessionState.ESTABLISHED, SessionState.CLOSING)
        self.control = [CloseFrame(FrameType.ERROR, int(error.code), error.message)]
        self.state = SessionState.CLOSED
        self.drain_until = drain_due(now, self.config.close_timeout)
        self._report_closed("error", int(error.code), error.message,
                            established=was_open, by_peer=False)

    def _on_close_frame(self, frame: CloseFrame, now: float) -> None:
        """SESSION_CLOSE or ERROR from the peer: acknowledge at once, report, drain.

        The closer waits for this ACK and we will send nothing else it could
        ride on, so it goes out in the same flush (protocol.md §7.2).
        """
        was_open = self.state in (SessionState.ESTABLISHED, SessionState.CLOSING)
        graceful = frame.frame_type == FrameType.SESSION_CLOSE
        self.acks.ack_now()
        self.state = SessionState.CLOSED
        self.drain_until = drain_due(now, self.config.close_timeout)
        self._report_closed("graceful" if graceful else "error", frame.code, frame.reason,
                            established=was_open, by_peer=True)

    # ------------------------------------------------------------------ receive path

    def receive_packet(self, header: Header, data: bytes | memoryview, addr: Address,
                       now: float) -> DropReason | None:
        """Process one protected session packet (``data`` is read during this call only).

        Returns:
            None when the packet was accepted, else why it was dropped.
        """
        if header.packet_number in self.acks.received:
            # A replay or duplicate: a set lookup instead of a decryption.
            self.stats.duplicates_dropped += 1
            return DropReason.DUPLICATE_PACKET
        plaintext = self._decrypt(header, data)
        if plaintext is None:
            self.stats.decrypt_failures += 1
            return DropReason.DECRYPTION_FAILED
        pn = header.packet_number
        try:
            frames, ack_eliciting = parse_frames(plaintext)
        except WireError as exc:
            self.close_with_error(ProtocolError(ErrorCode.FRAME_ENCODING_ERROR, str(exc)), now)
            return DropReason.MALFORMED_FRAMES
        if not self.acks.on_packet_received(pn, ack_eliciting, now):
            self.stats.duplicates_dropped += 1
            return DropReason.DUPLICATE_PACKET
        self.stats.packets_received += 1
        self.stats.bytes_received += len(data)
        self.last_received = now
        if not self.address_validated and addr == self.address:
            # Keys for this session were only ever sent to this address (a resumed
            # session's RESUME_OK): an authenticated packet from it proves it (§8.2).
            self.address_validated = True
        if self.handshake is not None:
            # An initiator established on CHALLENGE: the responder installs its
            # keys only on our AUTH_PROOF, so this packet confirms it (§6.3).
            # It usually left in place of FINAL, in the flush that answered
            # AUTH_PROOF, so it times AUTH_PROOF as FINAL would (Karn's rule
            # still voids the sample if AUTH_PROOF went twice).
            self.take_handshake_rtt(now)
            self.confirm_handshake()
        if self.trace.enabled:
            self.trace.event(now, self.ref, "packet_received", {
                "packet_number": pn, "size": len(data),
                "frames": [f.frame_type for f in frames]})
        if addr != self.address and not self.initiator:
            self._on_packet_from_new_address(addr, len(data))
        if self.state is SessionState.CLOSED:
            # Draining: the ACK tracker noted it. An ack-eliciting packet now is
            # the closer retransmitting because our ACK was lost: answer at once.
            if ack_eliciting:
                self.acks.ack_now()
            return None
        try:
            for frame in frames:
                self.handlers[frame.frame_type](self, frame, now)
                if self.is_closed:
                    break  # SESSION_CLOSE/ERROR: nothing after it may reach the application
        except ProtocolError as violation:
            self.close_with_error(violation, now)
        return None

    def _decrypt(self, header: Header, data: bytes | memoryview) -> bytes | memoryview | None:
        """Open a packet with the key its phase bit selects (protocol.md §6.4).

        A large packet opens into the endpoint's scratch buffer and comes back
        as a view of it, valid only while this packet is processed (see
        ``stt_core.scratch``); a small one comes back as ``bytes``.
        """
        if self.recv_protection is None:
            return None
        aad = data[:header.payload_offset]
        ciphertext = memoryview(data)[header.payload_offset:]  # no copy (64 KiB on loopback)
        pn = header.packet_number
        next_phase = False
        if header.key_phase == self.recv_phase:
            # A sender never rotates twice before the peer acknowledged the
            # current phase, so the current bit always means the current key.
            protection = self.recv_protection
        elif pn < self.recv_phase_start and self.recv_previous is not None:
            protection = self.recv_previous
        else:
            if self.recv_next is None:
                secret = next_generation_secret(self.recv_secret)
                self.recv_next = PacketProtection(self.config.aead, secret)
            protection = self.recv_next
            next_phase = True
        plaintext: bytes | memoryview
        try:
            if len(ciphertext) < _SCRATCH_MIN_SEALED:
                plaintext = protection.open(pn, aad, ciphertext)
            else:
                plaintext = self.scratch.opened.view(len(ciphertext) - TAG_SIZE)
                protection.open_into(pn, aad, ciphertext, plaintext)
        except DecryptError:
            return None
        if next_phase:
            self._commit_next_phase(pn)
        return plaintext

    def _commit_next_phase(self, pn: int) -> None:
        """The peer rotated its keys and packet ``pn`` opened under the next
        generation: make it current."""
        self.recv_previous = self.recv_protection
        self.recv_protection = self.recv_next
        self.recv_secret = next_generation_secret(self.recv_secret)
        self.recv_next = None
        self.recv_phase ^= 1
        self.recv_phase_start = pn
        self.stats.key_updates += 1
        if self.trace.enabled:
            self.trace.event(self.last_received, self.ref, "key_updated",
                             {"direction": "receive", "phase": self.recv_phase})

    def _on_packet_from_new_address(self, addr: Address, size: int) -> None:
        """An authenticated packet arrived from an address we do not send to.

        Only the responder follows its peer: the initiator chose the server's
        address and moves only when its application says so (``Endpoint.migrate``),
        so late packets on a path it left never pull it back.

        Never redirects traffic by itself (a captured packet replayed from a
        spoofed address must not hijack the session): we start path validation
        and move only when the PATH_RESPONSE comes back (protocol.md §8.2).
        The packet's frames are processed as usual.
        """
        probe = self.probes.get(addr)
        if probe is None:
            if len(self.probes) >= 4:
                self.probes.pop(next(iter(self.probes)))
            probe = self.probes[addr] = _PathProbe(self.random_bytes(8))
        probe.bytes_received += size

    # ------------------------------------------------------------------ frame handlers

    def _on_keep_alive(self, frame: Frame, now: float) -> None:
        self.keep_alive_ack_due = True

    def _on_immediate_ack(self, frame: Frame, now: float) -> None:
        self.acks.ack_requested()  # the sender waits on this ACK (protocol.md §4.5)

    def _on_keep_alive_ack(self, frame: Frame, now: float) -> None:
        """Nothing to do: hearing the peer already refreshed ``last_received``."""

    def _on_session_close(self, frame: Frame, now: float) -> None:
        if isinstance(frame, CloseFrame):
            self._on_close_frame(frame, now)

    def _on_path_challenge(self, frame: Frame, now: float) -> None:
        """Answer; on the initiator a challenge also means "your address changed"
        (NAT rebinding we cannot see), so RTT estimates start afresh (RFC 9002 §5.2)."""
        if not isinstance(frame, PathFrame):
            return
        self.control.append(PathFrame(FrameType.PATH_RESPONSE, frame.data))
        if self.initiator and frame.data != self.last_path_challenge:
            self.last_path_challenge = frame.data
            self.recovery.rtt.reset()

    def _on_path_response(self, frame: Frame, now: float) -> None:
        if not isinstance(frame, PathFrame):
            return
        for addr, probe in list(self.probes.items()):
            if probe.challenge == frame.data and probe.sent_at >= 0:
                self.migrate_to(addr, now)
                return

    def migrate_to(self, addr: Address, now: float) -> None:
        """Move the session to a validated address and restart congestion state."""
        old = self.address
        self.probes.pop(addr, None)
        if addr == old:
            return
        self.address = addr
        self.path = self.path_for(addr)
        self.stats.path_changes += 1
        lost = self.recovery.discard_all()
        self.recovery = self._new_recovery()
        packetizer.requeue_lost(self, lost, now)
        if self.trace.enabled:
            self.trace.event(now, self.ref, "path_changed",
                             {"old": repr(old), "new": repr(addr)})
        self.emit(PathChanged(ref=self.ref, old_address=old, new_address=addr))

    def _on_resume_token(self, frame: Frame, now: float) -> None:
        """The server gave us a token: wrap it with our secret into a ticket."""
        if not isinstance(frame, ResumeTokenFrame) or not self.initiator:
            return
        expires_at = now + frame.lifetime
        ticket = Ticket(token=frame.token, resumption_secret=self.resumption_secret,
                        session_id=self.session_id, peer_node_id=self.peer_node_id,
                        expires_at=expires_at)
        self.emit(ResumeTokenReceived(ref=self.ref, token=ticket.to_bytes(),
                                      expires_at=expires_at))

    def _on_app_frame(self, frame: Frame, now: float) -> None:
        if isinstance(frame, AppFrame):
            self.emit(ApplicationFrameReceived(ref=self.ref, frame_type=frame.frame_type,
                                               payload=frame.payload))

    handlers: ClassVar[dict[int, Callable[[Session, Frame, float], None]]] = {}

    # ------------------------------------------------------------------ timers

    def next_timer(self) -> float | None:
        """Earliest deadline of this session; pure."""
        if self.state is SessionState.CLOSED:
            ack = self.acks.ack_deadline() if self.send_protection is not None else None
            if ack is not None and self.drain_until is not None:
                return min(ack, self.drain_until)  # acknowledge the peer's SESSION_CLOSE
            return self.drain_until
        if self.state is SessionState.HANDSHAKING:
            return min(t for t in (self.hs_deadline, self.hs_retransmit_at) if t is not None)
        config = self.config
        earliest = self.last_received + config.idle_timeout
        if self.state in (SessionState.ESTABLISHED, SessionState.CLOSING):
            # A running minimum, not a list and min(): the endpoint asks after
            # every flush, twice per packet on a request/response exchange.
            quiet_since = self.quiet_since
            keep_alive = quiet_since + self.keep_alive_wait
            if keep_alive < earliest:
                earliest = keep_alive
            if quiet_since != self.cipher_release_mark:
                release = _release_due(quiet_since)
                if release < earliest:
                    earliest = release
            for deadline in (self.recovery.loss_detection_deadline(),
                             self.acks.ack_deadline(), self.close_deadline, self.pacing_at,
                             self.hs_retransmit_at):
                if deadline is not None and deadline < earliest:
                    earliest = deadline
        return earliest

    def _release_when_quiet(self, now: float) -> None:
        """Free what a quiet session can rebuild or no longer needs.

        Every cipher context goes (the next packet in or out rebuilds the one
        it needs from the same secret; see ``CIPHER_RELEASE_INTERVAL``), and so
        do the handshake packets kept for retransmission once nothing can ask
        for them again. Done here, off the per-packet path, because a quiet
        session is the one whose memory matters.
        """
        quiet_since = self.quiet_since
        if quiet_since == self.cipher_release_mark:
            return
        if now < _release_due(quiet_since):
            return
        self.cipher_release_mark = quiet_since
        for protection in (self.send_protection, self.recv_protection,
                           self.recv_previous, self.recv_next):
            if protection is not None:
                protection.release()
        self.recovery.compact()
        self._forget_handshake_packets()

    def _forget_handshake_packets(self) -> None:
        """Drop the last handshake packet and its trigger once the peer is past them.

        The responder keeps FINAL, or what FINAL is built from if it has not
        gone yet (or RESUME_OK), and the AUTH_PROOF it answered, to send FINAL
        if that AUTH_PROOF comes again (protocol.md §6.3, §6.7), until
        the initiator acknowledged one of its session packets: the initiator
        then holds the keys and was confirmed by that packet, so it will not
        ask again, and a later copy of AUTH_PROOF is a replay, dropped as one.
        (Its own session packets prove nothing: an initiator sends them from
        CHALLENGE on, before FINAL.) The initiator's own AUTH_PROOF is dead
        weight once it is confirmed.
        """
        if self.hs_send_due or self.handshake is not None:
            return  # not confirmed yet: AUTH_PROOF may have to go again
        if self.initiator or self.recovery.largest_acked is not None:
            self.hs_packet = self.final_packet = self.auth_proof_packet = self.hs_timed = b""
            self.final_material = b""

    def handle_timer(self, now: float) -> None:
        """Do whatever is due: idle death, close timeout, loss detection."""
        if self.state is SessionState.CLOSED:
            return
        if self.state is SessionState.HANDSHAKING:
            self._handle_handshake_timer(now)
            return
        if now >= self.last_received + self.config.idle_timeout:
            self.fail("timeout", int(ErrorCode.IDLE_TIMEOUT),
                      f"no packet from the peer for {self.config.idle_timeout:g} s")
            return
        if self.close_deadline is not None and now >= self.close_deadline:
            if self.close_frame is not None and not self.close_frame_queued:
                # The flush ran out of time: say goodbye anyway, and give the
                # SESSION_CLOSE a short while of its own to be acknowledged.
                self.close_frame_queued = True
                self.control.append(self.close_frame)
                self.close_deadline = now + min(1.0, self.config.close_timeout)
                return
            self.finish_close(now)
            return
        if self.hs_retransmit_at is not None and now >= self.hs_retransmit_at:
            self._retransmit_auth_proof(now)
            if self.is_closed:
                return
        self._release_when_quiet(now)
        if self.pacing_at is not None and now >= self.pacing_at:
            self.pacing_at = None  # the flush that follows sends what the pacer held
        lost, probes = self.recovery.on_loss_detection_timeout(now)
        if lost:
            packetizer.requeue_lost(self, lost, now)
        if probes:
            self.probe_packets = max(self.probe_packets, probes)
            if self.recovery.pto_count >= packetizer.BLACK_HOLE_PTO_COUNT:
                packetizer.fall_back_datagram_size(self)
            if self.handshake is not None:
                # Unconfirmed: the responder may be dropping our packets for
                # want of the AUTH_PROOF, so it goes ahead of the probes.
                self.hs_send_due = True

    def _handle_handshake_timer(self, now: float) -> None:
        """Give up at the connect deadline; the initiator retransmits before that."""
        if self.hs_deadline is not None and now >= self.hs_deadline:
            self.drain_until = now
            self.fail("timeout", int(ErrorCode.IDLE_TIMEOUT),
                      "handshake did not complete before the connect timeout")
            return
        if self.hs_retransmit_at is not None and now >= self.hs_retransmit_at:
            self.hs_send_due = True
            self.hs_interval = min(self.hs_interval * 2, MAX_HANDSHAKE_RETRANSMIT_INTERVAL)
            self.hs_retransmit_at = now + self.hs_interval

    def _retransmit_auth_proof(self, now: float) -> None:
        """AUTH_PROOF again, for an initiator established but not yet confirmed.

        A responder that never answers lost our handshake (it restarted, or
        evicted the pending handshake): after as many tries as a handshake
        makes before starting over, and not before the connect deadline the
        caller gave, the session fails rather than sending into nothing until
        the idle timeout. The deadline keeps a lossy or briefly partitioned
        path from failing a handshake the caller was willing to wait for.
        """
        self.hs_proof_attempts += 1
        if self.hs_proof_attempts >= AUTH_PROOF_ATTEMPTS \
                and (self.hs_deadline is None or now >= self.hs_deadline):
            self.hs_retransmit_at = None
            self.fail("timeout", int(ErrorCode.IDLE_TIMEOUT),
                      "the peer never confirmed the handshake (no FINAL, no packet)")
            return
        self.hs_send_due = True
        self.hs_interval = min(self.hs_interval * 2, MAX_HANDSHAKE_RETRANSMIT_INTERVAL)
        self.hs_retransmit_at = now + self.hs_interval

    def finish_close(self, now: float) -> None:
        """Our SESSION_CLOSE was acknowledged (or the close timeout ran out)."""
        if self.state is not SessionState.CLOSING:
            return
        self.state = SessionState.CLOSED
        self.drain_until = now
        self._report_closed("graceful", self.close_frame.code if self.close_frame else 0,
                            self.close_frame.reason if self.close_frame else "",
                            established=True, by_peer=False)

    @property
    def quiet_since(self) -> float:
        """When the session last heard the peer or sent it something ack-eliciting."""
        return max(self.last_received, self.last_sent_ack_eliciting)

    def keep_alive_due(self, now: float) -> bool:
        """True when the session has been quiet long enough to send a keep-alive."""
        return now >= self.quiet_since + self.keep_alive_wait

    @property
    def finished(self) -> bool:
        """True when the endpoint may forget this session."""
        return self.state is SessionState.CLOSED and not self.control


Session.handlers = {
    FrameType.ACK: packetizer.on_ack_frame,
    FrameType.NACK: packetizer.on_nack_frame,
    FrameType.KEEP_ALIVE: Session._on_keep_alive,
    FrameType.KEEP_ALIVE_ACK: Session._on_keep_alive_ack,
    FrameType.IMMEDIATE_ACK: Session._on_immediate_ack,
    FrameType.DATA: stream_io.on_data_frame,
    FrameType.STREAM_OPEN: stream_io.on_stream_open_frame,
    FrameType.STREAM_CLOSE: stream_io.on_stream_close_frame,
    FrameType.STREAM_FIN: stream_io.on_stream_fin_frame,
    FrameType.SESSION_CLOSE: Session._on_session_close,
    FrameType.ERROR: Session._on_session_close,
    FrameType.MAX_DATA: stream_io.on_limit_frame,
    FrameType.MAX_STREAM_DATA: stream_io.on_limit_frame,
    FrameType.PATH_CHALLENGE: Session._on_path_challenge,
    FrameType.PATH_RESPONSE: Session._on_path_response,
    FrameType.RESUME_TOKEN: Session._on_resume_token,
}
for _app_type in range(FrameType.APP_MIN, FrameType.APP_MAX + 1):
    Session.handlers[_app_type] = Session._on_app_frame

