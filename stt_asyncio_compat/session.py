"""Session and SessionManager: the manual's session handles and session table.

Owns the spelling of manual ch. 6 for one session (``session.session_id``,
``session.state``, ``session.open_stream(purpose=, stream_id=,
max_frame_size=)``, ``await session.close()``) and the per-node table the
manual calls ``node.session_manager``. It also re-exports what the manual
imports from ``seigr_toolset_transmissions.session``: :class:`SessionState`
(the core's enum, INIT -> HANDSHAKING -> ESTABLISHED -> CLOSING -> CLOSED)
and :class:`CryptoSessionContinuity`.

It must not know about sockets, tasks or the node's lifecycle: a
:class:`Session` only forwards to the :class:`stt_anyio.Session` it wraps, and
the node tells the manager when a session arrived or ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import stt_anyio
from stt_core import SessionState, SessionStats
from stt_core.events import Address

from .continuity import CryptoSessionContinuity, ResumeToken
from .stream import Stream

if TYPE_CHECKING:
    from .node import STTNode

__all__ = [
    "CLOSED_SESSION_MEMORY",
    "CryptoSessionContinuity",
    "ResumeToken",
    "Session",
    "SessionManager",
    "SessionState",
]

CLOSED_SESSION_MEMORY = 1024
"""Closed sessions a manager keeps for inspection before it forgets the oldest.

Why a bound: the manual says the manager "automatically removes closed
sessions" and also offers ``cleanup_closed_sessions()``. We keep closed
sessions (so their state and close reason can still be read) until the
application cleans up, but never more than this many, so a long-running
server that never calls the cleanup does not grow without bound.
"""


class Session:
    """One STT session (manual ch. 6): an encrypted, multiplexed channel to one peer.

    Obtain it from ``await node.connect(...)``, ``await node.accept()`` or
    the node's ``on_session`` callback; never construct it yourself.
    """

    __slots__ = ("_inner", "_node", "initiator")

    def __init__(self, inner: stt_anyio.Session, *, node: STTNode, initiator: bool) -> None:
        self._inner = inner
        self._node = node
        self.initiator = initiator
        """True on the side that called ``connect``."""

    def __repr__(self) -> str:
        return (f"<Session {self.session_id.hex()} peer={self.peer_node_id!r} "
                f"state={self.state.name}>")

    # -- identity and state --------------------------------------------------

    @property
    def session_id(self) -> bytes:
        """The 8-byte session id; the same bytes on both peers."""
        return self._inner.session_id

    @property
    def state(self) -> SessionState:
        """Where the session is in its lifecycle (``SessionState``)."""
        return self._inner.state

    @property
    def peer_node_id(self) -> bytes | None:
        """The node id the peer proved in the handshake."""
        return self._inner.peer_node_id

    @property
    def peer_address(self) -> Address | None:
        """Where the session currently sends (follows the peer's path changes)."""
        return self._inner.peer_address

    @property
    def is_active(self) -> bool:
        """True while the session is ESTABLISHED (data may flow)."""
        return self.state is SessionState.ESTABLISHED

    @property
    def closed(self) -> bool:
        """True once the session ended, for whatever reason."""
        return self._inner.closed

    @property
    def close_reason(self) -> str | None:
        """``graceful`` | ``timeout`` | ``error`` | ``auth_failure`` once closed, else None."""
        event = self._inner.close_reason
        return None if event is None else event.reason

    @property
    def stats(self) -> SessionStats:
        """Packet, byte, RTT and congestion counters of this session."""
        return self._inner.stats

    @property
    def resume_ticket(self) -> bytes | None:
        """The latest resume ticket the server issued (client side), or None.

        Secret material: see :class:`CryptoSessionContinuity`.
        """
        return self._inner.resume_token

    @property
    def node(self) -> STTNode:
        """The node this session belongs to."""
        return self._node

    @property
    def anyio_session(self) -> stt_anyio.Session:
        """The stt_anyio session underneath (for features the manual does not name)."""
        return self._inner

    # -- streams -------------------------------------------------------------

    def open_stream(self, purpose: str = "", *, stream_id: int | None = None,
                    max_frame_size: int | None = None, priority: int = 0) -> Stream:
        """Open a stream; returns at once (manual: "Open a stream for file transfer").

        Args:
            purpose: a label the peer sees (``"video"``, ``"chat"``...).
            stream_id: pick the id yourself (both peers may name the same id:
                it is then one stream); default: a fresh id.
            max_frame_size: largest DATA frame on this stream (64-65536 bytes,
                default 16 KiB); larger messages are split and reassembled.
            priority: 0-255, lower is sent first.

        Raises:
            SessionClosedError: the session ended.
            ValueError: an argument is out of range.
            InvalidStateError: ``stream_id`` closed recently on this session, or
                this side already has as many streams open as the peer allows.
        """
        inner = self._inner.open_stream(purpose, stream_id=stream_id, priority=priority,
                                        max_frame_size=max_frame_size)
        return Stream(self, inner)

    def stream(self, stream_id: int) -> Stream:
        """The handle of stream ``stream_id`` without opening it (0 always exists).

        Use it to read a stream the peer opened when you know its id, e.g.
        the ``stream_id`` of a ``send_to_all`` broadcast.
        """
        return Stream(self, self._inner.stream(stream_id))

    async def accept_stream(self, timeout: float | None = None) -> Stream:
        """The next stream the peer opened (how a server finds the client's streams).

        Raises:
            SessionClosedError: the session ended.
            TimeoutError: none within ``timeout`` seconds.
        """
        return Stream(self, await self._inner.accept_stream(timeout=timeout))

    # -- closing -------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Close gracefully: SESSION_CLOSE, wait for the peer's acknowledgement.

        Waits at most ``timeout`` seconds (default: the config's
        ``close_timeout`` plus a margin). Idempotent. The node's
        ``on_session_closed`` callbacks then run with reason ``graceful``.
        """
        await self._inner.close(timeout=timeout)
        self._report_if_closed()

    async def wait_closed(self) -> str:
        """Wait until the session ended; returns the close reason.

        The node's ``on_session_closed`` callbacks have run when it returns.
        """
        event = await self._inner.wait_closed()
        self._report_if_closed()
        return event.reason

    def _report_if_closed(self) -> None:
        """Run the node's close callbacks now rather than when its watcher wakes,
        so they have run by the time ``close()``/``wait_closed()`` return."""
        if self.closed:
            self._node._session_ended(self, self.close_reason or "error")

    # -- identity for dict keys ------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and other._inner is self._inner

    def __hash__(self) -> int:
        return hash(id(self._inner))


class SessionManager:
    """The sessions of one node (manual: "SessionManager handles multiple sessions").

    Sessions are keyed by their 8-byte id. Closed sessions stay until
    :meth:`cleanup_closed_sessions` (at most :data:`CLOSED_SESSION_MEMORY` of
    them), so an application can still read why a session ended.
    """

    def __init__(self, *, closed_memory: int = CLOSED_SESSION_MEMORY) -> None:
        if closed_memory < 0:
            raise ValueError("closed_memory must be >= 0")
        self._sessions: dict[bytes, Session] = {}
        self._closed: deque[Session] = deque()
        self._closed_memory = closed_memory

    def get_active_sessions(self) -> list[Session]:
        """Sessions that are ESTABLISHED now, oldest first."""
        return [s for s in self._sessions.values() if s.is_active]

    def get_session(self, session_id: bytes | str) -> Session | None:
        """The session with this id (bytes, or its hex string), or None."""
        key = bytes.fromhex(session_id) if isinstance(session_id, str) else bytes(session_id)
        return self._sessions.get(key)

    def get_session_count(self) -> int:
        """Sessions tracked: active ones plus closed ones not cleaned up yet."""
        return len(self._sessions)

    def get_active_session_count(self) -> int:
        """Sessions that are ESTABLISHED now."""
        return sum(1 for s in self._sessions.values() if s.is_active)

    async def cleanup_closed_sessions(self) -> int:
        """Forget every closed session; returns how many were removed."""
        closed = [sid for sid, s in self._sessions.items() if s.closed]
        for sid in closed:
            del self._sessions[sid]
        self._closed.clear()
        return len(closed)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __contains__(self, session_id: object) -> bool:
        return isinstance(session_id, bytes) and session_id in self._sessions

    # -- called by the node ----------------------------------------------------

    def _track(self, session: Session) -> None:
        """An established session (new or resumed: a resumed one replaces its old entry)."""
        self._sessions[session.session_id] = session

    def _note_closed(self, session: Session) -> None:
        """A tracked session ended: keep it for inspection, within the bound."""
        if self._sessions.get(session.session_id) is not session:
            return
        self._closed.append(session)
        while len(self._closed) > self._closed_memory:
            oldest = self._closed.popleft()
            if self._sessions.get(oldest.session_id) is oldest:
                del self._sessions[oldest.session_id]
