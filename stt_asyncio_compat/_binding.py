"""Synchronous binding: what lets ``node.start()`` bind at once, without an event loop.

Owns the stdlib sockets that :meth:`STTNode.start` binds *synchronously* so
that the manual's top-level ``alice_node.start()`` really occupies its port
(and learns the port when it asked for 0) before any ``await`` runs. When the
node's runner task starts, it releases these reservations and stt_anyio binds
the very same addresses (``open_node(port=..., ws_port=...)``).

It must not know about STT: no core, no sessions, only ports.

Why release and re-bind rather than hand the socket over: ``stt_anyio.open_node``
binds its own sockets and takes no ready-made one. The gap between the two
binds is a few microseconds inside one event-loop step; another process would
have to grab that exact port in between. A datagram that arrives in the gap
is lost and the handshake retransmits it. docs/compat.md lists this as a known
limitation (an ``open_node(udp_socket=...)`` would remove it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field

__all__ = ["Reservation", "reserve"]


@dataclass(slots=True)
class Reservation:
    """Ports held for a node between ``start()`` and its runner task."""

    host: str
    """The bind address, as given (``"0.0.0.0"``, ``"127.0.0.1"``, a name...)."""
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Bound ``(host, port)`` per transport name (``"udp"``, ``"websocket"``)."""
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)

    def port(self, transport: str) -> int:
        """The bound port of one transport."""
        return self.addresses[transport][1]

    def release(self) -> None:
        """Close every reserving socket (idempotent); the ports become free again."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets.clear()


def reserve(host: str, transports: tuple[str, ...], *, port: int, ws_port: int | None,
            reuse_port: bool) -> Reservation:
    """Bind one socket per transport now (UDP datagram, WebSocket TCP).

    Args:
        host: the bind address.
        transports: ``"udp"`` and/or ``"websocket"``.
        port: the UDP port (0: any free one); also the WebSocket port when
            ``ws_port`` is None (TCP and UDP ports are separate spaces).
        reuse_port: set ``SO_REUSEPORT`` like the real socket will.

    Raises:
        OSError: an address cannot be bound (in use, not local, ...).
    """
    reservation = Reservation(host=host)
    try:
        for name in transports:
            kind = socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM
            wanted = port if name == "udp" or ws_port is None else ws_port
            sock = _bind(host, wanted, kind, reuse_port=reuse_port)
            reservation._sockets.append(sock)
            bound = sock.getsockname()
            reservation.addresses[name] = (str(bound[0]), int(bound[1]))
    except BaseException:
        reservation.release()
        raise
    return reservation


def _bind(host: str, port: int, kind: socket.SocketKind, *, reuse_port: bool) -> socket.socket:
    family = _family(host, port, kind)
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # The WebSocket listener sets SO_REUSEADDR too; match it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _family(host: str, port: int, kind: socket.SocketKind) -> socket.AddressFamily:
    """IPv4 or IPv6, from a literal directly or from the resolver's first answer."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=kind)
        if not infos:
            raise OSError(f"cannot resolve {host!r}") from None
        return socket.AddressFamily(infos[0][0])
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET
