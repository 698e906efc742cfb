"""Wire codec: varints, packet headers and frames (protocol.md §2-§4).

This module owns the byte layout of everything STT puts on the wire and
nothing else: no keys, no session state, no policy. Encoders and decoders sit
side by side and share one parse error, :class:`WireError`. Decoders never
raise anything else, whatever the input, so the endpoint can count a bad
datagram as dropped and move on.

Parsing is all-or-nothing: :func:`parse_frames` decodes a whole packet payload
into a list of frame records before the session applies any of them, so a
truncated or malformed packet changes no state.

Worst cases: every decoder is O(len(input)); an ACK or NACK frame cannot
describe more ranges than ``MAX_ACK_RANGES`` (longer lists are a parse error),
so a hostile frame cannot make us allocate more than the datagram's size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACK_FRAME_MIN_SIZE",
    "HANDSHAKE_HEADER_SIZE",
    "MAX_ACK_RANGES",
    "PROTOCOL_VERSION",
    "AckFrame",
    "AppFrame",
    "DataFrame",
    "Frame",
    "FrameType",
    "Header",
    "PacketType",
    "WireError",
    "encode_data_frame_header",
    "encode_handshake_header",
    "encode_session_header",
    "encode_varint",
    "parse_frames",
    "parse_header",
    "pull_varint",
    "varint_size",
]

_Buffer = bytes | memoryview
"""What frames are parsed from: a packet's plaintext, a view when it is large."""

PROTOCOL_VERSION: Final = 1
MAX_VARINT: Final = (1 << 62) - 1
MAX_ACK_RANGES: Final = 256
HANDSHAKE_HEADER_SIZE: Final = 10
"""type(1) | version(1) | id(8): the clear header of handshake-class packets."""


class WireError(Exception):
    """The bytes do not form a valid header or frame; drop the datagram."""


class PacketType:
    """First header byte (protocol.md §2). Integers, not an enum: hot path."""

    HELLO: Final = 0x01
    CHALLENGE: Final = 0x02
    AUTH_PROOF: Final = 0x03
    FINAL: Final = 0x04
    RETRY: Final = 0x05
    REJECT: Final = 0x06
    RESUME: Final = 0x0A
    """One-round-trip resumption from a resume token (protocol.md §6.8)."""
    RESUME_OK: Final = 0x0B
    SESSION: Final = 0x08
    """Protected session packet, key phase 0; 0x09 is key phase 1."""
    SESSION_KEY_PHASE_1: Final = 0x09


HANDSHAKE_TYPES: Final = frozenset((*range(0x01, 0x07), 0x0A, 0x0B))


class FrameType:
    """Frame type numbers inside a protected packet (protocol.md §4)."""

    PADDING: Final = 0x00
    DATA: Final = 0x10
    ACK: Final = 0x11
    NACK: Final = 0x12
    KEEP_ALIVE: Final = 0x13
    KEEP_ALIVE_ACK: Final = 0x14
    IMMEDIATE_ACK: Final = 0x15
    STREAM_OPEN: Final = 0x20
    STREAM_CLOSE: Final = 0x21
    STREAM_FIN: Final = 0x22
    SESSION_CLOSE: Final = 0x30
    MAX_DATA: Final = 0x40
    MAX_STREAM_DATA: Final = 0x41
    PATH_CHALLENGE: Final = 0x50
    PATH_RESPONSE: Final = 0x51
    RESUME_TOKEN: Final = 0x60
    ERROR: Final = 0xFF
    APP_MIN: Final = 0x80
    APP_MAX: Final = 0xFE


# --------------------------------------------------------------------------- varints
# RFC 9000 §16: the two high bits of the first byte give the length (1, 2, 4, 8).


def varint_size(value: int) -> int:
    """Bytes needed to encode ``value`` as a varint."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (0 .. 2**62-1) as a QUIC variable-length integer."""
    if value < 0x40:
        if value < 0:
            raise ValueError("varint must be >= 0")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError("varint must be < 2**62")


def pull_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos:]``; return ``(value, next_pos)``.

    Raises:
        WireError: the buffer ends inside the varint.
    """
    try:
        first = buf[pos]
    except IndexError:
        raise WireError("truncated varint") from None
    if first < 0x40:
        return first, pos + 1
    if first < 0x80:
        # Two bytes (64..16383: packet numbers, offsets, ACK delays of a
        # young session) without a slice and an int.from_bytes call.
        end = pos + 2
        if end > len(buf):
            raise WireError("truncated varint")
        return ((first & 0x3F) << 8) | buf[pos + 1], end
    length = 1 << (first >> 6)
    end = pos + length
    if end > len(buf):
        raise WireError("truncated varint")
    value = int.from_bytes(buf[pos:end], "big") & ((1 << (8 * length - 2)) - 1)
    return value, end


def _pull_span(buf: _Buffer, pos: int) -> tuple[int, int]:
    """Where a varint-length-prefixed field's bytes lie: ``(start, end)``, checked."""
    length, pos = pull_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise WireError("truncated length-prefixed field")
    return pos, end


def _pull_bytes(buf: _Buffer, pos: int) -> tuple[bytes, int]:
    """A varint length followed by that many bytes, as ``bytes`` of their own.

    ``bytes()`` of a ``bytes`` slice is that very slice (no second copy); of a
    view (a large packet's plaintext in the reused scratch) it is the copy
    that lets the field outlive the packet.
    """
    start, end = _pull_span(buf, pos)
    return bytes(buf[start:end]), end


def _push_bytes(data: bytes) -> bytes:
    return encode_varint(len(data)) + data


# --------------------------------------------------------------------------- headers


@dataclass(slots=True)
class Header:
    """A decoded clear header.

    For handshake-class packets ``packet_number`` is -1 and ``payload_offset``
    points at the message body; for session packets the payload is the AEAD
    ciphertext and ``header_bytes`` is its associated data.

    One is built per received datagram, so it is neither frozen (a frozen
    dataclass sets each field through ``object.__setattr__``, about three
    times the cost in pure Python) nor a named tuple (whose constructor is
    Python code the compiled core would call per datagram); the ``__init__``
    is written out so the compiled core builds it natively. Treat it as
    read-only.
    """

    packet_type: int
    connection_id: bytes
    packet_number: int
    payload_offset: int

    def __init__(self, packet_type: int, connection_id: bytes, packet_number: int,
                 payload_offset: int) -> None:
        self.packet_type = packet_type
        self.connection_id = connection_id
        self.packet_number = packet_number
        self.payload_offset = payload_offset

    @property
    def key_phase(self) -> int:
        """Key phase bit of a session packet (protocol.md §6.4)."""
        return self.packet_type & 0x01


def encode_handshake_header(packet_type: int, connection_id: bytes) -> bytes:
    """Header of a HELLO/CHALLENGE/AUTH_PROOF/FINAL/RETRY/REJECT packet."""
    return bytes((packet_type, PROTOCOL_VERSION)) + connection_id


def encode_session_header(key_phase: int, session_id: bytes, packet_number: int) -> bytes:
    """Header of a protected session packet; it is the AEAD associated data."""
    return (
        bytes((PacketType.SESSION | key_phase, PROTOCOL_VERSION))
        + session_id
        + encode_varint(packet_number)
    )


def parse_header(data: bytes | memoryview) -> Header:
    """Decode the clear header of a datagram (``bytes``, or a view of a receive buffer).

    Raises:
        WireError: too short, unknown type or unsupported version.
    """
    if len(data) < HANDSHAKE_HEADER_SIZE:
        raise WireError("datagram shorter than a header")
    packet_type = data[0]
    if data[1] != PROTOCOL_VERSION:
        raise WireError("unsupported version")
    connection_id = bytes(data[2:10])  # a dict key: bytes even when data is a view
    if packet_type in HANDSHAKE_TYPES:
        return Header(packet_type, connection_id, -1, HANDSHAKE_HEADER_SIZE)
    if packet_type in (PacketType.SESSION, PacketType.SESSION_KEY_PHASE_1):
        packet_number, offset = pull_varint(data, HANDSHAKE_HEADER_SIZE)
        return Header(packet_type, connection_id, packet_number, offset)
    raise WireError("unknown packet type")


# --------------------------------------------------------------------------- frames


_VIEW_THRESHOLD = 4096
"""DATA payloads at least this long are parsed as views of the packet."""


@dataclass(slots=True)
class DataFrame:
    """DATA: a chunk of a stream's byte sequence (protocol.md §4.2).

    ``data`` is a ``memoryview`` of the packet for large payloads parsed from
    the wire (it compares equal to the same bytes); treat it as read-only, and
    copy what you keep before the packet's processing ends: a large packet's
    plaintext lives in a buffer the next large packet overwrites
    (``stt_core.scratch``).
    """

    stream_id: int
    offset: int
    data: bytes | memoryview
    fin: bool = False
    frame_type: int = FrameType.DATA

    def __init__(self, stream_id: int, offset: int, data: bytes | memoryview,
                 fin: bool = False, frame_type: int = FrameType.DATA) -> None:
        # Written out (one per DATA frame parsed) so the compiled core builds it natively.
        self.stream_id = stream_id
        self.offset = offset
        self.data = data
        self.fin = fin
        self.frame_type = frame_type

    def encode(self) -> bytes:
        return encode_data_frame_header(self.stream_id, self.offset, len(self.data),
                                        self.fin) + self.data


def encode_data_frame_header(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """Everything of a DATA frame but its payload (the send path appends the payload).

    Same bytes as :meth:`DataFrame.encode` without building the frame object,
    which the send path would create and discard once per packet.
    """
    return (b"\x10\x01" if fin else b"\x10\x00") + encode_varint(stream_id) \
        + encode_varint(offset) + encode_varint(length)


def data_frame_overhead(stream_id: int, offset: int, length: int) -> int:
    """Bytes a DATA frame adds on top of its payload."""
    return 2 + varint_size(stream_id) + varint_size(offset) + varint_size(length)


@dataclass(slots=True)
class AckFrame:
    """ACK: received packet-number ranges, highest first (protocol.md §4.3).

    ``ranges`` are half-open ``range`` objects in descending order;
    ``ack_delay`` is in seconds (microseconds on the wire).
    """

    ranges: list[range]
    ack_delay: float
    frame_type: int = FrameType.ACK

    def __init__(self, ranges: list[range], ack_delay: float,
                 frame_type: int = FrameType.ACK) -> None:
        # Written out (one per ACK parsed) so the compiled core builds it natively.
        self.ranges = ranges
        self.ack_delay = ack_delay
        self.frame_type = frame_type

    def encode(self) -> bytes:
        first = self.ranges[0]
        parts = [
            b"\x11",
            encode_varint(first.stop - 1),
            encode_varint(min(round(self.ack_delay * 1_000_000), MAX_VARINT)),
            encode_varint(len(self.ranges) - 1),
            encode_varint(first.stop - 1 - first.start),
        ]
        previous_start = first.start
        for r in self.ranges[1:]:
            parts.append(encode_varint(previous_start - r.stop - 1))
            parts.append(encode_varint(r.stop - 1 - r.start))
            previous_start = r.start
        return b"".join(parts)


ACK_FRAME_MIN_SIZE: Final = 5


@dataclass(slots=True)
class NackFrame:
    """NACK: packet-number ranges the receiver believes lost (protocol.md §4.4)."""

    ranges: list[range]
    frame_type: int = FrameType.NACK

    def encode(self) -> bytes:
        parts = [b"\x12", encode_varint(len(self.ranges))]
        for r in self.ranges:
            parts.append(encode_varint(r.start))
            parts.append(encode_varint(r.stop - r.start))
        return b"".join(parts)


@dataclass(slots=True)
class SimpleFrame:
    """A frame without fields: PADDING run, KEEP_ALIVE, KEEP_ALIVE_ACK, IMMEDIATE_ACK."""

    frame_type: int

    def encode(self) -> bytes:
        return bytes((self.frame_type,))


@dataclass(slots=True)
class StreamOpenFrame:
    """STREAM_OPEN: announces a stream, its purpose label and priority."""

    stream_id: int
    priority: int
    max_frame_size: int
    purpose: str
    frame_type: int = FrameType.STREAM_OPEN

    def encode(self) -> bytes:
        return b"".join((
            b"\x20",
            encode_varint(self.stream_id),
            encode_varint(self.priority),
            encode_varint(self.max_frame_size),
            _push_bytes(self.purpose.encode("utf-8")),
        ))


@dataclass(slots=True)
class StreamCloseFrame:
    """STREAM_CLOSE: abrupt close (reset) of both directions with a code.

    ``final_size`` is how far the sender's own direction got (its highest
    offset ever sent), so that the receiver can count, and return, the session
    credit of bytes that the reset stopped on the way (protocol.md §4.7).
    """

    stream_id: int
    code: int
    final_size: int
    frame_type: int = FrameType.STREAM_CLOSE

    def encode(self) -> bytes:
        return b"".join((b"\x21", encode_varint(self.stream_id), encode_varint(self.code),
                         encode_varint(self.final_size)))


@dataclass(slots=True)
class StreamFinFrame:
    """STREAM_FIN: the sender's direction ends at ``final_size`` bytes."""

    stream_id: int
    final_size: int
    frame_type: int = FrameType.STREAM_FIN

    def encode(self) -> bytes:
        return b"\x22" + encode_varint(self.stream_id) + encode_varint(self.final_size)


@dataclass(slots=True)
class CloseFrame:
    """SESSION_CLOSE (graceful or application code) or ERROR (protocol error)."""

    frame_type: int
    code: int
    reason: str

    def encode(self) -> bytes:
        return (
            bytes((self.frame_type,))
            + encode_varint(self.code)
            + _push_bytes(self.reason.encode("utf-8")[:512])
        )


@dataclass(slots=True)
class LimitFrame:
    """MAX_DATA (``stream_id`` -1) or MAX_STREAM_DATA: new flow-control limit."""

    frame_type: int
    stream_id: int
    limit: int

    def encode(self) -> bytes:
        if self.frame_type == FrameType.MAX_DATA:
            return b"\x40" + encode_varint(self.limit)
        return b"\x41" + encode_varint(self.stream_id) + encode_varint(self.limit)


@dataclass(slots=True)
class PathFrame:
    """PATH_CHALLENGE / PATH_RESPONSE with 8 bytes of data."""

    frame_type: int
    data: bytes

    def encode(self) -> bytes:
        return bytes((self.frame_type,)) + self.data


@dataclass(slots=True)
class ResumeTokenFrame:
    """RESUME_TOKEN: an opaque token and its lifetime in seconds."""

    lifetime: int
    token: bytes
    frame_type: int = FrameType.RESUME_TOKEN

    def encode(self) -> bytes:
        return b"\x60" + encode_varint(self.lifetime) + _push_bytes(self.token)


@dataclass(slots=True)
class AppFrame:
    """An application-defined frame (types 0x80-0xFE): opaque payload."""

    frame_type: int
    payload: bytes

    def encode(self) -> bytes:
        return bytes((self.frame_type,)) + _push_bytes(self.payload)


Frame = (
    DataFrame | AckFrame | NackFrame | SimpleFrame | StreamOpenFrame | StreamCloseFrame
    | StreamFinFrame | CloseFrame | LimitFrame | PathFrame | ResumeTokenFrame | AppFrame
)

_Parser = Callable[[_Buffer, int], tuple[Frame, int]]

ACK_ELICITING_EXEMPT: Final = frozenset((FrameType.ACK, FrameType.NACK, FrameType.PADDING,
                                         FrameType.KEEP_ALIVE_ACK))
"""Frames that do not make a packet ack-eliciting (RFC 9002 §2; KEEP_ALIVE_ACK is itself
an answer, and the packet that carries it carries the ACK of the KEEP_ALIVE)."""


def _parse_data(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    if pos >= len(buf):
        raise WireError("truncated DATA")
    flags = buf[pos]
    if flags > 1:
        raise WireError("unknown DATA flags")
    stream_id, pos = pull_varint(buf, pos + 1)
    offset, pos = pull_varint(buf, pos)
    start, end = _pull_span(buf, pos)
    length = end - start
    if offset + length > MAX_VARINT:
        raise WireError("DATA beyond the maximum stream offset")
    # A large payload is viewed, not copied: the receiver copies it into its
    # reassembly buffer at once, and a view of a 64 KiB packet saves a 64 KiB copy.
    data = bytes(buf[start:end]) if length < _VIEW_THRESHOLD else memoryview(buf)[start:end]
    return DataFrame(stream_id, offset, data, flags == 1), end


def _parse_ack(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    largest, pos = pull_varint(buf, pos)
    delay_us, pos = pull_varint(buf, pos)
    count, pos = pull_varint(buf, pos)
    if count >= MAX_ACK_RANGES:
        raise WireError("too many ACK ranges")
    first, pos = pull_varint(buf, pos)
    if first > largest:
        raise WireError("ACK range below zero")
    start = largest - first
    ranges = [range(start, largest + 1)]
    for _ in range(count):
        gap, pos = pull_varint(buf, pos)
        length, pos = pull_varint(buf, pos)
        stop = start - gap - 1
        start = stop - length - 1
        if start < 0 or stop <= 0:
            raise WireError("ACK range below zero")
        ranges.append(range(start, stop))
    return AckFrame(ranges, delay_us / 1_000_000), pos


def _parse_nack(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    count, pos = pull_varint(buf, pos)
    if count > MAX_ACK_RANGES:
        raise WireError("too many NACK ranges")
    ranges = []
    for _ in range(count):
        start, pos = pull_varint(buf, pos)
        length, pos = pull_varint(buf, pos)
        if length == 0:
            raise WireError("empty NACK range")
        ranges.append(range(start, start + length))
    return NackFrame(ranges), pos


def _parse_stream_open(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    stream_id, pos = pull_varint(buf, pos)
    priority, pos = pull_varint(buf, pos)
    max_frame_size, pos = pull_varint(buf, pos)
    raw, pos = _pull_bytes(buf, pos)
    if len(raw) > 255:
        raise WireError("purpose label longer than 255 bytes")
    try:
        purpose = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("purpose label is not UTF-8") from None
    return StreamOpenFrame(stream_id, priority, max_frame_size, purpose), pos


def _parse_stream_close(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    stream_id, pos = pull_varint(buf, pos)
    code, pos = pull_varint(buf, pos)
    final_size, pos = pull_varint(buf, pos)
    return StreamCloseFrame(stream_id, code, final_size), pos


def _parse_stream_fin(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    stream_id, pos = pull_varint(buf, pos)
    final_size, pos = pull_varint(buf, pos)
    return StreamFinFrame(stream_id, final_size), pos


def _parse_close(frame_type: int) -> _Parser:
    def parse(buf: _Buffer, pos: int) -> tuple[Frame, int]:
        code, pos = pull_varint(buf, pos)
        raw, pos = _pull_bytes(buf, pos)
        return CloseFrame(frame_type, code, raw.decode("utf-8", "replace")), pos
    return parse


def _parse_max_data(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    limit, pos = pull_varint(buf, pos)
    return LimitFrame(FrameType.MAX_DATA, -1, limit), pos


def _parse_max_stream_data(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    stream_id, pos = pull_varint(buf, pos)
    limit, pos = pull_varint(buf, pos)
    return LimitFrame(FrameType.MAX_STREAM_DATA, stream_id, limit), pos


def _parse_path(frame_type: int) -> _Parser:
    def parse(buf: _Buffer, pos: int) -> tuple[Frame, int]:
        end = pos + 8
        if end > len(buf):
            raise WireError("truncated path frame")
        return PathFrame(frame_type, bytes(buf[pos:end])), end
    return parse


def _parse_resume_token(buf: _Buffer, pos: int) -> tuple[Frame, int]:
    lifetime, pos = pull_varint(buf, pos)
    token, pos = _pull_bytes(buf, pos)
    return ResumeTokenFrame(lifetime, token), pos


def _parse_simple(frame_type: int) -> _Parser:
    frame = SimpleFrame(frame_type)

    def parse(buf: _Buffer, pos: int) -> tuple[Frame, int]:
        return frame, pos
    return parse


def _parse_app(frame_type: int) -> _Parser:
    def parse(buf: _Buffer, pos: int) -> tuple[Frame, int]:
        payload, pos = _pull_bytes(buf, pos)
        return AppFrame(frame_type, payload), pos
    return parse


_PARSERS: dict[int, _Parser] = {
    FrameType.DATA: _parse_data,
    FrameType.ACK: _parse_ack,
    FrameType.NACK: _parse_nack,
    FrameType.KEEP_ALIVE: _parse_simple(FrameType.KEEP_ALIVE),
    FrameType.KEEP_ALIVE_ACK: _parse_simple(FrameType.KEEP_ALIVE_ACK),
    FrameType.IMMEDIATE_ACK: _parse_simple(FrameType.IMMEDIATE_ACK),
    FrameType.STREAM_OPEN: _parse_stream_open,
    FrameType.STREAM_CLOSE: _parse_stream_close,
    FrameType.STREAM_FIN: _parse_stream_fin,
    FrameType.SESSION_CLOSE: _parse_close(FrameType.SESSION_CLOSE),
    FrameType.ERROR: _parse_close(FrameType.ERROR),
    FrameType.MAX_DATA: _parse_max_data,
    FrameType.MAX_STREAM_DATA: _parse_max_stream_data,
    FrameType.PATH_CHALLENGE: _parse_path(FrameType.PATH_CHALLENGE),
    FrameType.PATH_RESPONSE: _parse_path(FrameType.PATH_RESPONSE),
    FrameType.RESUME_TOKEN: _parse_resume_token,
}
for _app_type in range(FrameType.APP_MIN, FrameType.APP_MAX + 1):
    _PARSERS[_app_type] = _parse_app(_app_type)


_NOT_PADDING = re.compile(b"[^\x00]")


def parse_frames(payload: bytes | memoryview) -> tuple[list[Frame], bool]:
    """Decode every frame of a decrypted packet payload.

    ``payload`` may be a view of a reused buffer: every field a frame keeps is
    copied into ``bytes``, except a large DATA payload, which stays a view
    (see ``DataFrame``) and must be consumed before the buffer is reused.

    Returns:
        ``(frames, ack_eliciting)``; PADDING bytes are skipped and not returned.

    Raises:
        WireError: unknown frame type or truncated frame.
    """
    frames: list[Frame] = []
    ack_eliciting = False
    pos = 0
    end = len(payload)
    parsers = _PARSERS
    while pos < end:
        frame_type = payload[pos]
        if frame_type == FrameType.PADDING:
            # Skip the run at C speed: PMTU probes end in up to 64 KiB of padding.
            if isinstance(payload, bytes) and payload.count(0, pos, end) == end - pos:
                break
            found = _NOT_PADDING.search(payload, pos)
            pos = found.start() if found is not None else end
            continue
        parser = parsers.get(frame_type)
        if parser is None:
            raise WireError(f"unknown frame type 0x{frame_type:02x}")
        frame, pos = parser(payload, pos + 1)
        if frame_type not in ACK_ELICITING_EXEMPT:
            ack_eliciting = True
        frames.append(frame)
    if pos > end:
        raise WireError("frame runs past the end of the packet")
    return frames, ack_eliciting
