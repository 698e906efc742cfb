"""Tests for stt_core.ack_tracker: duplicates, the anti-replay floor, ACK timing and content,
NACK holes. Times are explicit; the default max_ack_delay is 0.025 s."""

from __future__ import annotations

import pytest

from stt_core.recovery import AckTracker


def ack_needed(acks: AckTracker) -> bool:
    """Read the property through a call, so mypy does not narrow it between asserts."""
    return acks.ack_needed


def test_ack_tracker_detects_duplicates() -> None:
    acks = AckTracker()
    assert acks.on_packet_received(0, True, 0.0)
    assert acks.on_packet_received(1, True, 0.0)
    assert not acks.on_packet_received(1, True, 0.0)
    assert not acks.on_packet_received(-1, True, 0.0)
    assert acks.duplicates == 2
    assert acks.largest_received == 1


def test_ack_tracker_window_floor_under_many_gaps() -> None:
    acks = AckTracker(max_ranges=4)
    for pn in range(0, 40, 2):
        assert acks.on_packet_received(pn, False, 0.0)
    assert len(acks.received) == 4
    floor = acks.received.floor
    assert floor == 31  # 30 was the last range dropped
    # Too old to tell: treated as a replay and dropped.
    assert not acks.on_packet_received(1, True, 1.0)
    assert not acks.on_packet_received(29, True, 1.0)
    # Inside the window, a hole is still welcome.
    assert acks.on_packet_received(33, True, 1.0)
    assert not acks.on_packet_received(33, True, 1.0)
    built = acks.build_ack(1.0)
    assert built is not None
    ranges, _ = built
    assert len(ranges) <= 4


def test_ack_deadline_threshold_and_delay() -> None:
    acks = AckTracker(max_ack_delay=0.025, ack_eliciting_threshold=2)
    assert acks.ack_deadline() is None
    acks.on_packet_received(0, True, 1.0)
    assert ack_needed(acks)
    assert acks.ack_deadline() == pytest.approx(1.025)
    acks.on_packet_received(1, True, 1.01)
    assert acks.ack_deadline() == 1.0  # second ack-eliciting packet: at once
    built = acks.build_ack(1.012)
    assert built is not None
    ranges, delay = built
    assert ranges == [range(0, 2)]
    assert delay == pytest.approx(0.002)  # since the largest (1) arrived
    assert not ack_needed(acks)
    assert acks.ack_deadline() is None
    assert acks.build_ack(1.02) is None  # nothing new


def test_a_requested_ack_is_due_at_once_but_may_wait_for_a_reply() -> None:
    """IMMEDIATE_ACK: due now, except to a caller about to let the application
    reply (patient), and only until the ACK is built."""
    acks = AckTracker(max_ack_delay=0.025)
    acks.on_packet_received(0, True, 1.0)
    assert not acks.ack_due(1.0)
    acks.ack_requested()
    assert acks.ack_deadline() == 1.0
    assert acks.ack_due(1.0)
    assert not acks.ack_due(1.0, patient=True)
    assert acks.ack_due(1.025, patient=True)  # the ACK delay still bounds the wait
    assert acks.build_ack(1.0) is not None
    acks.on_packet_received(1, True, 2.0)
    assert not acks.ack_due(2.0)  # the request was for the packet already acknowledged
    assert acks.ack_deadline() == pytest.approx(2.025)


def test_reasons_other_than_a_request_stay_urgent_for_a_patient_caller() -> None:
    acks = AckTracker(ack_eliciting_threshold=2)
    acks.on_packet_received(0, True, 1.0)
    acks.on_packet_received(1, True, 1.0)  # the threshold
    assert acks.ack_due(1.0, patient=True)
    acks.build_ack(1.0)
    acks.on_packet_received(3, True, 1.0)  # a gap
    assert acks.ack_due(1.0, patient=True)
    acks.build_ack(1.0)
    acks.on_packet_received(4, True, 1.0)
    acks.ack_now()  # a peer's SESSION_CLOSE
    assert acks.ack_due(1.0, patient=True)


def test_ack_deadline_immediate_on_gap_and_reordering() -> None:
    acks = AckTracker()
    acks.on_packet_received(0, True, 0.0)
    acks.build_ack(0.0)
    acks.on_packet_received(2, True, 1.0)  # gap: 1 is missing
    assert acks.ack_deadline() == 1.0
    acks.build_ack(1.0)
    acks.on_packet_received(1, True, 2.0)  # fills the gap out of order
    assert acks.ack_deadline() == 2.0
    acks.build_ack(2.0)
    acks.on_packet_received(3, True, 3.0)  # in order again: delayed
    assert acks.ack_deadline() == pytest.approx(3.025)


def test_non_ack_eliciting_packets_are_reported_but_not_urgent() -> None:
    acks = AckTracker()
    acks.on_packet_received(0, False, 0.0)
    acks.on_packet_received(5, False, 0.1)
    assert not acks.ack_needed
    assert acks.ack_deadline() is None
    built = acks.build_ack(0.2)
    assert built is not None
    assert built[0] == [range(5, 6), range(0, 1)]  # descending


def test_build_ack_limits_ranges_to_the_newest() -> None:
    acks = AckTracker()
    for pn in (0, 2, 4, 6):
        acks.on_packet_received(pn, True, 0.0)
    built = acks.build_ack(0.0, max_ranges=2)
    assert built is not None
    assert built[0] == [range(6, 7), range(4, 5)]


def test_build_ack_default_range_limit() -> None:
    acks = AckTracker(max_ranges=64, max_ack_ranges=3)
    for pn in range(0, 20, 2):
        acks.on_packet_received(pn, True, 0.0)
    built = acks.build_ack(0.0)
    assert built is not None
    assert built[0] == [range(18, 19), range(16, 17), range(14, 15)]
    assert len(acks.received) == 10  # the window still remembers all of them
    with pytest.raises(ValueError):
        AckTracker(max_ack_ranges=0)


def test_missing_ranges_for_nack() -> None:
    acks = AckTracker()
    for pn in (0, 1, 4, 7, 8):
        acks.on_packet_received(pn, True, 0.0)
    assert acks.missing_ranges() == [range(5, 7), range(2, 4)]
    assert acks.missing_ranges(limit=1) == [range(5, 7)]
    assert acks.missing_ranges(limit=0) == []
    acks.on_packet_received(5, True, 0.0)
    acks.on_packet_received(6, True, 0.0)
    assert acks.missing_ranges() == [range(2, 4)]


def test_ack_tracker_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        AckTracker(ack_eliciting_threshold=0)
    with pytest.raises(ValueError):
        AckTracker(max_ack_delay=-1.0)
