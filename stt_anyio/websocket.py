"""WebSocket carrier: STT datagrams as binary WebSocket messages over TCP (+TLS).

Owns the TCP connections, the HTTP upgrade, WebSocket framing (wsproto), ping
and pong, the close handshake, and the mapping between connections and
:class:`WsPeer` addresses. It must not know what the datagrams mean: it never
imports ``stt_core``; the node wires it to the core and tells the core that a
WebSocket path is reliable and ordered.

Rules:

1. One binary message is one datagram, both ways. Text messages and binary
   messages larger than ``max_message_size`` are dropped and counted; they do
   not close the connection (a peer may probe us; the core ignores garbage).
2. Every connection has one reader and one writer task. ``send`` never
   blocks: it frames the datagram and appends it to the connection's queue,
   which the writer drains in order. The path is reliable, so the carrier
   never drops an accepted datagram silently: when a peer stops reading and
   the queue exceeds ``max_queue_bytes`` the connection is aborted and
   ``on_closed`` reports it, which the node turns into ``path_closed``. The
   core's flow-control windows normally keep the queue far below that cap.
3. ``on_connected(peer)`` runs before any datagram of that connection is
   delivered (so the node can set path properties first); ``on_closed(peer)``
   runs exactly once when an established connection ends for any reason.
4. A server that receives no valid upgrade within ``handshake_timeout`` drops
   the connection; a request for another path gets HTTP 404.
5. Errors from the network are counted, never raised into the owner. Only
   :meth:`WebSocketCarrier.connect` raises (``OSError`` subclasses from the
   TCP connect, ``ConnectionRefusedError`` for a rejected upgrade,
   ``TimeoutError``), because its caller asked for that one connection.

Importing this module makes wsproto mask frames in C where it can
(:mod:`stt_anyio.ws_mask`): the same bytes, a quarter less CPU per frame.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from . import ws_mask

__all__ = [
    "DEFAULT_PATH",
    "MAX_MESSAGE_BYTES",
    "WebSocketCarrier",
    "WebSocketStats",
    "WsPeer",
]

ws_mask.install()

DEFAULT_PATH = "/stt"
MAX_MESSAGE_BYTES = 65536 + 1024
"""Largest binary message accepted: one maximal datagram plus slack for headers."""
READ_SIZE = 65536
"""Bytes asked from TCP per read."""
WRITE_CHUNK_BYTES = 256 * 1024
"""Target size of one TCP write (queued frames are joined up to this)."""
SUBPROTOCOL = "stt"
"""Accepted when a client offers it; a client may also offer nothing."""

_conn_ids = itertools.count(1)
_NETWORK_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,  # includes ssl.SSLError
    LocalProtocolError,
    RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class WsPeer:
    """Address of one WebSocket connection; distinct from every UDP address."""

    conn_id: int
    """Process-unique connection number."""


@dataclass(slots=True)
class WebSocketStats:
    """Counters of one carrier, for diagnostics and tests."""

    connections_accepted: int = 0
    connections_opened: int = 0
    connections_rejected: int = 0
    """Upgrades refused (wrong path, bad request) or timed out."""
    connections_closed: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    text_dropped: int = 0
    oversize_dropped: int = 0
    send_dropped: int = 0
    """Datagrams for unknown or closing connections."""
    queue_overflows: int = 0
    """Connections aborted because the peer stopped reading."""
    pings_received: int = 0
    pongs_received: int = 0


def _ignore_peer(peer: WsPeer) -> None:
    """Null-object default for the connection callbacks."""


def _ignore() -> None:
    """Null-object default for ``on_drained``."""


@dataclass(slots=True, eq=False)
class _Connection:
    """State of one connection; private to the carrier."""

    peer: WsPeer
    ws: WSConnection
    server: bool
    stream: anyio.abc.ByteStream | None = None
    remote: tuple[str, int] | None = None
    established: bool = False
    reject_status: int = 0
    out: deque[bytes] = field(default_factory=deque)
    out_bytes: int = 0
    out_ready: anyio.Event = field(default_factory=anyio.Event)
    finishing: bool = False
    handshake_done: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    partial: bytearray = field(default_factory=bytearray)
    oversize: bool = False
    pings: dict[bytes, anyio.Event] = field(default_factory=dict)

    def enqueue(self, data: bytes) -> None:
        """Queue framed bytes for the writer task."""
        if data:
            self.out.append(data)
            self.out_bytes += len(data)
            self.out_ready.set()

    def take_chunk(self) -> bytes:
        """Join queued frames into one write of about WRITE_CHUNK_BYTES.

        Fewer, larger writes are cheaper than one per frame; the cap keeps a
        long queue from being copied into one huge buffer.
        """
        parts: list[bytes] = []
        size = 0
        while self.out and size < WRITE_CHUNK_BYTES:
            part = self.out.popleft()
            parts.append(part)
            size += len(part)
        self.out_bytes -= size
        return b"".join(parts)

    def send_event(self, event: Event) -> bool:
        """Frame an event and queue it; False if the state does not allow it."""
        try:
            self.enqueue(self.ws.send(event))
        except LocalProtocolError:
            return False
        return True


class WebSocketCarrier:
    """Server and client WebSocket connections carrying STT datagrams.

    Use as an async context manager (it owns a task group)::

        async with WebSocketCarrier(on_datagram=cb) as ws:
            host, port = await ws.listen("127.0.0.1", 0)
            peer = await ws.connect("127.0.0.1", other_port)
            ws.send(datagram, peer)

    Leaving the context closes every connection (close handshake, bounded by
    ``close_timeout``) and every listener.
    """

    def __init__(
        self,
        *,
        on_datagram: Callable[[bytes, WsPeer], None],
        on_connected: Callable[[WsPeer], None] | None = None,
        on_closed: Callable[[WsPeer], None] | None = None,
        on_drained: Callable[[], None] | None = None,
        path: str = DEFAULT_PATH,
        max_message_size: int = MAX_MESSAGE_BYTES,
        max_queue_bytes: int = 64 * 1024 * 1024,
        handshake_timeout: float = 10.0,
        close_timeout: float = 3.0,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        if max_message_size < 1 or max_queue_bytes < 1:
            raise ValueError("max_message_size and max_queue_bytes must be positive")
        self._on_datagram = on_datagram
        self._on_connected = on_connected or _ignore_peer
        self._on_closed = on_closed or _ignore_peer
        self._on_drained = on_drained or _ignore
        self.path = path
        self.max_message_size = max_message_size
        self.max_queue_bytes = max_queue_bytes
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.stats = WebSocketStats()
        self._conns: dict[WsPeer, _Connection] = {}
        self._listen_addresses: list[tuple[str, int]] = []
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> WebSocketCarrier:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        with anyio.CancelScope(shield=True):
            await self.close_all()
        tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("use the WebSocketCarrier inside 'async with'")
        return self._tg

    async def close_all(self) -> None:
        """Close every connection with the close handshake, in parallel (bounded)."""
        conns = list(self._conns.values())
        for conn in conns:
            self._begin_close(conn, 1001, "going away")
        with anyio.move_on_after(self.close_timeout):
            for conn in conns:
                await conn.done.wait()
        for conn in conns:
            conn.scope.cancel()

    # -- server ---------------------------------------------------------------

    async def listen(self, host: str = "127.0.0.1", port: int = 0, *,
                     ssl_context: ssl.SSLContext | None = None,
                     reuse_port: bool = False) -> tuple[str, int]:
        """Accept connections on ``host:port`` (TLS when ``ssl_context`` is given).

        Returns the first bound ``(host, port)``; all of them are in
        :attr:`listen_addresses`. Raises ``OSError`` if the address cannot be bound.
        """
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                reuse_port=reuse_port)
        addresses = []
        for listener in multi.listeners:
            if not isinstance(listener, anyio.abc.SocketListener):
                raise TypeError(f"unexpected listener type {type(listener).__name__}")
            name = listener.extra(anyio.abc.SocketAttribute.local_address)
            addresses.append((str(name[0]), int(name[1])))
            self._task_group().start_soon(self._accept_loop, listener, ssl_context)
        self._listen_addresses.extend(addresses)
        return addresses[0]

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every address :meth:`listen` bound."""
        return list(self._listen_addresses)

    async def _accept_loop(self, listener: anyio.abc.SocketListener,
                           ssl_context: ssl.SSLContext | None) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                except OSError:
                    # EMFILE and friends: back off instead of spinning.
                    await anyio.sleep(0.1)
                    continue
                conn = _Connection(peer=WsPeer(next(_conn_ids)),
                                   ws=WSConnection(ConnectionType.SERVER), server=True)
                self.stats.connections_accepted += 1
                self._task_group().start_soon(self._serve, conn, stream, ssl_context)

    async def _serve(self, conn: _Connection, raw: anyio.abc.SocketStream,
                     ssl_context: ssl.SSLContext | None) -> None:
        """Server side of one connection: optional TLS handshake, then the pump."""
        stream: anyio.abc.ByteStream = raw
        conn.remote = _remote_of(raw)
        if ssl_context is not None:
            with anyio.move_on_after(self.handshake_timeout), \
                    contextlib.suppress(*_NETWORK_ERRORS):
                stream = await TLSStream.wrap(raw, server_side=True,
                                              ssl_context=ssl_context,
                                              standard_compatible=False)
            if stream is raw:
                self.stats.connections_rejected += 1
                await _close_quietly(raw)
                return
        await self._run(conn, stream)

    # -- client ---------------------------------------------------------------

    async def connect(self, host: str, port: int, path: str | None = None, *,
                      ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None,
                      subprotocols: list[str] | None = None,
                      timeout: float = 10.0) -> WsPeer:
        """Open a client connection and complete the upgrade.

        Returns the :class:`WsPeer` to pass to :meth:`send`.

        Raises:
            OSError: the TCP (or TLS) connection failed, e.g. the builtin
                ``ConnectionRefusedError`` when nothing listens.
            ConnectionRefusedError: the server refused the upgrade (HTTP status
                in the message) or closed before accepting.
            TimeoutError: no completed upgrade within ``timeout`` seconds.
        """
        tg = self._task_group()
        conn = _Connection(peer=WsPeer(next(_conn_ids)),
                           ws=WSConnection(ConnectionType.CLIENT), server=False)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with anyio.fail_after(timeout):
            stream: anyio.abc.ByteStream
            if ssl_context is None:
                stream = await anyio.connect_tcp(host, port)
            else:
                stream = await anyio.connect_tcp(
                    host, port, ssl_context=ssl_context, tls_standard_compatible=False,
                    tls_hostname=server_hostname or host)
            conn.send_event(Request(host=authority, target=path or self.path,
                                    subprotocols=subprotocols or []))
            self.stats.connections_opened += 1
            tg.start_soon(self._run, conn, stream)
            try:
                await conn.handshake_done.wait()
            except BaseException:
                conn.scope.cancel()
                raise
        if not conn.established:
            status = conn.reject_status
            raise ConnectionRefusedError(
                f"WebSocket upgrade to {authority}{path or self.path} refused"
                + (f" (HTTP {status})" if status else ""))
        return conn.peer

    # -- sending and closing --------------------------------------------------

    def send(self, datagram: bytes, peer: WsPeer) -> bool:
        """Queue one datagram as a binary message; never blocks.

        Returns False (and counts it) if the connection is unknown or closing.
        A peer that lets the queue exceed ``max_queue_bytes`` is aborted.
        """
        conn = self._conns.get(peer)
        if conn is None or conn.ws.state is not ConnectionState.OPEN:
            self.stats.send_dropped += 1
            return False
        if conn.out_bytes + len(datagram) > self.max_queue_bytes:
            self.stats.queue_overflows += 1
            self.stats.send_dropped += 1
            conn.scope.cancel()
            return False
        if not conn.send_event(BytesMessage(data=datagram)):
            self.stats.send_dropped += 1
            return False
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(datagram)
        return True

    async def close(self, peer: WsPeer, code: int = 1000, reason: str = "") -> None:
        """Close one connection with the close handshake; returns when it is gone.

        Waits at most ``close_timeout`` for the peer's reply, then aborts.
        Unknown peers are ignored.
        """
        conn = self._conns.get(peer)
        if conn is None:
            return
        self._begin_close(conn, code, reason)
        with anyio.move_on_after(self.close_timeout):
            await conn.done.wait()
        if not conn.done.is_set():
            conn.scope.cancel()
            await conn.done.wait()

    def _begin_close(self, conn: _Connection, code: int, reason: str) -> None:
        if conn.ws.state is ConnectionState.OPEN:
            conn.send_event(CloseConnection(code=code, reason=reason))
        elif not conn.established:
            conn.scope.cancel()

    async def ping(self, peer: WsPeer, timeout: float = 5.0) -> float:
        """Send a ping and return the seconds until its pong arrived.

        Raises:
            ConnectionError: the connection is unknown, not open, or closed
                before the pong arrived.
            TimeoutError: no pong within ``timeout``.
        """
        conn = self._conns.get(peer)
        if conn is None or conn.ws.state is not ConnectionState.OPEN:
            raise ConnectionError(f"{peer} is not an open WebSocket connection")
        payload = next(_conn_ids).to_bytes(8, "big")
        waiter = conn.pings[payload] = anyio.Event()
        started = anyio.current_time()
        conn.send_event(Ping(payload=payload))
        try:
            with anyio.fail_after(timeout):
                await waiter.wait()
        finally:
            # The pong handler removes the entry; the close path only wakes us.
            unanswered = conn.pings.pop(payload, None) is not None
        if unanswered:
            raise ConnectionError(f"{peer} closed before answering the ping")
        return anyio.current_time() - started

    def is_open(self, peer: WsPeer) -> bool:
        """True while ``peer`` is an established connection that is not closing."""
        conn = self._conns.get(peer)
        return conn is not None and conn.ws.state is ConnectionState.OPEN

    def remote_address(self, peer: WsPeer) -> tuple[str, int] | None:
        """The TCP address of the other end, for logs; None if unknown."""
        conn = self._conns.get(peer)
        return None if conn is None else conn.remote

    @property
    def peers(self) -> list[WsPeer]:
        """Every established connection."""
        return list(self._conns)

    # -- the per-connection pump ----------------------------------------------

    async def _run(self, conn: _Connection, stream: anyio.abc.ByteStream) -> None:
        """Run one connection to its end; always reports and cleans up."""
        conn.stream = stream
        if conn.remote is None:
            conn.remote = _remote_of(stream)
        try:
            with conn.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._write_loop, conn, tg.cancel_scope)
                    await self._read_loop(conn)
                    # Let the writer flush (the close reply, a 404), bounded.
                    conn.finishing = True
                    conn.out_ready.set()
                    tg.cancel_scope.deadline = anyio.current_time() + self.close_timeout
        finally:
            conn.handshake_done.set()
            with anyio.CancelScope(shield=True):
                await _close_quietly(stream)
            if self._conns.pop(conn.peer, None) is not None:
                self.stats.connections_closed += 1
                self._on_closed(conn.peer)
            for waiter in conn.pings.values():
                waiter.set()
            conn.done.set()

    async def _write_loop(self, conn: _Connection, scope: anyio.CancelScope) -> None:
        stream = conn.stream
        if stream is None:
            return
        try:
            while True:
                if conn.out:
                    await stream.send(conn.take_chunk())
                elif conn.finishing:
                    return
                else:
                    conn.out_ready = anyio.Event()
                    await conn.out_ready.wait()
        except _NETWORK_ERRORS:
            scope.cancel()  # the reader cannot do anything useful either

    async def _read_loop(self, conn: _Connection) -> None:
        with anyio.move_on_after(self.handshake_timeout):
            while not conn.established:
                if not await self._read_once(conn):
                    break
        if not conn.established:
            if conn.server:
                self.stats.connections_rejected += 1
            return
        while await self._read_once(conn):
            pass

    async def _read_once(self, conn: _Connection) -> bool:
        """Read and handle one chunk; False once the connection is over."""
        data: bytes | None
        stream = conn.stream
        if stream is None:
            return False
        try:
            data = await stream.receive(READ_SIZE)
        except _NETWORK_ERRORS:
            data = None
        try:
            conn.ws.receive_data(data)
            for event in conn.ws.events():
                self._handle(conn, event)
        except (LocalProtocolError, RemoteProtocolError):
            return False
        if conn.established:
            self._on_drained()
        if conn.reject_status:
            return False
        return data is not None and conn.ws.state is not ConnectionState.CLOSED

    def _handle(self, conn: _Connection, event: Event) -> None:
        """Dispatch one wsproto event."""
        if isinstance(event, BytesMessage):
            self._on_bytes(conn, event)
        elif isinstance(event, TextMessage):
            if event.message_finished:
                self.stats.text_dropped += 1
        elif isinstance(event, Ping):
            self.stats.pings_received += 1
            conn.send_event(event.response())
        elif isinstance(event, Pong):
            self.stats.pongs_received += 1
            waiter = conn.pings.pop(bytes(event.payload), None)
            if waiter is not None:
                waiter.set()
        elif isinstance(event, CloseConnection):
            if conn.ws.state is ConnectionState.REMOTE_CLOSING:
                conn.send_event(event.response())
        elif isinstance(event, Request):
            self._on_request(conn, event)
        elif isinstance(event, AcceptConnection):
            self._establish(conn)
        elif isinstance(event, RejectConnection):
            conn.reject_status = event.status_code or 400
            conn.handshake_done.set()

    def _on_request(self, conn: _Connection, request: Request) -> None:
        if urlsplit(request.target).path != self.path:
            conn.reject_status = 404
            conn.send_event(RejectConnection(status_code=404))
            return
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.subprotocols else None
        if conn.send_event(AcceptConnection(subprotocol=subprotocol)):
            self._establish(conn)

    def _establish(self, conn: _Connection) -> None:
        conn.established = True
        self._conns[conn.peer] = conn
        self._on_connected(conn.peer)
        conn.handshake_done.set()

    def _on_bytes(self, conn: _Connection, event: BytesMessage) -> None:
        """Reassemble fragments into one datagram, dropping oversize messages."""
        if not conn.oversize:
            conn.partial += event.data
            if len(conn.partial) > self.max_message_size:
                conn.oversize = True
                conn.partial = bytearray()
        if not event.message_finished:
            return
        if conn.oversize:
            self.stats.oversize_dropped += 1
            conn.oversize = False
            return
        datagram = bytes(conn.partial)
        conn.partial = bytearray()
        self.stats.messages_received += 1
        self.stats.bytes_received += len(datagram)
        self._on_datagram(datagram, conn.peer)


def _remote_of(stream: anyio.abc.ByteStream) -> tuple[str, int] | None:
    try:
        name = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return None
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return None


async def _close_quietly(stream: anyio.abc.AsyncResource) -> None:
    with anyio.move_on_after(1.0), contextlib.suppress(*_NETWORK_ERRORS):
        await stream.aclose()
