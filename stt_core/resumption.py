"""Resumption: resume tokens and the one-round-trip resume handshake (protocol.md §6.8).

Owns the bytes and the maths of session resumption, nothing else:

* the server's **token**: AEAD-sealed under a key only the issuing endpoint
  knows, carrying the session id, the client's node id, the resumption secret
  of the session and an expiry. Single use: the endpoint remembers the ids of
  redeemed tokens until they expire, and refuses when that memory is full
  rather than forgetting (fail closed).
* the client's **ticket**: what the application stores (the token plus the
  client's own copy of the resumption secret). It is secret material.
* RESUME (client -> server, padded to 1200 bytes) and RESUME_OK (server ->
  client): fresh X25519 ephemerals on both sides, so resumed keys have forward
  secrecy too; the client proves the resumption secret with an HMAC, the
  server with an AEAD-sealed confirmation.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import hkdf_expand_label, hkdf_extract
from .handshake import (
    STREAM_LIMIT_SIZE,
    HandshakeAuthError,
    HandshakeError,
    HandshakeKeys,
    decode_stream_limit,
    encode_stream_limit,
)

__all__ = ["ResumeInitiator", "ResumeResponder", "Ticket", "TokenIssuer", "TokenRefused"]

RESUME_SIZE = 1200
_TOKEN_AAD = b"stt resume token v1"
_TICKET_VERSION = 1
_SECRET_SIZE = 32
_CONFIRMATION = b"resumed"
"""RESUME_OK seals this, then the server's stream limit (protocol.md §6.8)."""


class TokenRefused(HandshakeAuthError):
    """The token is invalid, expired or already used."""


@dataclass(frozen=True, slots=True)
class TokenContents:
    """What a server learns from a valid token."""

    token_id: bytes
    session_id: bytes
    peer_node_id: bytes
    resumption_secret: bytes = field(repr=False)
    expires_at: float


class TokenIssuer:
    """Issues and redeems this endpoint's resume tokens."""

    __slots__ = ("_aead", "_capacity", "_lifetime", "_random_bytes", "_used")

    def __init__(self, *, key: bytes, lifetime: float, capacity: int,
                 random_bytes: Callable[[int], bytes]) -> None:
        self._aead = AESGCM(key)
        self._lifetime = lifetime
        self._capacity = capacity
        self._random_bytes = random_bytes
        self._used: OrderedDict[bytes, float] = OrderedDict()

    @property
    def lifetime(self) -> float:
        """Seconds a token stays valid."""
        return self._lifetime

    def issue(self, *, session_id: bytes, peer_node_id: bytes, resumption_secret: bytes,
              now: float) -> bytes:
        """A fresh sealed token for this session."""
        token_id = self._random_bytes(16)
        expiry_ms = int((now + self._lifetime) * 1000)
        plaintext = b"".join((token_id, session_id, struct.pack(">q", expiry_ms),
                              bytes((len(peer_node_id),)), peer_node_id, resumption_secret))
        nonce = self._random_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, _TOKEN_AAD)

    def open(self, token: bytes, now: float) -> TokenContents:
        """Open a token without using it up (check the client's proof first).

        Raises:
            TokenRefused: not ours, tampered, expired or already used.
        """
        if len(token) < 12 + 16 + 16 + 8 + 8 + 1 + 1 + _SECRET_SIZE:
            raise TokenRefused("resume token too short")
        try:
            plaintext = self._aead.decrypt(token[:12], token[12:], _TOKEN_AAD)
        except InvalidTag:
            raise TokenRefused("resume token was not issued by this endpoint") from None
        token_id, session_id = plaintext[:16], plaintext[16:24]
        (expiry_ms,) = struct.unpack(">q", plaintext[24:32])
        node_len = plaintext[32]
        node_id = plaintext[33:33 + node_len]
        secret = plaintext[33 + node_len:]
        expires_at = expiry_ms / 1000
        if now >= expires_at:
            raise TokenRefused("resume token expired")
        self._forget_expired(now)
        if token_id in self._used:
            raise TokenRefused("resume token was already used")
        return TokenContents(token_id, session_id, node_id, secret, expires_at)

    def consume(self, contents: TokenContents) -> None:
        """Mark an opened token as used, after the client proved its secret.

        Raises:
            TokenRefused: the used-token memory is full (fail closed).
        """
        if len(self._used) >= self._capacity:
            raise TokenRefused("too many outstanding resumptions; do a full handshake")
        self._used[contents.token_id] = contents.expires_at

    def _forget_expired(self, now: float) -> None:
        used = self._used
        # Entries are added in expiry order only roughly; scan a bounded prefix.
        for token_id, expires_at in list(used.items())[:64]:
            if expires_at <= now:
                del used[token_id]


@dataclass(frozen=True, slots=True)
class Ticket:
    """The client's resumption state: give it back to ``Endpoint.resume``. Secret."""

    token: bytes = field(repr=False)
    resumption_secret: bytes = field(repr=False)
    session_id: bytes
    peer_node_id: bytes
    expires_at: float

    def __init__(self, token: bytes, resumption_secret: bytes, session_id: bytes,
                 peer_node_id: bytes, expires_at: float) -> None:
        # Written out so the compiled core builds it natively (a frozen dataclass's
        # generated __init__ is Python; docs/performance.md, "Second pass").
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "resumption_secret", resumption_secret)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "peer_node_id", peer_node_id)
        object.__setattr__(self, "expires_at", expires_at)

    def to_bytes(self) -> bytes:
        """Serialise for storage (the application keeps it confidential)."""
        return b"".join((
            bytes((_TICKET_VERSION,)), self.session_id, struct.pack(">d", self.expires_at),
            bytes((len(self.peer_node_id),)), self.peer_node_id, self.resumption_secret,
            struct.pack(">H", len(self.token)), self.token))

    @classmethod
    def from_bytes(cls, data: bytes) -> Ticket:
        """Parse what :meth:`to_bytes` produced.

        Raises:
            ValueError: the bytes are not a ticket.
        """
        try:
            if data[0] != _TICKET_VERSION:
                raise ValueError("unknown ticket version")
            session_id = data[1:9]
            (expires_at,) = struct.unpack(">d", data[9:17])
            node_len = data[17]
            node_id = data[18:18 + node_len]
            pos = 18 + node_len
            secret = data[pos:pos + _SECRET_SIZE]
            pos += _SECRET_SIZE
            (token_len,) = struct.unpack(">H", data[pos:pos + 2])
            token = data[pos + 2:pos + 2 + token_len]
        except (IndexError, struct.error):
            raise ValueError("truncated resume ticket") from None
        if len(token) != token_len or len(secret) != _SECRET_SIZE or len(session_id) != 8:
            raise ValueError("truncated resume ticket")
        return cls(token, secret, session_id, node_id, expires_at)


def _mac_key(secret: bytes, aead: str) -> bytes:
    """The RESUME proof's key. It names the packet AEAD, so that a client whose
    ``Config.aead`` differs from the server's is refused at once rather than
    resumed into a session where no packet opens (protocol.md §6.8)."""
    return hkdf_expand_label(secret, "resume mac", aead.encode("ascii"), 32)


def _keys(secret: bytes, dh: bytes, transcript: bytes, *, initiator: bool, session_id: bytes,
          peer_node_id: bytes) -> tuple[HandshakeKeys, bytes]:
    """Traffic keys of a resumed session, and the server's confirmation key."""
    hs = hkdf_extract(secret, dh)
    confirm_key = hkdf_expand_label(hs, "s resume", transcript, 32)
    master = hkdf_extract(hs, bytes(32))
    c_ap = hkdf_expand_label(master, "c ap", transcript, 32)
    s_ap = hkdf_expand_label(master, "s ap", transcript, 32)
    keys = HandshakeKeys(
        send_secret=c_ap if initiator else s_ap,
        receive_secret=s_ap if initiator else c_ap,
        resumption_secret=hkdf_expand_label(master, "res", transcript, 32),
        session_id=session_id,
        peer_node_id=peer_node_id,
    )
    return keys, confirm_key


class ResumeInitiator:
    """Client side of a resume: builds RESUME, checks RESUME_OK."""

    def __init__(self, ticket: Ticket, random_bytes: Callable[[int], bytes],
                 aead: str = "aes-256-gcm", max_streams: int = 1024) -> None:
        self.ticket = ticket
        self._aead = aead
        self._max_streams = max_streams
        self.peer_max_streams: int | None = None
        """The server's stream limit for our opens, set once RESUME_OK verified."""
        self.nonce = random_bytes(32)
        self.handshake_id = self.nonce[:8]
        self._private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        self._public = self._private.public_key().public_bytes_raw()
        self._signed_hello = b""
        self.session_id: bytes | None = None

    def resume(self, header: bytes) -> bytes:
        """The RESUME body, padded so the datagram is 1200 bytes."""
        token = self.ticket.token
        signed = b"".join((header, self.nonce, self._public,
                           encode_stream_limit(self._max_streams),
                           struct.pack(">H", len(token)), token))
        mac = hmac.new(_mac_key(self.ticket.resumption_secret, self._aead), signed,
                       hashlib.sha256).digest()
        self._signed_hello = signed + mac
        body = self._signed_hello[len(header):]
        return body + bytes(max(0, RESUME_SIZE - len(header) - len(body)))

    def on_resume_ok(self, header: bytes, body: bytes) -> HandshakeKeys:
        """Check the server's confirmation and derive the new keys.

        Raises:
            HandshakeAuthError: the server does not hold the resumption secret.
            HandshakeError: malformed.
        """
        if len(body) != 64 + len(_CONFIRMATION) + STREAM_LIMIT_SIZE + 16:
            raise HandshakeError("RESUME_OK has the wrong size")
        nonce_s, public_s, sealed = body[:32], body[32:64], body[64:]
        try:
            dh = self._private.exchange(X25519PublicKey.from_public_bytes(public_s))
        except ValueError:
            raise HandshakeError("bad ephemeral key") from None
        transcript = hashlib.sha256(self._signed_hello + nonce_s + public_s).digest()
        keys, confirm_key = _keys(self.ticket.resumption_secret, dh, transcript, initiator=True,
                                  session_id=self.ticket.session_id,
                                  peer_node_id=self.ticket.peer_node_id)
        try:
            confirmed = AESGCM(confirm_key).decrypt(bytes(12), sealed, header + nonce_s + public_s)
        except InvalidTag:
            raise HandshakeAuthError("RESUME_OK confirmation failed") from None
        if not confirmed.startswith(_CONFIRMATION):
            raise HandshakeError("RESUME_OK does not confirm a resumption")
        self.peer_max_streams = decode_stream_limit(confirmed, len(_CONFIRMATION))
        self.session_id = self.ticket.session_id
        return keys


class ResumeResponder:
    """Server side of a resume, after the token was redeemed."""

    @staticmethod
    def read_resume(header: bytes, body: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """Split a RESUME body into (nonce, ephemeral public key, token, signed part+mac).

        The client's stream limit sits between the key and the token.

        Raises:
            HandshakeError: malformed.
        """
        token_at = 64 + STREAM_LIMIT_SIZE + 2
        if len(body) < token_at + 32:
            raise HandshakeError("RESUME too short")
        nonce, public = body[:32], body[32:64]
        (token_len,) = struct.unpack(">H", body[token_at - 2:token_at])
        end = token_at + token_len
        if len(body) < end + 32:
            raise HandshakeError("RESUME truncated")
        return nonce, public, body[token_at:end], header + body[:end + 32]

    def __init__(self, *, contents: TokenContents, header: bytes, body: bytes,
                 random_bytes: Callable[[int], bytes], aead: str = "aes-256-gcm",
                 max_streams: int = 1024) -> None:
        _, public, _, signed_with_mac = self.read_resume(header, body)
        signed, mac = signed_with_mac[:-32], signed_with_mac[-32:]
        expected = hmac.new(_mac_key(contents.resumption_secret, aead), signed,
                            hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise HandshakeAuthError("RESUME proof failed")
        self.contents = contents
        self._max_streams = max_streams
        self.peer_max_streams = decode_stream_limit(body, 64)
        """The client's stream limit for our opens (covered by the RESUME's proof)."""
        self.nonce = random_bytes(32)
        private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        self._public = private.public_key().public_bytes_raw()
        try:
            self._dh = private.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError:
            raise HandshakeError("bad ephemeral key") from None
        transcript = hashlib.sha256(signed_with_mac + self.nonce + self._public).digest()
        self.keys, self._confirm_key = _keys(
            contents.resumption_secret, self._dh, transcript, initiator=False,
            session_id=contents.session_id, peer_node_id=contents.peer_node_id)

    def resume_ok(self, header: bytes) -> bytes:
        """The RESUME_OK body."""
        confirmation = _CONFIRMATION + encode_stream_limit(self._max_streams)
        sealed = AESGCM(self._confirm_key).encrypt(bytes(12), confirmation,
                                                   header + self.nonce + self._public)
        return self.nonce + self._public + sealed
