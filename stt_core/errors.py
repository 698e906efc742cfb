"""Errors: one hierarchy for everything STT raises, plus the wire error codes.

The hierarchy is split the way h11 splits it: ``LocalError`` is raised when the
application misuses the API (fix your code), ``RemoteError`` and its children
describe what the peer or the network did (handle it at run time).

Several names come from the user manual (``AuthenticationError``,
``ConnectionTimeoutError``, ``SessionClosedError``, ``StreamClosedError``).
STT's ``ConnectionRefusedError`` and timeout errors also subclass the builtin
exceptions, so ``except ConnectionRefusedError:`` and ``except TimeoutError:``
keep working in code written against the manual.

Network input never raises out of the core: bad datagrams are dropped and
counted under a :class:`DropReason` (see ``docs/protocol.md`` §9).
"""

from __future__ import annotations

import builtins
import enum

__all__ = [
    "AuthenticationError",
    "BufferFullError",
    "ConfigError",
    "ConnectionRefusedError",
    "ConnectionTimeoutError",
    "DropReason",
    "ErrorCode",
    "InvalidStateError",
    "LocalError",
    "ProtocolError",
    "RemoteError",
    "STTError",
    "SendTimeoutError",
    "SessionClosedError",
    "StreamClosedError",
]


class STTError(Exception):
    """Base class of every exception STT raises."""


class LocalError(STTError):
    """The application used the API wrongly; the message says what to fix."""


class ConfigError(LocalError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InvalidStateError(LocalError):
    """A command was issued in a state that does not allow it."""


class BufferFullError(LocalError):
    """The stream's send buffer is full; wait for ``StreamWritable`` and retry."""


class RemoteError(STTError):
    """Something the peer or the network did made the operation fail."""


class AuthenticationError(RemoteError):
    """The peer could not prove knowledge of the shared seed, or proved a
    different node id than the one the application asked for."""


class ConnectionRefusedError(RemoteError, builtins.ConnectionRefusedError):
    """The peer refused the connection (nothing listening, or not accepting)."""


class ConnectionTimeoutError(RemoteError, builtins.TimeoutError):
    """The handshake did not complete within the connect timeout."""


class SendTimeoutError(RemoteError, builtins.TimeoutError):
    """A confirmed send was not acknowledged within its timeout."""


class SessionClosedError(RemoteError):
    """The session is closed (or closing); no more data can flow on it."""

    def __init__(self, message: str = "session is closed", *, reason: str = "error",
                 code: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class StreamClosedError(RemoteError):
    """The stream is closed in the direction the operation needed."""


class ProtocolError(Exception):
    """Raised inside the core when an authenticated peer violates the protocol.

    Private to the core: exactly one boundary in ``session.py`` catches it and
    closes the session with :attr:`code`. It never reaches the application.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ErrorCode(enum.IntEnum):
    """Codes carried by SESSION_CLOSE, STREAM_CLOSE and ERROR frames (protocol.md §7)."""

    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    PROTOCOL_VIOLATION = 0x02
    FRAME_ENCODING_ERROR = 0x03
    FLOW_CONTROL_ERROR = 0x04
    STREAM_LIMIT_ERROR = 0x05
    STREAM_STATE_ERROR = 0x06
    MESSAGE_TOO_LARGE = 0x07
    RESOURCE_LIMIT = 0x08
    AUTHENTICATION_FAILED = 0x09
    IDLE_TIMEOUT = 0x0A
    REFUSED = 0x0B
    KEY_UPDATE_ERROR = 0x0C
    APPLICATION_ERROR = 0x10


class DropReason(enum.Enum):
    """Why a datagram was dropped; each reason has a counter on the endpoint."""

    TOO_SHORT = "too_short"
    BAD_HEADER = "bad_header"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_SESSION = "unknown_session"
    DECRYPTION_FAILED = "decryption_failed"
    DUPLICATE_PACKET = "duplicate_packet"
    REPLAYED_HANDSHAKE = "replayed_handshake"
    BAD_HANDSHAKE = "bad_handshake"
    NOT_ACCEPTING = "not_accepting"
    AEAD_MISMATCH = "aead_mismatch"
    SESSION_LIMIT = "session_limit"
    BAD_COOKIE = "bad_cookie"
    MALFORMED_FRAMES = "malformed_frames"
    UNEXPECTED_PACKET = "unexpected_packet"
    CLOSED_SESSION = "closed_session"
    AMPLIFICATION_LIMIT = "amplification_limit"
