"""Ranges: a capped set of half-open integer ranges with a forgetting floor.

This module owns :class:`RangeSet`, the one data structure behind received
packet numbers (what an ACK frame reports), acknowledged packet numbers and
the anti-replay window. It knows nothing about packets, frames or time: it
stores non-negative integers.

Why a cap and a floor: a hostile or very lossy peer can fragment the set into
one range per packet number. The set therefore holds at most ``max_ranges``
ranges; when an insertion exceeds the cap, the *lowest* ranges (the oldest
packet numbers) are dropped and everything below the end of what was dropped
is remembered only as "forgotten", i.e. below :attr:`RangeSet.floor`. Values
below the floor are reported as contained. For duplicate detection that is the
safe answer (a packet too old to judge is treated as already seen), so the
same structure doubles as a sliding anti-replay window.

Invariants (checked by the hypothesis tests in ``tests/stt_core/test_ranges.py``):

- explicit ranges are sorted, non-empty, non-overlapping and non-adjacent
  (touching ranges are merged);
- every explicit range starts at or above :attr:`RangeSet.floor`;
- there are never more than ``max_ranges`` explicit ranges;
- ``x in s`` is ``0 <= x < floor`` or ``x`` lies in an explicit range.

Complexity: every operation is O(number of ranges) in the worst case (list
slicing), with the searches done by bisection.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["DEFAULT_MAX_RANGES", "RangeSet"]

DEFAULT_MAX_RANGES = 64
"""Default cap on the number of explicit ranges a :class:`RangeSet` keeps."""


class RangeSet:
    """A sorted set of half-open ranges of non-negative integers, capped in size.

    Args:
        max_ranges: the most explicit ranges kept (>= 1). Exceeding it drops
            the lowest ranges and raises :attr:`floor`.

    Raises:
        ValueError: ``max_ranges`` is smaller than 1.
    """

    __slots__ = ("_floor", "_max_ranges", "_starts", "_stops")

    def __init__(self, max_ranges: int = DEFAULT_MAX_RANGES) -> None:
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be >= 1, not {max_ranges}")
        self._max_ranges = max_ranges
        # Two parallel lists rather than a list of ``range`` objects: bisect
        # works directly on plain ints, which keeps lookups cheap.
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._floor = 0

    # -- queries ---------------------------------------------------------

    @property
    def floor(self) -> int:
        """Every value below this (and >= 0) counts as contained ("forgotten")."""
        return self._floor

    @property
    def max_ranges(self) -> int:
        """The cap on explicit ranges given to the constructor."""
        return self._max_ranges

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or value < 0:
            return False
        if value < self._floor:
            return True
        # The candidate range is the last one starting at or before ``value``.
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._stops[i]

    def __iter__(self) -> Iterator[range]:
        """Yield the explicit ranges in ascending order (the floor is not included)."""
        for start, stop in zip(self._starts, self._stops, strict=True):
            yield range(start, stop)

    def __reversed__(self) -> Iterator[range]:
        """Yield the explicit ranges in descending order."""
        for i in range(len(self._starts) - 1, -1, -1):
            yield range(self._starts[i], self._stops[i])

    def __len__(self) -> int:
        """Number of explicit ranges (not the number of values)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        """True when at least one explicit range exists (the floor alone does not count)."""
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return (self._floor, self._starts, self._stops) == (
            other._floor,
            other._starts,
            other._stops,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"[{a}, {b})" for a, b in zip(self._starts, self._stops, strict=True))
        return f"RangeSet(floor={self._floor}, ranges=[{inner}])"

    def bounds(self) -> range:
        """The smallest range covering every explicit range.

        Raises:
            IndexError: the set has no explicit range.
        """
        if not self._starts:
            raise IndexError("bounds() of an empty RangeSet")
        return range(self._starts[0], self._stops[-1])

    def first(self) -> range:
        """The lowest explicit range. Raises IndexError when there is none."""
        if not self._starts:
            raise IndexError("first() of an empty RangeSet")
        return range(self._starts[0], self._stops[0])

    def last(self) -> range:
        """The highest explicit range. Raises IndexError when there is none."""
        if not self._starts:
            raise IndexError("last() of an empty RangeSet")
        return range(self._starts[-1], self._stops[-1])

    def largest(self) -> int | None:
        """The largest value held in an explicit range, or None when there is none."""
        return self._stops[-1] - 1 if self._stops else None

    def covers(self, start: int, stop: int) -> bool:
        """True if every value of ``[start, stop)`` is contained (floor included).

        One bisection: the cheap test that lets a repeated ACK range be skipped.
        """
        start = max(start, self._floor, 0)
        if stop <= start:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._stops[i] >= stop

    def descending(self, limit: int | None = None) -> list[range]:
        """The explicit ranges, highest first, at most ``limit`` of them."""
        count = len(self._starts) if limit is None else min(limit, len(self._starts))
        if count <= 0:
            return []
        first = len(self._starts) - count
        return [
            range(a, b)
            for a, b in zip(
                reversed(self._starts[first:]), reversed(self._stops[first:]), strict=True
            )
        ]

    def intersects(self, start: int, stop: int) -> bool:
        """True if any value of ``[start, stop)`` is contained (floor included)."""
        start = max(start, 0)
        if stop <= start:
            return False
        if start < self._floor:
            return True
        # The first range ending after ``start`` is the only candidate.
        i = bisect_right(self._stops, start)
        return i < len(self._starts) and self._starts[i] < stop

    def difference(self, start: int, stop: int) -> Iterator[range]:
        """Yield the parts of ``[start, stop)`` that are not contained, ascending.

        Values below the floor count as contained, negative values are
        skipped. Why: an ACK repeats ranges the sender already knows; this
        picks out only the new information in O(log n + parts).
        """
        start = max(start, self._floor, 0)
        if stop <= start:
            return
        starts, stops = self._starts, self._stops
        i = bisect_right(stops, start)
        while start < stop:
            if i >= len(starts) or starts[i] >= stop:
                yield range(start, stop)
                return
            if starts[i] > start:
                yield range(start, starts[i])
            start = stops[i]
            i += 1

    def gaps(self) -> Iterator[range]:
        """Yield the holes between the floor and the last explicit range, ascending.

        These are the values above the floor and below the largest value that
        are *not* contained: for received packet numbers, the missing packets.
        """
        previous = self._floor
        for start, stop in zip(self._starts, self._stops, strict=True):
            if start > previous:
                yield range(previous, start)
            previous = stop

    # -- mutation --------------------------------------------------------

    def add(self, start: int, stop: int | None = None) -> None:
        """Add ``[start, stop)`` (or the single value ``start`` when ``stop`` is None).

        Values below the floor are already contained and are ignored. If the
        insertion leaves more than ``max_ranges`` ranges, the lowest ones are
        dropped and the floor rises to the end of the last dropped range.

        Raises:
            ValueError: ``start`` is negative or ``stop <= start``.
        """
        if stop is None:
            stop = start + 1
        if start < 0 or stop <= start:
            raise ValueError(f"cannot add [{start}, {stop}): need 0 <= start < stop")
        if start < self._floor:
            start = self._floor
            if stop <= start:
                return
        starts, stops = self._starts, self._stops
        if stops and stops[-1] == start:
            # The common case (packet numbers in order): extend the last range.
            stops[-1] = stop
            return
        # Ranges i..j-1 overlap or touch [start, stop) and merge with it.
        i = bisect_left(stops, start)
        j = bisect_right(starts, stop)
        if i == j:
            starts.insert(i, start)
            stops.insert(i, stop)
        else:
            new_start = min(start, starts[i])
            new_stop = max(stop, stops[j - 1])
            starts[i:j] = [new_start]
            stops[i:j] = [new_stop]
        self._trim()

    def subtract(self, start: int, stop: int) -> None:
        """Remove ``[start, stop)`` from the explicit ranges.

        The floor is unchanged: forgotten values stay contained. Splitting a
        range can exceed the cap, in which case the lowest range is dropped
        exactly as in :meth:`add`.

        Raises:
            ValueError: ``stop < start``.
        """
        if stop < start:
            raise ValueError(f"cannot subtract [{start}, {stop}): stop < start")
        starts, stops = self._starts, self._stops
        # Ranges i..j-1 share at least one value with [start, stop).
        i = bisect_right(stops, start)
        j = bisect_left(starts, stop)
        if i >= j:
            return
        new_starts: list[int] = []
        new_stops: list[int] = []
        if starts[i] < start:
            new_starts.append(starts[i])
            new_stops.append(start)
        if stops[j - 1] > stop:
            new_starts.append(stop)
            new_stops.append(stops[j - 1])
        starts[i:j] = new_starts
        stops[i:j] = new_stops
        self._trim()

    def shift(self) -> range:
        """Remove and return the lowest explicit range (the floor is unchanged).

        Raises:
            IndexError: the set has no explicit range.
        """
        if not self._starts:
            raise IndexError("shift() of an empty RangeSet")
        return range(self._starts.pop(0), self._stops.pop(0))

    def advance_floor(self, value: int) -> None:
        """Raise the floor to ``value``: everything below it counts as contained.

        Explicit ranges below the new floor are dropped and a range straddling
        it is cut. Why: once the peer has confirmed it no longer needs old
        ACK ranges, the receiver can forget them without accepting replays.
        A ``value`` at or below the current floor does nothing.
        """
        if value <= self._floor:
            return
        self._floor = value
        starts, stops = self._starts, self._stops
        i = bisect_right(stops, value)
        del starts[:i]
        del stops[:i]
        if starts and starts[0] < value:
            starts[0] = value

    def _trim(self) -> None:
        """Drop the lowest ranges until the cap holds, raising the floor past them."""
        excess = len(self._starts) - self._max_ranges
        if excess > 0:
            self._floor = self._stops[excess - 1]
            del self._starts[:excess]
            del self._stops[:excess]
