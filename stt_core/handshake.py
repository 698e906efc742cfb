"""Handshake: the four-message key exchange (protocol.md §6), Noise NNpsk0 in spirit.

This module owns the message bodies of HELLO, CHALLENGE, AUTH_PROOF and FINAL,
the key schedule that runs through them, the session-id formula, and the codecs
of the two unauthenticated refusals, REJECT and RETRY. Bytes and secrets go in,
message bodies and keys come out.

It must not know about sessions, timers, addresses, retransmission, replay
caches or cookies' meaning: the connector (initiator side) and acceptor
(responder side) own those. Packet headers (``type | version | id``, 10 bytes)
are built by the caller and handed in; they are the associated data of every
sealed part, so a header cannot be altered in flight.

Rules the code below keeps:

1. A responder authenticates a HELLO (one HKDF, one AEAD open) before doing any
   Diffie-Hellman, so a stranger without the shared seed costs almost nothing
   (``Responder.read_hello``).
2. Every body is computed once and cached: a retransmission is byte-identical,
   and no AEAD key ever seals two different messages under one nonce. HELLO
   keys are fresh per initiator nonce; ``c_hs`` seals only AUTH_PROOF (nonce
   0); ``s_hs`` seals CHALLENGE (nonce 0) and FINAL (nonce 1).
3. Nothing changes state until a message has fully verified, so a forged or
   garbled message leaves the handshake exactly as it was.
4. Network input raises only ``HandshakeError`` (or its subclasses); caller
   mistakes raise ``ValueError`` or ``RuntimeError``.

The handshake AEAD is always AES-256-GCM: it is agreed before any negotiation
could happen, and browsers' WebCrypto offers it. Ephemeral X25519 keys come
from the injected ``random_bytes``, so a run is reproducible from its seed.

The module runs past STYLE's 500 lines on purpose: the four layouts and the
key schedule are one transcript, and reading them side by side is what lets
a reviewer check that each side hashes and seals exactly what the other does.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import SECRET_SIZE, TAG_SIZE, hkdf_expand_label, hkdf_extract, hmac_sha256

__all__ = [
    "AEAD_IDS",
    "HEADER_SIZE",
    "MAX_COOKIE_SIZE",
    "MAX_NODE_ID_SIZE",
    "NONCE_SIZE",
    "REJECT_AEAD",
    "REJECT_AUTH_FAILED",
    "REJECT_BUSY",
    "REJECT_REFUSED",
    "STREAM_LIMIT_SIZE",
    "HandshakeAuthError",
    "HandshakeError",
    "HandshakeKeys",
    "HelloInfo",
    "Initiator",
    "PeerIdMismatch",
    "Responder",
    "compute_session_id",
    "decode_reject",
    "decode_retry",
    "decode_stream_limit",
    "encode_reject",
    "encode_retry",
    "encode_stream_limit",
]

HEADER_SIZE: Final = 10
"""Handshake packet header: type(1) | version(1) | id(8)."""
NONCE_SIZE: Final = 32
"""Size of each side's handshake nonce."""
PUBLIC_KEY_SIZE: Final = 32
"""Size of an X25519 public key."""
MAX_NODE_ID_SIZE: Final = 64
"""Node ids are 1..64 bytes."""
MAX_COOKIE_SIZE: Final = 255
"""A cookie's length travels in one byte."""
MAC_SIZE: Final = 32
"""HMAC-SHA256 output: the key-confirmation MACs of AUTH_PROOF and FINAL."""
REJECT_AUTH_FAILED: Final = 1
"""REJECT reason: the HELLO did not authenticate under our PSK (seeds differ)."""
REJECT_REFUSED: Final = 2
"""REJECT reason: this node is not accepting sessions."""
REJECT_BUSY: Final = 3
"""REJECT reason: too many sessions or pending handshakes; try again later."""
REJECT_AEAD: Final = 4
"""REJECT reason: the HELLO asks for a packet AEAD other than this node's ``Config.aead``."""
AEAD_IDS: Final = {"aes-256-gcm": 1, "chacha20-poly1305": 2}
"""The packet AEAD's number in HELLO (protocol.md §6.1, §6.4)."""
STREAM_LIMIT_SIZE: Final = 4
"""Bytes of the stream limit each side announces in the handshake (§5.1, §6.1, §6.2)."""

_TRANSCRIPT_PREFIX: Final = b"stt hs v1"
_NONCE_0: Final = bytes(12)
_NONCE_1: Final = (1).to_bytes(12, "big")
_MAX_HELLO_VARIANTS: Final = 4  # cookies remembered per initiator (one per RETRY honoured)
_ID_SEALED_MIN: Final = 1 + 1 + TAG_SIZE
_ID_SEALED_MAX: Final = 1 + MAX_NODE_ID_SIZE + TAG_SIZE
# HELLO seals a key, the AEAD number, the stream limit and the node id; CHALLENGE
# the stream limit and the node id.
_HELLO_SEALED_MIN: Final = PUBLIC_KEY_SIZE + 1 + STREAM_LIMIT_SIZE + _ID_SEALED_MIN
_HELLO_SEALED_MAX: Final = PUBLIC_KEY_SIZE + 1 + STREAM_LIMIT_SIZE + _ID_SEALED_MAX
_CHALLENGE_MIN: Final = 2 * 32 + STREAM_LIMIT_SIZE + _ID_SEALED_MIN
_CHALLENGE_MAX: Final = 2 * 32 + STREAM_LIMIT_SIZE + _ID_SEALED_MAX
_PROOF_SIZE: Final = MAC_SIZE + TAG_SIZE


class HandshakeError(Exception):
    """A malformed or out-of-place handshake message: drop it, count BAD_HANDSHAKE."""


class HandshakeAuthError(HandshakeError):
    """An AEAD or MAC check failed: the peer does not hold our shared seed."""


class PeerIdMismatch(HandshakeAuthError):
    """The peer proved a node id other than the one the application expected."""


@dataclass(frozen=True, slots=True)
class HelloInfo:
    """What an authenticated HELLO told the responder (``Responder.read_hello``)."""

    nonce: bytes
    """The initiator's 32-byte nonce; ``nonce[:8]`` is its handshake id."""
    cookie: bytes
    """The cookie echoed from a RETRY, or ``b""``."""
    ephemeral_public: bytes
    """The initiator's ephemeral X25519 public key."""
    node_id: bytes
    """The initiator's node id (1..64 bytes), authenticated under the PSK."""
    aead_id: int
    """The packet AEAD the initiator is configured for (``AEAD_IDS``; any byte)."""
    max_streams: int
    """How many streams the initiator lets us have open at once (its limit)."""
    transcript_part: bytes = field(repr=False)
    """HELLO header and body up to the end of its sealed part, hashed into h1."""

    def __init__(self, nonce: bytes, cookie: bytes, ephemeral_public: bytes, node_id: bytes,
                 aead_id: int, max_streams: int, transcript_part: bytes) -> None:
        # Written out so the compiled core builds it natively (a frozen dataclass's
        # generated __init__ is Python; docs/performance.md, "Second pass").
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "cookie", cookie)
        object.__setattr__(self, "ephemeral_public", ephemeral_public)
        object.__setattr__(self, "node_id", node_id)
        object.__setattr__(self, "aead_id", aead_id)
        object.__setattr__(self, "max_streams", max_streams)
        object.__setattr__(self, "transcript_part", transcript_part)


@dataclass(frozen=True, slots=True)
class HandshakeKeys:
    """The outcome of a completed handshake, seen from one side."""

    send_secret: bytes = field(repr=False)
    """Traffic secret for packets this side sends."""
    receive_secret: bytes = field(repr=False)
    """Traffic secret for packets this side receives."""
    resumption_secret: bytes = field(repr=False)
    """Secret for resume tokens (protocol.md §6.8 and §12)."""
    session_id: bytes
    """The 8-byte session id both sides computed."""
    peer_node_id: bytes
    """The node id the peer proved."""

    def __init__(self, send_secret: bytes, receive_secret: bytes, resumption_secret: bytes,
                 session_id: bytes, peer_node_id: bytes) -> None:
        # Written out so the compiled core builds it natively (see HelloInfo).
        object.__setattr__(self, "send_secret", send_secret)
        object.__setattr__(self, "receive_secret", receive_secret)
        object.__setattr__(self, "resumption_secret", resumption_secret)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "peer_node_id", peer_node_id)


# --------------------------------------------------------------------------- primitives


def _sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenated parts (the transcript hashes h1, h2, h3)."""
    return hashlib.sha256(b"".join(parts)).digest()


def seal_final(material: bytes, header: bytes) -> bytes:
    """The FINAL body (protocol.md §6.3) from ``Responder.final_material()``.

    64 bytes kept per session until FINAL may be needed, instead of the
    responder's whole handshake state: a server usually never sends FINAL.
    """
    s_hs, h3 = material[:SECRET_SIZE], material[SECRET_SIZE:]
    return AESGCM(s_hs).encrypt(_NONCE_1, _finished_mac(s_hs, h3), header)


def _finished_mac(secret: bytes, transcript: bytes) -> bytes:
    """Key confirmation as in TLS 1.3's Finished (RFC 8446 §4.4.4)."""
    return hmac_sha256(hkdf_expand_label(secret, "finished", b"", SECRET_SIZE), transcript)


def _open(key: bytes, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise HandshakeAuthError("handshake message failed authentication") from None


def _dh(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero shared secret) is malformed input."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise HandshakeError("peer ephemeral key is a low-order point") from None


def _draw(random_bytes: Callable[[int], bytes], size: int) -> bytes:
    value = random_bytes(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"random_bytes({size}) must return {size} bytes")
    return value


def _check_node_id(node_id: bytes, what: str) -> bytes:
    if not isinstance(node_id, bytes) or not 1 <= len(node_id) <= MAX_NODE_ID_SIZE:
        raise ValueError(f"{what} must be 1..{MAX_NODE_ID_SIZE} bytes")
    return node_id


def _check_header(header: bytes, expected_id: bytes, error: type[Exception]) -> None:
    """ValueError for headers of our own messages (a caller bug), HandshakeError for the peer's."""
    if len(header) != HEADER_SIZE or header[2:] != expected_id:
        raise error(f"header must be {HEADER_SIZE} bytes ending with id {expected_id.hex()}")


def encode_stream_limit(limit: int) -> bytes:
    """A stream limit as sent in the handshake: 4 bytes, big-endian, saturated."""
    return min(max(limit, 0), (1 << 32) - 1).to_bytes(STREAM_LIMIT_SIZE, "big")


def decode_stream_limit(data: bytes, at: int = 0) -> int:
    """The stream limit encoded at ``data[at:]`` by :func:`encode_stream_limit`."""
    return int.from_bytes(data[at:at + STREAM_LIMIT_SIZE], "big")


def _encode_node_id(node_id: bytes) -> bytes:
    return bytes((len(node_id),)) + node_id


def _decode_node_id(data: bytes) -> bytes:
    """``node_id_len(1) | node_id`` filling ``data`` exactly."""
    if len(data) < 2 or data[0] != len(data) - 1 or data[0] > MAX_NODE_ID_SIZE:
        raise HandshakeError("malformed node id")
    return data[1:]


def _hello_key(psk: bytes, nonce: bytes) -> bytes:
    """A fresh key per initiator nonce, so HELLO's fixed AEAD nonce is never reused."""
    return hkdf_expand_label(hkdf_extract(nonce, psk), "hello", b"", SECRET_SIZE)


def _h1(transcript_part: bytes, nonce_r: bytes, public_r: bytes) -> bytes:
    return _sha256(_TRANSCRIPT_PREFIX, transcript_part, nonce_r, public_r)


def _traffic_keys(hs: bytes, h3: bytes, *, initiator: bool, session_id: bytes,
                  peer_node_id: bytes) -> HandshakeKeys:
    master = hkdf_extract(hs, bytes(SECRET_SIZE))
    c_ap = hkdf_expand_label(master, "c ap", h3, SECRET_SIZE)
    s_ap = hkdf_expand_label(master, "s ap", h3, SECRET_SIZE)
    return HandshakeKeys(
        send_secret=c_ap if initiator else s_ap,
        receive_secret=s_ap if initiator else c_ap,
        resumption_secret=hkdf_expand_label(master, "res", h3, SECRET_SIZE),
        session_id=session_id,
        peer_node_id=peer_node_id,
    )


def compute_session_id(nonce_i: bytes, nonce_r: bytes, node_i: bytes, node_r: bytes) -> bytes:
    """``(nonce_xor + node_xor)[:8]``, the seed's formula, identical on both sides.

    ``nonce_xor`` is the bytewise XOR of the two nonces, ``node_xor`` that of
    the node ids with the shorter right-padded with zeros. With 32-byte nonces
    the first 8 bytes come from the nonces alone; the node part is kept so the
    formula stays the documented one.
    """
    if len(nonce_i) != len(nonce_r):
        raise ValueError("both nonces must have the same length")
    # XOR as big integers: one C operation instead of a Python loop per byte.
    # Right-padding the shorter node id with zeros is shifting it left.
    nonce_xor = (int.from_bytes(nonce_i, "big") ^ int.from_bytes(nonce_r, "big")).to_bytes(
        len(nonce_i), "big")
    if len(nonce_xor) >= 8:
        return nonce_xor[:8]
    width = max(len(node_i), len(node_r))
    node_xor = (int.from_bytes(node_i.ljust(width, b"\x00"), "big")
                ^ int.from_bytes(node_r.ljust(width, b"\x00"), "big")).to_bytes(width, "big")
    return (nonce_xor + node_xor)[:8]


# --------------------------------------------------------------------------- refusals


def encode_reject(nonce_i: bytes, reason: int) -> bytes:
    """REJECT body ``nonce_i(32) | reason(1)``: an unauthenticated refusal."""
    if len(nonce_i) != NONCE_SIZE or not 0 <= reason <= 255:
        raise ValueError("REJECT needs a 32-byte nonce and a reason in 0..255")
    return nonce_i + bytes((reason,))


def decode_reject(body: bytes) -> tuple[bytes, int]:
    """Returns ``(nonce_i, reason)``; unknown reasons are returned as they are.

    Raises:
        HandshakeError: the body is not exactly 33 bytes.
    """
    if len(body) != NONCE_SIZE + 1:
        raise HandshakeError("REJECT body must be 33 bytes")
    return bytes(body[:NONCE_SIZE]), body[NONCE_SIZE]


def encode_retry(nonce_i: bytes, cookie: bytes) -> bytes:
    """RETRY body ``nonce_i(32) | cookie_len(1) | cookie`` (cookie 1..255 bytes)."""
    if len(nonce_i) != NONCE_SIZE or not 1 <= len(cookie) <= MAX_COOKIE_SIZE:
        raise ValueError("RETRY needs a 32-byte nonce and a 1..255-byte cookie")
    return nonce_i + bytes((len(cookie),)) + cookie


def decode_retry(body: bytes) -> tuple[bytes, bytes]:
    """Returns ``(nonce_i, cookie)``.

    Raises:
        HandshakeError: wrong length, an empty cookie or trailing bytes.
    """
    if len(body) < NONCE_SIZE + 2 or body[NONCE_SIZE] != len(body) - NONCE_SIZE - 1:
        raise HandshakeError("malformed RETRY body")
    return bytes(body[:NONCE_SIZE]), bytes(body[NONCE_SIZE + 1:])


# --------------------------------------------------------------------------- initiator


@dataclass(slots=True)
class _HelloVariant:
    body: bytes
    transcript_part: bytes


@dataclass(slots=True)
class _InitiatorResult:
    """State fixed by an accepted CHALLENGE (rule 3: set only after it verified)."""

    challenge: tuple[bytes, bytes]
    proof: bytes
    hs: bytes
    s_hs: bytes
    h3: bytes
    keys: HandshakeKeys | None = None


class Initiator:
    """The connecting side: HELLO out, CHALLENGE in, AUTH_PROOF out, FINAL in.

    Randomness is drawn in a fixed order, ``nonce_i`` (32) then the ephemeral
    private key (32), so a seeded ``random_bytes`` replays the same handshake.
    """

    __slots__ = ("_aead_id", "_expected", "_header", "_hellos", "_max_streams", "_node_id",
                 "_pad_to", "_private", "_psk", "_result", "_sealed", "handshake_id", "nonce",
                 "peer_max_streams", "peer_node_id", "session_id")

    def __init__(self, *, psk: bytes, node_id: bytes, random_bytes: Callable[[int], bytes],
                 expected_peer_node_id: bytes | None = None, pad_to: int = 1200,
                 aead: str = "aes-256-gcm", max_streams: int = 1024) -> None:
        """Draw the nonce and ephemeral key; no message is built yet.

        Args:
            psk: from ``crypto.derive_psk``.
            node_id: our node id, 1..64 bytes.
            random_bytes: the injected randomness source.
            expected_peer_node_id: if given, the responder must prove this id.
            pad_to: HELLO datagrams (header + body) are zero-padded to this size.
            aead: the packet AEAD (``Config.aead``), named in HELLO so that a
                responder configured otherwise refuses at once.
            max_streams: how many streams the responder may have open at once
                (``Config.max_streams_per_session``), announced in HELLO.
        """
        if not psk:
            raise ValueError("psk must not be empty")
        if not isinstance(pad_to, int) or pad_to < 0:
            raise ValueError("pad_to must be a non-negative int")
        if aead not in AEAD_IDS:
            raise ValueError(f"aead must be one of {tuple(AEAD_IDS)}, not {aead!r}")
        self._aead_id = AEAD_IDS[aead]
        self._max_streams = max_streams
        self._psk = psk
        self._node_id = _check_node_id(node_id, "node_id")
        self._expected = (None if expected_peer_node_id is None
                          else _check_node_id(expected_peer_node_id, "expected_peer_node_id"))
        self._pad_to = pad_to
        self.nonce: bytes = _draw(random_bytes, NONCE_SIZE)
        """Our 32-byte nonce; REJECT and RETRY must echo it to be honoured."""
        self._private: X25519PrivateKey | None = X25519PrivateKey.from_private_bytes(
            _draw(random_bytes, 32))
        self.handshake_id: bytes = self.nonce[:8]
        """The id in HELLO and CHALLENGE headers."""
        self.session_id: bytes | None = None
        """Set once a CHALLENGE verified."""
        self.peer_node_id: bytes | None = None
        """The responder's proven node id, set once a CHALLENGE verified."""
        self.peer_max_streams: int | None = None
        """The responder's stream limit for our opens, set once a CHALLENGE verified."""
        self._header: bytes | None = None
        self._sealed = b""
        self._hellos: OrderedDict[bytes, _HelloVariant] = OrderedDict()
        self._result: _InitiatorResult | None = None

    def hello(self, header: bytes, cookie: bytes = b"") -> bytes:
        """The HELLO body for ``header`` (which must stay the same) and ``cookie``.

        Cached per cookie: calling again returns the identical bytes. Only the
        last few cookies are remembered; a CHALLENGE answering any of them is
        accepted.

        Raises:
            ValueError: a header that is not ours or differs from the first
                one, or a cookie longer than 255 bytes.
        """
        _check_header(header, self.handshake_id, ValueError)
        if len(cookie) > MAX_COOKIE_SIZE:
            raise ValueError(f"cookies are at most {MAX_COOKIE_SIZE} bytes")
        if self._header is None:
            plaintext = b"".join((self._public(), bytes((self._aead_id,)),
                                  encode_stream_limit(self._max_streams),
                                  _encode_node_id(self._node_id)))
            key = _hello_key(self._psk, self.nonce)
            self._sealed = AESGCM(key).encrypt(_NONCE_0, plaintext, header + self.nonce)
            self._header = header
        elif header != self._header:
            raise ValueError("HELLO header changed between calls")
        variant = self._hellos.get(cookie)
        if variant is None:
            unpadded = (self.nonce + bytes((len(cookie),)) + cookie
                        + len(self._sealed).to_bytes(2, "big") + self._sealed)
            padding = bytes(max(0, self._pad_to - HEADER_SIZE - len(unpadded)))
            variant = _HelloVariant(unpadded + padding, header + unpadded)
            self._hellos[cookie] = variant
            while len(self._hellos) > _MAX_HELLO_VARIANTS:
                self._hellos.popitem(last=False)
        self._hellos.move_to_end(cookie)
        return variant.body

    def _public(self) -> bytes:
        if self._private is None:
            raise RuntimeError("ephemeral key already used")
        return self._private.public_key().public_bytes_raw()

    def on_challenge(self, header: bytes, body: bytes,
                     auth_header_for: Callable[[bytes], bytes]) -> bytes:
        """Verify a CHALLENGE and return the AUTH_PROOF body.

        ``auth_header_for(session_id)`` builds the AUTH_PROOF header once the
        session id is known. A duplicate of the accepted CHALLENGE returns the
        same AUTH_PROOF bytes. On success ``session_id`` and ``peer_node_id``
        are set; on any failure nothing changes.

        Raises:
            HandshakeError: malformed, no HELLO sent yet, or a different
                CHALLENGE after one was accepted.
            HandshakeAuthError: the CHALLENGE is not sealed with keys only a
                holder of our seed could have.
            PeerIdMismatch: the responder proved an unexpected node id.
        """
        if self._result is not None:
            if self._result.challenge == (header, body):
                return self._result.proof
            raise HandshakeError("a different CHALLENGE after one was accepted")
        _check_header(header, self.handshake_id, HandshakeError)
        if self._private is None or not self._hellos:
            raise HandshakeError("CHALLENGE before any HELLO")
        if not _CHALLENGE_MIN <= len(body) <= _CHALLENGE_MAX:
            raise HandshakeError("CHALLENGE body has the wrong size")
        nonce_r, public_r, sealed = body[:32], body[32:64], body[64:]
        hs = hkdf_extract(self._psk, _dh(self._private, public_r))
        h1, s_hs, plaintext = self._open_challenge(hs, header, nonce_r, public_r, sealed)
        peer_limit = decode_stream_limit(plaintext)
        peer = _decode_node_id(plaintext[STREAM_LIMIT_SIZE:])
        if self._expected is not None and not _hmac.compare_digest(peer, self._expected):
            raise PeerIdMismatch(f"peer proved node id {peer!r}, expected {self._expected!r}")
        session_id = compute_session_id(self.nonce, nonce_r, self._node_id, peer)
        auth_header = auth_header_for(session_id)
        _check_header(auth_header, session_id, ValueError)
        c_hs = hkdf_expand_label(hs, "c hs", h1, SECRET_SIZE)
        h2 = _sha256(h1, sealed)
        proof = AESGCM(c_hs).encrypt(_NONCE_0, _finished_mac(c_hs, h2), auth_header)
        self._result = _InitiatorResult((header, body), proof, hs, s_hs, _sha256(h2, proof))
        self.session_id = session_id
        self.peer_node_id = peer
        self.peer_max_streams = peer_limit
        self._private = None  # forward secrecy: the ephemeral key has done its job
        return proof

    def _open_challenge(self, hs: bytes, header: bytes, nonce_r: bytes, public_r: bytes,
                        sealed: bytes) -> tuple[bytes, bytes, bytes]:
        """Try the transcript of each remembered HELLO variant, newest first.

        After a RETRY the responder may answer either the HELLO with the
        cookie or an earlier one still in flight; each gives a different h1.
        """
        aad = header + nonce_r + public_r
        for variant in reversed(self._hellos.values()):
            h1 = _h1(variant.transcript_part, nonce_r, public_r)
            s_hs = hkdf_expand_label(hs, "s hs", h1, SECRET_SIZE)
            try:
                return h1, s_hs, AESGCM(s_hs).decrypt(_NONCE_0, sealed, aad)
            except InvalidTag:
                continue
        raise HandshakeAuthError("CHALLENGE failed authentication: the seeds differ")

    def on_final(self, header: bytes, body: bytes) -> HandshakeKeys:
        """Verify FINAL (the responder's key confirmation) and return the keys.

        Raises:
            HandshakeError: malformed, or FINAL before an accepted CHALLENGE.
            HandshakeAuthError: FINAL does not verify.
        """
        result = self._result
        if result is None or self.session_id is None or self.peer_node_id is None:
            raise HandshakeError("FINAL before CHALLENGE")
        _check_header(header, self.session_id, HandshakeError)
        if len(body) != _PROOF_SIZE:
            raise HandshakeError("FINAL body has the wrong size")
        mac = _open(result.s_hs, _NONCE_1, header, body)
        if not _hmac.compare_digest(mac, _finished_mac(result.s_hs, result.h3)):
            raise HandshakeAuthError("FINAL key confirmation failed")
        return self.traffic_keys()

    def traffic_keys(self) -> HandshakeKeys:
        """The session keys, known as soon as a CHALLENGE verified.

        The responder proved the seed and its ephemeral key by sealing the
        CHALLENGE, and h3 covers our AUTH_PROOF, so nothing FINAL carries is
        needed to derive them: the initiator installs them at once and is
        established one round trip earlier (protocol.md §6.3).

        Raises:
            HandshakeError: no CHALLENGE was accepted yet.
        """
        result = self._result
        if result is None or self.session_id is None or self.peer_node_id is None:
            raise HandshakeError("no CHALLENGE accepted yet")
        if result.keys is None:
            result.keys = _traffic_keys(result.hs, result.h3, initiator=True,
                                        session_id=self.session_id,
                                        peer_node_id=self.peer_node_id)
        return result.keys


# --------------------------------------------------------------------------- responder


class Responder:
    """The accepting side: HELLO in, CHALLENGE out, AUTH_PROOF in, FINAL out.

    ``read_hello`` is the cheap, stateless gate; constructing a ``Responder``
    does the Diffie-Hellman and fixes ``nonce``, ``session_id`` and
    ``peer_node_id``. Randomness order: ``nonce_r`` (32), then the ephemeral
    private key (32).
    """

    __slots__ = ("_auth", "_c_hs", "_challenge", "_final", "_h1", "_h2", "_hello_nonce",
                 "_hs", "_keys", "_max_streams", "_node_id", "_public", "_s_hs", "nonce",
                 "peer_max_streams", "peer_node_id", "session_id")

    @staticmethod
    def read_hello(psk: bytes, header: bytes, body: bytes) -> HelloInfo:
        """Parse and authenticate a HELLO: one HKDF and one AEAD open, no DH.

        The header id must be ``nonce_i[:8]`` and the padding must be zeros.

        Raises:
            HandshakeAuthError: the HELLO was not sealed under our PSK.
            HandshakeError: malformed.
        """
        if len(body) < NONCE_SIZE + 3:
            raise HandshakeError("HELLO body too short")
        nonce = bytes(body[:NONCE_SIZE])
        _check_header(header, nonce[:8], HandshakeError)
        cookie_end = NONCE_SIZE + 1 + body[NONCE_SIZE]
        sealed_start = cookie_end + 2
        if len(body) < sealed_start:
            raise HandshakeError("HELLO truncated in its cookie")
        end = sealed_start + int.from_bytes(body[cookie_end:sealed_start], "big")
        if not _HELLO_SEALED_MIN <= end - sealed_start <= _HELLO_SEALED_MAX or len(body) < end:
            raise HandshakeError("HELLO sealed part has a bad length")
        if body[end:] != bytes(len(body) - end):
            raise HandshakeError("HELLO padding is not zeros")
        plaintext = _open(_hello_key(psk, nonce), _NONCE_0, header + nonce,
                          body[sealed_start:end])
        return HelloInfo(
            nonce=nonce,
            cookie=bytes(body[NONCE_SIZE + 1:cookie_end]),
            ephemeral_public=plaintext[:PUBLIC_KEY_SIZE],
            node_id=_decode_node_id(plaintext[PUBLIC_KEY_SIZE + 1 + STREAM_LIMIT_SIZE:]),
            aead_id=plaintext[PUBLIC_KEY_SIZE],
            max_streams=decode_stream_limit(plaintext, PUBLIC_KEY_SIZE + 1),
            transcript_part=header + body[:end],
        )

    def __init__(self, *, psk: bytes, node_id: bytes, random_bytes: Callable[[int], bytes],
                 hello: HelloInfo, max_streams: int = 1024) -> None:
        """Draw our nonce and ephemeral key, do the DH and derive handshake keys.

        ``max_streams`` (``Config.max_streams_per_session``) is announced in
        CHALLENGE: how many streams the initiator may have open at once.

        Raises:
            ValueError: a bad ``node_id``, ``psk`` or ``random_bytes``.
            HandshakeError: the HELLO's ephemeral key is a low-order point
                (only a holder of the seed can send one; drop the HELLO).
        """
        if not psk:
            raise ValueError("psk must not be empty")
        self._node_id = _check_node_id(node_id, "node_id")
        self._max_streams = max_streams
        self.nonce: bytes = _draw(random_bytes, NONCE_SIZE)
        """Our 32-byte nonce."""
        private = X25519PrivateKey.from_private_bytes(_draw(random_bytes, 32))
        self._public = private.public_key().public_bytes_raw()
        self._hs = hkdf_extract(psk, _dh(private, hello.ephemeral_public))
        self._h1 = _h1(hello.transcript_part, self.nonce, self._public)
        self._c_hs = hkdf_expand_label(self._hs, "c hs", self._h1, SECRET_SIZE)
        self._s_hs = hkdf_expand_label(self._hs, "s hs", self._h1, SECRET_SIZE)
        self._hello_nonce = hello.nonce
        self.session_id: bytes = compute_session_id(hello.nonce, self.nonce, hello.node_id,
                                                    self._node_id)
        """The session id both sides compute; the caller checks it for collisions."""
        self.peer_node_id: bytes = hello.node_id
        """The initiator's node id (authenticated by the HELLO's PSK seal)."""
        self.peer_max_streams: int = hello.max_streams
        """The initiator's stream limit for our opens (from the sealed HELLO)."""
        self._challenge: tuple[bytes, bytes] | None = None
        self._h2 = b""
        self._auth: tuple[bytes, bytes] | None = None
        self._keys: HandshakeKeys | None = None
        self._final: tuple[bytes, bytes] | None = None

    @property
    def hello_nonce(self) -> bytes:
        """The initiator's nonce from the HELLO this handshake answers.

        The acceptor compares a retransmitted HELLO against it before that
        HELLO may keep the pending handshake alive (protocol.md §6.7).
        """
        return self._hello_nonce

    def challenge(self, header: bytes) -> bytes:
        """The CHALLENGE body; built once, identical on every call.

        Raises:
            ValueError: the header is not ours or differs from the first one.
        """
        _check_header(header, self._hello_nonce[:8], ValueError)
        if self._challenge is None:
            aad = header + self.nonce + self._public
            plaintext = encode_stream_limit(self._max_streams) + _encode_node_id(self._node_id)
            sealed = AESGCM(self._s_hs).encrypt(_NONCE_0, plaintext, aad)
            self._h2 = _sha256(self._h1, sealed)
            self._challenge = (header, self.nonce + self._public + sealed)
        elif header != self._challenge[0]:
            raise ValueError("CHALLENGE header changed between calls")
        return self._challenge[1]

    def on_auth_proof(self, header: bytes, body: bytes) -> HandshakeKeys:
        """Verify AUTH_PROOF (the initiator's key confirmation); return the keys.

        A duplicate of the accepted AUTH_PROOF returns the same keys.

        Raises:
            RuntimeError: ``challenge`` was never called (a caller bug).
            HandshakeError: malformed, or a different AUTH_PROOF after one was accepted.
            HandshakeAuthError: AUTH_PROOF does not verify.
        """
        if self._challenge is None:
            raise RuntimeError("on_auth_proof before challenge()")
        if self._keys is not None:
            if self._auth == (header, body):
                return self._keys
            raise HandshakeError("a different AUTH_PROOF after one was accepted")
        _check_header(header, self.session_id, HandshakeError)
        if len(body) != _PROOF_SIZE:
            raise HandshakeError("AUTH_PROOF body has the wrong size")
        mac = _open(self._c_hs, _NONCE_0, header, body)
        if not _hmac.compare_digest(mac, _finished_mac(self._c_hs, self._h2)):
            raise HandshakeAuthError("AUTH_PROOF key confirmation failed")
        self._auth = (header, body)
        self._keys = _traffic_keys(self._hs, _sha256(self._h2, body), initiator=False,
                                   session_id=self.session_id, peer_node_id=self.peer_node_id)
        return self._keys

    def final(self, header: bytes) -> bytes:
        """The FINAL body; built once, identical on every call.

        Raises:
            RuntimeError: no AUTH_PROOF was accepted yet (a caller bug).
            ValueError: the header is not ours or differs from the first one.
        """
        if self._auth is None:
            raise RuntimeError("final() before an accepted AUTH_PROOF")
        _check_header(header, self.session_id, ValueError)
        if self._final is None:
            self._final = (header, seal_final(self.final_material(), header))
        elif header != self._final[0]:
            raise ValueError("FINAL header changed between calls")
        return self._final[1]

    def final_material(self) -> bytes:
        """``s_hs || h3``: all that FINAL is made of, for a caller that builds it
        later (``seal_final``) instead of keeping this object, or FINAL, around.

        Raises:
            RuntimeError: no AUTH_PROOF was accepted yet (a caller bug).
        """
        if self._auth is None:
            raise RuntimeError("final_material() before an accepted AUTH_PROOF")
        return self._s_hs + _sha256(self._h2, self._auth[1])
