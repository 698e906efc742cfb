"""Trace: structured events about what the core did, for debugging and plots.

The core calls an injected sink; the default sink is off and every call site
checks ``trace.enabled`` first, so tracing costs one attribute read per site
when nobody listens. Sinks receive plain data (names, numbers, short lists),
never keys or payload bytes, so a trace file can be shared.

Event names follow qlog's vocabulary where one exists (``packet_sent``,
``packet_received``, ``packet_dropped``, ``packets_lost``, ``metrics_updated``,
``key_updated``, ``path_changed``, ``session_state_changed``,
``stream_state_changed``). The binding turns them into files (stt_anyio's
JSON-lines writer, one file per session).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_TRACE", "ListTrace", "NullTrace", "TraceSink"]


class TraceSink(Protocol):
    """Where trace events go. ``enabled`` False means: do not even build the event."""

    enabled: bool

    def event(self, now: float, ref: int, name: str, data: dict[str, object]) -> None:
        """Record one event of session ``ref`` (0 for endpoint-wide events)."""


class NullTrace:
    """The default sink: tracing off."""

    enabled = False

    def event(self, now: float, ref: int, name: str, data: dict[str, object]) -> None:
        """Discard the event."""


NULL_TRACE = NullTrace()


class ListTrace:
    """A sink that keeps events in memory (tests, small tools)."""

    enabled = True

    def __init__(self) -> None:
        self.events: list[tuple[float, int, str, dict[str, object]]] = []

    def event(self, now: float, ref: int, name: str, data: dict[str, object]) -> None:
        """Append the event."""
        self.events.append((now, ref, name, data))

    def named(self, name: str) -> list[dict[str, object]]:
        """The data of every event with this name, in order."""
        return [data for _, _, event_name, data in self.events if event_name == name]
