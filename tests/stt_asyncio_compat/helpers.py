"""Helpers for the compat tests: loopback nodes and a UDP relay that can be cut.

The manual's examples use ``10.x`` addresses and port 8080; the tests run the
same code against real nodes on 127.0.0.1 with port 0 (any free port).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from stt_asyncio_compat import STTNode

SEED = b"correct-horse-battery-staple"
FAST: dict[str, Any] = {"max_datagram_size": 1452, "close_timeout": 1.0}
"""Loopback-friendly overrides: bigger datagrams, a short close wait."""

NodeFactory = Callable[..., STTNode]
"""The ``nodes`` fixture: ``nodes(node_id, **STTNode kwargs)``, stopped after the test."""


def make_node(node_id: bytes | None = None, **kwargs: Any) -> STTNode:
    """A node on loopback, port 0, the shared test seed, fast overrides."""
    kwargs.setdefault("bind_address", "127.0.0.1")
    kwargs.setdefault("shared_seed", SEED)
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    return STTNode(node_id=node_id, **kwargs)


def loopback(node: STTNode, transport: str = "udp") -> tuple[str, int]:
    """Where a peer on this machine reaches ``node`` (works for 0.0.0.0 binds too)."""
    return ("127.0.0.1", node.local_addresses[transport][1])


def free_udp_port() -> int:
    """A UDP port that was free a moment ago (nothing listens there now)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, upstream: bool) -> None:
        self.relay = relay
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._forward(data, addr, from_server=self.upstream)


class UdpRelay:
    """A one-client UDP forwarder on loopback: the "network" a test can unplug.

    The client talks to :attr:`address`; the relay forwards to the server from
    its own upstream socket and back. :meth:`cut` drops everything from then
    on, like a pulled cable: no ICMP, no close, just silence.
    """

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.cut_off = False
        self.forwarded = 0
        self._client: tuple[str, int] | None = None
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> UdpRelay:
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, upstream=False), local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, upstream=True), local_addr=("127.0.0.1", 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()

    @property
    def address(self) -> tuple[str, int]:
        """Where the client sends."""
        if self._front is None:
            raise RuntimeError("enter the relay first")
        host, port = self._front.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def cut(self) -> None:
        """Drop every datagram from now on, in both directions."""
        self.cut_off = True

    def _forward(self, data: bytes, addr: tuple[str, int], *, from_server: bool) -> None:
        if self.cut_off or self._front is None or self._back is None:
            return
        if from_server:
            if self._client is not None:
                self._front.sendto(data, self._client)
        else:
            self._client = addr
            self._back.sendto(data, self.server)
        self.forwarded += 1
