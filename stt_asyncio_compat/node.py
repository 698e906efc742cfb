"""STTNode: the manual's node API (``seigr_toolset_transmissions.node``) on stt_anyio.

Owns what the manual's node does beyond stt_anyio: its constructor and
configuration (``node_id``/``node_seed``, ``bind_address``/``host``, core
overrides), ``connect``/``connect_udp``/``resume`` that track and watch the
sessions they return, the per-node
:class:`~stt_asyncio_compat.session.SessionManager`, the ``on_session`` /
``on_session_closed`` callbacks, the server's accept backlog, the broadcast
helpers (``send_to_all``, ``send_to_sessions``) and ``get_stats``.

It must not implement protocol logic or socket I/O: sessions, streams,
handshakes, keep-alives and resumption all run in ``stt_anyio`` and
``stt_core``; this module only starts, forwards and reports.

The lifecycle (``start()`` binding at once, the runner task that keeps
``stt_anyio.open_node`` open, ``stop()``) is the base class's, in
``_lifecycle``; this module fills in its hooks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import anyio

import stt_anyio
from stt_anyio.node import TransportName, build_config
from stt_anyio.session import ChangeSignal
from stt_anyio.udp import DEFAULT_BUFFER_SIZE
from stt_core import Config
from stt_core.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionTimeoutError,
    InvalidStateError,
    SessionClosedError,
)

from ._binding import Reservation, reserve
from ._broadcast import BroadcastResult, broadcast
from ._lifecycle import NodeLifecycle, bound_or_running
from .continuity import ResumeToken
from .session import Session, SessionManager

__all__ = [
    "ACCEPT_BACKLOG",
    "DEFAULT_BIND_ADDRESS",
    "BroadcastResult",
    "STTNode",
    "live_nodes",
]

logger = logging.getLogger("stt_asyncio_compat")

DEFAULT_BIND_ADDRESS = "0.0.0.0"
"""The manual's default ``bind_address``: all interfaces."""
ACCEPT_BACKLOG = 1024
"""Incoming sessions queued for :meth:`STTNode.accept`; past this the oldest
leaves the queue (it stays in the session manager and stays open)."""
_RESERVED_KEYS = frozenset({"node_id", "node_seed", "shared_seed", "server_mode",
                            "auto_consume"})

SessionCallback = Callable[[Session], object]
ClosedCallback = Callable[[bytes, str], object]

def live_nodes() -> list[STTNode]:
    """Nodes that were started and not stopped (CryptoSessionContinuity finds them here)."""
    return [node for node in bound_or_running() if isinstance(node, STTNode)]


class STTNode(NodeLifecycle):
    """One STT node as the user manual describes it (ch. 6).

    Args:
        node_id: this node's id (1-64 bytes); or give ``node_seed``.
        port: UDP (and WebSocket) port; 0 (the default) picks a free one.
        transport: ``"udp"`` (default), ``"websocket"``, or both as a tuple
            (the first is what ``connect`` uses by default).
        bind_address: interface to listen on; default ``"0.0.0.0"``.
            ``host`` is an alias.
        reuse_port: ``SO_REUSEPORT``, several processes on one port.
        recv_buffer_size, send_buffer_size: kernel socket buffers in bytes.
        shared_seed: the secret every peer must prove (>= 8 bytes). Without
            one the node still binds and listens but authenticates nobody,
            and ``connect`` raises ``ConfigError``.
        node_seed: the alternative identity; the id is derived from it.
        ws_port: WebSocket port when it must differ from ``port``.
        config, **overrides: extra ``stt_core.Config`` fields, e.g.
            ``keep_alive_interval=0.2, idle_timeout=1.0`` in tests.

    Raises:
        ConfigError: an argument or override is invalid.
    """

    def __init__(self, node_id: bytes | None = None, port: int = 0,
                 transport: str | Sequence[str] = "udp", bind_address: str | None = None,
                 reuse_port: bool = False, recv_buffer_size: int = DEFAULT_BUFFER_SIZE,
                 send_buffer_size: int = DEFAULT_BUFFER_SIZE,
                 shared_seed: bytes | str | None = None, *,
                 node_seed: bytes | str | None = None, host: str | None = None,
                 ws_port: int | None = None, config: Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        if bind_address is not None and host is not None and bind_address != host:
            raise ConfigError("give bind_address or host (an alias), not two different values")
        for name, value in (("port", port), ("ws_port", ws_port)):
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be 0-65535, not {value}")
        if recv_buffer_size < 1 or send_buffer_size < 1:
            raise ConfigError("socket buffer sizes must be positive")
        super().__init__(_transport_names(transport))
        self._host = bind_address or host or DEFAULT_BIND_ADDRESS
        self._port, self._ws_port, self._reuse_port = port, ws_port, reuse_port
        self._buffers = (recv_buffer_size, send_buffer_size)
        self._shared_seed = _as_bytes(shared_seed)
        self._node_seed = _as_bytes(node_seed)
        self._node_id = node_id
        self._overrides = _overrides(config, overrides)
        self._config = self._build_config(server_mode=True)
        self._manager = SessionManager()
        self._watching: dict[Session, None] = {}
        self._backlog: deque[Session] = deque(maxlen=ACCEPT_BACKLOG)
        self._backlog_signal = ChangeSignal()
        self._on_session: list[SessionCallback] = []
        self._on_closed: list[ClosedCallback] = []
        self._token_waiters: list[ResumeToken] = []
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        if self._shared_seed is None:
            logger.warning("STTNode without shared_seed: it will authenticate no peer")

    def _build_config(self, *, server_mode: bool) -> Config:
        # Without a shared seed, a random one: the node listens but nobody can
        # prove knowledge of it, so every handshake fails authentication.
        seed = self._shared_seed if self._shared_seed is not None else os.urandom(32)
        try:
            return build_config(node_id=self._node_id, node_seed=self._node_seed,
                                shared_seed=seed, server_mode=server_mode,
                                config_overrides=self._overrides)
        except TypeError as exc:
            raise ConfigError(f"unknown config override: {exc}") from None

    def __repr__(self) -> str:
        return (f"<STTNode {self.node_id!r} {self._phase} "
                f"{'/'.join(self._transports)} {self._host}:{self._port}>")

    # -- properties ------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        """This node's id (as given, or derived from ``node_seed``)."""
        return self._config.node_id

    @property
    def seed(self) -> bytes | None:
        """The ``node_seed`` this node was built with (the manual's ``node.seed``)."""
        return self._node_seed

    @property
    def shared_seed(self) -> bytes | None:
        """The shared seed given to the constructor, or None."""
        return self._shared_seed

    @property
    def config(self) -> Config:
        """The core configuration in force."""
        return self._config

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports this node runs, the default first."""
        return self._transports

    @property
    def session_manager(self) -> SessionManager:
        """The node's sessions (manual: ``node.session_manager``)."""
        return self._manager

    @property
    def anyio_node(self) -> stt_anyio.Node | None:
        """The running stt_anyio node underneath, or None when not running."""
        return self._inner

    # -- lifecycle hooks (see _lifecycle) ---------------------------------------

    def _prepare(self, server_mode: bool) -> Reservation:
        self._config = self._build_config(server_mode=server_mode)
        listen = [t for t in self._transports if t == "udp" or server_mode]
        return reserve(self._host, tuple(listen), port=self._port, ws_port=self._ws_port,
                       reuse_port=self._reuse_port)

    def _open_inner(self, reservation: Reservation
                    ) -> AbstractAsyncContextManager[stt_anyio.Node]:
        addresses = reservation.addresses
        return stt_anyio.open_node(
            shared_seed=self._config.shared_seed, node_id=self._node_id,
            node_seed=self._node_seed, host=reservation.host,
            port=addresses["udp"][1] if "udp" in addresses else 0,
            ws_port=addresses["websocket"][1] if "websocket" in addresses else self._ws_port,
            transport=self._transports, server_mode=self._server_mode,
            recv_buffer_size=self._buffers[0], send_buffer_size=self._buffers[1],
            reuse_port=self._reuse_port, config_overrides=self._overrides)

    def _on_serving(self, inner: stt_anyio.Node, tg: anyio.abc.TaskGroup) -> None:
        if self._server_mode:
            tg.start_soon(self._accept_loop, inner)

    async def _before_stop(self) -> None:
        await self._close_sessions()

    def _on_stopped(self) -> None:
        for session in list(self._watching):
            self._session_ended(session, session.close_reason or "error")
        self._backlog_signal.fire()

    async def _close_sessions(self) -> None:
        active = [s for s in self._watching if not s.closed]
        async with anyio.create_task_group() as tg:
            for session in active:
                tg.start_soon(session.close)
        for session in list(self._watching):
            if session.closed:
                self._session_ended(session, session.close_reason or "graceful")

    # -- connecting -------------------------------------------------------------

    async def connect(self, peer_address: tuple[str, int], peer_node_id: bytes | None = None,
                      timeout: float | None = None, *,
                      transport: str | None = None) -> Session:
        """Open an authenticated session with a peer (manual: "Initiate connection").

        Args:
            peer_address: ``(host, port)`` of the peer.
            peer_node_id: when given, the peer must prove exactly this id.
            timeout: seconds for the handshake (default: ``connect_timeout``, 10).
            transport: ``"udp"`` or ``"websocket"`` (default: the node's first).

        Raises:
            AuthenticationError: wrong shared seed or wrong peer id (the
                ``on_session_closed`` callbacks also see ``auth_failure``).
            ConnectionTimeoutError: (a ``TimeoutError``) no answer in time.
            ConnectionRefusedError: nothing listens there, or it refused.
            ConfigError: this node has no ``shared_seed``.
        """
        inner = await self._running()
        if self._shared_seed is None:
            raise ConfigError("this STTNode has no shared_seed, so it cannot authenticate "
                              "to any peer; pass shared_seed=...")
        limit = inner.config.connect_timeout if timeout is None else timeout
        deadline = anyio.current_time() + limit
        try:
            raw = await inner.connect(_address(peer_address), peer_node_id=peer_node_id,
                                      timeout=timeout, transport=_transport(transport))
        except AuthenticationError:
            self._report_closed(b"", "auth_failure")
            raise
        # The manual's connect returns once both sides hold the session (its
        # examples count the server's sessions right after), so wait out the
        # confirmation that stt_anyio's connect does not (protocol.md §6.3),
        # within the same timeout.
        try:
            await raw.wait_confirmed(timeout=max(deadline - anyio.current_time(), 0.0))
        except (TimeoutError, SessionClosedError):
            await raw.close(timeout=0.5)
            raise ConnectionTimeoutError(
                f"{peer_address!r} did not confirm the session within {limit} s") from None
        return self._adopt(raw, initiator=True)

    async def connect_udp(self, peer_host: str, peer_port: int,
                          peer_node_id: bytes | None = None,
                          timeout: float | None = None) -> Session:
        """``connect((peer_host, peer_port), ...)`` over UDP (manual: "Connecting to peers")."""
        return await self.connect((peer_host, peer_port), peer_node_id, timeout,
                                  transport="udp")

    async def resume(self, peer_address: tuple[str, int], ticket: bytes, *,
                     transport: str | None = None, timeout: float | None = None) -> Session:
        """Re-establish a session from a resume ticket (used by CryptoSessionContinuity).

        Raises:
            AuthenticationError: the server refused the ticket (expired, used,
                or not its own).
            ConnectionTimeoutError, ConnectionRefusedError: as for :meth:`connect`.
        """
        inner = await self._running()
        try:
            raw = await inner.resume(_address(peer_address), ticket, timeout=timeout,
                                     transport=_transport(transport))
        except AuthenticationError:
            self._report_closed(b"", "auth_failure")
            raise
        return self._adopt(raw, initiator=True)

    # -- incoming sessions ----------------------------------------------------

    async def accept(self, timeout: float | None = None) -> Session:
        """The next session a peer opened with this node (server mode).

        Sessions wait in a backlog of :data:`ACCEPT_BACKLOG`; ``on_session``
        callbacks see them too, whether or not anyone calls ``accept``.

        Raises:
            InvalidStateError: the node is not in server mode, or stopped.
            TimeoutError: none within ``timeout`` seconds.
        """
        if not self._server_mode:
            raise InvalidStateError("accept() needs a node started with server_mode=True")
        await self._started()
        with anyio.fail_after(timeout):
            while not self._backlog:
                if self._phase == "stopped":
                    raise InvalidStateError("the node was stopped")
                await self._backlog_signal.wait()
        return self._backlog.popleft()

    def on_session(self, callback: SessionCallback) -> SessionCallback:
        """Call ``callback(session)`` for every session a peer opens (server mode).

        The callback may be a plain function or a coroutine function (its
        coroutine runs as a task). Usable as a decorator.
        """
        self._on_session.append(callback)
        return callback

    def on_session_closed(self, callback: ClosedCallback) -> ClosedCallback:
        """Call ``callback(session_id, reason)`` whenever a session of this node ends.

        ``reason`` is ``graceful`` (a side called ``close()``/``stop()``),
        ``timeout`` (keep-alive timeout), ``error`` (protocol error, or the
        node closed under it) or ``auth_failure`` (a ``connect`` failed
        authentication; ``session_id`` is then ``b""``). Usable as a decorator.
        """
        self._on_closed.append(callback)
        return callback

    async def _accept_loop(self, inner: stt_anyio.Node) -> None:
        while True:
            try:
                raw = await inner.accept()
            except InvalidStateError:  # the node is shutting down
                return
            session = self._adopt(raw, initiator=False)
            self._backlog.append(session)
            self._backlog_signal.fire()
            for callback in list(self._on_session):
                self._call(callback, session)

    def _adopt(self, raw: stt_anyio.Session, *, initiator: bool) -> Session:
        """Wrap, track and watch a newly established session."""
        session = Session(raw, node=self, initiator=initiator)
        self._manager._track(session)
        self._watching[session] = None
        if initiator:
            for token in [t for t in self._token_waiters if t.matches(session)]:
                token._bind(session)
                self._token_waiters.remove(token)
        if self._tg is not None:
            self._tg.start_soon(self._watch, session)
        return session

    def _await_session_for(self, token: ResumeToken) -> None:
        """Bind ``token`` to the next outgoing session that matches it."""
        self._token_waiters.append(token)

    async def _watch(self, session: Session) -> None:
        reason = await session.wait_closed()
        self._session_ended(session, reason)

    def _session_ended(self, session: Session, reason: str) -> None:
        """Report one ended session exactly once.

        A session superseded by its own resumption (a newer, open session
        with the same id) is not reported: the logical session goes on.
        """
        if self._watching.pop(session, False) is False:
            return
        superseded = self._superseded(session)
        self._manager._note_closed(session)
        if not superseded:
            self._report_closed(session.session_id, reason)

    def _superseded(self, session: Session) -> bool:
        """Whether an open session with the same id replaced this one (a resumption).

        Asks stt_anyio first: it learns of the new session in the same pump
        step that closed the old one, before our accept loop adopts it.
        """
        sid = session.session_id
        if not sid:
            return False
        if self._inner is not None and any(
                s.session_id == sid and s is not session.anyio_session
                for s in self._inner.sessions):
            return True
        current = self._manager.get_session(sid)
        return current is not None and current is not session and not current.closed

    def _report_closed(self, session_id: bytes, reason: str) -> None:
        for callback in list(self._on_closed):
            self._call(callback, session_id, reason)

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        """Run an application callback; its failures are logged, never ours."""
        try:
            result = callback(*args)
        except Exception:
            logger.exception("STTNode callback %r failed", callback)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("STTNode callback failed", exc_info=task.exception())

    # -- server helpers ---------------------------------------------------------

    def get_active_sessions(self) -> list[Session]:
        """Established sessions (same as ``session_manager.get_active_sessions()``)."""
        return self._manager.get_active_sessions()

    async def send_to_all(self, data: bytes, stream_id: int = 0,
                          timeout: float | None = None) -> BroadcastResult:
        """Send one message to every active session, concurrently (confirmed sends).

        A session that fails (closed, timed out) does not stop the others;
        the result lists who got it and why the others did not.
        """
        return await broadcast(self.get_active_sessions(), data, stream_id=stream_id,
                               timeout=timeout)

    async def send_to_sessions(self, session_ids: Iterable[bytes], data: bytes,
                               stream_id: int = 0,
                               timeout: float | None = None) -> BroadcastResult:
        """Like :meth:`send_to_all`, for the sessions with these ids only."""
        sessions: list[Session] = []
        missing: list[bytes] = []
        for sid in session_ids:
            session = self._manager.get_session(sid)
            (sessions.append(session) if session is not None else missing.append(bytes(sid)))
        return await broadcast(sessions, data, stream_id=stream_id, timeout=timeout,
                               missing=missing)

    def get_stats(self) -> dict[str, Any]:
        """Counters of the node as plain data (endpoint, carriers, sessions)."""
        stats: dict[str, Any] = self._inner.get_stats() if self._inner is not None else {}
        stats.update({
            "node_id": self.node_id.hex(),
            "state": self._phase,
            "server_mode": self._server_mode,
            "transports": list(self._transports),
            "sessions_active": self._manager.get_active_session_count(),
            "sessions_tracked": self._manager.get_session_count(),
            "accept_backlog": len(self._backlog),
        })
        if self._phase in ("bound", "running"):
            stats["local_addresses"] = self.local_addresses
        return stats


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _transport_names(transport: str | Sequence[str]) -> tuple[str, ...]:
    names = (transport,) if isinstance(transport, str) else tuple(transport)
    if not names or any(name not in ("udp", "websocket") for name in names):
        raise ConfigError(f"transport must be 'udp', 'websocket' or both, not {transport!r}")
    return tuple(dict.fromkeys(names))


def _transport(name: str | None) -> TransportName | None:
    if name is None:
        return None
    if name not in ("udp", "websocket"):
        raise ValueError(f"transport must be 'udp' or 'websocket', not {name!r}")
    return cast(TransportName, name)


def _address(peer_address: Sequence[Any]) -> tuple[str, int]:
    if len(peer_address) != 2:
        raise ValueError(f"peer_address must be (host, port), not {peer_address!r}")
    return (str(peer_address[0]), int(peer_address[1]))


def _overrides(config: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**(config or {}), **extra}
    reserved = sorted(_RESERVED_KEYS & merged.keys())
    if reserved:
        raise ConfigError(f"{', '.join(reserved)} cannot be overridden; use the "
                          "STTNode arguments (auto_consume is the binding's choice)")
    return merged
