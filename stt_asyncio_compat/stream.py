"""Stream: the manual's stream handle, a thin face over :class:`stt_anyio.Stream`.

Owns only the spelling the user manual uses (``await stream.send(data,
timeout=)``, ``await stream.receive()``, ``await stream.close()``) and the
link back to the compat :class:`~stt_asyncio_compat.session.Session`. Every
byte goes through the stt_anyio stream it wraps, and through it the core: no
buffering, no retries and no protocol decisions are made here.

It must not know about sockets, the node's lifecycle or the event loop beyond
``await``: the wrapped object already does the waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import stt_anyio

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Stream"]


class Stream:
    """One message stream of a session (manual ch. 6 and 7).

    Obtain it from :meth:`Session.open_stream`, :meth:`Session.accept_stream`
    or :meth:`Session.stream`. Messages keep their boundaries: each
    :meth:`send` is one :meth:`receive` on the peer.
    """

    __slots__ = ("_inner", "_session")

    def __init__(self, session: Session, inner: stt_anyio.Stream) -> None:
        self._session = session
        self._inner = inner

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} purpose={self.purpose!r}>"

    @property
    def session(self) -> Session:
        """The session this stream belongs to."""
        return self._session

    @property
    def stream_id(self) -> int:
        """The stream id, identical on both peers (0 is the implicit stream)."""
        return self._inner.stream_id

    @property
    def purpose(self) -> str:
        """The label the opener attached (``"video"``, ``"chat"``...), or ``""``."""
        return self._inner.purpose

    @property
    def readable(self) -> bool:
        """True while messages may still arrive or are waiting to be taken."""
        return self._inner.readable

    @property
    def anyio_stream(self) -> stt_anyio.Stream:
        """The stt_anyio stream underneath (for features the manual does not name)."""
        return self._inner

    async def send(self, data: bytes, timeout: float | None = None) -> None:
        """Send one message and return when the peer acknowledged all of it.

        This is the manual's confirmed send: "no data loss for confirmed
        sends" holds for every call that returned.

        Raises:
            SendTimeoutError: (a ``TimeoutError``) not acknowledged within
                ``timeout`` seconds, e.g. because the peer is gone.
            SessionClosedError: the session ended.
            StreamClosedError: the stream was closed or reset.
        """
        await self._inner.send(data, timeout=timeout)

    async def write(self, data: bytes, timeout: float | None = None) -> int:
        """Queue one message without waiting for the acknowledgement (throughput path).

        Returns the message id once the data is queued; waits while the send
        buffer is full. Not in the manual; see docs/compat.md.
        """
        return await self._inner.write(data, timeout=timeout)

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next whole message from the peer, in order.

        Raises:
            StreamClosedError: the peer ended (after its last message) or reset it.
            SessionClosedError: the session ended and nothing is left to read.
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        return await self._inner.receive(timeout=timeout)

    def receive_nowait(self) -> bytes | None:
        """The next message if one is already here, else None."""
        return self._inner.receive_nowait()

    async def close(self) -> None:
        """End our direction gracefully; the peer reads every queued message first.

        Idempotent, and a no-op once the session ended.
        """
        await self._inner.close()

    async def reset(self, code: int = 0x10) -> None:
        """Abort the stream in both directions, discarding what was not sent."""
        await self._inner.reset(code)

    def __eq__(self, other: object) -> bool:
        """Two handles of the same stream are equal (handles are light wrappers)."""
        return isinstance(other, Stream) and other._inner is self._inner

    def __hash__(self) -> int:
        return hash(id(self._inner))

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for message in stream`` until the peer ends the stream."""
        return self._inner.__aiter__()
