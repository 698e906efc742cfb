"""Exceptions of the compat API: the manual's names, re-exported from ``stt_core.errors``.

Owns nothing but the import path ``stt_asyncio_compat.exceptions`` that code
written against the user manual expects. It must not define a second
hierarchy: every name here *is* the core's class, so ``except`` clauses work
the same whether the application imports from here, from ``stt_core`` or
from ``stt_anyio``.

Two names behave like the builtins on purpose (docs/compat.md, "Errors"):

* :class:`ConnectionRefusedError` subclasses ``builtins.ConnectionRefusedError``,
  so the manual's ``except ConnectionRefusedError:`` catches it even without
  importing it from here.
* :class:`ConnectionTimeoutError` and :class:`SendTimeoutError` subclass
  ``builtins.TimeoutError``: ``except TimeoutError:`` around ``connect`` or
  ``stream.send(..., timeout=)`` works as the manual promises.
"""

from __future__ import annotations

import builtins

from stt_core.errors import (
    AuthenticationError,
    BufferFullError,
    ConfigError,
    ConnectionRefusedError,
    ConnectionTimeoutError,
    InvalidStateError,
    LocalError,
    RemoteError,
    SendTimeoutError,
    SessionClosedError,
    StreamClosedError,
    STTError,
)

__all__ = [
    "AuthenticationError",
    "BufferFullError",
    "ConfigError",
    "ConnectionRefusedError",
    "ConnectionTimeoutError",
    "InvalidStateError",
    "LocalError",
    "RemoteError",
    "STTError",
    "SendTimeoutError",
    "SessionClosedError",
    "StreamClosedError",
    "TimeoutError",
]

TimeoutError = builtins.TimeoutError
"""The builtin; every STT timeout (handshake, send) is a subclass of it."""
