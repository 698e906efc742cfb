"""Wire codec: varint and frame round trips (hypothesis), and hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_core.wire import (
    AckFrame,
    AppFrame,
    CloseFrame,
    DataFrame,
    Frame,
    FrameType,
    LimitFrame,
    NackFrame,
    PacketType,
    PathFrame,
    ResumeTokenFrame,
    SimpleFrame,
    StreamCloseFrame,
    StreamFinFrame,
    StreamOpenFrame,
    WireError,
    encode_handshake_header,
    encode_session_header,
    encode_varint,
    parse_frames,
    parse_header,
    pull_varint,
    varint_size,
)

varints = st.integers(min_value=0, max_value=(1 << 62) - 1)
small = st.integers(min_value=0, max_value=1 << 40)


@given(varints)
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == varint_size(value)
    assert pull_varint(encoded + b"tail", 0) == (value, len(encoded))


def test_varint_boundaries_and_errors() -> None:
    assert [len(encode_varint(v)) for v in (63, 64, 16383, 16384, 2**30 - 1, 2**30)] == \
        [1, 2, 2, 4, 4, 8]
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(1 << 62)
    with pytest.raises(WireError):
        pull_varint(b"\x40", 0)
    with pytest.raises(WireError):
        pull_varint(b"", 0)


@st.composite
def ack_ranges(draw: st.DrawFn) -> list[range]:
    count = draw(st.integers(min_value=1, max_value=20))
    ranges = []
    stop = draw(st.integers(min_value=count * 4, max_value=1 << 40))
    for _ in range(count):
        length = draw(st.integers(min_value=1, max_value=3))
        start = stop - length
        if start < 0:
            break
        ranges.append(range(start, stop))
        stop = start - draw(st.integers(min_value=1, max_value=3))
        if stop <= 0:
            break
    return ranges


text = st.text(max_size=40)
frames = st.one_of(
    st.builds(DataFrame, small, small, st.binary(max_size=300), st.booleans()),
    st.builds(AckFrame, ack_ranges(), st.integers(0, 10**6).map(lambda us: us / 1e6)),
    st.builds(NackFrame, st.lists(st.builds(lambda a, n: range(a, a + n), small,
                                            st.integers(1, 100)), max_size=10)),
    st.sampled_from([SimpleFrame(FrameType.KEEP_ALIVE), SimpleFrame(FrameType.KEEP_ALIVE_ACK),
                     SimpleFrame(FrameType.IMMEDIATE_ACK)]),
    st.builds(StreamOpenFrame, small, st.integers(0, 255), st.integers(64, 65536),
              st.text(max_size=60)),
    st.builds(StreamCloseFrame, small, small, small),
    st.builds(StreamFinFrame, small, small),
    st.builds(CloseFrame, st.sampled_from([FrameType.SESSION_CLOSE, FrameType.ERROR]), small,
              text),
    st.builds(LimitFrame, st.just(FrameType.MAX_DATA), st.just(-1), small),
    st.builds(LimitFrame, st.just(FrameType.MAX_STREAM_DATA), small, small),
    st.builds(PathFrame, st.sampled_from([FrameType.PATH_CHALLENGE, FrameType.PATH_RESPONSE]),
              st.binary(min_size=8, max_size=8)),
    st.builds(ResumeTokenFrame, small, st.binary(max_size=200)),
    st.builds(AppFrame, st.integers(FrameType.APP_MIN, FrameType.APP_MAX),
              st.binary(max_size=100)),
)


@given(st.lists(frames, min_size=1, max_size=8))
def test_frames_round_trip(original: list[Frame]) -> None:
    payload = b"".join(frame.encode() for frame in original)
    decoded, ack_eliciting = parse_frames(payload)
    assert decoded == original
    not_eliciting = (FrameType.ACK, FrameType.NACK, FrameType.KEEP_ALIVE_ACK)
    expected = any(f.frame_type not in not_eliciting
                   for f in original)
    assert ack_eliciting == expected


@given(st.lists(frames, min_size=1, max_size=4), st.data())
def test_truncated_payloads_raise_wire_error_only(original: list[Frame],
                                                  data: st.DataObject) -> None:
    payload = b"".join(frame.encode() for frame in original)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with contextlib.suppress(WireError):
        parse_frames(payload[:cut])


@given(st.binary(max_size=400))
def test_random_payloads_never_raise_anything_but_wire_error(payload: bytes) -> None:
    with contextlib.suppress(WireError):
        parse_frames(payload)


def test_headers_round_trip() -> None:
    sid = bytes(range(8))
    header = parse_header(encode_session_header(1, sid, 70000) + b"payload")
    assert (header.packet_type, header.connection_id, header.packet_number,
            header.key_phase) == (PacketType.SESSION_KEY_PHASE_1, sid, 70000, 1)
    hello = parse_header(encode_handshake_header(PacketType.HELLO, sid) + b"body")
    assert (hello.packet_number, hello.payload_offset) == (-1, 10)


@pytest.mark.parametrize("data", [b"", b"\x08\x01", b"\x08\x02" + bytes(9),
                                  b"\x77\x01" + bytes(9), b"\x08\x01" + bytes(8) + b"\x40"])
def test_bad_headers_raise_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        parse_header(data)


def test_ack_with_too_many_ranges_is_rejected() -> None:
    ranges = [range(10_000 - 3 * i - 1, 10_000 - 3 * i) for i in range(300)]
    with pytest.raises(WireError):
        parse_frames(AckFrame(ranges, 0.0).encode())
