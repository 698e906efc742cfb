"""Tests for stt_core.flow: ByteRanges against a set-of-offsets model, session credit."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_core.errors import ErrorCode, ProtocolError
from stt_core.flow import ByteRanges, SessionFlowControl

SPAN = 64
ranges_st = st.tuples(st.integers(0, SPAN), st.integers(0, SPAN)).map(sorted)
ops_st = st.lists(st.tuples(st.sampled_from(["add", "subtract"]), ranges_st), max_size=30)


def covered(rs: ByteRanges) -> set[int]:
    out: set[int] = set()
    for start, end in rs:
        out.update(range(start, end))
    return out


def check_invariants(rs: ByteRanges) -> None:
    pieces = list(rs)
    for start, end in pieces:
        assert start < end
    for (_, end_a), (start_b, _) in pairwise(pieces):
        assert end_a < start_b, "ranges must be sorted, disjoint and not touching"


@settings(max_examples=300)
@given(ops_st)
def test_add_subtract_match_set_model(ops: list[tuple[str, list[int]]]) -> None:
    rs = ByteRanges()
    model: set[int] = set()
    for op, (start, end) in ops:
        if op == "add":
            rs.add(start, end)
            model.update(range(start, end))
        else:
            rs.subtract(start, end)
            model.difference_update(range(start, end))
        check_invariants(rs)
        assert covered(rs) == model
    for offset in range(SPAN + 1):
        assert (offset in rs) == (offset in model)


@settings(max_examples=200)
@given(ops_st, ranges_st)
def test_missing_is_complement_within_range(ops: list[tuple[str, list[int]]],
                                            query: list[int]) -> None:
    rs = ByteRanges()
    for op, (start, end) in ops:
        getattr(rs, op)(start, end)
    start, end = query
    gaps = rs.missing(start, end)
    got: set[int] = set()
    for gap_start, gap_end in gaps:
        assert start <= gap_start < gap_end <= end
        got.update(range(gap_start, gap_end))
    assert got == set(range(start, end)) - covered(rs)
    assert gaps == sorted(gaps)


def test_take_first_and_pop_prefix() -> None:
    rs = ByteRanges()
    rs.add(10, 20)
    rs.add(30, 35)
    assert rs.take_first(4) == (10, 14)
    assert rs.first() == (14, 20)
    assert rs.take_first(100) == (14, 20)
    assert rs.take_first(0) is None
    assert list(rs) == [(30, 35)]
    assert rs.pop_prefix(29) == 29, "a range starting later is not swallowed"
    assert rs.pop_prefix(30) == 35
    assert not rs
    assert rs.take_first(5) is None
    assert rs.first() is None


def test_touching_ranges_merge() -> None:
    rs = ByteRanges()
    rs.add(0, 5)
    rs.add(5, 10)
    rs.add(12, 14)
    rs.add(10, 12)
    assert list(rs) == [(0, 14)]
    assert len(rs) == 1
    assert "x" not in rs


def test_session_receive_side_limits_and_updates() -> None:
    flow = SessionFlowControl(receive_window=100)
    assert flow.advertised_limit == 100
    flow.on_new_bytes(60)
    flow.on_new_bytes(40)
    assert flow.received == 100
    assert flow.credit_update() is None, "nothing released yet"
    flow.consume(49)
    assert flow.credit_update() is None, "less than half a window moved"
    flow.consume(1)
    assert flow.credit_update() == 150
    assert flow.credit_update() is None, "an update is committed once"
    with pytest.raises(ProtocolError) as info:
        flow.on_new_bytes(51)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_session_consume_cannot_exceed_received() -> None:
    flow = SessionFlowControl(receive_window=100)
    flow.on_new_bytes(10)
    with pytest.raises(ValueError):
        flow.consume(11)
    with pytest.raises(ValueError):
        flow.consume(-1)


def test_session_send_side_credit() -> None:
    flow = SessionFlowControl(receive_window=10, peer_limit=100)
    assert flow.available() == 100
    flow.on_sent(70)
    assert flow.sent == 70
    assert flow.available() == 30
    blocked_before = flow.blocked
    with pytest.raises(ValueError):
        flow.on_sent(31)
    flow.on_sent(30)
    assert (blocked_before, flow.blocked) == (False, True)
    flow.on_max_data(90)
    assert flow.peer_limit == 100, "MAX_DATA never shrinks credit"
    flow.on_max_data(250)
    assert flow.available() == 150


def test_session_flow_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SessionFlowControl(receive_window=0)
    with pytest.raises(ValueError):
        SessionFlowControl(receive_window=1, peer_limit=-1)
