"""Events: what the core tells the application, as small frozen dataclasses.

Events carry ids and values, never live objects, with one exception:
:class:`MessageReceived` holds its message unread (see there, and why).
Every event names its session by :data:`SessionRef`, a small integer the
endpoint hands out when a session starts (``connect`` returns it; incoming
sessions get one when they are accepted). The 8-byte wire ``session_id`` is
only known once the handshake has run, so it is reported in
:class:`SessionEstablished` and kept as a field where useful.

Drain events with ``Endpoint.next_event()`` after every call that feeds input
(``receive_datagram``, ``handle_timer``) or issues a command.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import NewType

from mypy_extensions import mypyc_attr

from .stream_receive import ReceivedMessage

__all__ = [
    "Address",
    "ApplicationFrameReceived",
    "Event",
    "HandshakeConfirmed",
    "MessageDelivered",
    "MessageReceived",
    "PathChanged",
    "ReceivedMessage",
    "ResumeTokenReceived",
    "SessionClosed",
    "SessionEstablished",
    "SessionRef",
    "StreamClosed",
    "StreamOpened",
    "StreamWritable",
]

Address = Hashable
"""An opaque, hashable network address chosen by the binding: ``(host, port)``
for UDP, a connection handle for a WebSocket."""

SessionRef = NewType("SessionRef", int)
"""The endpoint-local handle of a session, stable from ``connect``/accept to close."""


@mypyc_attr(allow_interpreted_subclasses=True)  # applications and tests define their own
@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event."""

    ref: SessionRef
    """The session this event belongs to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEstablished(Event):
    """The handshake completed; streams may be used."""

    session_id: bytes
    """The 8-byte session id, identical on both peers."""
    peer_node_id: bytes
    """The node id the peer proved during the handshake."""
    address: Address
    """The peer's address at establishment."""
    initiator: bool
    """True on the side that called ``connect``."""
    resumed: bool = False
    """True when the session was re-established from a resume token."""
    confirmed: bool = True
    """False on an initiator established on CHALLENGE (protocol.md §6.3): the
    responder is established once it reads our AUTH_PROOF, which
    :class:`HandshakeConfirmed` reports. True on every other side."""

    def __init__(self, *, ref: SessionRef, session_id: bytes, peer_node_id: bytes,
                 address: Address, initiator: bool, resumed: bool = False,
                 confirmed: bool = True) -> None:
        # Written out (see MessageReceived) so the compiled core builds it natively.
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "peer_node_id", peer_node_id)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "initiator", initiator)
        object.__setattr__(self, "resumed", resumed)
        object.__setattr__(self, "confirmed", confirmed)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeConfirmed(Event):
    """The responder has our AUTH_PROOF: FINAL, or a session packet from it, arrived.

    The initiator may send from :class:`SessionEstablished` on; this event is
    for code that also needs the peer to know the session (a test that counts
    the server's sessions right after ``connect``, the manual's ``connect``).
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed(Event):
    """The session ended; no more events will follow for this ``ref``.

    Also emitted for a ``connect`` that never got established (``established``
    is then False): ``reason`` tells the binding which exception to raise.
    """

    reason: str
    """``graceful`` | ``timeout`` | ``error`` | ``auth_failure`` | ``refused``."""
    code: int = 0
    """The wire error code (``ErrorCode``) or the application's code."""
    message: str = ""
    """Human-readable detail; never contains secrets."""
    established: bool = True
    """False when the session closed before its handshake completed."""
    by_peer: bool = False
    """True when the peer initiated the close."""
    session_id: bytes = b""
    """The 8-byte session id, empty if the handshake never produced one."""
    abandoned_bytes: int = 0
    """Stream bytes this side had written, on streams not reset, that the peer
    never acknowledged: lost with the session. A graceful close that flushed
    everything within ``close_timeout`` reports 0 (protocol.md §7.2)."""

    def __init__(self, *, ref: SessionRef, reason: str, code: int = 0, message: str = "",
                 established: bool = True, by_peer: bool = False,
                 session_id: bytes = b"", abandoned_bytes: int = 0) -> None:
        # Written out (see MessageReceived) so the compiled core builds it natively.
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "established", established)
        object.__setattr__(self, "by_peer", by_peer)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "abandoned_bytes", abandoned_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened(Event):
    """The peer opened a stream (streams we open ourselves produce no event)."""

    stream_id: int
    """The stream id, chosen by the opener."""
    purpose: str = ""
    """The application label the opener attached (``"chat"``, ``"video"``...)."""
    priority: int = 0
    """The opener's priority hint; lower values are sent first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(Event):
    """A whole message arrived, in order, on a stream.

    The one event that holds a live object: :attr:`message` reads its bytes
    out of the stream's reassembly buffer on first use, so a binding that
    queues these events until its application asks holds one copy of a
    message at a time, not one per queued message (see
    :class:`~stt_core.stream_receive.ReceivedMessage`). The bytes are valid
    whenever they are read; reading :attr:`data` at once behaves exactly as a
    plain ``bytes`` field would.
    """

    stream_id: int
    """The stream the message belongs to."""
    message: ReceivedMessage
    """The message; ``message.size`` is its length without making the bytes."""

    def __init__(self, *, ref: SessionRef, stream_id: int, message: ReceivedMessage) -> None:
        # Written out (one per message) so the compiled core builds it natively;
        # object.__setattr__ is how a frozen dataclass sets its own fields.
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "message", message)

    @property
    def data(self) -> bytes:
        """The message, byte-identical to what the peer passed to ``send_message``."""
        return self.message.data


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDelivered(Event):
    """The peer acknowledged every byte of a message we sent (a confirmed send)."""

    stream_id: int
    """The stream the message was sent on."""
    message_id: int
    """The id ``send_message`` returned for this message."""

    def __init__(self, *, ref: SessionRef, stream_id: int, message_id: int) -> None:
        # Written out (one per confirmed message) so the compiled core builds it natively.
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "message_id", message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamWritable(Event):
    """A stream whose send buffer was full can accept data again."""

    stream_id: int
    """The stream that has room again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClosed(Event):
    """A stream ended.

    ``graceful`` closes (FIN) mean the peer will send no more messages; all its
    earlier messages were delivered before this event. Abrupt closes (reset)
    carry a non-zero ``code``.
    """

    stream_id: int
    """The stream that ended."""
    code: int = 0
    """0 for a graceful end, else the error code of the reset."""
    by_peer: bool = True
    """True when the peer ended the stream."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathChanged(Event):
    """The session moved to a new, validated peer address."""

    old_address: Address
    """Where the peer was."""
    new_address: Address
    """Where the peer is now; sends go here from now on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeTokenReceived(Event):
    """The server issued a resume token for this session (client side)."""

    token: bytes = field(repr=False)
    """Opaque single-use ticket for ``Endpoint.resume``. It holds the session's
    resumption secret: store it like a password (never shown in ``repr``)."""
    expires_at: float
    """Absolute time (same clock as ``now``) after which the server refuses it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationFrameReceived(Event):
    """The peer sent an application-defined frame (types 0x80-0xFE)."""

    frame_type: int
    """The application frame type."""
    payload: bytes
    """The frame body."""
