"""Tests for stt_core.ranges: examples first, then hypothesis against a model set."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stt_core.ranges import RangeSet


def ranges_of(s: RangeSet) -> list[tuple[int, int]]:
    return [(r.start, r.stop) for r in s]


def test_empty() -> None:
    s = RangeSet()
    assert not s
    assert len(s) == 0
    assert list(s) == []
    assert 0 not in s
    assert s.largest() is None
    with pytest.raises(IndexError):
        s.bounds()
    with pytest.raises(IndexError):
        s.shift()
    with pytest.raises(IndexError):
        s.first()
    with pytest.raises(IndexError):
        s.last()


def test_add_merges_overlapping_and_adjacent() -> None:
    s = RangeSet()
    s.add(5, 7)
    s.add(0, 2)
    s.add(10)
    assert ranges_of(s) == [(0, 2), (5, 7), (10, 11)]
    s.add(7, 10)  # touches both neighbours
    assert ranges_of(s) == [(0, 2), (5, 11)]
    s.add(1, 6)
    assert ranges_of(s) == [(0, 11)]
    assert s.bounds() == range(0, 11)
    assert s.largest() == 10


def test_add_in_order_extends_the_last_range() -> None:
    s = RangeSet(max_ranges=2)
    for value in range(100):
        s.add(value)
    assert ranges_of(s) == [(0, 100)]
    s.add(102)
    s.add(103, 105)  # touches the last range only
    s.add(100)  # touches the one before it
    assert ranges_of(s) == [(0, 101), (102, 105)]
    assert s.floor == 0


def test_add_rejects_bad_bounds() -> None:
    s = RangeSet()
    with pytest.raises(ValueError):
        s.add(3, 3)
    with pytest.raises(ValueError):
        s.add(5, 2)
    with pytest.raises(ValueError):
        s.add(-1, 2)
    with pytest.raises(ValueError):
        RangeSet(max_ranges=0)


def test_contains() -> None:
    s = RangeSet()
    s.add(2, 4)
    s.add(8, 9)
    assert [x for x in range(12) if x in s] == [2, 3, 8]
    assert -1 not in s
    assert "2" not in s


def test_subtract_splits_and_trims() -> None:
    s = RangeSet()
    s.add(0, 10)
    s.subtract(3, 5)
    assert ranges_of(s) == [(0, 3), (5, 10)]
    s.subtract(0, 1)
    s.subtract(9, 20)
    assert ranges_of(s) == [(1, 3), (5, 9)]
    s.subtract(2, 6)
    assert ranges_of(s) == [(1, 2), (6, 9)]
    s.subtract(100, 200)  # no overlap: nothing happens
    s.subtract(4, 4)
    assert ranges_of(s) == [(1, 2), (6, 9)]
    with pytest.raises(ValueError):
        s.subtract(5, 4)


def test_shift_and_first_last() -> None:
    s = RangeSet()
    s.add(4, 6)
    s.add(1, 2)
    assert s.first() == range(1, 2)
    assert s.last() == range(4, 6)
    assert s.shift() == range(1, 2)
    assert ranges_of(s) == [(4, 6)]
    assert 1 not in s  # shift does not raise the floor
    assert list(reversed(s)) == [range(4, 6)]


def test_cap_drops_lowest_and_sets_floor() -> None:
    s = RangeSet(max_ranges=3)
    for x in (0, 2, 4, 6):
        s.add(x)
    # [0,1) was dropped: the floor rose to 1, everything below is "contained".
    assert s.floor == 1
    assert ranges_of(s) == [(2, 3), (4, 5), (6, 7)]
    assert 0 in s
    assert 1 not in s  # the hole above the dropped range is still a hole
    s.add(8)
    assert s.floor == 3
    assert 1 in s and 2 in s
    s.add(0, 2)  # entirely below the floor: a no-op
    assert ranges_of(s) == [(4, 5), (6, 7), (8, 9)]
    s.add(1, 5)  # clipped to the floor, merges with [4,5)
    assert ranges_of(s) == [(3, 5), (6, 7), (8, 9)]


def test_gaps() -> None:
    s = RangeSet()
    s.add(3, 5)
    s.add(7, 8)
    s.add(10, 12)
    assert list(s.gaps()) == [range(0, 3), range(5, 7), range(8, 10)]
    s.advance_floor(4)
    assert list(s.gaps()) == [range(5, 7), range(8, 10)]


def test_advance_floor() -> None:
    s = RangeSet()
    s.add(0, 3)
    s.add(5, 9)
    s.advance_floor(6)
    assert s.floor == 6
    assert ranges_of(s) == [(6, 9)]
    assert 4 in s
    s.advance_floor(2)  # never lowers
    assert s.floor == 6


def test_intersects() -> None:
    s = RangeSet()
    s.add(5, 8)
    assert s.intersects(7, 10)
    assert s.intersects(0, 6)
    assert not s.intersects(8, 20)
    assert not s.intersects(0, 5)
    assert not s.intersects(6, 6)
    assert not s.intersects(-5, 0)
    s.advance_floor(2)
    assert s.intersects(-5, 2)
    assert not s.intersects(2, 5)


def test_difference() -> None:
    s = RangeSet()
    s.add(5, 8)
    s.add(10, 12)
    assert list(s.difference(0, 20)) == [range(0, 5), range(8, 10), range(12, 20)]
    assert list(s.difference(6, 11)) == [range(8, 10)]
    assert list(s.difference(5, 8)) == []
    assert list(s.difference(-3, 2)) == [range(0, 2)]
    s.advance_floor(9)
    assert list(s.difference(0, 11)) == [range(9, 10)]


def test_covers_and_descending() -> None:
    s = RangeSet()
    s.add(5, 8)
    s.add(10, 12)
    assert s.covers(5, 8) and s.covers(6, 7) and s.covers(3, 3)
    assert not s.covers(4, 6) and not s.covers(7, 11)
    assert s.descending() == [range(10, 12), range(5, 8)]
    assert s.descending(1) == [range(10, 12)]
    assert s.descending(0) == []
    s.advance_floor(9)
    assert s.covers(0, 9) and not s.covers(0, 10)


def test_equality_and_repr() -> None:
    a, b = RangeSet(), RangeSet()
    a.add(1, 3)
    b.add(1)
    b.add(2)
    assert a == b
    assert "[1, 3)" in repr(a)
    assert a != object()


def test_many_gaps_stays_bounded() -> None:
    s = RangeSet(max_ranges=64)
    for pn in range(0, 20_000, 2):
        s.add(pn)
    assert len(s) == 64
    assert s.floor == 19_871  # one past the last dropped value, 19_870
    assert 19_998 in s
    assert 19_997 not in s
    assert 10 in s  # forgotten counts as seen (anti-replay)


# -- property tests against a model ----------------------------------------

DOMAIN = 200
spans = st.tuples(st.integers(0, DOMAIN), st.integers(1, 20)).map(lambda t: (t[0], t[0] + t[1]))


def check_invariants(s: RangeSet) -> None:
    previous_stop = -1
    for r in s:
        assert r.start < r.stop
        assert r.start > previous_stop  # sorted, non-overlapping, non-adjacent
        assert r.start >= s.floor
        previous_stop = r.stop
    assert len(s) <= s.max_ranges


@given(st.lists(spans, max_size=40))
def test_add_matches_model_when_uncapped(items: list[tuple[int, int]]) -> None:
    s = RangeSet(max_ranges=10_000)
    model: set[int] = set()
    for a, b in items:
        s.add(a, b)
        model.update(range(a, b))
        check_invariants(s)
    assert {x for r in s for x in r} == model
    assert s.floor == 0


class RangeSetMachine(RuleBasedStateMachine):
    """Above the floor the set is exactly the model; below it everything is contained."""

    def __init__(self) -> None:
        super().__init__()
        self.s = RangeSet(max_ranges=4)
        self.model: set[int] = set()

    @rule(span=spans)
    def add(self, span: tuple[int, int]) -> None:
        self.s.add(*span)
        self.model.update(range(*span))

    @rule(span=spans)
    def subtract(self, span: tuple[int, int]) -> None:
        self.s.subtract(*span)
        self.model.difference_update(range(*span))

    @rule()
    def shift(self) -> None:
        if self.s:
            popped = self.s.shift()
            self.model.difference_update(popped)

    @rule(value=st.integers(0, DOMAIN))
    def advance_floor(self, value: int) -> None:
        self.s.advance_floor(value)

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.s)
        floor = self.s.floor
        for x in range(DOMAIN + 25):
            expected = x < floor or x in self.model
            assert (x in self.s) == expected, (x, self.s, sorted(self.model))
        # Nothing above the floor that was added and not removed is lost.
        assert {x for r in self.s for x in r} == {x for x in self.model if x >= floor}
        assert list(self.s.gaps()) == _model_gaps(self.model, floor)

    @rule(span=spans)
    def difference(self, span: tuple[int, int]) -> None:
        parts = list(self.s.difference(*span))
        expected = [x for x in range(*span) if x not in self.s]
        assert [x for r in parts for x in r] == expected
        assert all(len(r) > 0 for r in parts)
        assert all(a.stop < b.start for a, b in itertools.pairwise(parts))

    @rule(span=spans)
    def covers(self, span: tuple[int, int]) -> None:
        assert self.s.covers(*span) == all(x in self.s for x in range(*span))

    @rule(limit=st.integers(0, 6))
    def descending(self, limit: int) -> None:
        assert self.s.descending(limit) == list(reversed(self.s))[:limit]
        assert self.s.descending() == list(reversed(self.s))

    @rule(span=spans)
    def intersects(self, span: tuple[int, int]) -> None:
        expected = any(x in self.s for x in range(*span))
        assert self.s.intersects(*span) == expected


def _model_gaps(model: set[int], floor: int) -> list[range]:
    above = sorted(x for x in model if x >= floor)
    gaps: list[range] = []
    previous = floor
    for x in above:
        if x > previous:
            gaps.append(range(previous, x))
        previous = x + 1
    return gaps


TestRangeSetMachine = RangeSetMachine.TestCase
TestRangeSetMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
