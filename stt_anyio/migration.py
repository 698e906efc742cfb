"""Migration: moving a client's session between paths and transports (UDP <-> WebSocket).

Owns, for the sessions a node *initiated*: the addresses it knows for its
server on each transport (:class:`SessionPaths`), the client half of a move
(:meth:`Migrator.migrate`: open the other carrier, hand the new address to
``Endpoint.migrate``, wait until the server acknowledged traffic sent on the
new path), the opt-in failover watchdog, and the filter that keeps traffic
still arriving on an abandoned path away from the core (:class:`PathFilter`).

It must not know protocol details beyond the core's public API: path
validation, amplification limits and requeueing of in-flight data live in
``stt_core`` (``Endpoint.migrate``, ``Session.migrate_to``,
protocol.md §8.2). It must not know socket details either: carriers are
opened and closed through the node (:class:`_NodeLink`). docs/continuity.md
describes the policy for users.

Rules:

1. Only the side that connected moves a session. The server follows: an
   authenticated packet from a new address starts path validation there, and
   the server moves when the PATH_RESPONSE comes back (it then emits
   ``PathChanged``).
2. A move is done when an ACK arrives for a packet sent on the new path. The
   core gives a moved session a fresh RTT estimator, so the first RTT sample
   after the move (``SessionStats.min_rtt > 0``) is exactly that signal.
3. Traffic for the session that still arrives from the path it left is
   dropped before the core sees it. The core treats any authenticated packet
   from an address it does not send to as a migration candidate, on the
   client as well: a late packet from the old path would make the client
   validate the old path again and move back, and the two ends then chase
   each other between paths. Leaving a path therefore means not listening to
   it any more (for this session), until the session moves back there.
4. A move that is not acknowledged within its timeout is undone (the session
   goes back to the previous address) and raises ``ConnectionTimeoutError``.
5. Failover (opt-in) watches one session: when nothing arrived for
   ``failover_after`` seconds while data is in flight, it moves to the next
   path in the ring (the connect path, then the failover paths, in order),
   trying each other path once per silence.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from stt_core import Config, Endpoint
from stt_core.errors import (
    ConnectionTimeoutError,
    InvalidStateError,
    SessionClosedError,
)
from stt_core.events import Address, SessionRef
from stt_core.wire import WireError, parse_header

from . import clock

if TYPE_CHECKING:
    from .node import TransportName
    from .session import Session

__all__ = [
    "DEFAULT_FAILOVER_AFTER",
    "DEFAULT_MIGRATE_TIMEOUT",
    "FailoverPath",
    "Migrator",
    "PathFilter",
    "SessionPaths",
]

logger = logging.getLogger("stt.anyio.migration")

DEFAULT_FAILOVER_AFTER = 3.0
"""Seconds of silence, with data in flight, before failover moves a session."""
DEFAULT_MIGRATE_TIMEOUT = 5.0
"""Seconds a move may take (carrier connect plus path validation) by default."""
ACK_POLL_INTERVAL = 0.005
"""How often a move checks for the first acknowledgement on the new path."""
MAX_WATCH_INTERVAL = 0.25
"""Longest sleep of the failover watchdog between two looks at a session."""

FailoverPath = tuple[str, tuple[str, int]]
"""``(transport, (host, port))``: another way to reach the same server."""
WsOptions = tuple[str | None, ssl.SSLContext | None, str | None]
"""WebSocket URL path, client TLS context and server host name (node.connect's)."""
_KINDS: tuple[str, ...] = ("udp", "websocket")


class _NodeLink(Protocol):
    """What the migrator needs from its node (implemented by ``Node``)."""

    config: Config
    local_addresses: dict[str, tuple[str, int]]

    @property
    def endpoint(self) -> Endpoint: ...

    def _kick(self) -> None: ...

    async def _open_carrier(self, kind: TransportName, addr: tuple[str, int],
                            limit: float, ws_options: WsOptions) -> Address: ...

    def _own_ws(self, ref: SessionRef, peer: Address | None) -> None: ...

    def _close_path(self, addr: Address) -> None: ...

    def _spawn(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None: ...


@dataclass(slots=True)
class SessionPaths:
    """What a client knows about the ways to its server, for one session.

    ``ring`` is the failover order: the path the session was opened on, then
    the ``failover=`` paths. ``known`` has one address per transport (what
    ``migrate(transport)`` uses when no address is given).
    """

    known: dict[str, tuple[str, int]]
    """Server address per transport name."""
    ring: list[tuple[str, tuple[str, int]]]
    """Failover order, starting with the connect path."""
    current: tuple[str, tuple[str, int]]
    """The path the session uses now: ``(transport, server address)``."""
    failover_after: float | None
    """Silence (seconds, with data in flight) that triggers failover; None: off."""
    ws_options: WsOptions = (None, None, None)
    """Options for every WebSocket this session opens."""
    migrations: int = 0
    """Completed moves (manual and failover)."""
    failovers: int = 0
    """Completed moves started by the failover watchdog."""
    last_move_duration: float = 0.0
    """Seconds the last completed move took (carrier connect + validation)."""
    last_silence: float = 0.0
    """Seconds of silence that triggered the last failover."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    """Serialises moves of this session (manual and failover)."""


class PathFilter:
    """Drops datagrams of a session that arrive from a path it left (rule 3).

    Keyed by address, then by the 8-byte session id in the clear header; a
    datagram whose header cannot be read is not ours to judge and passes.
    """

    __slots__ = ("_left", "active")

    def __init__(self) -> None:
        self._left: dict[Address, set[bytes]] = {}
        self.active = False
        """True while any address is filtered (the node's fast check)."""

    def leave(self, addr: Address, session_id: bytes) -> None:
        """From now on, drop ``session_id``'s datagrams from ``addr``."""
        self._left.setdefault(addr, set()).add(session_id)
        self.active = True

    def rejoin(self, addr: Address, session_id: bytes) -> None:
        """Accept ``session_id``'s datagrams from ``addr`` again."""
        ids = self._left.get(addr)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._left[addr]
        self.active = bool(self._left)

    def discard_address(self, addr: Address) -> None:
        """``addr`` is gone for good (a closed WebSocket): nothing to filter there."""
        self._left.pop(addr, None)
        self.active = bool(self._left)

    def forget(self, session_id: bytes) -> None:
        """The session ended: stop filtering for it anywhere."""
        for addr in [a for a, ids in self._left.items() if session_id in ids]:
            self.rejoin(addr, session_id)

    def drops(self, data: bytes | memoryview, addr: Address) -> bool:
        """True if ``data`` from ``addr`` belongs to a session that left ``addr``."""
        ids = self._left.get(addr)
        if ids is None:
            return False
        try:
            return parse_header(data).connection_id in ids
        except WireError:
            return False


def _kind(transport: str) -> TransportName:
    if transport == "udp":
        return "udp"
    if transport == "websocket":
        return "websocket"
    raise ValueError(f"unknown transport {transport!r}; use 'udp' or 'websocket'")


def _address(addr: object) -> tuple[str, int]:
    """``(host, port)`` as the node's ``connect`` takes it (a numeric string port too)."""
    if isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[0], str):
        try:
            return (addr[0], int(addr[1]))
        except (TypeError, ValueError):
            pass
    raise ValueError(f"address must be (host, port), not {addr!r}")


def _usable(transport: str, addr: object, have: set[str]) -> tuple[TransportName, tuple[str, int]]:
    kind = _kind(transport)
    if kind not in have:
        raise InvalidStateError(f"this node has no {kind!r} transport (open_node(transport=...))")
    return kind, _address(addr)


def plan_paths(transport: str, addr: tuple[str, int], *,
               paths: Mapping[str, tuple[str, int]] | None,
               failover: Iterable[FailoverPath] | None,
               failover_after: float | None, idle_timeout: float,
               ws_options: WsOptions, available: Iterable[str]) -> SessionPaths:
    """Check ``node.connect``'s path arguments and build the session's record.

    Called before the session is opened, so a mistake costs no session.

    Raises:
        ValueError: an unknown transport, a malformed address, two addresses
            for one transport, or ``failover_after`` not in ``(0, idle_timeout)``.
        InvalidStateError: a path needs a transport the node does not have.
    """
    have = set(available)
    alternatives = None if failover is None else list(failover)
    first = (_kind(transport), _address(addr))
    known: dict[str, tuple[str, int]] = {first[0]: first[1]}
    for name, where in (paths or {}).items():
        kind, where = _usable(name, where, have)
        if known.get(kind, where) != where:
            raise ValueError(f"two {kind} addresses for one server: {known[kind]!r}, {where!r}")
        known[kind] = where
    ring: list[tuple[str, tuple[str, int]]] = [first]
    for name, where in alternatives or ():
        entry = _usable(name, where, have)
        known.setdefault(*entry)
        if entry not in ring:
            ring.append(entry)
    if alternatives is not None and failover_after is None:
        failover_after = DEFAULT_FAILOVER_AFTER
    if failover_after is not None and not 0 < failover_after < idle_timeout:
        raise ValueError(f"failover_after must be in (0, idle_timeout={idle_timeout}) "
                         f"seconds, not {failover_after!r}")
    return SessionPaths(known=known, ring=ring, current=first,
                        failover_after=failover_after if len(ring) > 1 else None,
                        ws_options=ws_options)


class Migrator:
    """The node's migration half: path records, the filter, the failover watchdogs.

    One per node. The node registers every session it opens (``connect`` and
    ``resume``), drops datagrams :attr:`filter` rejects, and calls
    :meth:`forget` when a session closes.
    """

    def __init__(self, node: _NodeLink) -> None:
        self._node = node
        self._paths: dict[SessionRef, SessionPaths] = {}
        self.filter = PathFilter()
        """Datagrams from paths a session left (rule 3); the node consults it."""

    def paths_of(self, ref: SessionRef) -> SessionPaths | None:
        """The path record of a session this node opened, else None."""
        return self._paths.get(ref)

    def register(self, session: Session, paths: SessionPaths) -> None:
        """Remember an initiated session's paths; start its watchdog if failover is on."""
        self._paths[session.ref] = paths
        if paths.failover_after is not None:
            self._node._spawn(lambda: self._watch(session, paths))

    def forget(self, session: Session) -> None:
        """The session closed: drop its record and its filter entries."""
        self._paths.pop(session.ref, None)
        if session.session_id:
            self.filter.forget(session.session_id)

    async def migrate(self, session: Session, transport: str,
                      address: tuple[str, int] | None, timeout: float | None) -> None:
        """Move ``session`` to ``transport`` (see :meth:`Session.migrate`)."""
        paths = self._paths.get(session.ref)
        if paths is None:
            raise InvalidStateError("only the side that opened a session moves it; "
                                    "the other side follows")
        kind = _kind(transport)
        if kind not in self._node.local_addresses:
            raise InvalidStateError(f"this node has no {kind!r} transport "
                                    "(open_node(transport=('udp', 'websocket')))")
        target = _address(address) if address is not None else paths.known.get(kind)
        if target is None:
            raise ValueError(f"no {kind} address known for this server: pass address= "
                             "here or paths= to node.connect")
        limit = DEFAULT_MIGRATE_TIMEOUT if timeout is None else timeout
        if limit <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        async with paths.lock:
            if (kind, target) != paths.current:
                await self._move(session, paths, (kind, target), limit)
        paths.known[kind] = target

    async def _move(self, session: Session, paths: SessionPaths,
                    entry: tuple[str, tuple[str, int]], limit: float) -> None:
        """Open the carrier, switch, wait for the acknowledgement; undo on failure."""
        session._raise_if_closed()
        node = self._node
        started = clock.now()
        deadline = anyio.current_time() + limit
        new = await node._open_carrier(_kind(entry[0]), entry[1], limit, paths.ws_options)
        old = session.peer_address
        if old is None or new == old:
            if new != old:
                node._close_path(new)
            paths.current = entry
            return
        acknowledged = False
        try:
            self._switch(session, old, new)
            acknowledged = await self._wait_acknowledged(session, deadline)
        finally:
            if not acknowledged:
                self._undo(session, old, new)
        if not acknowledged:
            raise ConnectionTimeoutError(
                f"the server did not acknowledge the {entry[0]} path {entry[1]!r} "
                f"within {limit:g} s; the session stays on its previous path")
        node._own_ws(session.ref, new if entry[0] == "websocket" else None)
        node._close_path(old)
        paths.current = entry
        paths.migrations += 1
        paths.last_move_duration = clock.now() - started
        logger.info("session %s moved to %s %r in %.3f s", session.session_id.hex(),
                    entry[0], entry[1], paths.last_move_duration)

    def _switch(self, session: Session, old: Address, new: Address) -> None:
        """Stop listening on ``old`` for this session and move the core to ``new``."""
        sid = session.session_id
        self.filter.leave(old, sid)
        self.filter.rejoin(new, sid)
        self._node.endpoint.migrate(session.ref, new, clock.now())
        self._node._kick()

    def _undo(self, session: Session, old: Address, new: Address) -> None:
        """A move failed or was cancelled: back to ``old``, and close ``new``."""
        if not session.closed:
            with contextlib.suppress(SessionClosedError):
                self._switch(session, new, old)
                # Mirror it now rather than at the next pump step, so the caller
                # that catches the error sees the session where it is.
                session._on_path_changed(old)
        self._node._close_path(new)

    async def _wait_acknowledged(self, session: Session, deadline: float) -> bool:
        """Wait for the first RTT sample on the new path (rule 2); False at the deadline."""
        endpoint = self._node.endpoint
        while True:
            session._raise_if_closed()
            if endpoint.session_stats(session.ref).min_rtt > 0:
                return True
            if anyio.current_time() >= deadline:
                return False
            await anyio.sleep(ACK_POLL_INTERVAL)

    # -- failover ------------------------------------------------------------

    async def _watch(self, session: Session, paths: SessionPaths) -> None:
        """The failover watchdog of one session (rule 5); ends with the session."""
        after = paths.failover_after
        if after is None:
            return
        interval = min(after / 4, MAX_WATCH_INTERVAL)
        heard = -1
        quiet_since = clock.now()
        was_outstanding = False
        while self._paths.get(session.ref) is paths and not session.closed:
            await anyio.sleep(interval)
            stats = session.stats
            now = clock.now()
            outstanding = stats.bytes_in_flight > 0
            # Silence counts from the first sample that saw data in flight and
            # nothing new received: late by up to one interval, never early.
            if stats.packets_received != heard or not (outstanding and was_outstanding) \
                    or paths.lock.locked():
                heard, quiet_since = stats.packets_received, now
            elif now - quiet_since >= after:
                await self._fail_over(session, paths, now - quiet_since)
                heard, quiet_since = session.stats.packets_received, clock.now()
            was_outstanding = outstanding

    async def _fail_over(self, session: Session, paths: SessionPaths, silence: float) -> None:
        """Try every other path of the ring once, in order, until one works."""
        ring = paths.ring
        here = ring.index(paths.current) if paths.current in ring else -1
        candidates = ring[here + 1:] + ring[:max(here, 0)]
        logger.warning("session %s: nothing heard for %.2f s on %s %r; failing over",
                       session.session_id.hex(), silence, *paths.current)
        for entry in candidates:
            try:
                async with paths.lock:
                    await self._move(session, paths, entry, DEFAULT_MIGRATE_TIMEOUT)
            except SessionClosedError:
                return
            except (TimeoutError, OSError, InvalidStateError) as exc:
                logger.warning("session %s: failover to %s %r failed: %s",
                               session.session_id.hex(), entry[0], entry[1], exc)
                continue
            paths.failovers += 1
            paths.last_silence = silence
            return
