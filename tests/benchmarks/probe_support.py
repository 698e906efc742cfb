"""What the two-process probes share: pinning a side to a core, and running a side
under pyinstrument when it is the one being profiled.

Used by ``bulk_probe``, ``hs_probe`` and ``rtt_probe``; it must not know what
a probe measures.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


def pin_to_core(core: int) -> None:
    """Keep this process on ``core`` when the machine has two or more to choose from,
    so the two sides of a probe do not share one."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {core})


def run_side(main: Callable[[], Awaitable[Any]], backend: str, *, profiled: bool) -> Any:
    """``anyio.run(main)`` on ``backend``; with ``profiled``, under pyinstrument
    (the whole thread, so the loop's own work shows too), printing the tree after."""
    if not profiled:
        return anyio.run(main, backend=backend)
    import pyinstrument

    profiler = pyinstrument.Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        return anyio.run(main, backend=backend)
    finally:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
