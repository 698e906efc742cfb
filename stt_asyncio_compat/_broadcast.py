"""Broadcast: one message to many sessions (the manual's ``send_to_all``/``send_to_sessions``).

Owns the fan-out: one confirmed send per session, run concurrently, with each
session's failure recorded instead of raised, so one departed viewer cannot
spoil a broadcast. It must not know how sessions are found (the node passes
them in) nor anything below the compat :class:`Stream`.

Stream choice: the message goes on ``stream_id`` of each session. A stream
this side already has is reused as is (keeping its purpose label); otherwise
it is opened with that id, so the receiver sees it via ``accept_stream()`` or
reads it with ``session.stream(stream_id)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from stt_core.errors import SessionClosedError, STTError

from .session import Session
from .stream import Stream

__all__ = ["BroadcastResult", "broadcast", "stream_for_broadcast"]


@dataclass(slots=True)
class BroadcastResult:
    """Who received a broadcast and why the others did not."""

    delivered: list[bytes] = field(default_factory=list)
    """Session ids whose peer acknowledged the message."""
    failed: dict[bytes, BaseException] = field(default_factory=dict)
    """Session id -> the error its send raised (closed, timeout, unknown id)."""

    @property
    def all_delivered(self) -> bool:
        """True when every targeted session acknowledged the message."""
        return not self.failed

    def __len__(self) -> int:
        """How many sessions acknowledged the message."""
        return len(self.delivered)


def stream_for_broadcast(session: Session, stream_id: int) -> Stream:
    """The session's stream ``stream_id``: the existing one, else a newly opened one."""
    existing = {s.stream_id for s in session.anyio_session.streams}
    if stream_id == 0 or stream_id in existing:
        return session.stream(stream_id)
    return session.open_stream(stream_id=stream_id)


async def broadcast(sessions: Sequence[Session], data: bytes, *, stream_id: int,
                    timeout: float | None, missing: Sequence[bytes] = ()) -> BroadcastResult:
    """Confirmed-send ``data`` on every session at once; never raises for one session.

    Args:
        sessions: the targets.
        data: the message.
        stream_id: the stream to use on every session.
        timeout: per-send acknowledgement timeout (None: wait; a dead peer
            then fails when its keep-alive timeout closes the session).
        missing: ids the caller could not find; reported as failed.
    """
    result = BroadcastResult()
    for sid in missing:
        result.failed[sid] = SessionClosedError(f"no session {sid.hex()} on this node")
    payload = bytes(data)

    async def send_one(session: Session) -> None:
        try:
            await stream_for_broadcast(session, stream_id).send(payload, timeout=timeout)
        except (STTError, TimeoutError, ValueError) as exc:
            result.failed[session.session_id] = exc
        else:
            result.delivered.append(session.session_id)

    async with anyio.create_task_group() as tg:
        for session in sessions:
            tg.start_soon(send_one, session)
    return result

