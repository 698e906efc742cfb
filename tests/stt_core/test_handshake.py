"""Tests for stt_core.handshake: full runs, failures, tampering, determinism, codecs, garbage."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_core.crypto import derive_psk
from stt_core.handshake import (
    HandshakeAuthError,
    HandshakeError,
    HandshakeKeys,
    HelloInfo,
    Initiator,
    PeerIdMismatch,
    Responder,
    compute_session_id,
    decode_reject,
    decode_retry,
    encode_reject,
    encode_retry,
    seal_final,
)

PSK = derive_psk(b"shared seed")
OTHER_PSK = derive_psk(b"another seed")
VERSION = 1


def header(packet_type: int, ident: bytes) -> bytes:
    return bytes((packet_type, VERSION)) + ident


def auth_header(session_id: bytes) -> bytes:
    return header(0x03, session_id)


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


@dataclass
class Run:
    """Every message and both sides of one complete handshake."""

    initiator: Initiator
    responder: Responder
    hello: tuple[bytes, bytes]
    challenge: tuple[bytes, bytes]
    auth: tuple[bytes, bytes]
    final: tuple[bytes, bytes]
    initiator_keys: HandshakeKeys
    responder_keys: HandshakeKeys


def run(seed: int = 1, *, node_i: bytes = b"alice", node_r: bytes = b"bob",
        expected: bytes | None = None, cookie: bytes = b"", pad_to: int = 1200) -> Run:
    initiator = Initiator(psk=PSK, node_id=node_i, random_bytes=seeded(seed),
                          expected_peer_node_id=expected, pad_to=pad_to)
    hello_header = header(0x01, initiator.handshake_id)
    hello = initiator.hello(hello_header, cookie)
    info = Responder.read_hello(PSK, hello_header, hello)
    responder = Responder(psk=PSK, node_id=node_r, random_bytes=seeded(seed + 1000), hello=info)
    challenge_header = header(0x02, initiator.handshake_id)
    challenge = responder.challenge(challenge_header)
    proof = initiator.on_challenge(challenge_header, challenge, auth_header)
    responder_keys = responder.on_auth_proof(auth_header(responder.session_id), proof)
    final_header = header(0x04, responder.session_id)
    final = responder.final(final_header)
    initiator_keys = initiator.on_final(final_header, final)
    return Run(initiator, responder, (hello_header, hello), (challenge_header, challenge),
               (auth_header(responder.session_id), proof), (final_header, final),
               initiator_keys, responder_keys)


def flips(data: bytes) -> list[bytes]:
    """``data`` with one bit flipped, once per byte position."""
    return [data[:i] + bytes((data[i] ^ 0x01,)) + data[i + 1:] for i in range(len(data))]


# --------------------------------------------------------------------------- happy path


def test_full_handshake_both_sides_agree() -> None:
    r = run()
    ki, kr = r.initiator_keys, r.responder_keys
    assert r.initiator.session_id == r.responder.session_id == ki.session_id == kr.session_id
    assert len(ki.session_id) == 8
    assert ki.peer_node_id == r.initiator.peer_node_id == b"bob"
    assert kr.peer_node_id == r.responder.peer_node_id == b"alice"
    assert ki.send_secret == kr.receive_secret
    assert ki.receive_secret == kr.send_secret
    assert ki.resumption_secret == kr.resumption_secret
    secrets = {ki.send_secret, ki.receive_secret, ki.resumption_secret}
    assert len(secrets) == 3 and all(len(s) == 32 for s in secrets)
    assert r.initiator.handshake_id == r.initiator.nonce[:8]
    assert r.initiator.session_id == compute_session_id(
        r.initiator.nonce, r.responder.nonce, b"alice", b"bob")


def test_message_sizes() -> None:
    r = run(node_i=b"a" * 64, node_r=b"b")
    assert len(r.hello[0] + r.hello[1]) == 1200
    assert len(r.challenge[1]) == 32 + 32 + 4 + 1 + 1 + 16  # nonce, key, limit, node id, tag
    assert len(r.auth[1]) == len(r.final[1]) == 32 + 16
    unpadded = run(pad_to=0).hello[1]
    # key, AEAD, stream limit, node id, tag
    assert len(unpadded) == 32 + 1 + 0 + 2 + (32 + 1 + 4 + 1 + 5 + 16)


def test_expected_peer_node_id_match_and_mismatch() -> None:
    assert run(expected=b"bob").initiator_keys.peer_node_id == b"bob"
    with pytest.raises(PeerIdMismatch):
        run(expected=b"mallory")


def test_hello_carries_the_packet_aead_sealed() -> None:
    """The responder learns the initiator's packet AEAD from the sealed part
    (protocol.md §6.1), so it can refuse a mismatch before any session exists."""
    for name, number in (("aes-256-gcm", 1), ("chacha20-poly1305", 2)):
        initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(4), aead=name)
        hello_header = header(0x01, initiator.handshake_id)
        hello = initiator.hello(hello_header)
        info = Responder.read_hello(PSK, hello_header, hello)
        assert (info.aead_id, info.node_id) == (number, b"alice")
    with pytest.raises(ValueError, match="aead must be one of"):
        Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(4), aead="rot13")


def test_each_side_learns_the_others_stream_limit_sealed() -> None:
    """HELLO carries the initiator's limit and CHALLENGE the responder's, both
    sealed and in the transcript (protocol.md §5.1, §6.1, §6.2)."""
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(8), max_streams=7)
    hello_header = header(0x01, initiator.handshake_id)
    info = Responder.read_hello(PSK, hello_header, initiator.hello(hello_header))
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(9), hello=info,
                          max_streams=300_000)
    assert responder.peer_max_streams == info.max_streams == 7
    challenge_header = header(0x02, initiator.handshake_id)
    initiator.on_challenge(challenge_header, responder.challenge(challenge_header), auth_header)
    assert initiator.peer_max_streams == 300_000


def test_node_id_bounds() -> None:
    assert run(node_i=b"x", node_r=b"y" * 64).responder_keys.peer_node_id == b"x"
    for bad in (b"", b"z" * 65):
        with pytest.raises(ValueError, match="node_id"):
            Initiator(psk=PSK, node_id=bad, random_bytes=seeded(1))
        with pytest.raises(ValueError, match="expected_peer_node_id"):
            Initiator(psk=PSK, node_id=b"a", random_bytes=seeded(1), expected_peer_node_id=bad)
        info = Responder.read_hello(PSK, *run().hello)
        with pytest.raises(ValueError, match="node_id"):
            Responder(psk=PSK, node_id=bad, random_bytes=seeded(2), hello=info)


def test_keys_repr_hides_secrets() -> None:
    keys = run().initiator_keys
    text = repr(keys)
    for secret in (keys.send_secret, keys.receive_secret, keys.resumption_secret):
        assert repr(secret) not in text and secret.hex() not in text
    assert "session_id" in text


# --------------------------------------------------------------------------- wrong seeds


def test_wrong_psk_is_caught_by_read_hello() -> None:
    r = run()
    with pytest.raises(HandshakeAuthError):
        Responder.read_hello(OTHER_PSK, *r.hello)


def test_wrong_psk_on_responder_side_fails_on_challenge() -> None:
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(5))
    hello_header = header(0x01, initiator.handshake_id)
    info = Responder.read_hello(PSK, hello_header, initiator.hello(hello_header))
    responder = Responder(psk=OTHER_PSK, node_id=b"bob", random_bytes=seeded(6), hello=info)
    challenge_header = header(0x02, initiator.handshake_id)
    with pytest.raises(HandshakeAuthError):
        initiator.on_challenge(challenge_header, responder.challenge(challenge_header),
                               auth_header)
    assert initiator.session_id is None and initiator.peer_node_id is None


def test_confirmations_from_another_handshake_fail_authentication() -> None:
    """Well-formed AUTH_PROOF/FINAL sealed under other keys: the peer lacks our keys."""
    r, other = run(seed=9), run(seed=90)
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1009),
                          hello=Responder.read_hello(PSK, *r.hello))
    responder.challenge(r.challenge[0])
    with pytest.raises(HandshakeAuthError):
        responder.on_auth_proof(r.auth[0], other.auth[1])
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(9))
    initiator.hello(r.hello[0])
    initiator.on_challenge(*r.challenge, auth_header)
    with pytest.raises(HandshakeAuthError):
        initiator.on_final(r.final[0], other.final[1])


# --------------------------------------------------------------------------- tampering


def test_tampered_hello_is_rejected() -> None:
    r = run(cookie=b"cookie!")
    hello_header, hello = r.hello
    datagram = hello_header + hello
    for corrupted in flips(datagram):
        h, b = corrupted[:10], corrupted[10:]
        try:
            info = Responder.read_hello(PSK, h, b)
        except HandshakeError:
            continue
        # Only the cookie is outside the HELLO's seal; it is bound by the transcript.
        assert info.cookie != b"cookie!"
        responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(3), hello=info)
        initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(1))
        initiator.hello(hello_header, b"cookie!")
        with pytest.raises(HandshakeAuthError):
            initiator.on_challenge(r.challenge[0], responder.challenge(r.challenge[0]),
                                   auth_header)


def test_tampered_challenge_is_rejected_and_changes_nothing() -> None:
    r = run(seed=3)
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(3))
    initiator.hello(r.hello[0])
    datagram = r.challenge[0] + r.challenge[1]
    for corrupted in flips(datagram):
        with pytest.raises(HandshakeError):
            initiator.on_challenge(corrupted[:10], corrupted[10:], auth_header)
        assert initiator.session_id is None
    assert initiator.on_challenge(*r.challenge, auth_header) == r.auth[1]


def test_tampered_auth_proof_is_rejected_and_changes_nothing() -> None:
    r = run(seed=4)
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1004),
                          hello=Responder.read_hello(PSK, *r.hello))
    responder.challenge(r.challenge[0])
    for corrupted in flips(r.auth[0] + r.auth[1]):
        with pytest.raises(HandshakeError):
            responder.on_auth_proof(corrupted[:10], corrupted[10:])
    assert responder.on_auth_proof(*r.auth) == r.responder_keys


def test_tampered_final_is_rejected_and_changes_nothing() -> None:
    r = run(seed=5)
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(5))
    initiator.hello(r.hello[0])
    initiator.on_challenge(*r.challenge, auth_header)
    for corrupted in flips(r.final[0] + r.final[1]):
        with pytest.raises(HandshakeError):
            initiator.on_final(corrupted[:10], corrupted[10:])
    assert initiator.on_final(*r.final) == r.initiator_keys


def test_truncated_messages_are_malformed() -> None:
    r = run(seed=6)
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(6))
    initiator.hello(r.hello[0])
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1006),
                          hello=Responder.read_hello(PSK, *r.hello))
    responder.challenge(r.challenge[0])
    unpadded = 32 + 1 + 2 + 32 + 1 + 5 + 16
    for cut in range(unpadded):
        with pytest.raises(HandshakeError):
            Responder.read_hello(PSK, r.hello[0], r.hello[1][:cut])
    for cut in range(len(r.challenge[1])):
        with pytest.raises(HandshakeError):
            initiator.on_challenge(r.challenge[0], r.challenge[1][:cut], auth_header)
    for cut in range(len(r.auth[1])):
        with pytest.raises(HandshakeError):
            responder.on_auth_proof(r.auth[0], r.auth[1][:cut])
    with pytest.raises(HandshakeError):
        initiator.on_challenge(r.challenge[0], r.challenge[1] + b"\x00", auth_header)


def test_padding_may_be_trimmed_but_must_be_zero() -> None:
    r = run()
    hello_header, hello = r.hello
    assert Responder.read_hello(PSK, hello_header, hello.rstrip(b"\x00") + bytes(5)).nonce \
        == r.initiator.nonce
    with pytest.raises(HandshakeError, match="padding"):
        Responder.read_hello(PSK, hello_header, hello[:-1] + b"\x01")


def test_hello_header_id_must_be_the_nonce_prefix() -> None:
    r = run()
    with pytest.raises(HandshakeError):
        Responder.read_hello(PSK, header(0x01, bytes(8)), r.hello[1])
    with pytest.raises(HandshakeError):
        Responder.read_hello(PSK, r.hello[0][:9], r.hello[1])


# --------------------------------------------------------------------------- retransmission


def test_retransmitted_bodies_are_byte_identical() -> None:
    r = run(seed=7)
    assert r.initiator.hello(r.hello[0]) == r.hello[1]
    assert r.responder.challenge(r.challenge[0]) == r.challenge[1]
    assert r.initiator.on_challenge(*r.challenge, auth_header) == r.auth[1]
    assert r.responder.on_auth_proof(*r.auth) == r.responder_keys
    assert r.responder.final(r.final[0]) == r.final[1]
    assert r.initiator.on_final(*r.final) == r.initiator_keys


def test_final_built_later_from_its_material_is_the_same_final() -> None:
    """A server keeps ``final_material()`` (64 bytes), not the responder, and builds
    FINAL only if a repeated AUTH_PROOF asks for it: the same bytes, which verify."""
    r = run(seed=8)
    material = r.responder.final_material()
    assert len(material) == 64
    assert seal_final(material, r.final[0]) == r.final[1]
    other = run(seed=9)
    assert seal_final(other.responder.final_material(), r.final[0]) != r.final[1]
    with pytest.raises(RuntimeError, match="final_material"):
        Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(3),
                  hello=Responder.read_hello(PSK, *r.hello)).final_material()


def test_changed_headers_for_our_own_messages_are_caller_errors() -> None:
    r = run(seed=8)
    with pytest.raises(ValueError):
        r.initiator.hello(header(0x07, r.initiator.handshake_id))
    with pytest.raises(ValueError):
        r.initiator.hello(header(0x01, bytes(8)))
    with pytest.raises(ValueError):
        r.initiator.hello(r.hello[0], b"c" * 256)
    with pytest.raises(ValueError):
        r.responder.challenge(header(0x09, r.initiator.handshake_id))
    with pytest.raises(ValueError):
        r.responder.final(header(0x09, r.responder.session_id))


def test_a_different_second_challenge_or_proof_is_refused() -> None:
    r = run(seed=10)
    other = run(seed=11)
    with pytest.raises(HandshakeError):
        r.initiator.on_challenge(r.challenge[0], other.challenge[1], auth_header)
    with pytest.raises(HandshakeError):
        r.responder.on_auth_proof(r.auth[0], other.auth[1])


def test_out_of_order_calls() -> None:
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(12))
    r = run(seed=12)
    with pytest.raises(HandshakeError):
        initiator.on_challenge(*r.challenge, auth_header)  # no HELLO yet
    with pytest.raises(HandshakeError):
        initiator.on_final(*r.final)
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1012),
                          hello=Responder.read_hello(PSK, *r.hello))
    with pytest.raises(RuntimeError):
        responder.on_auth_proof(*r.auth)
    with pytest.raises(RuntimeError):
        responder.final(r.final[0])


def test_challenge_for_an_earlier_hello_variant_is_accepted() -> None:
    """After a RETRY the responder may still answer the cookieless HELLO."""
    for answered in (b"", b"cookie"):
        initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(13))
        hello_header = header(0x01, initiator.handshake_id)
        bodies = {c: initiator.hello(hello_header, c) for c in (b"", b"cookie")}
        assert bodies[b""] != bodies[b"cookie"]
        assert initiator.hello(hello_header) == bodies[b""]
        info = Responder.read_hello(PSK, hello_header, bodies[answered])
        assert info.cookie == answered
        responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(14), hello=info)
        challenge_header = header(0x02, initiator.handshake_id)
        proof = initiator.on_challenge(challenge_header, responder.challenge(challenge_header),
                                       auth_header)
        keys = responder.on_auth_proof(auth_header(responder.session_id), proof)
        final_header = header(0x04, responder.session_id)
        assert initiator.on_final(final_header, responder.final(final_header)).send_secret \
            == keys.receive_secret


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_handshake_and_different_seed_differs() -> None:
    a, b, c = run(seed=20), run(seed=20), run(seed=21)
    for field in ("hello", "challenge", "auth", "final", "initiator_keys", "responder_keys"):
        assert getattr(a, field) == getattr(b, field)
        assert getattr(a, field) != getattr(c, field)


def test_ephemeral_key_comes_from_random_bytes() -> None:
    draws = [bytes([7]) * 32, bytes([9]) * 32]
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=lambda n: draws.pop(0))
    assert initiator.nonce == bytes([7]) * 32
    hello_header = header(0x01, initiator.handshake_id)
    info = Responder.read_hello(PSK, hello_header, initiator.hello(hello_header))
    expected = X25519PrivateKey.from_private_bytes(bytes([9]) * 32).public_key()
    assert info.ephemeral_public == expected.public_bytes_raw()


def test_bad_random_source_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="random_bytes"):
        Initiator(psk=PSK, node_id=b"a", random_bytes=lambda n: bytes(n - 1))


# --------------------------------------------------------------------------- session id


def test_session_id_hand_computation() -> None:
    nonce_i, nonce_r = bytes(range(32)), b"\xff" * 32
    assert compute_session_id(nonce_i, nonce_r, b"a", b"b") == bytes(0xFF ^ k for k in range(8))
    # With short nonces the node part shows: 11 22 33 44 | 00 00 'c' 'd' ('ab' vs 'abcdef').
    sid = compute_session_id(b"\x01\x02\x03\x04", b"\x10\x20\x30\x40", b"ab", b"abcdef")
    assert sid == bytes.fromhex("1122334400006364")
    assert compute_session_id(nonce_i, nonce_r, b"x", b"y") == \
        compute_session_id(nonce_r, nonce_i, b"y", b"x")


# --------------------------------------------------------------------------- low-order keys


def test_low_order_ephemeral_keys_are_malformed() -> None:
    r = run(seed=30)
    bad = HelloInfo(nonce=r.initiator.nonce, cookie=b"", ephemeral_public=bytes(32),
                    node_id=b"alice", aead_id=1, max_streams=1, transcript_part=b"x")
    with pytest.raises(HandshakeError):
        Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1), hello=bad)
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(30))
    initiator.hello(r.hello[0])
    body = r.challenge[1][:32] + bytes(32) + r.challenge[1][64:]
    with pytest.raises(HandshakeError):
        initiator.on_challenge(r.challenge[0], body, auth_header)


# --------------------------------------------------------------------------- refusals


@given(nonce=st.binary(min_size=32, max_size=32), reason=st.integers(0, 255))
def test_reject_round_trip(nonce: bytes, reason: int) -> None:
    body = encode_reject(nonce, reason)
    assert len(body) == 33
    assert decode_reject(body) == (nonce, reason)


@given(nonce=st.binary(min_size=32, max_size=32), cookie=st.binary(min_size=1, max_size=255))
def test_retry_round_trip(nonce: bytes, cookie: bytes) -> None:
    assert decode_retry(encode_retry(nonce, cookie)) == (nonce, cookie)


@given(body=st.binary(max_size=300))
def test_refusal_decoders_raise_only_handshake_error(body: bytes) -> None:
    """Whatever decodes re-encodes to the same bytes; everything else is HandshakeError."""
    try:
        nonce, reason = decode_reject(body)
    except HandshakeError:
        assert len(body) != 33
    else:
        assert encode_reject(nonce, reason) == body
    try:
        nonce, cookie = decode_retry(body)
    except HandshakeError:
        assert len(body) < 34 or body[32] != len(body) - 33
    else:
        assert encode_retry(nonce, cookie) == body


def test_refusal_codec_validation() -> None:
    with pytest.raises(ValueError):
        encode_reject(bytes(31), 1)
    with pytest.raises(ValueError):
        encode_reject(bytes(32), 256)
    with pytest.raises(ValueError):
        encode_retry(bytes(32), b"")
    with pytest.raises(ValueError):
        encode_retry(bytes(32), bytes(256))
    for body in (bytes(32), bytes(34)):
        with pytest.raises(HandshakeError):
            decode_reject(body)
    for body in (bytes(33), bytes(32) + b"\x01", bytes(32) + b"\x02\x00", bytes(32) + b"\x01ab"):
        with pytest.raises(HandshakeError):
            decode_retry(body)


# --------------------------------------------------------------------------- garbage


def _structured_hello(data: st.DataObject) -> bytes:
    cookie = data.draw(st.binary(max_size=8))
    sealed = data.draw(st.binary(min_size=40, max_size=120))
    return (data.draw(st.binary(min_size=32, max_size=32)) + bytes((len(cookie),)) + cookie
            + len(sealed).to_bytes(2, "big") + sealed + bytes(data.draw(st.integers(0, 20))))


@settings(max_examples=300)
@given(data=st.data())
def test_garbage_to_read_hello_raises_only_handshake_error(data: st.DataObject) -> None:
    body = data.draw(st.binary(max_size=400)) if data.draw(st.booleans()) \
        else _structured_hello(data)
    hdr = data.draw(st.one_of(st.just(header(0x01, body[:8])), st.binary(max_size=12)))
    with pytest.raises(HandshakeError):
        Responder.read_hello(PSK, hdr, body)


@settings(max_examples=300)
@given(body=st.binary(max_size=200), hdr=st.binary(max_size=12), sized=st.booleans())
def test_garbage_to_initiator_raises_only_handshake_error(body: bytes, hdr: bytes,
                                                          sized: bool) -> None:
    initiator = Initiator(psk=PSK, node_id=b"alice", random_bytes=seeded(40))
    hello_header = header(0x01, initiator.handshake_id)
    initiator.hello(hello_header)
    if sized:
        hdr = header(0x02, initiator.handshake_id)
    with pytest.raises(HandshakeError):
        initiator.on_challenge(hdr, body, auth_header)
    with pytest.raises(HandshakeError):
        initiator.on_final(hdr, body)


@settings(max_examples=200)
@given(body=st.binary(max_size=100))
def test_garbage_to_responder_raises_only_handshake_error(body: bytes) -> None:
    r = run(seed=41)
    responder = Responder(psk=PSK, node_id=b"bob", random_bytes=seeded(1041),
                          hello=Responder.read_hello(PSK, *r.hello))
    responder.challenge(r.challenge[0])
    with pytest.raises(HandshakeError):
        responder.on_auth_proof(r.auth[0], body)


# --------------------------------------------------------------------------- the spec, by hand


def _expand(secret: bytes, label: str, context: bytes) -> bytes:
    info = b"stt " + label.encode() + b"\x00" + context + b"\x01"
    return hmac.new(secret, info, hashlib.sha256).digest()  # one block: 32 bytes


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def test_messages_follow_the_documented_layout() -> None:
    """Re-derive every message from protocol.md §6 with stdlib HMAC and raw AES-GCM."""
    r = run(seed=50, cookie=b"ck")
    (hh, hello), (ch, challenge), (ah, proof), (fh, final) = r.hello, r.challenge, r.auth, r.final
    draw_i, draw_r = seeded(50), seeded(1050)
    nonce_i, e_i = draw_i(32), X25519PrivateKey.from_private_bytes(draw_i(32))
    nonce_r, e_r = draw_r(32), X25519PrivateKey.from_private_bytes(draw_r(32))
    e_i_pub, e_r_pub = e_i.public_key().public_bytes_raw(), e_r.public_key().public_bytes_raw()
    k_hello = _expand(_extract(nonce_i, PSK), "hello", b"")
    sealed_hello = AESGCM(k_hello).encrypt(bytes(12), e_i_pub + b"\x01\x00\x00\x04\x00\x05alice",
                                                 hh + nonce_i)
    unpadded = nonce_i + b"\x02ck" + len(sealed_hello).to_bytes(2, "big") + sealed_hello
    assert hello == unpadded + bytes(1200 - 10 - len(unpadded))
    dh = e_r.exchange(X25519PublicKey.from_public_bytes(e_i_pub))
    h1 = hashlib.sha256(b"stt hs v1" + hh + unpadded + nonce_r + e_r_pub).digest()
    hs = _extract(PSK, dh)
    c_hs, s_hs = _expand(hs, "c hs", h1), _expand(hs, "s hs", h1)
    sealed = AESGCM(s_hs).encrypt(bytes(12), b"\x00\x00\x04\x00\x03bob",
                                  ch + nonce_r + e_r_pub)
    assert challenge == nonce_r + e_r_pub + sealed
    h2 = hashlib.sha256(h1 + sealed).digest()
    mac_c = hmac.new(_expand(c_hs, "finished", b""), h2, hashlib.sha256).digest()
    assert proof == AESGCM(c_hs).encrypt(bytes(12), mac_c, ah)
    h3 = hashlib.sha256(h2 + proof).digest()
    mac_s = hmac.new(_expand(s_hs, "finished", b""), h3, hashlib.sha256).digest()
    assert final == AESGCM(s_hs).encrypt((1).to_bytes(12, "big"), mac_s, fh)
    master = _extract(hs, bytes(32))
    assert r.initiator_keys.send_secret == _expand(master, "c ap", h3)
    assert r.initiator_keys.receive_secret == _expand(master, "s ap", h3)
    assert r.initiator_keys.resumption_secret == _expand(master, "res", h3)
    sid = bytes(a ^ b for a, b in zip(nonce_i, nonce_r, strict=True))[:8]
    assert r.initiator_keys.session_id == sid and ah[2:] == sid and fh[2:] == sid
