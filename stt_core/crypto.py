"""Crypto: HKDF helpers, the PSK derivation, packet protection and key update.

This module owns the cryptographic building blocks every other layer uses
(protocol.md §6.4 "Packet protection" and §6.1-§6.3 "Handshake"):

* ``hkdf_extract`` / ``hkdf_expand_label``: HKDF-SHA256 (RFC 5869) with STT's
  label convention ``info = b"stt " + label + b"\\x00" + context``, in the
  spirit of TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1) but simpler.
* ``derive_psk``: the pre-shared key both nodes derive from the shared seed.
* ``PacketProtection``: one direction's AEAD (AES-256-GCM or
  ChaCha20-Poly1305) with the per-packet nonce ``iv XOR packet_number``
  (RFC 9001 §5.3 uses the same construction).
* ``next_generation_secret``: the secret of the next key phase (key update).

Every primitive comes from OpenSSL; nothing here is home-made. The AEADs
come through the ``cryptography`` package. HMAC-SHA256 comes through the
standard library's ``hmac.digest``, a single C call: ``cryptography``'s HMAC
and HKDF objects cost about a microsecond each to build, and a handshake runs
some 30 HMACs per side. HKDF is RFC 5869's two steps written over that HMAC
(Extract is one HMAC; Expand is one HMAC per 32 bytes of output), and the
tests check both against ``cryptography``'s HKDF and RFC 5869's vectors.

This module must not know about sessions, packets, frames, key phases or the
handshake: it turns secrets and bytes into bytes. It keeps no state besides
the keys handed to it, and it never reads a clock or draws randomness.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = [
    "AEAD_KEY_SIZE",
    "AEAD_NONCE_SIZE",
    "MAX_PACKET_NUMBER",
    "SECRET_SIZE",
    "TAG_SIZE",
    "DecryptError",
    "PacketProtection",
    "derive_psk",
    "hkdf_expand_label",
    "hkdf_extract",
    "hmac_sha256",
    "next_generation_secret",
]

TAG_SIZE: Final = 16
"""Bytes the AEAD tag adds to every sealed payload (both algorithms)."""
AEAD_KEY_SIZE: Final = 32
"""Key size of both AEADs (AES-256-GCM and ChaCha20-Poly1305), in bytes."""
AEAD_NONCE_SIZE: Final = 12
"""Nonce size of both AEADs, in bytes."""
SECRET_SIZE: Final = 32
"""Size of every secret in the key schedule (the SHA-256 output size)."""
MAX_PACKET_NUMBER: Final = (1 << 64) - 1
"""Packet numbers fill the low 8 bytes of the nonce, so they must fit 64 bits."""

_LABEL_PREFIX: Final = b"stt "
_HKDF_MAX_LENGTH: Final = 255 * SECRET_SIZE  # RFC 5869 §2.3: L <= 255 * HashLen
_PSK_SALT: Final = b"stt v1 psk"

_AeadType = type[AESGCM] | type[ChaCha20Poly1305]
_AEADS: Final[dict[str, _AeadType]] = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}


class DecryptError(Exception):
    """A sealed payload did not authenticate (wrong key, nonce, header or bytes).

    The caller drops the packet and counts it; a corrupted datagram is
    indistinguishable from a forged one, and both are simply lost.
    """


def _openssl_hmac() -> Callable[[bytes, bytes, str], bytes]:
    """The OpenSSL one-shot that ``hmac.digest`` itself calls, without its Python frame.

    The key schedule makes 17 HMACs per side and handshake, and that wrapper
    ran about 20 bytecodes for each. An interpreter without CPython's OpenSSL
    module gets ``hmac.digest``.
    """
    try:
        from _hashlib import hmac_digest
    except ImportError:
        return hmac.digest
    return hmac_digest


_hmac_digest = _openssl_hmac()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of ``message`` under ``key``: one call into OpenSSL."""
    return _hmac_digest(key, message, "sha256")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): HMAC-SHA256 keyed with ``salt`` over ``ikm``.

    An empty salt is allowed; HMAC pads keys with zeros, so it equals the
    RFC's default salt of 32 zero bytes.
    """
    return hmac_sha256(salt, ikm)


@functools.lru_cache(maxsize=64)
def _label_info_prefix(label: str) -> bytes:
    """``b"stt " + label + b"\\x00"``, built and checked once per label.

    Raises:
        ValueError: ``label`` contains NUL.
    """
    encoded = label.encode()
    if b"\x00" in encoded:
        raise ValueError("HKDF labels must not contain NUL bytes")
    return _LABEL_PREFIX + encoded + b"\x00"


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) with ``info = b"stt " + label + b"\\x00" + context``.

    The NUL byte ends the label, so no (label, context) pair can be read as
    another one: labels never contain NUL. Every length the protocol uses is
    at most 32 bytes, which is the RFC's first block ``T(1) = HMAC(secret,
    info || 0x01)`` alone; longer outputs chain further blocks as the RFC says.

    Raises:
        ValueError: ``length`` is outside 1..8160 or ``label`` contains NUL.
    """
    if not 1 <= length <= _HKDF_MAX_LENGTH:
        raise ValueError(f"HKDF output length must be 1..{_HKDF_MAX_LENGTH}, not {length}")
    info = _label_info_prefix(label) + context
    block = hmac_sha256(secret, info + b"\x01")
    if length <= SECRET_SIZE:
        return block[:length]
    blocks = [block]
    for counter in range(2, -(-length // SECRET_SIZE) + 1):
        block = hmac_sha256(secret, block + info + bytes((counter,)))
        blocks.append(block)
    return b"".join(blocks)[:length]


def derive_psk(shared_seed: bytes) -> bytes:
    """The 32-byte pre-shared key both nodes derive from their shared seed.

    The seed may be any length or quality a user chose; extracting it under a
    fixed salt first gives a uniform key, and the label keeps the PSK apart
    from anything else ever derived from the same seed.
    """
    return hkdf_expand_label(hkdf_extract(_PSK_SALT, shared_seed), "psk", b"", SECRET_SIZE)


def next_generation_secret(secret: bytes) -> bytes:
    """The traffic secret of the next key phase (key update, protocol.md §6.4).

    One-way: holding a later generation reveals nothing about earlier ones.
    """
    return hkdf_expand_label(secret, "ku", b"", SECRET_SIZE)


class PacketProtection:
    """One direction's packet protection: an AEAD key and its IV, fixed at birth.

    Built once per traffic secret (and again at each key update); ``seal`` and
    ``open`` are the per-packet hot path, so the AEAD object is created once
    and the IV is kept as an int to build each nonce with one XOR and one
    ``to_bytes``. The header is the associated data, so nothing in it can be
    changed without the packet failing to open.

    The caller guarantees each packet number is sealed at most once under one
    secret: that is what keeps every nonce unique (``iv XOR pn`` is a bijection
    on 64-bit packet numbers).

    The cipher context behind the AEAD object lives in OpenSSL's memory, about
    2.5 KiB each (more than the rest of an idle session), so an owner that goes
    quiet may ``release`` it. The secret stays (the owner keeps that very
    object for key updates anyway, so holding it here costs a pointer), and the
    next ``seal`` or ``open`` derives the key again and rebuilds the context
    (about 10 us, once per quiet spell). The slot is simply emptied:
    reading it sits in a ``try`` that costs nothing while the context exists,
    so the per-packet path gains no test.
    """

    __slots__ = ("_aead", "_factory", "_iv", "_secret", "algorithm")

    def __init__(self, aead: str, secret: bytes) -> None:
        """Derive key and IV from ``secret``.

        Args:
            aead: ``"aes-256-gcm"`` or ``"chacha20-poly1305"``.
            secret: a 32-byte traffic secret from the handshake or a key update.

        Raises:
            ValueError: unknown algorithm or a secret of the wrong size.
        """
        factory = _AEADS.get(aead)
        if factory is None:
            raise ValueError(f"unknown AEAD {aead!r}; expected one of {sorted(_AEADS)}")
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"traffic secrets are {SECRET_SIZE} bytes, not {len(secret)}")
        self.algorithm = aead
        self._factory = factory
        self._secret = secret
        self._aead: AESGCM | ChaCha20Poly1305
        self._rebuild()
        iv = hkdf_expand_label(secret, "iv", b"", AEAD_NONCE_SIZE)
        self._iv = int.from_bytes(iv, "big")

    @property
    def holds_context(self) -> bool:
        """True while the cipher context exists (built, and not released since)."""
        return hasattr(self, "_aead")

    def release(self) -> None:
        """Free the cipher context; the next use derives the key and rebuilds it."""
        if hasattr(self, "_aead"):
            del self._aead

    def _rebuild(self) -> AESGCM | ChaCha20Poly1305:
        """Derive the key from the secret and build the cipher context (at birth, or
        again after :meth:`release`)."""
        key = hkdf_expand_label(self._secret, "key", b"", AEAD_KEY_SIZE)
        self._aead = aead = self._factory(key)
        return aead

    def _keyed(self, packet_number: int,
               error: type[Exception]) -> tuple[bytes, AESGCM | ChaCha20Poly1305]:
        """The nonce of ``packet_number`` and the cipher context (rebuilt if it
        was released): what every seal and open needs first.

        ``error`` is what an out-of-range packet number raises: a caller bug
        when sealing (``ValueError``), a packet to drop when opening.
        """
        if not 0 <= packet_number <= MAX_PACKET_NUMBER:
            raise error(f"packet number {packet_number} does not fit in 64 bits")
        nonce = (self._iv ^ packet_number).to_bytes(AEAD_NONCE_SIZE, "big")
        try:
            return nonce, self._aead
        except AttributeError:  # released while the owner was quiet
            return nonce, self._rebuild()

    def __repr__(self) -> str:
        return f"PacketProtection({self.algorithm!r}, <secret hidden>)"

    def seal(self, packet_number: int, header: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext``; returns ciphertext || tag (``TAG_SIZE`` bytes longer).

        Raises:
            ValueError: ``packet_number`` is not in 0..2**64-1 (a caller bug).
        """
        nonce, aead = self._keyed(packet_number, ValueError)
        return aead.encrypt(nonce, plaintext, header)

    def seal_into(self, packet_number: int, header: bytes, plaintext: bytes | memoryview,
                  out: memoryview) -> None:
        """:meth:`seal` that writes ciphertext || tag into ``out`` instead of a new object.

        ``out`` must be exactly ``len(plaintext) + TAG_SIZE`` bytes and must not
        overlap ``plaintext``.

        Raises:
            ValueError: ``packet_number`` is not in 0..2**64-1, or ``out`` has
                the wrong size (caller bugs).
        """
        nonce, aead = self._keyed(packet_number, ValueError)
        aead.encrypt_into(nonce, plaintext, header, out)

    def open(self, packet_number: int, header: bytes | memoryview,
             ciphertext: bytes | memoryview) -> bytes:
        """Decrypt and authenticate ciphertext || tag; returns the plaintext.

        Raises:
            DecryptError: the input is shorter than a tag, the packet number is
                out of range, or authentication failed. The caller drops the
                packet; nothing about the failure is worth telling apart.
        """
        if len(ciphertext) < TAG_SIZE:
            raise DecryptError("sealed payload shorter than the AEAD tag")
        nonce, aead = self._keyed(packet_number, DecryptError)
        try:
            return aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise DecryptError("packet failed authentication") from None

    def open_into(self, packet_number: int, header: bytes | memoryview,
                  ciphertext: bytes | memoryview, out: memoryview) -> None:
        """:meth:`open` that writes the plaintext into ``out`` instead of a new object.

        ``out`` must be exactly ``len(ciphertext) - TAG_SIZE`` bytes. On a
        large packet this saves allocating (and faulting in) the plaintext
        object; after a failure ``out`` holds nothing the caller may use.

        Raises:
            DecryptError: as :meth:`open`.
            ValueError: ``out`` has the wrong size (a caller bug).
        """
        if len(ciphertext) < TAG_SIZE:
            raise DecryptError("sealed payload shorter than the AEAD tag")
        nonce, aead = self._keyed(packet_number, DecryptError)
        try:
            aead.decrypt_into(nonce, ciphertext, header, out)
        except InvalidTag:
            raise DecryptError("packet failed authentication") from None
