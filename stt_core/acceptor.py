"""Acceptor: the responder's side of the handshake and its defences (protocol.md §6, §9).

Owns what a server does with HELLO and AUTH_PROOF, and how it stays cheap for
strangers:

* A HELLO is authenticated under the PSK before any Diffie-Hellman is done
  (``Responder.read_hello``): a stranger without the seed costs one HKDF and
  one AEAD open, and gets a 43-byte REJECT so its ``connect`` fails fast.
* A HELLO must fill a 1200-byte datagram; our answers are smaller, so the
  handshake can never amplify traffic towards a spoofed source.
* Duplicate HELLOs (retransmissions) re-send the same CHALLENGE; a HELLO whose
  nonce was already used is ignored (replay cache), so a replay never creates
  a second session.
* A pending handshake lives ``connect_timeout`` past the last authenticated
  HELLO for it, and never more than ``PENDING_LIFETIME_FACTOR`` connect
  timeouts past the first: an initiator still retransmitting HELLO has not
  had our CHALLENGE yet, and must get time to answer it.
* Past ``cookie_threshold`` pending handshakes, HELLOs without a valid cookie
  get a stateless RETRY (WireGuard's cookie idea, QUIC's Retry): a spoofed
  source cannot echo the cookie, so it costs us no state at all.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import TYPE_CHECKING

from .connector import HELLO_SIZE, REJECT_AUTH, REJECT_BUSY, REJECT_REFUSED, grant_session_window
from .errors import DropReason
from .handshake import (
    AEAD_IDS,
    REJECT_AEAD,
    HandshakeAuthError,
    HandshakeError,
    Responder,
    encode_reject,
    encode_retry,
    seal_final,
)
from .resumption import ResumeResponder
from .states import SessionState
from .wire import (
    HANDSHAKE_HEADER_SIZE,
    PacketType,
    ResumeTokenFrame,
    encode_handshake_header,
)

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .events import Address
    from .session import Session

COOKIE_BUCKET_INTERVAL = 10.0
"""Cookies are valid for the bucket they were made in and the previous one."""
COOKIE_MAC_SIZE = 16
PENDING_LIFETIME_FACTOR = 2
"""A pending handshake is forgotten at most this many ``connect_timeout``s after
its first HELLO, however many retransmissions came (protocol.md §6.7): copies
of a captured HELLO cannot hold a pending slot for longer. The replay cache
keeps the handshake id beyond that (``Acceptor._remember``)."""
_ESTABLISHED_STATES = (SessionState.ESTABLISHED, SessionState.CLOSING)


def issue_token(endpoint: Endpoint, session: Session, now: float) -> None:
    """Send the client a single-use resume token for this session."""
    if session.initiator or not session.resumption_secret:
        return
    token = endpoint.tokens.issue(session_id=session.session_id,
                                  peer_node_id=session.peer_node_id,
                                  resumption_secret=session.resumption_secret, now=now)
    session.control.append(ResumeTokenFrame(int(endpoint.tokens.lifetime), token))



def final_packet(session: Session) -> bytes:
    """The responder's FINAL, built the first time it has to go.

    Usually it never has to: the session packet that leaves in the flush
    answering AUTH_PROOF confirms the handshake in its place (protocol.md
    §6.3), so building FINAL (two HMACs, a cipher context and a seal) up
    front would be wasted. A repeated AUTH_PROOF, or a flush with no session
    packet, asks for it.
    """
    if not session.final_packet and session.final_material:
        header = encode_handshake_header(PacketType.FINAL, session.session_id)
        session.final_packet = header + seal_final(session.final_material, header)
        session.final_material = b""
    return session.final_packet


class Acceptor:
    """Server-side handshake state of one endpoint."""

    __slots__ = ("_cookie_key", "_endpoint", "_replay", "_replay_capacity", "pending")

    def __init__(self, endpoint: Endpoint, now: float) -> None:
        self._endpoint = endpoint
        self._cookie_key = endpoint.random_bytes(32)
        self._replay: OrderedDict[bytes, float] = OrderedDict()
        self._replay_capacity = max(4096, 4 * endpoint.config.max_pending_handshakes)
        self.pending = 0

    # ------------------------------------------------------------------ cookies

    def make_cookie(self, addr: Address, nonce: bytes, now: float) -> bytes:
        """A stateless token binding the client's address and nonce to a time bucket."""
        bucket = int(now // COOKIE_BUCKET_INTERVAL) & 0xFFFFFFFF
        return bucket.to_bytes(4, "big") + self._cookie_mac(addr, nonce, bucket)

    def _cookie_mac(self, addr: Address, nonce: bytes, bucket: int) -> bytes:
        message = repr(addr).encode() + nonce + bucket.to_bytes(4, "big")
        return hmac.new(self._cookie_key, message, hashlib.sha256).digest()[:COOKIE_MAC_SIZE]

    def cookie_valid(self, cookie: bytes, addr: Address, nonce: bytes, now: float) -> bool:
        """True for a cookie we made for this address and nonce, recently."""
        if len(cookie) != 4 + COOKIE_MAC_SIZE:
            return False
        bucket = int.from_bytes(cookie[:4], "big")
        current = int(now // COOKIE_BUCKET_INTERVAL) & 0xFFFFFFFF
        if bucket not in (current, (current - 1) & 0xFFFFFFFF):
            return False
        return hmac.compare_digest(cookie[4:], self._cookie_mac(addr, nonce, bucket))

    # ------------------------------------------------------------------ replay cache

    def _seen(self, handshake_id: bytes, now: float) -> bool:
        expiry = self._replay.get(handshake_id)
        return expiry is not None and expiry > now

    def _remember(self, handshake_id: bytes, now: float) -> None:
        replay = self._replay
        # Longer than a pending handshake can live, so a copy of its HELLO that
        # arrives after the responder forgot it cannot start it again (§9.3).
        lifetime = PENDING_LIFETIME_FACTOR * self._endpoint.config.connect_timeout
        replay[handshake_id] = now + lifetime + 10.0
        replay.move_to_end(handshake_id)
        while len(replay) > self._replay_capacity:
            replay.popitem(last=False)

    def next_timer(self) -> float | None:
        """The acceptor has no deadlines of its own (pending sessions carry theirs)."""
        return None

    def handle_timer(self, now: float) -> None:
        """Expire old replay-cache entries lazily."""
        replay = self._replay
        while replay:
            key, expiry = next(iter(replay.items()))
            if expiry > now:
                break
            del replay[key]

    # ------------------------------------------------------------------ HELLO

    def _reply(self, packet_type: int, cid: bytes, body: bytes, addr: Address) -> None:
        header = encode_handshake_header(packet_type, cid)
        self._endpoint.stateless_out.append((header + body, addr))

    def _reject_auth(self, cid: bytes, body: bytes, addr: Address) -> DropReason:
        """Answer a HELLO or RESUME that failed authentication with REJECT(auth)."""
        self._endpoint.stats.handshakes_rejected += 1
        self._reply(PacketType.REJECT, cid, encode_reject(body[:32], REJECT_AUTH), addr)
        return DropReason.BAD_HANDSHAKE

    def on_hello(self, cid: bytes, data: bytes, addr: Address, now: float) -> DropReason | None:
        """A HELLO arrived: answer, ignore, or start a pending session."""
        endpoint = self._endpoint
        config = endpoint.config
        if len(data) < HELLO_SIZE:
            return DropReason.BAD_HANDSHAKE
        existing = endpoint.by_handshake_id.get(cid)
        if existing is not None and not existing.initiator:
            if existing.state is SessionState.HANDSHAKING:
                existing.amplification_received += len(data)
                existing.hs_send_due = True  # our CHALLENGE was lost: send it again
                self._extend_pending(existing, data, now)
                endpoint.touch(existing)
                return None
            return DropReason.REPLAYED_HANDSHAKE
        if self._seen(cid, now):
            return DropReason.REPLAYED_HANDSHAKE
        header, body = data[:HANDSHAKE_HEADER_SIZE], data[HANDSHAKE_HEADER_SIZE:]
        try:
            hello = Responder.read_hello(endpoint.psk, header, body)
        except HandshakeAuthError:
            return self._reject_auth(cid, body, addr)
        except HandshakeError:
            return DropReason.BAD_HANDSHAKE
        if hello.nonce[:8] != cid:
            return DropReason.BAD_HANDSHAKE
        if not config.server_mode:
            self._reply(PacketType.REJECT, cid, encode_reject(hello.nonce, REJECT_REFUSED), addr)
            return DropReason.NOT_ACCEPTING
        if hello.aead_id != AEAD_IDS[config.aead]:
            # Both would reach ESTABLISHED and then fail to open every packet:
            # refuse now, so the initiator's connect says what to fix.
            self._reply(PacketType.REJECT, cid, encode_reject(hello.nonce, REJECT_AEAD), addr)
            return DropReason.AEAD_MISMATCH
        if self.pending >= config.cookie_threshold \
                and not self.cookie_valid(hello.cookie, addr, hello.nonce, now):
            endpoint.stats.retries_sent += 1
            self._reply(PacketType.RETRY, cid,
                        encode_retry(hello.nonce, self.make_cookie(addr, hello.nonce, now)), addr)
            return None
        if self.pending >= config.max_pending_handshakes \
                or len(endpoint.sessions) >= config.max_sessions:
            self._reply(PacketType.REJECT, cid, encode_reject(hello.nonce, REJECT_BUSY), addr)
            return DropReason.SESSION_LIMIT
        self._start_session(hello, cid, len(data), addr, now)
        return None

    def _extend_pending(self, session: Session, data: bytes, now: float) -> None:
        """A retransmitted HELLO: the initiator has not had our CHALLENGE yet.

        The pending handshake then lives ``connect_timeout`` from now, so the
        CHALLENGE we are about to resend leaves the initiator as long to get
        its AUTH_PROOF through as the first one did. Counting only from the
        first HELLO forgot handshakes whose CHALLENGEs were lost for most of
        that time: the initiator, established on the one that finally
        arrived, then sent AUTH_PROOF to a session that no longer existed and
        hung until its own (longer) connect timeout. Only a HELLO that
        authenticates under the PSK and carries this handshake's nonce counts
        (a forged copy still brings the CHALLENGE, which costs nothing, but
        keeps no state alive), and ``PENDING_LIFETIME_FACTOR`` bounds the
        lifetime that replays of a captured HELLO could buy.
        """
        responder = session.handshake
        if not isinstance(responder, Responder) or session.hs_deadline is None:
            return
        try:
            header, body = data[:HANDSHAKE_HEADER_SIZE], data[HANDSHAKE_HEADER_SIZE:]
            hello = Responder.read_hello(self._endpoint.psk, header, body)
        except HandshakeError:
            return
        if not hmac.compare_digest(hello.nonce, responder.hello_nonce):
            return
        timeout = self._endpoint.config.connect_timeout
        latest = session.created_at + PENDING_LIFETIME_FACTOR * timeout
        session.hs_deadline = max(session.hs_deadline, min(now + timeout, latest))

    def _start_session(self, hello: object, cid: bytes, size: int, addr: Address,
                       now: float) -> None:
        endpoint = self._endpoint
        config = endpoint.config
        try:
            for _ in range(4):  # a session-id collision is astronomically rare: new nonce
                responder = Responder(psk=endpoint.psk, node_id=config.node_id,
                                      random_bytes=endpoint.random_bytes,
                                      hello=hello,  # type: ignore[arg-type]
                                      max_streams=config.max_streams_per_session)
                if responder.session_id not in endpoint.by_session_id:
                    break
            else:
                return
        except HandshakeError:
            endpoint.count_drop(DropReason.BAD_HANDSHAKE)  # e.g. a low-order ephemeral key
            return
        session = endpoint.new_session(initiator=False, address=addr, now=now)
        session.set_state(SessionState.HANDSHAKING)
        session.handshake = responder
        session.handshake_id = cid
        session.session_id = responder.session_id
        session.peer_node_id = responder.peer_node_id
        session.streams.set_local_stream_limit(responder.peer_max_streams)
        session.amplification_received = size
        challenge_header = encode_handshake_header(PacketType.CHALLENGE, cid)
        session.hs_packet = challenge_header + responder.challenge(challenge_header)
        session.hs_send_due = True
        session.hs_deadline = now + config.connect_timeout
        endpoint.by_handshake_id[cid] = session
        endpoint.by_session_id[responder.session_id] = session
        self.pending += 1
        self._remember(cid, now)
        endpoint.touch(session)

    # ------------------------------------------------------------------ AUTH_PROOF

    def on_auth_proof(self, cid: bytes, data: bytes, addr: Address,
                      now: float) -> DropReason | None:
        """AUTH_PROOF: the initiator proved the keys; establish, and confirm it with
        the first session packet, or FINAL if none goes (protocol.md §6.3)."""
        endpoint = self._endpoint
        session = endpoint.by_session_id.get(cid)
        if session is None or session.initiator:
            return DropReason.UNKNOWN_SESSION
        if session.state is not SessionState.HANDSHAKING:
            if session.auth_proof_packet == data and (
                    session.final_packet or session.final_material):
                # Our FINAL, or the session packet that stood in for it, was lost.
                session.hs_packet = final_packet(session)
                session.hs_send_due = True
                endpoint.touch(session)
                return None
            return DropReason.REPLAYED_HANDSHAKE
        responder = session.handshake
        if not isinstance(responder, Responder):
            return DropReason.UNEXPECTED_PACKET
        header, body = data[:HANDSHAKE_HEADER_SIZE], data[HANDSHAKE_HEADER_SIZE:]
        try:
            keys = responder.on_auth_proof(header, body)
        except HandshakeError:
            return DropReason.BAD_HANDSHAKE
        self.pending_done(session)
        session.address = addr
        session.take_handshake_rtt(now)  # CHALLENGE to AUTH_PROOF
        session.install_keys(keys, now)
        session.final_material = responder.final_material()  # FINAL only if it must go (§6.3)
        session.hs_packet = b""
        session.auth_proof_packet = data
        session.hs_send_due = True
        session.handshake = None
        grant_session_window(session)
        endpoint.stats.sessions_accepted += 1
        session.establish(now)
        issue_token(endpoint, session, now)
        endpoint.touch(session)
        return None

    # ------------------------------------------------------------------ RESUME

    def on_resume(self, cid: bytes, data: bytes, addr: Address, now: float) -> DropReason | None:
        """RESUME: redeem the token, establish at once, answer RESUME_OK (§6.8)."""
        endpoint = self._endpoint
        if len(data) < HELLO_SIZE:
            return DropReason.BAD_HANDSHAKE
        existing = endpoint.by_handshake_id.get(cid)
        # An established session drops its RESUME_OK (or FINAL) once the client's
        # first packet proves it arrived; a copy of RESUME after that is still a replay.
        if existing is not None and not existing.initiator and (
                existing.final_packet or existing.state in _ESTABLISHED_STATES):
            if existing.final_packet and existing.auth_proof_packet == data:
                # our RESUME_OK was lost
                existing.hs_packet = existing.final_packet
                existing.hs_send_due = True
                endpoint.touch(existing)
                return None
            return DropReason.REPLAYED_HANDSHAKE
        header, body = data[:HANDSHAKE_HEADER_SIZE], data[HANDSHAKE_HEADER_SIZE:]
        try:
            nonce, _, token, _ = ResumeResponder.read_resume(header, body)
            if nonce[:8] != cid:
                return DropReason.BAD_HANDSHAKE
            contents = endpoint.tokens.open(token, now)
            responder = ResumeResponder(contents=contents, header=header, body=body,
                                        random_bytes=endpoint.random_bytes,
                                        aead=endpoint.config.aead,
                                        max_streams=endpoint.config.max_streams_per_session)
            if not endpoint.config.server_mode:  # refuse before the token is used up
                self._reply(PacketType.REJECT, cid, encode_reject(nonce, REJECT_REFUSED), addr)
                return DropReason.NOT_ACCEPTING
            endpoint.tokens.consume(contents)  # only a proven RESUME uses the token up
        except HandshakeAuthError:
            return self._reject_auth(cid, body, addr)
        except HandshakeError:
            return DropReason.BAD_HANDSHAKE
        old = endpoint.by_session_id.get(contents.session_id)
        if old is not None:  # the peer came back before we noticed it left
            old.fail("error", 0, "superseded by a resumed session")
            endpoint.forget(old)
        session = endpoint.new_session(initiator=False, address=addr, now=now)
        session.set_state(SessionState.HANDSHAKING)
        session.counted_pending = True
        session.resumed = True
        session.handshake_id = cid
        session.streams.set_local_stream_limit(responder.peer_max_streams)
        session.install_keys(responder.keys, now)
        ok_header = encode_handshake_header(PacketType.RESUME_OK, cid)
        session.final_packet = ok_header + responder.resume_ok(ok_header)
        session.auth_proof_packet = data
        session.hs_packet = session.final_packet
        session.hs_send_due = True
        endpoint.by_handshake_id[cid] = session
        endpoint.by_session_id[session.session_id] = session
        grant_session_window(session)
        endpoint.stats.sessions_accepted += 1
        session.establish(now)
        # A RESUME proves the ticket, not the source address: its holder could send
        # it from a spoofed one. Keep the 3x limit until the client's first packet
        # under the new keys arrives from there (§8.2).
        session.address_validated = False
        session.amplification_received = len(data)
        issue_token(endpoint, session, now)
        endpoint.touch(session)
        return None

    def pending_done(self, session: Session) -> None:
        """A pending handshake completed or expired: free its slot."""
        if session.counted_pending:
            return
        session.counted_pending = True
        self.pending -= 1
        if self._endpoint.by_handshake_id.get(session.handshake_id) is session:
            del self._endpoint.by_handshake_id[session.handshake_id]
