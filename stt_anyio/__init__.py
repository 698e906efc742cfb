"""stt_anyio: STT bindings on anyio (one code path for asyncio and trio).

Owns the I/O around the sans-I/O core: the UDP and WebSocket carriers, the
clock, and (in :mod:`stt_anyio.node` / :mod:`stt_anyio.session`) the
node/session/stream API. It must not re-implement protocol logic: everything
about packets, sessions and reliability lives in ``stt_core``.
"""

from __future__ import annotations

from .node import Node, open_node
from .session import Session, Stream
from .udp import UdpAddress, UdpCarrier, UdpStats
from .websocket import WebSocketCarrier, WebSocketStats, WsPeer

__all__ = [
    "Node",
    "Session",
    "Stream",
    "UdpAddress",
    "UdpCarrier",
    "UdpStats",
    "WebSocketCarrier",
    "WebSocketStats",
    "WsPeer",
    "open_node",
]
