"""Timeouts: the one way the public API turns a ``timeout=`` argument into a scope.

Every waiting call of the API (``Node.accept``, ``Session.accept_stream``,
``Stream.write``, ``Stream.receive``) takes ``timeout: float | None`` with the
same meaning: ``None`` waits for ever, a number fails with ``TimeoutError``
after that many seconds (a negative one at once). It must not know what is
being waited for.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import anyio

__all__ = ["time_limit"]

_NO_LIMIT: AbstractContextManager[object] = contextlib.nullcontext()
"""Shared and reusable: ``nullcontext`` holds no state between uses."""


def time_limit(timeout: float | None) -> AbstractContextManager[object]:
    """``anyio.fail_after(timeout)``, or no scope at all when ``timeout`` is None.

    Why not ``fail_after(None)``: that still builds, enters and leaves a cancel
    scope, which costs more than the rest of a small write or of a receive
    whose message is already there, and a server accepting in a loop would pay
    it once per session for nothing.
    """
    if timeout is None:
        return _NO_LIMIT
    return anyio.fail_after(max(timeout, 0.0))
