"""Session vocabulary shared by the session modules: states, path facts, stats.

Kept apart from ``session.py`` so the send path (``packetizer.py``) and the
stream handlers (``stream_io.py``) can use it without importing the session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["AMPLIFICATION_FACTOR", "PathProperties", "SessionState", "SessionStats"]

AMPLIFICATION_FACTOR = 3
"""Unvalidated addresses get at most 3x the bytes they sent us (RFC 9000 §8)."""


class SessionState(enum.Enum):
    """Lifecycle of a session, as the user manual names it."""

    INIT = "init"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.INIT: frozenset({SessionState.HANDSHAKING, SessionState.CLOSED}),
    SessionState.HANDSHAKING: frozenset({SessionState.ESTABLISHED, SessionState.CLOSED}),
    SessionState.ESTABLISHED: frozenset({SessionState.CLOSING, SessionState.CLOSED}),
    SessionState.CLOSING: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


@dataclass(slots=True)
class PathProperties:
    """What the binding told us about a path (protocol.md §8.1)."""

    max_datagram_size: int
    reliable: bool = False
    """Already reliable and ordered (WebSocket): no loss recovery, no congestion control."""


@dataclass(slots=True)
class SessionStats:
    """Counters of one session; cheap to read at any time."""

    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    retransmitted_bytes: int = 0
    packets_lost: int = 0
    spurious_losses: int = 0
    duplicates_dropped: int = 0
    decrypt_failures: int = 0
    key_updates: int = 0
    path_changes: int = 0
    pmtu_fallbacks: int = 0
    """Times the datagram size fell back after probe timeouts (a path MTU black hole)."""
    min_rtt: float = 0.0
    smoothed_rtt: float = 0.0
    rttvar: float = 0.0
    congestion_window: int = 0
    bytes_in_flight: int = 0
    streams_open: int = 0


