"""Tests for stt_core.crypto: known vectors, an independent stdlib re-derivation, AEAD misuse."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given
from hypothesis import strategies as st

from stt_core.crypto import (
    MAX_PACKET_NUMBER,
    TAG_SIZE,
    DecryptError,
    PacketProtection,
    derive_psk,
    hkdf_expand_label,
    hkdf_extract,
    hmac_sha256,
    next_generation_secret,
)

AEADS = ["aes-256-gcm", "chacha20-poly1305"]
SECRET = bytes(range(32))


def stdlib_expand_label(secret: bytes, label: str, context: bytes, length: int) -> bytes:
    """HKDF-Expand written out from RFC 5869 with the stdlib, independent of crypto.py."""
    info = b"stt " + label.encode() + b"\x00" + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def manual_nonce(secret: bytes, packet_number: int) -> bytes:
    """iv XOR pn, with pn big-endian in the low 8 bytes (protocol.md §5)."""
    iv = stdlib_expand_label(secret, "iv", b"", 12)
    pn = packet_number.to_bytes(8, "big")
    return iv[:4] + bytes(a ^ b for a, b in zip(iv[4:], pn, strict=True))


# --------------------------------------------------------------------------- HKDF


def test_hkdf_extract_matches_rfc5869_test_case_1() -> None:
    salt = bytes(range(13))
    ikm = b"\x0b" * 22
    prk = "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    assert hkdf_extract(salt, ikm).hex() == prk


def test_hkdf_extract_with_empty_salt_equals_zero_salt() -> None:
    assert hkdf_extract(b"", b"ikm") == hkdf_extract(bytes(32), b"ikm")


@given(secret=st.binary(min_size=32, max_size=32), label=st.text(min_size=1, max_size=20)
       .filter(lambda s: "\x00" not in s), context=st.binary(max_size=64),
       length=st.integers(min_value=1, max_value=100))
def test_hkdf_expand_label_matches_stdlib_derivation(secret: bytes, label: str,
                                                      context: bytes, length: int) -> None:
    assert hkdf_expand_label(secret, label, context, length) == \
        stdlib_expand_label(secret, label, context, length)


@given(secret=st.binary(min_size=32, max_size=64), label=st.sampled_from(
       ["key", "iv", "ku", "c hs", "s hs", "finished", "c ap", "s ap", "res", "hello", "psk"]),
       context=st.binary(max_size=64), length=st.integers(min_value=1, max_value=200))
def test_hkdf_expand_label_matches_cryptography_hkdf(secret: bytes, label: str,
                                                     context: bytes, length: int) -> None:
    """The HMAC-based HKDF gives exactly what cryptography's HKDF-Expand gives."""
    info = b"stt " + label.encode() + b"\x00" + context
    expected = HKDFExpand(hashes.SHA256(), length, info).derive(secret)
    assert hkdf_expand_label(secret, label, context, length) == expected


def test_hkdf_matches_rfc5869_test_case_1_end_to_end() -> None:
    """Extract then a 42-byte (two-block) Expand, against the RFC's OKM and cryptography."""
    salt, ikm = bytes(range(13)), b"\x0b" * 22
    okm = ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
           "34007208d5b887185865")
    rfc_info = bytes(range(0xF0, 0xFA))
    assert HKDF(hashes.SHA256(), 42, salt, rfc_info).derive(ikm).hex() == okm
    # Our label convention fixes the info prefix; the same PRK through both
    # implementations must agree for every block count, including the maximum.
    prk = hkdf_extract(salt, ikm)
    for length in (1, 12, 32, 33, 42, 64, 65, 255 * 32):
        info = b"stt label\x00ctx"
        assert hkdf_expand_label(prk, "label", b"ctx", length) == \
            HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def test_hmac_sha256_matches_rfc4231_test_case_2() -> None:
    mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hkdf_expand_label_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="length"):
        hkdf_expand_label(SECRET, "key", b"", 0)
    with pytest.raises(ValueError, match="length"):
        hkdf_expand_label(SECRET, "key", b"", 255 * 32 + 1)
    with pytest.raises(ValueError, match="NUL"):
        hkdf_expand_label(SECRET, "a\x00b", b"", 32)
    assert len(hkdf_expand_label(SECRET, "key", b"", 255 * 32)) == 255 * 32


def test_labels_and_contexts_separate_outputs() -> None:
    outputs = {
        hkdf_expand_label(SECRET, "key", b"", 32),
        hkdf_expand_label(SECRET, "iv", b"", 32),
        hkdf_expand_label(SECRET, "key", b"x", 32),
        hkdf_expand_label(SECRET, "ke", b"y", 32),
    }
    assert len(outputs) == 4


def test_derive_psk_formula_and_separation() -> None:
    seed = b"correct horse battery staple"
    expected = stdlib_expand_label(
        hmac.new(b"stt v1 psk", seed, hashlib.sha256).digest(), "psk", b"", 32)
    assert derive_psk(seed) == expected
    assert len(derive_psk(b"")) == 32
    assert derive_psk(seed) != derive_psk(seed + b"!")


def test_next_generation_secret_formula() -> None:
    nxt = next_generation_secret(SECRET)
    assert nxt == stdlib_expand_label(SECRET, "ku", b"", 32)
    assert nxt != SECRET
    assert next_generation_secret(nxt) not in (SECRET, nxt)


# --------------------------------------------------------------------------- AEAD


@pytest.mark.parametrize("aead", AEADS)
def test_round_trip(aead: str) -> None:
    sender = PacketProtection(aead, SECRET)
    receiver = PacketProtection(aead, SECRET)
    for pn, payload in [(0, b""), (1, b"hello"), (MAX_PACKET_NUMBER, b"x" * 1500)]:
        sealed = sender.seal(pn, b"header", payload)
        assert len(sealed) == len(payload) + TAG_SIZE
        assert receiver.open(pn, b"header", sealed) == payload


@pytest.mark.parametrize(("aead", "cls"), [("aes-256-gcm", AESGCM),
                                           ("chacha20-poly1305", ChaCha20Poly1305)])
def test_key_and_nonce_follow_the_spec(aead: str, cls: type[AESGCM] | type[ChaCha20Poly1305],
                                       ) -> None:
    """Re-derive key and nonce by hand and seal with the raw primitive: same bytes."""
    key = stdlib_expand_label(SECRET, "key", b"", 32)
    for pn in (0, 1, 0x0102030405060708, MAX_PACKET_NUMBER):
        expected = cls(key).encrypt(manual_nonce(SECRET, pn), b"payload", b"hdr")
        assert PacketProtection(aead, SECRET).seal(pn, b"hdr", b"payload") == expected


@given(pns=st.lists(st.integers(min_value=0, max_value=MAX_PACKET_NUMBER),
                    min_size=2, max_size=50, unique=True))
def test_distinct_packet_numbers_give_distinct_nonces(pns: list[int]) -> None:
    assert len({manual_nonce(SECRET, pn) for pn in pns}) == len(pns)
    protection = PacketProtection("aes-256-gcm", SECRET)
    # Same plaintext and header: a repeated nonce would repeat the ciphertext.
    assert len({protection.seal(pn, b"h", bytes(16)) for pn in pns}) == len(pns)


@pytest.mark.parametrize("aead", AEADS)
def test_wrong_packet_number_header_or_secret_fails(aead: str) -> None:
    protection = PacketProtection(aead, SECRET)
    sealed = protection.seal(7, b"header", b"payload")
    with pytest.raises(DecryptError):
        protection.open(8, b"header", sealed)
    with pytest.raises(DecryptError):
        protection.open(7, b"headex", sealed)
    with pytest.raises(DecryptError):
        PacketProtection(aead, next_generation_secret(SECRET)).open(7, b"header", sealed)
    other = AEADS[1 - AEADS.index(aead)]
    with pytest.raises(DecryptError):
        PacketProtection(other, SECRET).open(7, b"header", sealed)


@pytest.mark.parametrize("aead", AEADS)
def test_every_flipped_bit_fails(aead: str) -> None:
    protection = PacketProtection(aead, SECRET)
    header, sealed = b"hd", protection.seal(3, b"hd", b"abc")
    for i in range(len(sealed) * 8):
        corrupted = bytearray(sealed)
        corrupted[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecryptError):
            protection.open(3, header, bytes(corrupted))
    for i in range(len(header) * 8):
        bad_header = bytearray(header)
        bad_header[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecryptError):
            protection.open(3, bytes(bad_header), sealed)


@pytest.mark.parametrize("aead", AEADS)
def test_truncated_and_short_inputs_fail(aead: str) -> None:
    protection = PacketProtection(aead, SECRET)
    sealed = protection.seal(1, b"h", b"payload")
    for cut in range(len(sealed)):
        with pytest.raises(DecryptError):
            protection.open(1, b"h", sealed[:cut])
    with pytest.raises(DecryptError):
        protection.open(1, b"h", sealed + b"\x00")


@pytest.mark.parametrize("aead", AEADS)
def test_seal_into_and_open_into_match_seal_and_open(aead: str) -> None:
    sender = PacketProtection(aead, SECRET)
    receiver = PacketProtection(aead, SECRET)
    payload = bytes(range(256)) * 256  # 64 KiB, the size the buffers are for
    out = bytearray(len(payload) + TAG_SIZE + 10)
    for pn in (0, 5, MAX_PACKET_NUMBER):
        view = memoryview(out)[:len(payload) + TAG_SIZE]
        sender.seal_into(pn, b"header", memoryview(payload), view)
        assert bytes(view) == sender.seal(pn, b"header", payload)
        opened = bytearray(len(payload))
        receiver.open_into(pn, b"header", view, memoryview(opened))
        assert opened == payload


@pytest.mark.parametrize("aead", AEADS)
def test_open_into_rejects_tampering_and_seal_into_a_wrong_size(aead: str) -> None:
    protection = PacketProtection(aead, SECRET)
    sealed = bytearray(protection.seal(9, b"h", b"x" * 100))
    out = memoryview(bytearray(100))
    sealed[50] ^= 1
    with pytest.raises(DecryptError):
        protection.open_into(9, b"h", bytes(sealed), out)
    with pytest.raises(DecryptError):
        protection.open_into(9, b"h", b"short", memoryview(bytearray(0)))
    with pytest.raises(ValueError):
        protection.seal_into(9, b"h", b"x" * 100, memoryview(bytearray(100)))  # no tag room
    with pytest.raises(ValueError):
        protection.seal_into(-1, b"h", b"x", memoryview(bytearray(1 + TAG_SIZE)))


def test_packet_number_range() -> None:
    protection = PacketProtection("aes-256-gcm", SECRET)
    for pn in (-1, MAX_PACKET_NUMBER + 1):
        with pytest.raises(ValueError, match="64 bits"):
            protection.seal(pn, b"", b"")
        with pytest.raises(DecryptError):
            protection.open(pn, b"", bytes(TAG_SIZE))


def test_constructor_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="unknown AEAD"):
        PacketProtection("aes-128-gcm", SECRET)
    with pytest.raises(ValueError, match="32 bytes"):
        PacketProtection("aes-256-gcm", SECRET[:16])
    text = repr(PacketProtection("chacha20-poly1305", SECRET))
    assert "chacha20-poly1305" in text
    assert SECRET.hex() not in text and repr(SECRET) not in text


@given(payload=st.binary(max_size=2000), header=st.binary(max_size=40),
       pn=st.integers(min_value=0, max_value=MAX_PACKET_NUMBER), aead=st.sampled_from(AEADS))
def test_round_trip_property(payload: bytes, header: bytes, pn: int, aead: str) -> None:
    protection = PacketProtection(aead, SECRET)
    assert protection.open(pn, header, protection.seal(pn, header, payload)) == payload


@pytest.mark.parametrize("aead", AEADS)
def test_released_context_is_rebuilt_from_the_same_key(aead: str) -> None:
    kept = PacketProtection(aead, SECRET)
    released = PacketProtection(aead, SECRET)
    released.release()
    held_once_released = released.holds_context  # a local, so the check below is not narrowed
    assert not held_once_released
    sealed = released.seal(5, b"header", b"payload")
    assert released.holds_context
    assert sealed == kept.seal(5, b"header", b"payload")
    released.release()
    released.release()  # idempotent
    assert released.open(5, b"header", sealed) == b"payload"
    released.release()
    with pytest.raises(DecryptError):
        released.open(5, b"headeR", sealed)
    assert "secret hidden" in repr(released)
