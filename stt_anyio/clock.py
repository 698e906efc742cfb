"""Clock: the one place the bindings read time for the core.

Owns the choice of clock that every ``now`` handed to ``stt_core`` comes from.
It must not know about event loops: the core's deadlines are compared with
this clock, never with ``anyio.current_time()``, because the event loop's clock
differs between backends (trio's is even virtualisable in tests) and may have
a coarser resolution. Code that needs to sleep until a core deadline converts
it with :func:`loop_deadline`. Which event loop runs matters only to
:func:`loop_clock` and :func:`running_asyncio_loop`, for the asyncio-only
shortcuts that run outside any task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio

__all__ = ["loop_clock", "loop_deadline", "now", "running_asyncio_loop"]


def now() -> float:
    """Seconds on a monotonic, high-resolution clock (``time.perf_counter``).

    Why perf_counter: it is monotonic (never jumps with wall-clock changes)
    and has sub-microsecond resolution, which RTT estimation needs on loopback.
    """
    return time.perf_counter()


def loop_deadline(core_deadline: float,
                  loop_time: Callable[[], float] = anyio.current_time) -> float:
    """Convert an absolute deadline on :func:`now`'s clock to the event loop's clock.

    Must be called from inside a running event loop; ``loop_time`` reads the
    loop's clock (default ``anyio.current_time``, which needs a task; see
    :func:`loop_clock`). The result is suitable for ``anyio.CancelScope.deadline``.
    """
    return loop_time() + (core_deadline - now())


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread, or None (trio).

    The bindings' asyncio-only shortcuts (the UDP reader callback, the node's
    deferred flush, the loop clock below) all start from this one test.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock as a function that also works outside tasks.

    On asyncio that is the loop's own ``time`` (what ``anyio.current_time``
    returns there): a plain loop callback, such as the UDP carrier's reader,
    runs outside any task, where anyio cannot tell which backend is running
    unless ``anyio.run`` started the loop. Elsewhere ``anyio.current_time``.
    Call it from a task.
    """
    loop = running_asyncio_loop()
    return anyio.current_time if loop is None else loop.time
