"""The C-backed WebSocket masker gives exactly wsproto's bytes, piece by piece."""

from __future__ import annotations

from typing import cast

import wsproto.frame_protocol as frame_protocol
from hypothesis import given
from hypothesis import strategies as st

import stt_anyio.websocket  # noqa: F401  (importing it installs the masker)
from stt_anyio import ws_mask


@given(key=st.binary(min_size=4, max_size=4),
       pieces=st.lists(st.binary(max_size=300), max_size=8))
def test_masking_matches_wsproto_across_pieces(key: bytes, pieces: list[bytes]) -> None:
    ours, theirs = ws_mask.CMasker(key), ws_mask.WSPROTO_MASKER(key)
    for piece in pieces:
        assert ours.process(piece) == theirs.process(piece)


def test_masking_twice_gives_the_payload_back() -> None:
    payload = bytes(range(256)) * 257  # 65,792 bytes: a full datagram and a ragged end
    masked = ws_mask.CMasker(b"\x01\x02\x03\x04").process(payload)
    assert masked != payload
    assert ws_mask.CMasker(b"\x01\x02\x03\x04").process(masked) == payload


def test_importing_the_carrier_installed_the_c_masker() -> None:
    """websockets (a dependency) ships the C helper on this platform; if wsproto's
    masker were still in place, every WebSocket frame would cost 30x more to mask."""
    assert ws_mask.installed()
    # install() replaced wsproto's class, so the attribute holds another type than declared.
    assert cast(object, frame_protocol.XorMaskerSimple) is ws_mask.CMasker
    assert ws_mask.install()  # idempotent
