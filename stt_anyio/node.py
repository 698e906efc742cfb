"""Node: one STT endpoint on real sockets, and the single pump that drives it.

Owns the wiring between the core's ``Endpoint`` and the carriers (UDP,
WebSocket), the pump task, the one timer, the dispatch of events to
:class:`~stt_anyio.session.Session` / :class:`~stt_anyio.session.Stream`
waiters, ``connect``/``accept``, and orderly shutdown. It must not implement
protocol logic (that is ``stt_core``) nor socket details (the carriers).

The pump (STYLE.md §2, the contract in ``stt_core.endpoint``):

1. Input arrives from a carrier callback (``receive_datagram`` with
   ``now=clock.now()``), from the timer, or from an application command.
   Each of those marks the node dirty and wakes the pump.
2. The pump drains every event and dispatches it, flushes every datagram to
   the carrier its address belongs to (``WsPeer`` -> WebSocket, tuples -> UDP),
   then re-arms its one timer, and only if the core's deadline changed. An
   inline flush (``_kick``) moves the timer itself, without waking the pump,
   when the deadline moved earlier; a later one waits for the armed timer to
   fire early.
3. The timer is the deadline of a long-lived cancel scope around the pump's
   wait; when it fires the pump calls ``handle_timer(max(deadline, now()))``.

Carriers call the core directly from their reader tasks; that is safe because
the core is only ever touched between two awaits of one event-loop thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import math
import os
import socket
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.abc

from stt_core import Config, Endpoint
from stt_core.errors import (
    ConnectionRefusedError,
    ConnectionTimeoutError,
    InvalidStateError,
)
from stt_core.events import (
    Address,
    Event,
    HandshakeConfirmed,
    MessageDelivered,
    MessageReceived,
    PathChanged,
    ResumeTokenReceived,
    SessionClosed,
    SessionEstablished,
    SessionRef,
    StreamClosed,
    StreamOpened,
    StreamWritable,
)
from stt_core.trace import NULL_TRACE

from . import clock
from .migration import FailoverPath, Migrator, SessionPaths, WsOptions, plan_paths
from .session import ChangeSignal, Session, closed_error
from .timeouts import time_limit
from .tracing import TraceWriter, resolve_trace_dir
from .udp import DEFAULT_BUFFER_SIZE, UdpAddress, UdpCarrier
from .websocket import DEFAULT_PATH, WebSocketCarrier, WsPeer

__all__ = ["Node", "TransportName", "open_node"]

logger = logging.getLogger("stt.anyio.node")

TransportName = Literal["udp", "websocket"]
_TRANSPORT_BY_NAME: dict[str, TransportName] = {"udp": "udp", "websocket": "websocket"}
WS_DATAGRAM_SIZE = 65507
"""Largest datagram the node puts in one WebSocket message (reliable path)."""
FLUSH_TIMEOUT = 2.0
"""Longest a flush waits for a full UDP send buffer before dropping the rest
(loss recovery repairs it); bounds shutdown and cancellation."""


class Node:
    """A running STT node; create it with :func:`open_node`."""

    def __init__(self, config: Config, *, random_bytes: Callable[[int], bytes] = os.urandom,
                 ws_path: str = DEFAULT_PATH,
                 trace_dir: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        directory = resolve_trace_dir(trace_dir)
        self.tracer = None if directory is None else TraceWriter(
            directory, node_id=config.node_id, now=clock.now())
        """The trace writer (see :func:`open_node`'s ``trace_dir``), or None."""
        self._endpoint = Endpoint(config, now=clock.now(), random_bytes=random_bytes,
                                  trace=self.tracer or NULL_TRACE)
        if self.tracer is not None:
            self.tracer.session_id_of = self._endpoint.session_id
        self.ws_path = ws_path
        self._udp: UdpCarrier | None = None
        self._ws: WebSocketCarrier | None = None
        self.local_addresses: dict[str, tuple[str, int]] = {}
        """Bound address per transport name (``"udp"``, ``"websocket"``)."""
        self._primary: str = "udp"
        self._sessions: dict[SessionRef, Session] = {}
        self._owned_ws: dict[SessionRef, WsPeer] = {}
        self._accept_queue: deque[Session] = deque()
        self._accept_signal = ChangeSignal()
        self._dirty = False
        self._wake: anyio.Event | None = None
        self._armed: float | None = None
        self._backlog: list[tuple[bytes, UdpAddress]] = []
        self._in_flush = False
        self._timer_scope: anyio.CancelScope | None = None
        self._loop_time: Callable[[], float] = anyio.current_time
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._flush_deferred = False
        self._write_turn = False
        self._task_step: Callable[[], tuple[int, int]] | None = None
        self._write_step: tuple[int, int] | None = None
        self._after_turn = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._migrator = Migrator(self)

    # -- what sessions need (session._Link) -----------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """The core endpoint (advanced use; commands on it need :meth:`_kick`)."""
        return self._endpoint

    @property
    def auto_consume(self) -> bool:
        return self.config.auto_consume

    def _kick(self) -> None:
        """Something changed in the core: dispatch and flush now, wake the pump if needed.

        The flush runs inline, in the caller's task, with non-blocking sends:
        a datagram leaves in the same scheduler turn as the command or input
        that produced it, with no hop through the pump task (a round trip costs
        several task switches less). What the socket cannot take now goes to a
        backlog that the pump sends when the socket is writable; a timer
        deadline that moved earlier is re-armed here. A command that queued nothing
        (most credit returns) skips the flush: the core says so
        (``Endpoint.flush_needed``).
        """
        self._dirty = True
        if not self._in_flush and self._udp is not None:
            if self._endpoint.flush_needed:
                self._flush_inline()
            if not self._backlog and self._rearm_inline(self._endpoint.next_timer()):
                self._dirty = False
                return
        if self._wake is not None:
            self._wake.set()

    def _kick_write(self) -> None:
        """A write queued a message: flush it now, or with the others of this turn.

        The first write in a turn of the event loop flushes inline, as any
        command does, so a request leaves at once. Writes after it in the same
        turn (a task writing many small messages without awaiting anything in
        between) only queue, and one flush at the end of the turn packs them
        together: one packet for many small messages instead of one each. On
        asyncio ``call_soon`` marks the end of the turn; on trio the pump sends
        them, as it runs after the writing task's step (``_kick_write_trio``).
        """
        call_soon = self._call_soon
        if call_soon is None:
            self._kick_write_trio()
            return
        if self._write_turn:
            self._dirty = True
            return
        self._write_turn = True
        if not self._flush_deferred:  # else the deferred flush, already queued, ends the turn
            call_soon(self._end_write_turn)
        self._kick()

    def _kick_write_trio(self) -> None:
        """``_kick_write`` on trio, which has no ``call_soon``: a task step is the turn.

        A write in the same step of the same task as the last one (trio counts a
        task's steps) only queues and wakes the pump; the pump runs in a later
        batch, after the writing task has yielded, and sends everything written
        in that step together. A lone write per step (a request, a reply)
        flushes inline, as before. Where trio does not expose the count, every
        write flushes inline.
        """
        step_of = self._task_step
        if step_of is None:
            self._kick()
            return
        step = step_of()
        if step == self._write_step:
            self._dirty = True
            if self._wake is not None:
                self._wake.set()
            return
        self._write_step = step
        self._kick()

    def _end_write_turn(self) -> None:
        self._write_turn = False
        if self._endpoint.flush_needed:
            self._kick()

    def _rearm_inline(self, deadline: float | None) -> bool:
        """Make the armed timer cover ``deadline`` without waking the pump; False if
        only the pump can (it has no timer scope yet).

        A deadline that moved earlier moves the pump's cancel-scope deadline
        from this task (anyio allows it from any task): on a request/response
        exchange that happens at every received request (its ACK-delay
        deadline), and waking the pump only to do it cost a task switch and a
        pump step each time.
        """
        if self._timer_covers(deadline):
            return True
        if self._timer_scope is None:
            return False
        self._armed = deadline
        self._set_scope_deadline()
        return True

    def _timer_covers(self, deadline: float | None) -> bool:
        """True when the armed timer fires no later than ``deadline`` needs it.

        Only a deadline that moved *earlier* needs the timer re-armed.
        One that moved later (or went away) is left to the armed timer: it
        fires early, ``handle_timer`` finds nothing due (harmless by the core's
        contract) and the pump re-arms to the real deadline then. On a
        request/response exchange the deadline moves at every packet (ACK
        delay, then loss detection), so this trades a re-arm per packet for one
        early timer per ACK-delay period.
        """
        armed = self._armed
        if armed is None:
            return deadline is None
        return deadline is None or deadline >= armed

    def _flush_inline(self) -> None:
        self._in_flush = True
        try:
            self._dispatch()
            self._route(self._endpoint.datagrams_to_send(clock.now(), lend=True))
            self._dispatch()
        finally:
            self._in_flush = False

    def _route(self, out: list[tuple[bytes | memoryview, Address]]) -> None:
        """Hand WebSocket datagrams to their connections and send the UDP ones.

        UDP datagrams go out now, without waiting, unless a backlog exists;
        what the socket cannot take joins the backlog, behind anything already
        there, for the pump to send once the socket is writable. The flush
        borrowed large datagrams from the core (``lend=True``): one that must
        wait is copied, since the next flush writes its buffer again.
        """
        udp_batch: list[tuple[bytes | memoryview, UdpAddress]] = []
        for data, addr in out:
            if isinstance(addr, tuple):
                udp_batch.append((data, addr))
            elif isinstance(addr, WsPeer) and self._ws is not None:
                self._ws.send(_owned(data), addr)
        udp = self._udp
        if udp_batch and not self._backlog and udp is not None:
            del udp_batch[:udp.try_send_many(udp_batch)]
        if udp_batch:
            self._backlog += [(_owned(data), addr) for data, addr in udp_batch]

    # -- public API ----------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        """This node's id (given, or derived from ``node_seed``)."""
        return self.config.node_id

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound address of the first transport given to :func:`open_node`."""
        return self.local_addresses[self._primary]

    @property
    def sessions(self) -> list[Session]:
        """Every session of this node that has not closed yet."""
        return [s for s in self._sessions.values() if not s.closed]

    async def connect(self, addr: tuple[str, int], *, peer_node_id: bytes | None = None,
                      timeout: float | None = None, transport: TransportName | None = None,
                      path: str | None = None, ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None,
                      paths: Mapping[str, tuple[str, int]] | None = None,
                      failover: Sequence[FailoverPath] | None = None,
                      failover_after: float | None = None) -> Session:
        """Open a session to ``addr`` and wait until it is established.

        Args:
            addr: ``(host, port)`` of the peer's UDP socket or WebSocket listener.
            peer_node_id: if given, the peer must prove exactly this node id.
            timeout: seconds for the whole attempt (default: ``connect_timeout``).
            transport: ``"udp"`` or ``"websocket"``; default: the node's first.
            path, ssl_context, server_hostname: WebSocket only (URL path, TLS).
            paths: the same server's address on other transports, e.g.
                ``{"websocket": ("host", 8443)}``, for :meth:`Session.migrate`.
            failover: ``[(transport, (host, port)), ...]``: turn on automatic
                failover to these paths, in order (docs/continuity.md).
            failover_after: seconds of silence with data in flight before
                failing over (default 3 s when ``failover`` is given).

        Raises:
            AuthenticationError: wrong shared seed, or a different peer node id.
            ConnectionTimeoutError: no answer within ``timeout``.
            ConnectionRefusedError: nothing listens there, or the peer refused.
            ValueError, InvalidStateError: a bad ``paths``/``failover`` entry.
        """
        return await self._open(addr, peer_node_id, None, timeout, transport,
                                (path, ssl_context, server_hostname),
                                (paths, failover, failover_after))

    async def resume(self, addr: tuple[str, int], ticket: bytes, *,
                     timeout: float | None = None, transport: TransportName | None = None,
                     path: str | None = None, ssl_context: ssl.SSLContext | None = None,
                     server_hostname: str | None = None) -> Session:
        """Re-establish a session from a resume ticket in one round trip (protocol.md §6.8).

        ``ticket`` is the :attr:`Session.resume_token` of an earlier session
        with this server (secret material). The resumed session has the
        original session id and fresh keys; it may use a new address or the
        other transport. Arguments otherwise as for :meth:`connect`.

        Raises:
            AuthenticationError: the server refused the ticket (expired, already
                used, or not issued by it).
            ConnectionTimeoutError, ConnectionRefusedError: as for :meth:`connect`.
            ValueError: ``ticket`` is not a ticket.
        """
        return await self._open(addr, None, ticket, timeout, transport,
                                (path, ssl_context, server_hostname))

    async def _open(self, addr: tuple[str, int], peer_node_id: bytes | None,
                    ticket: bytes | None, timeout: float | None,
                    transport: TransportName | None,
                    ws_options: WsOptions,
                    alternatives: tuple[Mapping[str, tuple[str, int]] | None,
                                        Sequence[FailoverPath] | None, float | None]
                    = (None, None, None)) -> Session:
        """Shared body of :meth:`connect` and :meth:`resume`."""
        self._require_running()
        kind = transport or self._primary
        if kind not in self.local_addresses:
            raise InvalidStateError(f"this node has no {kind!r} transport")
        plan = plan_paths(kind, addr, paths=alternatives[0], failover=alternatives[1],
                          failover_after=alternatives[2],
                          idle_timeout=self.config.idle_timeout, ws_options=ws_options,
                          available=self.local_addresses)
        limit = self.config.connect_timeout if timeout is None else timeout
        loop_time = self._loop_time  # the loop's clock, without anyio's backend look-up
        deadline = loop_time() + limit
        core_addr = await self._open_carrier(_TRANSPORT_BY_NAME[kind], addr, limit, ws_options)
        session = await self._handshake(core_addr, peer_node_id,
                                        max(deadline - loop_time(), 0.001), ticket=ticket)
        self._migrator.register(session, plan)
        return session

    async def _open_carrier(self, kind: TransportName, addr: tuple[str, int], limit: float,
                            ws_options: WsOptions) -> Address:
        """The core address of ``addr`` on ``kind``: a new WebSocket, or the UDP tuple."""
        if kind == "websocket":
            return await self._ws_connect(addr, limit, *ws_options)
        return await _resolve(addr)

    # -- what migration needs (migration._NodeLink) ---------------------------

    def paths_of(self, session: Session) -> SessionPaths | None:
        """The paths this node knows for a session it opened (None for accepted ones)."""
        return self._migrator.paths_of(session.ref)

    async def _migrate(self, session: Session, transport: str,
                       address: tuple[str, int] | None, timeout: float | None) -> None:
        await self._migrator.migrate(session, transport, address, timeout)

    def _own_ws(self, ref: SessionRef, peer: Address | None) -> None:
        """``peer`` is now the WebSocket opened for session ``ref`` (closed with it)."""
        if isinstance(peer, WsPeer):
            self._owned_ws[ref] = peer
        else:
            self._owned_ws.pop(ref, None)

    def _close_path(self, addr: Address) -> None:
        """Close ``addr`` if it is a WebSocket (no session uses it any more)."""
        if isinstance(addr, WsPeer) and self._ws is not None and self._tg is not None:
            self._tg.start_soon(self._ws.close, addr)

    def _spawn(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._tg is not None:
            self._tg.start_soon(task)

    async def _handshake(self, core_addr: Address, peer_node_id: bytes | None,
                         timeout: float, *, ticket: bytes | None = None) -> Session:
        """Run the core's handshake (or resumption, given a ticket) until the session
        is established, or raise why it is not.

        No cancel scope of its own: the core was given ``timeout`` and ends the
        attempt itself (``SessionClosed`` with reason ``timeout``, raised here as
        ``ConnectionTimeoutError``), as it owns every other timer of a session.
        A scope here would only repeat that deadline, for about 600 bytecodes
        and an event-loop timer per connect on asyncio.
        """
        if ticket is not None:
            ref = self._endpoint.resume(core_addr, ticket, clock.now(), timeout=timeout)
        else:
            ref = self._endpoint.connect(core_addr, clock.now(), peer_node_id=peer_node_id,
                                         timeout=timeout)
        session = self._sessions[ref] = Session(self, ref)
        if isinstance(core_addr, WsPeer):
            self._owned_ws[ref] = core_addr
        self._kick()
        while session.session_id == b"" and not session.closed:
            await session._changed.wait()
        if session.closed:
            raise closed_error(session.close_reason)
        return session

    async def _ws_connect(self, addr: tuple[str, int], limit: float, path: str | None,
                          ssl_context: ssl.SSLContext | None,
                          server_hostname: str | None) -> WsPeer:
        if self._ws is None:
            raise InvalidStateError("this node has no websocket transport")
        try:
            return await self._ws.connect(addr[0], addr[1], path or self.ws_path,
                                          ssl_context=ssl_context,
                                          server_hostname=server_hostname, timeout=limit)
        except TimeoutError as exc:
            raise ConnectionTimeoutError(f"WebSocket connect to {addr!r} timed out") from exc
        except OSError as exc:
            raise ConnectionRefusedError(f"WebSocket connect to {addr!r} failed: {exc}") \
                from exc

    async def accept(self, *, timeout: float | None = None) -> Session:
        """The next session a peer established with this node (server mode).

        Raises:
            InvalidStateError: the node is not in server mode.
            TimeoutError: none within ``timeout`` seconds.
        """
        if not self.config.server_mode:
            raise InvalidStateError("accept() needs open_node(server_mode=True)")
        with time_limit(timeout):
            while not self._accept_queue:
                self._require_running()
                await self._accept_signal.wait()
        return self._accept_queue.popleft()

    def get_stats(self) -> dict[str, Any]:
        """Counters of the endpoint and the carriers, as plain data."""
        stats: dict[str, Any] = {
            "node_id": self.node_id.hex(),
            "sessions": len(self.sessions),
            "endpoint": dataclasses.asdict(self._endpoint.stats),
        }
        if self._udp is not None:
            stats["udp"] = dataclasses.asdict(self._udp.stats)
        if self._ws is not None:
            stats["websocket"] = dataclasses.asdict(self._ws.stats)
        return stats

    def _require_running(self) -> None:
        if self._tg is None or self._closing:
            raise InvalidStateError("the node is not running (use 'async with open_node()')")

    # -- carrier callbacks ---------------------------------------------------

    def _on_datagram(self, data: bytes | memoryview, addr: Address) -> None:
        # ``data`` may be a view of the UDP carrier's receive buffer (the node
        # binds it with views=True): the core reads it during this call only.
        left = self._migrator.filter
        if left.active and left.drops(data, addr):
            return  # a session moved away from this path (stt_anyio.migration rule 3)
        self._endpoint.receive_datagram(data, addr, clock.now())
        self._dirty = True

    def _on_drained(self) -> None:
        """A receive batch ended: deliver its messages, and flush now or just after.

        On asyncio, when the batch delivered messages and the core has no
        datagram due (the ACK may wait for a reply), the flush, which would
        only re-arm the timer, waits for the next turn of the loop, where it
        runs after the tasks the messages woke: a reply written there flushes
        the session itself (its packet carries the ACK) and leaves that much
        sooner, and the deferred flush then finds nothing to do. No datagram
        waits for this but an ACK the peer asked for at once (IMMEDIATE_ACK),
        which the reply carries. On trio, whose carrier reads in a task, the
        flush runs at once, except when such an ACK is all that is due: the
        pump then sends it after the woken tasks had their turn (``_step``).
        """
        if not self._dispatch():
            self._kick()
            return
        endpoint = self._endpoint
        now = clock.now()
        if endpoint.output_due(now):
            self._kick()
            return
        call_soon = self._call_soon
        if call_soon is not None:
            if not self._flush_deferred:
                self._flush_deferred = True
                call_soon(self._deferred_kick)
            return
        if endpoint.output_due(now, patient=False):
            self._after_turn = True
            self._dirty = True
            if self._wake is not None:
                self._wake.set()
            return
        self._kick()

    def _deferred_kick(self) -> None:
        """The flush a receive batch deferred; it also ends a write turn begun since.

        A reply written by a task the batch woke would otherwise queue a second
        end-of-turn callback, and with it one more turn of the loop per round trip.
        """
        self._flush_deferred = False
        self._write_turn = False
        self._kick()

    def _on_unreachable(self, addr: UdpAddress | None, code: int) -> None:
        if addr is not None:
            self._endpoint.connection_refused(addr, clock.now())
            self._kick()

    def _on_ws_connected(self, peer: WsPeer) -> None:
        # Before any datagram of this connection reaches the core.
        self._endpoint.set_path_properties(peer, max_datagram_size=WS_DATAGRAM_SIZE,
                                           reliable=True)

    def _on_ws_closed(self, peer: WsPeer) -> None:
        self._migrator.filter.discard_address(peer)
        self._endpoint.path_closed(peer)
        self._kick()

    # -- the pump ------------------------------------------------------------

    async def _run_pump(self) -> None:
        """The node's one pump task (see the module docstring)."""
        self._loop_time = clock.loop_clock()  # _kick re-arms from reader callbacks too
        loop = clock.running_asyncio_loop()
        self._call_soon = None if loop is None else loop.call_soon
        self._task_step = None if loop is not None else _trio_task_step()
        while True:
            with anyio.CancelScope() as scope:
                self._timer_scope = scope
                self._set_scope_deadline()
                while True:
                    await self._step()
                    if not self._dirty:
                        self._wake = anyio.Event()
                        await self._wake.wait()
                        self._wake = None
            self._timer_scope = None
            self._wake = None
            deadline, self._armed = self._armed, None
            if scope.cancelled_caught and deadline is not None:
                self._endpoint.handle_timer(max(deadline, clock.now()))
                self._dirty = True

    async def _step(self) -> None:
        if self._after_turn:
            # trio: a requested ACK waits until the tasks the last receive
            # batch woke had their turn; trio runs one batch's tasks in random
            # order, so one checkpoint here puts this flush after theirs.
            self._after_turn = False
            await anyio.lowlevel.checkpoint()
        self._dirty = False
        self._dispatch()
        await self._flush()
        self._dispatch()
        deadline = self._endpoint.next_timer()
        if deadline != self._armed:
            self._armed = deadline
            self._set_scope_deadline()

    def _set_scope_deadline(self) -> None:
        if self._timer_scope is not None:
            self._timer_scope.deadline = (math.inf if self._armed is None
                                          else clock.loop_deadline(self._armed, self._loop_time))

    async def _flush(self) -> None:
        """Send what is due; wait for writability only while a backlog remains.

        The backlog stays in place while the pump waits, so datagrams sealed
        meanwhile by an inline flush queue behind it instead of overtaking it:
        handing a sealed batch to a task that yields before sending would put
        later packet numbers on the wire first, which the peer reads as loss.
        """
        self._route(self._endpoint.datagrams_to_send(clock.now(), lend=True))
        udp = self._udp
        if self._backlog and udp is not None:
            # Shielded so a timer firing mid-wait does not lose datagrams.
            with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_TIMEOUT):
                await self._send_backlog(udp)
            self._backlog.clear()  # after FLUSH_TIMEOUT: dropped, loss recovery repairs

    async def _send_backlog(self, udp: UdpCarrier) -> None:
        backlog = self._backlog
        while backlog:
            if not await udp.wait_writable():
                return
            del backlog[:udp.try_send_many(backlog)]

    def _dispatch(self) -> bool:
        """Hand every pending event to its session or stream; True when one was a message."""
        endpoint = self._endpoint
        delivered = False
        while (event := endpoint.next_event()) is not None:
            session = self._sessions.get(event.ref)
            if isinstance(event, SessionEstablished):
                self._on_established(event, session)
            elif session is None:
                continue
            elif isinstance(event, MessageReceived):
                session._stream_for_message(event.stream_id)._on_message(event.message)
                delivered = True
            elif isinstance(event, MessageDelivered):  # the next most common: before the rest
                stream = session._streams.get(event.stream_id)
                if stream is not None:  # a forgotten stream's handle is held by nobody
                    stream._on_delivered(event.message_id)
            elif isinstance(event, SessionClosed):
                self._on_session_closed(event, session)
            elif isinstance(event, HandshakeConfirmed):
                session._on_confirmed()
            else:
                _dispatch_stream_event(event, session)
        return delivered

    def _on_established(self, event: SessionEstablished, session: Session | None) -> None:
        if session is None:
            session = self._sessions[event.ref] = Session(self, event.ref)
            if self._closing:
                self._endpoint.close_session(event.ref, reason="node shutting down",
                                             now=clock.now())
            else:
                self._accept_queue.append(session)
                self._accept_signal.fire()
        session._on_established(event.session_id, event.peer_node_id, event.address,
                                event.confirmed)
        logger.info("session %s established with %r at %r (%s)", event.session_id.hex(),
                    event.peer_node_id, event.address,
                    "initiated" if event.initiator else "accepted")

    def _on_session_closed(self, event: SessionClosed, session: Session) -> None:
        del self._sessions[event.ref]
        session._on_closed(event)
        self._migrator.forget(session)
        logger.info("session %s closed: %s%s (code %d) %r", event.session_id.hex() or "-",
                    event.reason, " by peer" if event.by_peer else "", event.code,
                    event.message)
        if event.abandoned_bytes:
            logger.warning("session %s ended with %d written stream bytes never "
                           "acknowledged by the peer: they are lost",
                           event.session_id.hex() or "-", event.abandoned_bytes)
        if self.tracer is not None:
            self.tracer.session_closed(event.ref)
        peer = self._owned_ws.pop(event.ref, None)
        if peer is not None and self._ws is not None and self._tg is not None:
            # The WebSocket was opened for this session only.
            self._tg.start_soon(self._ws.close, peer)

    # -- lifecycle -----------------------------------------------------------

    async def _open_udp(self, stack: contextlib.AsyncExitStack, host: str, port: int, *,
                        recv_buffer_size: int, send_buffer_size: int,
                        reuse_port: bool, offload: bool) -> None:
        udp = await UdpCarrier.bind(
            host, port, on_datagram=self._on_datagram, on_drained=self._on_drained,
            on_unreachable=self._on_unreachable, recv_buffer_size=recv_buffer_size,
            send_buffer_size=send_buffer_size, reuse_port=reuse_port, views=True)
        if not offload:
            udp.set_offload(gso=False, gro=False)
        stack.push_async_callback(udp.aclose)
        self._udp = udp
        self.local_addresses["udp"] = udp.local_address

    async def _open_websocket(self, stack: contextlib.AsyncExitStack, host: str, port: int,
                              *, ssl_context: ssl.SSLContext | None,
                              reuse_port: bool) -> None:
        """The WebSocket carrier; it listens only in server mode."""
        self._ws = await stack.enter_async_context(WebSocketCarrier(
            on_datagram=self._on_datagram, on_connected=self._on_ws_connected,
            on_closed=self._on_ws_closed, on_drained=self._on_drained, path=self.ws_path,
            close_timeout=self.config.close_timeout))
        if self.config.server_mode:
            self.local_addresses["websocket"] = await self._ws.listen(
                host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        else:
            self.local_addresses["websocket"] = (host, 0)

    async def _shutdown(self) -> None:
        """Close every session gracefully, bounded by ``close_timeout``."""
        self._closing = True
        self._accept_signal.fire()
        pending = [s for s in self._sessions.values() if not s.closed]
        for session in pending:
            self._endpoint.close_session(session.ref, reason="node shutting down",
                                         now=clock.now())
        self._kick()
        with anyio.move_on_after(self.config.close_timeout + 0.5):
            for session in pending:
                await session.wait_closed()
        for session in list(self._sessions.values()):
            session._on_closed(SessionClosed(ref=session.ref, reason="error",
                                             message="node closed"))
        self._sessions.clear()


def _trio_task_step() -> Callable[[], tuple[int, int]] | None:
    """On trio: a function naming the running task's current step, as (id of
    the task, the times it has yielded to the scheduler); None when trio is
    not running or does not keep that count (``Task._schedule_points``: a
    private attribute, so its absence costs only the batching of writes).
    """
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return None
    current_task = trio.lowlevel.current_task
    try:
        current_task()._schedule_points  # noqa: B018 (probing for the attribute)
    except (AttributeError, RuntimeError):
        return None

    def step() -> tuple[int, int]:
        task = current_task()
        return id(task), task._schedule_points

    return step


def _dispatch_stream_event(event: Event, session: Session) -> None:
    """Events that concern one stream, or the session's path or token."""
    if isinstance(event, StreamOpened):
        session._on_stream_opened(event.stream_id, event.purpose, event.priority)
    elif isinstance(event, MessageDelivered | StreamWritable | StreamClosed):
        # Handles nobody holds any more (forgotten streams) need no news.
        stream = session._streams.get(event.stream_id)
        if stream is None:
            return
        if isinstance(event, MessageDelivered):
            stream._on_delivered(event.message_id)
        elif isinstance(event, StreamClosed):
            stream._on_closed(event.code)
        else:
            stream._wake()
    elif isinstance(event, PathChanged):
        logger.debug("session %s moved to %r", session.session_id.hex(), event.new_address)
        session._on_path_changed(event.new_address)
    elif isinstance(event, ResumeTokenReceived):
        session.resume_token = event.token


def _owned(datagram: bytes | memoryview) -> bytes:
    """A datagram the core lent for one flush (a view), as bytes that outlive it."""
    return bytes(datagram) if isinstance(datagram, memoryview) else datagram


async def _resolve(addr: tuple[str, int]) -> UdpAddress:
    """``(host, port)`` with ``host`` as an IP literal, so replies match the address."""
    if not (isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[0], str)):
        raise ValueError(f"address must be (host, port), not {addr!r}")
    host, port = addr
    if not _is_ip_literal(host):
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise ConnectionRefusedError(f"cannot resolve {host!r}") from None
        return (str(infos[0][4][0]), int(port))
    return (host, int(port))


@functools.lru_cache(maxsize=256)
def _is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address as text (not a name to look up).

    Cached: ``ipaddress`` parses in Python, about 200 bytecodes a call, and a
    client connecting in a loop asks about the same few hosts every time.
    A name is never cached as resolved, only as "a name", so DNS changes
    are still seen.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _transports(transport: str | tuple[str, ...] | list[str]) -> tuple[TransportName, ...]:
    names = (transport,) if isinstance(transport, str) else tuple(transport)
    if not names:
        raise ValueError("give at least one transport")
    result: list[TransportName] = []
    for name in names:
        kind = _TRANSPORT_BY_NAME.get(name)
        if kind is None:
            raise ValueError(f"unknown transport {name!r}; use 'udp' and/or 'websocket'")
        if kind not in result:
            result.append(kind)
    return tuple(result)


LOOPBACK_PMTU_PROBE_LIMIT = 65507
"""Loopback carries 64 KiB datagrams: a node bound to it lets path MTU discovery go there."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_config(*, node_id: bytes | None, node_seed: bytes | str | None,
                 shared_seed: bytes | str, server_mode: bool,
                 config_overrides: Mapping[str, Any] | None, host: str = "") -> Config:
    """The core config for a node: the binding's defaults, then the overrides.

    The binding sets ``auto_consume=False`` so that flow-control credit is
    returned when the application takes a message (backpressure). A node bound
    to a loopback address can only reach loopback peers, so path MTU discovery
    may probe up to 64 KiB datagrams there (fewer packets, less CPU per byte).
    """
    kwargs: dict[str, Any] = {
        "shared_seed": shared_seed.encode() if isinstance(shared_seed, str) else shared_seed,
        "server_mode": server_mode,
        "auto_consume": False,
    }
    if _is_loopback(host):
        kwargs["pmtu_probe_limit"] = LOOPBACK_PMTU_PROBE_LIMIT
    if node_id:
        kwargs["node_id"] = node_id
    if node_seed:
        kwargs["node_seed"] = node_seed.encode() if isinstance(node_seed, str) else node_seed
    kwargs.update(config_overrides or {})
    return Config(**kwargs)


@contextlib.asynccontextmanager
async def open_node(
    *,
    shared_seed: bytes | str,
    node_id: bytes | None = None,
    node_seed: bytes | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    transport: str | tuple[str, ...] | list[str] = "udp",
    server_mode: bool = True,
    recv_buffer_size: int = DEFAULT_BUFFER_SIZE,
    send_buffer_size: int = DEFAULT_BUFFER_SIZE,
    reuse_port: bool = False,
    udp_offload: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
    ws_port: int | None = None,
    ws_path: str = DEFAULT_PATH,
    ssl_context: ssl.SSLContext | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    trace_dir: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Node]:
    """Run an STT node for the duration of the ``async with`` block.

    Args:
        shared_seed: the secret every node allowed to talk to this one shares.
        node_id / node_seed: this node's identity (one of them).
        host, port: where to bind (port 0 picks a free port).
        transport: ``"udp"``, ``"websocket"`` or both; the first is the default
            for :meth:`Node.connect` and gives :attr:`Node.local_address`.
        server_mode: accept sessions from peers (:meth:`Node.accept`).
        recv_buffer_size, send_buffer_size, reuse_port: UDP socket options.
        udp_offload: let the kernel segment sends and coalesce receives (UDP
            GSO/GRO) where it offers them; False sends and reads one datagram
            per system call (the wire is the same either way).
        config_overrides: extra ``stt_core.Config`` fields (e.g.
            ``{"max_datagram_size": 1452, "idle_timeout": 60}``).
        ws_port: WebSocket listen port; default ``port`` (TCP and UDP ports are
            separate, so both may use the same number).
        ws_path, ssl_context: WebSocket URL path and server TLS context.
        trace_dir: write a JSON-lines trace file per session into this
            directory (docs/observability.md); default ``$STT_TRACE_DIR``,
            ``""`` switches tracing off.

    Leaving the block closes every session gracefully (bounded by the config's
    ``close_timeout``), stops every task and closes every socket.
    """
    config = build_config(node_id=node_id, node_seed=node_seed, shared_seed=shared_seed,
                          server_mode=server_mode, config_overrides=config_overrides,
                          host=host)
    kinds = _transports(transport)
    node = Node(config, random_bytes=random_bytes, ws_path=ws_path, trace_dir=trace_dir)
    node._primary = kinds[0]
    async with contextlib.AsyncExitStack() as stack:
        if node.tracer is not None:  # runs last: after the pump and the sockets stopped
            stack.callback(node.tracer.close)
        if "udp" in kinds:
            await node._open_udp(stack, host, port, recv_buffer_size=recv_buffer_size,
                                 send_buffer_size=send_buffer_size, reuse_port=reuse_port,
                                 offload=udp_offload)
        if "websocket" in kinds:
            await node._open_websocket(stack, host, port if ws_port is None else ws_port,
                                       ssl_context=ssl_context, reuse_port=reuse_port)
        tg = await stack.enter_async_context(anyio.create_task_group())
        node._tg = tg
        if node._udp is not None:
            tg.start_soon(node._udp.run)
        tg.start_soon(node._run_pump)
        logger.info("node %r started on %s", node.node_id, node.local_addresses)
        try:
            yield node
        finally:
            with anyio.CancelScope(shield=True):
                await node._shutdown()
            node._tg = None
            tg.cancel_scope.cancel()
            logger.info("node %r stopped", node.node_id)
