"""CryptoSessionContinuity: the manual's session resumption, on the core's resume tickets.

Owns the manual's continuity vocabulary (``create_resumable_session``,
``resume_session``) and the :class:`ResumeToken` handle the application keeps
between a session and its resumption. The cryptography is the core's
(protocol.md §6.8, ``stt_core.resumption``): the server issues a sealed,
single-use, expiring token after every (re-)establishment; the client's
binding wraps it with its resumption secret into a *ticket*; a resume is one
round trip with fresh ephemeral keys and yields the original session id.

It must not invent identities or tokens: a :class:`ResumeToken` is empty until
a real session with the peer exists and the server has issued a ticket, and
resuming an empty one raises. It must not touch sockets either: the actual
resume goes through :meth:`STTNode.resume`, which goes through ``stt_anyio``.

Where the manual differs (docs/compat.md, "Session continuity"):

* The manual calls ``create_resumable_session`` *before* ``connect``. Tokens
  come from the server after the handshake, so the returned handle is bound
  to the next session this node establishes with ``peer_node_id`` (or, when
  called afterwards, to the existing one). Its ``session_id`` is ``b""``
  until then.
* ``stc_wrapper`` (the manual's crypto wrapper object) is accepted and
  ignored: encryption lives in the core.
* ``resume_session`` cannot complete without a round trip, so it returns an
  already-running ``asyncio.Task``; ``await`` it for the resumed session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from stt_anyio import clock
from stt_core.errors import AuthenticationError, InvalidStateError

if TYPE_CHECKING:
    from .node import STTNode
    from .session import Session

__all__ = ["CryptoSessionContinuity", "ResumeToken"]

DEFAULT_RESUMPTION_TIMEOUT = 86400.0
"""The manual's ``resumption_timeout`` default: one day, in seconds."""


class ResumeToken:
    """The application's handle on the resumption of one session. Secret-bearing.

    It follows the session: after each successful resume it points at the
    resumed session (whose fresh ticket the server issued), so one handle can
    resume many times. ``repr`` never shows the ticket.
    """

    __slots__ = ("_bound_at", "_continuity", "_node", "_session", "peer_node_id")

    def __init__(self, continuity: CryptoSessionContinuity, node: STTNode,
                 peer_node_id: bytes | None) -> None:
        self._continuity = continuity
        self._node = node
        self._session: Session | None = None
        self._bound_at: float | None = None
        self.peer_node_id = peer_node_id
        """The peer this token is for (None: the next session to any peer)."""

    def __repr__(self) -> str:
        state = "ready" if self.ticket else ("bound" if self._session else "waiting")
        return f"<ResumeToken peer={self.peer_node_id!r} {state}>"

    @property
    def node(self) -> STTNode:
        """The node whose sessions this token follows."""
        return self._node

    @property
    def session(self) -> Session | None:
        """The session the token currently belongs to (None until one exists)."""
        return self._session

    @property
    def session_id(self) -> bytes:
        """The session id a resume restores; ``b""`` until a session exists."""
        return b"" if self._session is None else self._session.session_id

    @property
    def ticket(self) -> bytes | None:
        """The current ticket (token + our resumption secret), None if none yet.

        Store it as confidentially as the shared seed.
        """
        return None if self._session is None else self._session.resume_ticket

    @property
    def expired(self) -> bool:
        """True once ``resumption_timeout`` passed since the session was bound."""
        if self._bound_at is None:
            return False
        return clock.now() - self._bound_at > self._continuity.resumption_timeout

    def matches(self, session: Session) -> bool:
        """Whether a new outgoing session is the one this token waits for."""
        return self.peer_node_id is None or session.peer_node_id == self.peer_node_id

    def _bind(self, session: Session) -> None:
        self._session = session
        self._bound_at = clock.now()


class CryptoSessionContinuity:
    """Create resumable sessions and resume them on a new address or transport.

    Args:
        stc_wrapper: accepted for the manual's signature; unused (the core
            does the cryptography).
        resumption_timeout: seconds after which this object refuses to resume
            a token locally (the server's own token lifetime,
            ``Config.resume_token_lifetime``, applies as well).
        node: the :class:`STTNode` to work with. Default: the node found by
            the seeds given to :meth:`create_resumable_session`.
    """

    def __init__(self, stc_wrapper: object = None,
                 resumption_timeout: float = DEFAULT_RESUMPTION_TIMEOUT, *,
                 node: STTNode | None = None) -> None:
        if resumption_timeout <= 0:
            raise ValueError("resumption_timeout must be > 0 seconds")
        self.stc_wrapper = stc_wrapper
        self.resumption_timeout = resumption_timeout
        self._node = node

    def create_resumable_session(self, peer_node_id: bytes | None = None,
                                 node_seed: bytes | str | None = None,
                                 shared_seed: bytes | str | None = None, *,
                                 session: Session | None = None
                                 ) -> tuple[bytes, ResumeToken]:
        """Make the session with ``peer_node_id`` resumable; returns ``(session_id, token)``.

        Pass ``session=`` to bind an existing session directly. Otherwise the
        node is the one given to the constructor, or the running
        :class:`STTNode` configured with exactly ``node_seed`` and
        ``shared_seed``; the token binds to its established session with that
        peer, or to the next one it connects.

        Raises:
            InvalidStateError: no node matches the seeds (or several do).
        """
        if session is not None:
            node = session.node
            token = ResumeToken(self, node, session.peer_node_id)
            token._bind(session)
        else:
            node = self._node or _find_node(node_seed, shared_seed)
            token = ResumeToken(self, node, peer_node_id)
            existing = [s for s in node.session_manager.get_active_sessions()
                        if s.initiator and token.matches(s)]
            if existing:
                token._bind(existing[-1])
            else:
                node._await_session_for(token)
        return token.session_id, token

    def resume_session(self, resume_token: ResumeToken,
                       new_transport_type: str | None = None,
                       new_peer_addr: tuple[str, int] | None = None,
                       stc_wrapper: object = None, *,
                       timeout: float | None = None) -> asyncio.Task[Session]:
        """Resume the token's session over ``new_transport_type`` at ``new_peer_addr``.

        Starts at once and returns the running task; ``await`` it for the
        resumed :class:`Session` (same ``session_id``, fresh keys). Defaults:
        the node's first transport and the session's last peer address.
        ``stc_wrapper`` is ignored (see the module docstring).

        The task raises:
            InvalidStateError: the token has no ticket yet (no session, or the
                server issued none).
            AuthenticationError: the token expired (locally or at the server),
                was already used, or the server does not know it.
            ConnectionTimeoutError, ConnectionRefusedError: as for ``connect``.
        """
        return asyncio.ensure_future(
            self._resume(resume_token, new_transport_type, new_peer_addr, timeout))

    async def _resume(self, token: ResumeToken, transport: str | None,
                      addr: tuple[str, int] | None, timeout: float | None) -> Session:
        ticket = token.ticket
        if ticket is None or token.session is None:
            raise InvalidStateError(
                "this resume token has no ticket yet: connect to the peer first and "
                "let the server issue one (it does right after the handshake)")
        if token.expired:
            raise AuthenticationError(
                f"resume token older than resumption_timeout ({self.resumption_timeout} s)")
        if addr is None:
            last = token.session.peer_address
            if not (isinstance(last, tuple) and len(last) == 2):
                raise InvalidStateError("give new_peer_addr: the old address is not (host, port)")
            addr = (str(last[0]), int(last[1]))
        old = token.session
        resumed = await token.node.resume(addr, ticket, transport=transport, timeout=timeout)
        token._bind(resumed)
        if not old.closed:
            # The old path is presumed dead; stop its timers without waiting.
            await old.close(timeout=0)
        return resumed


def _find_node(node_seed: bytes | str | None,
               shared_seed: bytes | str | None) -> STTNode:
    """The one live STTNode configured with these seeds (the manual's identity)."""
    from .node import live_nodes

    def as_bytes(value: bytes | str | None) -> bytes | None:
        return value.encode() if isinstance(value, str) else value

    seed, shared = as_bytes(node_seed), as_bytes(shared_seed)
    matches = [n for n in live_nodes()
               if (seed is None or n.seed == seed)
               and (shared is None or n.shared_seed == shared)]
    if len(matches) != 1:
        found = "no" if not matches else "several"
        raise InvalidStateError(
            f"{found} STTNode matches these seeds; pass node= to CryptoSessionContinuity "
            "or session= to create_resumable_session")
    return matches[0]

