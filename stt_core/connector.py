"""Connector: the initiator's side of the handshake (protocol.md §6.1-§6.3).

Owns ``connect``: building and retransmitting HELLO and AUTH_PROOF, reading
CHALLENGE, FINAL, RETRY and REJECT, and turning each outcome into a session
state. The initiator drives every retransmission; the responder only answers,
so a lost message in either direction is recovered by the initiator's timer.

REJECT and RETRY are unauthenticated; they are honoured only when they echo
the nonce of our own pending HELLO, which an off-path attacker cannot know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import INITIAL_SESSION_CREDIT
from .errors import DropReason, ErrorCode
from .handshake import (
    REJECT_AEAD,
    HandshakeAuthError,
    HandshakeError,
    Initiator,
    PeerIdMismatch,
    decode_reject,
    decode_retry,
)
from .resumption import ResumeInitiator, Ticket
from .states import SessionState
from .wire import PacketType, encode_handshake_header

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .events import Address
    from .session import Session

REJECT_AUTH = 1
REJECT_REFUSED = 2
REJECT_BUSY = 3
AUTH_REJECTS_TO_FAIL = 2
"""REJECT(auth) answers needed before a connect fails with an authentication error."""
HELLO_SIZE = 1200
"""HELLO datagrams are padded to this size (protocol.md §6.1)."""


def start(endpoint: Endpoint, addr: Address, now: float, *, peer_node_id: bytes | None,
          timeout: float | None) -> Session:
    """Create an initiator session and queue its HELLO."""
    config = endpoint.config
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 seconds")
    if peer_node_id is not None and not (isinstance(peer_node_id, bytes)
                                         and 1 <= len(peer_node_id) <= 64):
        raise ValueError("peer_node_id must be 1-64 bytes or None")
    session = endpoint.new_session(initiator=True, address=addr, now=now)
    session.set_state(SessionState.HANDSHAKING)
    session.expected_peer_node_id = peer_node_id
    _new_initiator(endpoint, session)
    session.hs_interval = config.handshake_retransmit_interval
    session.hs_retransmit_at = now + session.hs_interval
    session.hs_deadline = now + (timeout if timeout is not None else config.connect_timeout)
    endpoint.stats.sessions_connected += 1
    return session


def _new_initiator(endpoint: Endpoint, session: Session) -> None:
    """A fresh handshake (new nonce and ephemeral key) for an initiator session."""
    handshake = Initiator(psk=endpoint.psk, node_id=endpoint.config.node_id,
                          random_bytes=endpoint.random_bytes,
                          expected_peer_node_id=session.expected_peer_node_id,
                          pad_to=HELLO_SIZE, aead=endpoint.config.aead,
                          max_streams=endpoint.config.max_streams_per_session)
    session.handshake = handshake
    session.handshake_id = handshake.handshake_id
    endpoint.by_handshake_id[handshake.handshake_id] = session
    _queue_hello(session, b"")


def start_resume(endpoint: Endpoint, addr: Address, ticket_bytes: bytes, now: float, *,
                 timeout: float | None) -> Session:
    """Create an initiator session that resumes from a ticket (protocol.md §6.8)."""
    ticket = Ticket.from_bytes(ticket_bytes)
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 seconds")
    session = endpoint.new_session(initiator=True, address=addr, now=now)
    handshake = ResumeInitiator(ticket, endpoint.random_bytes, endpoint.config.aead,
                                endpoint.config.max_streams_per_session)
    session.set_state(SessionState.HANDSHAKING)
    session.handshake = handshake
    session.handshake_id = handshake.handshake_id
    session.resumed = True
    header = encode_handshake_header(PacketType.RESUME, handshake.handshake_id)
    session.hs_packet = header + handshake.resume(header)
    session.hs_send_due = True
    config = endpoint.config
    session.hs_interval = config.handshake_retransmit_interval
    session.hs_retransmit_at = now + session.hs_interval
    session.hs_deadline = now + (timeout if timeout is not None else config.connect_timeout)
    endpoint.by_handshake_id[handshake.handshake_id] = session
    return session


def _on_resume_ok(endpoint: Endpoint, session: Session, handshake: ResumeInitiator,
                  header: bytes, body: bytes, now: float) -> DropReason | None:
    keys = handshake.on_resume_ok(header, body)
    if handshake.peer_max_streams is not None:
        session.streams.set_local_stream_limit(handshake.peer_max_streams)
    old = endpoint.by_session_id.get(keys.session_id)
    if old is not None and old is not session:
        old.fail("error", 0, "superseded by a resumed session")
        endpoint.forget(old)
    session.take_handshake_rtt(now)  # RESUME to RESUME_OK
    session.install_keys(keys, now)
    session.handshake = None
    session.stop_handshake_retransmission()  # RESUME_OK confirms: nothing to resend
    endpoint.by_handshake_id.pop(session.handshake_id, None)
    endpoint.by_session_id[keys.session_id] = session
    # At once, not on the next packet: the server keeps its 3x amplification
    # limit until our first packet under the new keys arrives (§8.2).
    grant_session_window(session, piggyback=False)
    session.establish(now)
    endpoint.touch(session)
    return None


def _queue_hello(session: Session, cookie: bytes) -> None:
    handshake = session.handshake
    if not isinstance(handshake, Initiator):
        return
    header = encode_handshake_header(PacketType.HELLO, handshake.handshake_id)
    session.hs_packet = header + handshake.hello(header, cookie)
    session.hs_send_due = True


def on_handshake_reply(endpoint: Endpoint, packet_type: int, cid: bytes, data: bytes,
                       addr: Address, now: float) -> DropReason | None:
    """CHALLENGE, FINAL, RETRY or REJECT arrived for one of our connects."""
    if packet_type == PacketType.FINAL:
        session = endpoint.by_session_id.get(cid)
    elif packet_type in (PacketType.RESUME, PacketType.AUTH_PROOF):
        return DropReason.UNEXPECTED_PACKET
    else:
        session = endpoint.by_handshake_id.get(cid)
    if session is None or not session.initiator:
        return DropReason.UNKNOWN_SESSION
    handshake = session.handshake
    header, body = data[:10], data[10:]
    if packet_type == PacketType.FINAL and isinstance(handshake, Initiator):
        # Established since CHALLENGE; FINAL confirms the responder got AUTH_PROOF.
        try:
            reason = _on_final(session, handshake, header, body, now)
            endpoint.touch(session)  # confirmed: path MTU probing may start
            return reason
        except HandshakeAuthError:
            return DropReason.DECRYPTION_FAILED  # our AUTH_PROOF timer brings a fresh one
        except HandshakeError:
            return DropReason.BAD_HANDSHAKE
    if session.state is not SessionState.HANDSHAKING:
        return DropReason.REPLAYED_HANDSHAKE
    if isinstance(handshake, ResumeInitiator):
        return _on_resume_reply(endpoint, session, handshake, packet_type, header, body, now)
    if not isinstance(handshake, Initiator):
        return DropReason.UNEXPECTED_PACKET
    try:
        if packet_type == PacketType.CHALLENGE:
            return _on_challenge(endpoint, session, handshake, header, body, now)
        if packet_type == PacketType.REJECT:
            return _on_reject(endpoint, session, handshake, body)
        if packet_type == PacketType.RETRY:
            return _on_retry(endpoint, session, handshake, body)
    except PeerIdMismatch as exc:
        session.fail("auth_failure", int(ErrorCode.AUTHENTICATION_FAILED), str(exc))
        endpoint.touch(session)
        return None
    except HandshakeAuthError:
        # A responder with another seed would have REJECTed our HELLO; a CHALLENGE
        # or FINAL that fails authentication was corrupted or forged: drop it, and
        # our retransmission timer gets a fresh copy (protocol.md §6.7).
        return DropReason.DECRYPTION_FAILED
    except HandshakeError:
        return DropReason.BAD_HANDSHAKE
    return DropReason.UNEXPECTED_PACKET


def _on_resume_reply(endpoint: Endpoint, session: Session, handshake: ResumeInitiator,
                     packet_type: int, header: bytes, body: bytes,
                     now: float) -> DropReason | None:
    """RESUME_OK or REJECT for a resume attempt."""
    try:
        if packet_type == PacketType.RESUME_OK:
            return _on_resume_ok(endpoint, session, handshake, header, body, now)
        if packet_type == PacketType.REJECT:
            return _on_resume_reject(endpoint, session, handshake, body)
    except HandshakeAuthError:
        # Corrupted or forged: drop it, as a bad CHALLENGE or FINAL is. Our
        # RESUME retransmission brings the server's cached RESUME_OK again,
        # whereas giving up here lost a token the server had already used up.
        return DropReason.DECRYPTION_FAILED
    except HandshakeError:
        return DropReason.BAD_HANDSHAKE
    return DropReason.UNEXPECTED_PACKET


def _on_resume_reject(endpoint: Endpoint, session: Session, handshake: ResumeInitiator,
                      body: bytes) -> DropReason | None:
    """REJECT for a RESUME: handled as for HELLO. A proof refused because the
    RESUME was damaged on the way leaves the token unused (protocol.md §6.8
    step 3), so asking once more can still succeed."""
    nonce, reason = decode_reject(body)
    if nonce != handshake.nonce:
        return DropReason.BAD_HANDSHAKE
    _on_refusal(endpoint, session, reason,
                "the peer refused the resume token twice (expired, used, unknown, or a "
                "different Config.aead): connect with a full handshake")
    return None


def _on_challenge(endpoint: Endpoint, session: Session, handshake: Initiator, header: bytes,
                  body: bytes, now: float) -> DropReason | None:
    if handshake.session_id is not None:
        return DropReason.REPLAYED_HANDSHAKE  # a duplicate; our timer resends AUTH_PROOF
    proof = handshake.on_challenge(
        header, body, lambda sid: encode_handshake_header(PacketType.AUTH_PROOF, sid))
    session_id = _derived_session_id(handshake)
    if session_id is None or session_id in endpoint.by_session_id:
        session.fail("error", int(ErrorCode.INTERNAL_ERROR), "session id collision")
        endpoint.touch(session)
        return None
    session.session_id = session_id
    endpoint.by_session_id[session_id] = session
    if handshake.peer_max_streams is not None:
        session.streams.set_local_stream_limit(handshake.peer_max_streams)
    session.take_handshake_rtt(now)  # HELLO to CHALLENGE
    session.hs_packet = encode_handshake_header(PacketType.AUTH_PROOF, session_id) + proof
    session.hs_send_due = True
    session.hs_interval = endpoint.config.handshake_retransmit_interval
    session.hs_retransmit_at = now + session.hs_interval
    session.last_received = now
    # Established now, one round trip before FINAL (protocol.md §6.3): the
    # CHALLENGE authenticated the responder, and the traffic keys need nothing
    # FINAL carries. AUTH_PROOF leaves first in this flush, ahead of any session
    # packet, and is retransmitted until FINAL or a session packet confirms it.
    session.install_keys(handshake.traffic_keys(), now)
    endpoint.by_handshake_id.pop(session.handshake_id, None)
    grant_session_window(session)
    session.establish(now)
    endpoint.touch(session)
    return None


def _derived_session_id(handshake: Initiator) -> bytes | None:
    """The session id ``on_challenge`` just derived (a call boundary for the type checker)."""
    return handshake.session_id


def _on_final(session: Session, handshake: Initiator, header: bytes,
              body: bytes, now: float) -> DropReason | None:
    """FINAL: the responder's key confirmation; the session is already established."""
    if handshake.session_id is None:
        return DropReason.UNEXPECTED_PACKET  # FINAL before CHALLENGE
    handshake.on_final(header, body)
    session.take_handshake_rtt(now)  # AUTH_PROOF to FINAL
    session.confirm_handshake()
    return None


def grant_session_window(session: Session, *, piggyback: bool = True) -> None:
    """Advertise our real session window (the peer starts from the initial credit).

    With ``piggyback`` the MAX_DATA rides on the first ack-eliciting packet
    that leaves anyway (a control frame, data, a probe;
    ``packetizer._build_packet``) instead of costing a packet of its own: a
    session that sends or closes soon after the handshake saves a datagram
    each way. Not on a lone ACK: MAX_DATA would make it ack-eliciting, and
    a session that only listens would cost the peer an ACK of its own. The
    peer cannot be held up by the wait: once it has sent a quarter of its
    initial credit (``GRANT_UNASKED_AT``), the next ACK carries the window,
    well before a sender in slow start can use up the rest.
    """
    session.peer_max_data = INITIAL_SESSION_CREDIT
    if session.local_max_data > INITIAL_SESSION_CREDIT:
        if piggyback:
            session.grant_due = True
        else:
            session.control.append(session.max_data_frame())


def _on_reject(endpoint: Endpoint, session: Session, handshake: Initiator,
               body: bytes) -> DropReason | None:
    nonce, reason = decode_reject(body)
    if nonce != handshake.nonce:
        return DropReason.BAD_HANDSHAKE
    _on_refusal(endpoint, session, reason,
                "the peer rejected our HELLO twice: the shared seeds differ")
    return None


def _on_refusal(endpoint: Endpoint, session: Session, reason: int, auth_message: str) -> None:
    """Act on an authentic-looking REJECT (its nonce is ours), protocol.md §6.5."""
    if reason == REJECT_AUTH:
        session.auth_rejects += 1
        if session.auth_rejects < AUTH_REJECTS_TO_FAIL:
            # One REJECT may answer a message corrupted on the way: ask once
            # more at once. Two mean the peer really refuses.
            session.hs_send_due = True
            endpoint.touch(session)
            return
        session.fail("auth_failure", int(ErrorCode.AUTHENTICATION_FAILED), auth_message)
    elif reason == REJECT_REFUSED:
        session.fail("refused", int(ErrorCode.REFUSED), "the peer is not accepting sessions")
    elif reason == REJECT_AEAD:
        session.fail("refused", int(ErrorCode.REFUSED),
                     f"the peer uses a packet AEAD other than ours ({session.config.aead!r}): "
                     "give both nodes the same Config.aead")
    else:
        return  # busy, or a reason we do not know: keep retransmitting
    endpoint.touch(session)


def _on_retry(endpoint: Endpoint, session: Session, handshake: Initiator,
              body: bytes) -> DropReason | None:
    nonce, cookie = decode_retry(body)
    if nonce != handshake.nonce or handshake.session_id is not None:
        return DropReason.BAD_HANDSHAKE
    _queue_hello(session, cookie)
    endpoint.touch(session)
    return None
