"""stt_core: the sans-I/O STT protocol engine.

Bytes, timestamps and commands go in; datagrams, one timer deadline and events
come out. Nothing here touches a socket, a clock or an event loop, so the same
engine runs under asyncio, trio, a hand-written select loop or the
deterministic simulator in :mod:`stt_core.sim`.
"""

from .config import Config, derive_node_id
from .endpoint import Endpoint, EndpointStats
from .errors import (
    AuthenticationError,
    BufferFullError,
    ConfigError,
    ConnectionRefusedError,
    ConnectionTimeoutError,
    DropReason,
    ErrorCode,
    InvalidStateError,
    LocalError,
    RemoteError,
    SendTimeoutError,
    SessionClosedError,
    StreamClosedError,
    STTError,
)
from .events import (
    Address,
    ApplicationFrameReceived,
    Event,
    HandshakeConfirmed,
    MessageDelivered,
    MessageReceived,
    PathChanged,
    ReceivedMessage,
    ResumeTokenReceived,
    SessionClosed,
    SessionEstablished,
    SessionRef,
    StreamClosed,
    StreamOpened,
    StreamWritable,
)
from .states import PathProperties, SessionState, SessionStats

__all__ = [
    "Address",
    "ApplicationFrameReceived",
    "AuthenticationError",
    "BufferFullError",
    "Config",
    "ConfigError",
    "ConnectionRefusedError",
    "ConnectionTimeoutError",
    "DropReason",
    "Endpoint",
    "EndpointStats",
    "ErrorCode",
    "Event",
    "HandshakeConfirmed",
    "InvalidStateError",
    "LocalError",
    "MessageDelivered",
    "MessageReceived",
    "PathChanged",
    "PathProperties",
    "ReceivedMessage",
    "RemoteError",
    "ResumeTokenReceived",
    "STTError",
    "SendTimeoutError",
    "SessionClosed",
    "SessionClosedError",
    "SessionEstablished",
    "SessionRef",
    "SessionState",
    "SessionStats",
    "StreamClosed",
    "StreamClosedError",
    "StreamOpened",
    "StreamWritable",
    "derive_node_id",
]
