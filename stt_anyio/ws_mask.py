"""WebSocket masking at C speed: wsproto's masker backed by ``websockets``' C helper.

RFC 6455 makes a client XOR every payload byte of its frames with a 4-byte
key, and the server undo it. wsproto does that in Python (four strided
``bytearray.translate`` passes): about 70 us per 64 KiB frame on each side,
which was a quarter of the WebSocket path's CPU in ``stt bench``. The
``websockets`` library ships the same operation in C (``apply_mask``, about
2.4 us per 64 KiB).

wsproto builds its masker from a module global, per frame, in its frame
decoder and serializer, and offers no hook. :func:`install` therefore swaps
that global for :class:`CMasker` once, after checking that both give the
same bytes; the effect on any other wsproto user in the process is the same
output, faster. Without ``websockets``' compiled helper (a platform without
its wheel) nothing is swapped and wsproto's own masker stays.

This module owns only the masking; framing stays wsproto's.
"""

from __future__ import annotations

from collections.abc import Callable

import wsproto.frame_protocol as frame_protocol

__all__ = ["CMasker", "install", "installed"]

_Apply = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _load_apply_mask() -> _Apply | None:
    try:
        from websockets.speedups import apply_mask  # the C extension, not the fallback
    except ImportError:
        return None
    return apply_mask


_apply_mask = _load_apply_mask()
WSPROTO_MASKER: type = frame_protocol.XorMaskerSimple
"""wsproto's own masker, kept for the equivalence check (and for tests)."""


class CMasker:
    """wsproto's ``XorMaskerSimple`` interface over ``apply_mask``.

    wsproto feeds one frame's payload in pieces as it arrives, so the key
    rotates by each piece's length modulo 4, exactly as wsproto's own does.
    """

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        """Mask (or unmask: XOR is its own inverse) the next piece of the payload."""
        if not data or _apply_mask is None:
            return bytearray(data)
        masked = bytearray(_apply_mask(data, self._key))
        turn = len(data) % 4
        if turn:
            self._key = self._key[turn:] + self._key[:turn]
        return masked


def _agrees_with_wsproto(original: type) -> bool:
    """Both maskers give the same bytes, also across pieces of odd length."""
    key = b"\x8f\x13\xa7\x5c"
    pieces = [bytes(range(7)), bytes(range(200, 255)), b"", bytes(4096), b"x"]
    ours, theirs = CMasker(key), original(key)
    return all(ours.process(piece) == theirs.process(piece) for piece in pieces)


def install() -> bool:
    """Make wsproto mask with :class:`CMasker`; True if it does now.

    Idempotent. Does nothing (and returns False) without the C helper, or if
    wsproto's masker is not the one this module was written against.
    """
    current = getattr(frame_protocol, "XorMaskerSimple", None)
    if current is CMasker:
        return True
    if _apply_mask is None or current is not WSPROTO_MASKER \
            or not _agrees_with_wsproto(current):
        return False
    setattr(frame_protocol, "XorMaskerSimple", CMasker)  # noqa: B010 (wsproto has no hook)
    return True


def installed() -> bool:
    """True when wsproto masks through :class:`CMasker`."""
    return getattr(frame_protocol, "XorMaskerSimple", None) is CMasker
