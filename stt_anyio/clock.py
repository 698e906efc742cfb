"""Clock: the one place the bindings read time for the core.

Owns the choice of clock that every ``now`` handed to ``stt_core`` comes from.
It must not know about event loops: the core's deadlines are compared with
this clock, never with ``anyio.current_time()``, because the event loop's clock
differs between backends (trio's is even virtualisable in tests) and may have
a coarser resolution. Code that needs to sleep until a core deadline converts
it with :func:`loop_deadline`.
"""

from __future__ import annotations

import time

import anyio

__all__ = ["loop_deadline", "now"]


def now() -> float:
    """Seconds on a monotonic, high-resolution clock (``time.perf_counter``).

    Why perf_counter: it is monotonic (never jumps with wall-clock changes)
    and has sub-microsecond resolution, which RTT estimation needs on loopback.
    """
    return time.perf_counter()


def loop_deadline(core_deadline: float) -> float:
    """Convert an absolute deadline on :func:`now`'s clock to the event loop's clock.

    Must be called from inside a running event loop. The result is suitable
    for ``anyio.CancelScope.deadline``.
    """
    return anyio.current_time() + (core_deadline - now())
