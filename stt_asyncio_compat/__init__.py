"""stt_asyncio_compat: the user manual's asyncio ``STTNode`` API, built on stt_anyio.

Existing applications written against the manual chapter "Sessions and
connections" run with only their import changed from
``seigr_toolset_transmissions`` to ``stt_asyncio_compat``. The module paths
the examples import from exist here: :mod:`stt_asyncio_compat.node`,
:mod:`stt_asyncio_compat.session`, :mod:`stt_asyncio_compat.stream` and
:mod:`stt_asyncio_compat.exceptions`.

This package owns only the manual's spelling and lifecycle. It must not
re-implement any of the protocol: every session, stream and byte goes through
``stt_anyio`` (and so through ``stt_core``). Where the manual is vague or
contradicts itself, the choice made is written down in ``docs/compat.md``.
"""

from __future__ import annotations

from ._broadcast import BroadcastResult
from .continuity import CryptoSessionContinuity, ResumeToken
from .exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectionRefusedError,
    ConnectionTimeoutError,
    InvalidStateError,
    SendTimeoutError,
    SessionClosedError,
    StreamClosedError,
    STTError,
)
from .node import STTNode
from .session import Session, SessionManager, SessionState
from .stream import Stream

__all__ = [
    "AuthenticationError",
    "BroadcastResult",
    "ConfigError",
    "ConnectionRefusedError",
    "ConnectionTimeoutError",
    "CryptoSessionContinuity",
    "InvalidStateError",
    "ResumeToken",
    "STTError",
    "STTNode",
    "SendTimeoutError",
    "Session",
    "SessionClosedError",
    "SessionManager",
    "SessionState",
    "Stream",
    "StreamClosedError",
]
