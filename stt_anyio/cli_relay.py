"""LossyRelay: a UDP relay that drops datagrams on purpose (``stt demo --loss P``).

Owns a pair of real UDP sockets on the loopback interface between one client
and one server: the client sends to the relay's front socket, the relay
forwards each datagram from its back socket to the server, and whatever the
server answers (to the back socket) goes back to the last client address
seen. Each datagram, in either direction, is dropped with probability
``loss``, decided by one ``random.Random`` per direction seeded from the
caller's seed, so each direction's drop pattern depends only on the seed and
the order of that direction's datagrams (not on how the two interleave).

Why a relay rather than a hook in the node: the loss is then real loss on
real sockets, and the nodes run exactly the code they run in production.

It must not know about STT: it forwards opaque datagrams.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable
from dataclasses import dataclass

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

__all__ = ["LossyRelay", "RelayStats"]

RELAY_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket buffer size the relay asks for, so it adds no overflow loss of its own."""


@dataclass(slots=True)
class RelayStats:
    """Datagrams the relay forwarded and dropped, per direction."""

    forwarded_to_server: int = 0
    forwarded_to_client: int = 0
    dropped_to_server: int = 0
    dropped_to_client: int = 0

    @property
    def dropped(self) -> int:
        """Datagrams dropped in both directions."""
        return self.dropped_to_server + self.dropped_to_client


class LossyRelay:
    """One client <-> one server UDP relay with random loss; use :meth:`open`.

    Example::

        async with anyio.create_task_group() as tg:
            relay = await LossyRelay.open(server_addr, loss=0.05, seed=1)
            tg.start_soon(relay.run)
            ... connect the client to relay.address ...
            await relay.aclose()
    """

    def __init__(self, front: anyio.abc.UDPSocket, back: anyio.abc.ConnectedUDPSocket,
                 *, loss: float, seed: int) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), not {loss!r}")
        self._front = front
        self._back = back
        self.loss = loss
        self._to_server_rng = random.Random(f"{seed}/to-server")
        self._to_client_rng = random.Random(f"{seed}/to-client")
        self._client: tuple[str, int] | None = None
        self.stats = RelayStats()

    @classmethod
    async def open(cls, server: tuple[str, int], *, loss: float, seed: int,
                   host: str = "127.0.0.1") -> LossyRelay:
        """Bind the relay's two sockets on ``host`` (free ports) toward ``server``.

        Raises:
            ValueError: ``loss`` outside ``[0, 1)``.
            OSError: the sockets cannot be bound.
        """
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), not {loss!r}")
        front = await anyio.create_udp_socket(local_host=host, local_port=0)
        try:
            back = await anyio.create_connected_udp_socket(server[0], server[1],
                                                           local_host=host)
        except BaseException:
            await front.aclose()
            raise
        for sock in (front, back):
            _enlarge_buffers(sock.extra(SocketAttribute.raw_socket))
        return cls(front, back, loss=loss, seed=seed)

    @property
    def address(self) -> tuple[str, int]:
        """Where the client should send: the front socket's address."""
        local = self._front.extra(SocketAttribute.local_address)
        if not isinstance(local, tuple):
            raise TypeError(f"the relay is not on an IP socket: {local!r}")
        return str(local[0]), int(local[1])

    async def run(self) -> None:
        """Forward in both directions until cancelled or closed."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._client_to_server)
            tg.start_soon(self._server_to_client)

    async def aclose(self) -> None:
        """Close both sockets (the forwarding tasks end)."""
        await self._front.aclose()
        await self._back.aclose()

    def _keep(self, rng: random.Random) -> bool:
        """One draw of a direction's seeded generator: keep this datagram?"""
        return self.loss == 0.0 or rng.random() >= self.loss

    async def _client_to_server(self) -> None:
        while True:
            try:
                data, addr = await self._front.receive()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError,
                    anyio.EndOfStream):
                return
            except OSError:
                continue  # a stray ICMP error: nothing to forward
            self._client = (str(addr[0]), int(addr[1]))
            if self._keep(self._to_server_rng):
                self.stats.forwarded_to_server += 1
                await _send_ignoring_errors(self._back.send(data))
            else:
                self.stats.dropped_to_server += 1

    async def _server_to_client(self) -> None:
        while True:
            try:
                data = await self._back.receive()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError,
                    anyio.EndOfStream):
                return
            except OSError:
                continue  # ICMP port unreachable: the server is not up (yet)
            if self._client is None:
                continue
            if self._keep(self._to_client_rng):
                self.stats.forwarded_to_client += 1
                await _send_ignoring_errors(self._front.sendto(data, *self._client))
            else:
                self.stats.dropped_to_client += 1


async def _send_ignoring_errors(send: Awaitable[None]) -> None:
    """Await a send; a refused or failed send is just more loss for a relay.

    A socket closed by ``aclose`` while a datagram was on its way through is
    not an error either: the forwarding loop ends at its next receive.
    """
    try:
        await send
    except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


def _enlarge_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RELAY_BUFFER_BYTES)
        except OSError:
            continue  # the system caps the size; the default is still usable
