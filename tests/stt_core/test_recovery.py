"""Tests for stt_core.recovery: RTT, ACK processing, loss, PTO, NACK, spurious losses,
the reliable path, and a small lossy-link simulation (sender plus AckTracker).

All times are explicit. The default RTT state before any sample is srtt 0.1 s,
rttvar 0.05 s, so the first PTO is 0.1 + 4 * 0.05 + 0.025 = 0.325 s.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_core.congestion import NewReno, create_congestion_controller
from stt_core.recovery import AckTracker, LossRecovery, RttEstimator, SentPacket

MDS = 1200


def make(reliable: bool = False) -> LossRecovery:
    return LossRecovery(congestion=NewReno(max_datagram_size=MDS), reliable_path=reliable)


def send(rec: LossRecovery, pn: int, t: float, size: int = MDS) -> SentPacket:
    packet = SentPacket(pn, t, size, True, True, [("frame", pn)])
    rec.on_packet_sent(packet)
    return packet


def pns(packets: list[SentPacket]) -> list[int]:
    return [p.packet_number for p in packets]


# -- RTT -------------------------------------------------------------------


def test_rtt_initial_state() -> None:
    rtt = RttEstimator(initial_rtt=0.2, max_ack_delay=0.01)
    assert not rtt.has_sample
    assert rtt.smoothed_rtt == 0.2
    assert rtt.rttvar == 0.1
    assert rtt.pto_base() == pytest.approx(0.2 + 0.4 + 0.01)
    with pytest.raises(ValueError):
        RttEstimator(initial_rtt=0)
    with pytest.raises(ValueError):
        rtt.update(-0.1, 0.0)


def test_rtt_rfc9002_worked_values() -> None:
    rtt = RttEstimator(max_ack_delay=0.025)
    # First sample: ack_delay ignored, srtt = sample, rttvar = sample / 2.
    rtt.update(0.1, ack_delay=0.05)
    assert (rtt.latest_rtt, rtt.min_rtt, rtt.smoothed_rtt, rtt.rttvar) == (0.1, 0.1, 0.1, 0.05)
    # Second: 0.2 >= min_rtt + ack_delay, so ack_delay (0.02) is subtracted.
    rtt.update(0.2, ack_delay=0.02)
    assert rtt.min_rtt == 0.1
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * abs(0.1 - 0.18))  # 0.0575
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.18)  # 0.11
    # ack_delay is clamped to max_ack_delay (0.025, not 0.5).
    srtt, rttvar = rtt.smoothed_rtt, rtt.rttvar
    rtt.update(0.3, ack_delay=0.5)
    adjusted = 0.3 - 0.025
    assert rtt.rttvar == pytest.approx(0.75 * rttvar + 0.25 * abs(srtt - adjusted))
    assert rtt.smoothed_rtt == pytest.approx(0.875 * srtt + 0.125 * adjusted)
    # Not subtracted when that would go below min_rtt: 0.11 < 0.1 + 0.02.
    srtt = rtt.smoothed_rtt
    rtt.update(0.11, ack_delay=0.02)
    assert rtt.smoothed_rtt == pytest.approx(0.875 * srtt + 0.125 * 0.11)
    rtt.update(0.05, ack_delay=0.0)
    assert rtt.min_rtt == 0.05
    assert rtt.pto_base() == pytest.approx(
        rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + 0.025
    )


def test_pto_base_uses_granularity_floor() -> None:
    rtt = RttEstimator(max_ack_delay=0.0)
    for _ in range(200):
        rtt.update(0.05, 0.0)
    assert rtt.rttvar < 0.00025
    assert rtt.pto_base() == pytest.approx(0.05 + 0.001)


# -- ACK processing --------------------------------------------------------


def test_ack_of_a_subset_and_packet_threshold_loss() -> None:
    rec = make()
    for pn in range(10):
        send(rec, pn, 0.0)
    assert rec.bytes_in_flight == 10 * MDS
    acked, lost = rec.on_ack_received([range(5, 7), range(0, 3)], 0.0, now=0.1)
    assert pns(acked) == [0, 1, 2, 5, 6]
    # 3 is three below the largest acked (6): lost. 4 is only two below and
    # younger than 9/8 RTT (0.1125 s): not yet.
    assert pns(lost) == [3]
    assert lost[0].declared_lost
    assert rec.largest_acked == 6
    assert rec.packets_lost == 1
    assert rec.bytes_in_flight == 4 * MDS  # 4, 7, 8, 9
    assert rec.rtt.has_sample and rec.rtt.latest_rtt == pytest.approx(0.1)
    # The loss timer for 4 fires at 0 + 9/8 * 0.1.
    assert rec.loss_detection_deadline() == pytest.approx(0.1125)


def test_time_threshold_loss_fires_from_the_timer() -> None:
    rec = make()
    for pn in range(3):
        send(rec, pn, 0.0)
    _, lost = rec.on_ack_received([range(2, 3)], 0.0, now=0.1)
    assert lost == []
    deadline = rec.loss_detection_deadline()
    assert deadline == pytest.approx(0.1125)
    assert deadline is not None
    assert rec.on_loss_detection_timeout(deadline - 0.001) == ([], 0)  # early: harmless
    assert rec.loss_detection_deadline() == deadline  # the query is pure
    lost, probes = rec.on_loss_detection_timeout(deadline)  # exactly at it
    assert pns(lost) == [0, 1]
    assert probes == 0
    assert rec.loss_detection_deadline() is None  # nothing ack-eliciting left


def test_duplicate_and_empty_acks_change_nothing() -> None:
    rec = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    assert pns(rec.on_ack_received([range(0, 1)], 0.0, 0.1)[0]) == [0]
    assert rec.on_ack_received([range(0, 1)], 0.0, 0.2) == ([], [])
    assert rec.on_ack_received([], 0.0, 0.2) == ([], [])
    assert rec.on_ack_received([range(1, 1)], 0.0, 0.2) == ([], [])
    assert rec.rtt.latest_rtt == pytest.approx(0.1)


def test_ack_of_untracked_packets_advances_loss_detection() -> None:
    rec = make()
    for pn in range(3):
        send(rec, pn, 0.0)
    rec.on_ack_received([range(2, 3)], 0.0, 0.05)
    # 3 and 4 were ACK-only packets the session did not report; acking them
    # still proves 0 and 1 were overtaken by three packets.
    acked, lost = rec.on_ack_received([range(2, 5)], 0.0, 0.06)
    assert acked == []
    assert pns(lost) == [0, 1]
    assert rec.largest_acked == 4
    with pytest.raises(ValueError):
        rec.on_ack_received([range(0, 2, 2)], 0.0, 0.1)
    with pytest.raises(ValueError):
        rec.on_ack_received([range(-1, 2)], 0.0, 0.1)


def test_packet_numbers_must_increase() -> None:
    rec = make()
    send(rec, 5, 0.0)
    with pytest.raises(ValueError):
        send(rec, 5, 0.1)


def test_huge_ack_range_is_cheap() -> None:
    rec = make()
    send(rec, 0, 0.0)
    send(rec, 10**12, 0.0)
    acked, _ = rec.on_ack_received([range(0, 10**12 + 1)], 0.0, 0.1)
    assert pns(acked) == [0, 10**12]


def test_rtt_sample_only_when_largest_is_newly_acked() -> None:
    rec = make()
    send(rec, 0, 0.0)
    send(rec, 1, 0.05)
    rec.on_ack_received([range(1, 2)], 0.0, 0.15)
    assert rec.rtt.latest_rtt == pytest.approx(0.1)
    # Acking 0 later: the largest (1) is not newly acked, so no sample.
    rec.on_ack_received([range(0, 2)], 0.0, 0.9)
    assert rec.rtt.latest_rtt == pytest.approx(0.1)


def test_ack_delay_is_subtracted_from_samples() -> None:
    rec = make()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.1)
    send(rec, 1, 1.0)
    rec.on_ack_received([range(0, 2)], 0.02, 1.2)
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.18)


def test_a_handshake_sample_lets_later_acks_subtract_their_delay() -> None:
    """With the handshake's 10 ms as min_rtt, an ACK held 25 ms reads as the 10 ms
    path; as the first sample it would have set min_rtt to 35 ms for good."""
    rec = make()
    rec.on_handshake_rtt(0.010, now=0.5)
    assert rec.rtt.has_sample and rec.rtt.min_rtt == pytest.approx(0.010)
    send(rec, 0, 1.0)
    rec.on_ack_received([range(0, 1)], 0.025, 1.036)  # 11 ms of path, 25 of delay
    assert rec.rtt.min_rtt == pytest.approx(0.010)
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.010 + 0.125 * 0.011)


# -- PTO -------------------------------------------------------------------


def fire(rec: LossRecovery) -> tuple[list[SentPacket], int]:
    """Call the timeout exactly at the deadline, as a binding would."""
    deadline = rec.loss_detection_deadline()
    assert deadline is not None
    return rec.on_loss_detection_timeout(deadline)


def test_pto_fires_and_backs_off_exponentially() -> None:
    rec = make()
    send(rec, 0, 0.0)
    assert rec.loss_detection_deadline() == pytest.approx(0.325)
    assert rec.on_loss_detection_timeout(0.3) == ([], 0)
    assert fire(rec) == ([], 1)  # one packet out: one probe
    assert rec.pto_count == 1
    assert rec.loss_detection_deadline() == pytest.approx(0.65)
    assert fire(rec) == ([], 1)
    assert rec.loss_detection_deadline() == pytest.approx(1.3)
    send(rec, 1, 1.3)  # a probe: the PTO restarts from the newest send
    assert rec.loss_detection_deadline() == pytest.approx(1.3 + 4 * 0.325)
    assert fire(rec) == ([], 2)
    assert (rec.pto_count, rec.pto_count_total) == (3, 3)
    # The ACK of the probe resets the backoff and declares 0 lost by time.
    acked, lost = rec.on_ack_received([range(1, 2)], 0.0, 3.0)
    assert pns(acked) == [1]
    assert pns(lost) == [0]
    assert rec.pto_count == 0
    assert rec.pto_count_total == 3
    assert rec.loss_detection_deadline() is None


def test_no_deadline_without_ack_eliciting_packets() -> None:
    rec = make()
    assert rec.loss_detection_deadline() is None
    rec.on_packet_sent(SentPacket(0, 0.0, 50, False, False, []))
    assert rec.loss_detection_deadline() is None
    assert rec.bytes_in_flight == 0
    assert rec.on_loss_detection_timeout(100.0) == ([], 0)


# -- NACK ------------------------------------------------------------------


def nack_setup() -> LossRecovery:
    rec = make()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.1)  # srtt 0.1
    send(rec, 1, 0.20)
    send(rec, 2, 0.25)
    send(rec, 3, 0.26)
    _, lost = rec.on_ack_received([range(3, 4)], 0.0, 0.30)
    assert lost == []  # neither threshold has fired for 1 and 2
    return rec


def test_nack_marks_old_holes_lost_immediately() -> None:
    rec = nack_setup()
    # srtt is now 0.0925; cutoff = 0.26 - 0.0925 / 8 ~= 0.248.
    lost = rec.on_nack([2, 1, 1, 0, 3, 7], now=0.30)
    assert pns(lost) == [1]  # 2 was sent too close to 3: maybe only reordered
    assert rec.packets_lost == 1
    assert rec.bytes_in_flight == MDS  # only 2 remains
    assert rec.congestion.congestion_window < 12000 + MDS  # counted as a loss


def test_nack_before_any_ack_does_nothing() -> None:
    rec = make()
    send(rec, 0, 0.0)
    send(rec, 1, 1.0)
    assert rec.on_nack([0], now=2.0) == []


def test_nack_losses_reduce_window_once_per_round_trip() -> None:
    rec = make()
    send(rec, 0, 0.0)
    rec.on_ack_received([range(0, 1)], 0.0, 0.1)
    for pn in range(1, 7):
        send(rec, pn, 0.99 + 0.01 * pn)  # 1.00 ... 1.05
    _, lost = rec.on_ack_received([range(6, 7)], 0.0, 1.09)
    assert pns(lost) == [1, 2, 3]  # packet threshold; recovery starts at 1.09
    window = rec.congestion.congestion_window
    lost = rec.on_nack([4, 5], now=1.09)
    assert pns(lost) == [4]  # 5 was sent within srtt/8 of 6
    assert rec.congestion.congestion_window == window  # same recovery period


# -- spurious losses -------------------------------------------------------


def test_spurious_loss_is_detected_and_undone() -> None:
    rec = make()
    for pn in range(10):
        send(rec, pn, 0.0)
    window = rec.congestion.congestion_window
    _, lost = rec.on_ack_received([range(4, 7)], 0.0, 0.1)
    assert pns(lost) == [0, 1, 2, 3]
    assert rec.congestion.congestion_window < window
    acked, lost = rec.on_ack_received([range(0, 7)], 0.0, 0.105)
    assert pns(acked) == [0, 1, 2, 3]
    assert all(p.declared_lost for p in acked)
    assert lost == []
    assert rec.spurious_losses == 4
    assert rec.congestion.congestion_window >= window  # the reduction was undone
    assert rec.bytes_in_flight == 3 * MDS  # 7, 8, 9; lost ones are not re-counted
    # Reordering 7 deep was seen: tolerate it from now on (RFC 9002 §6.1).
    assert rec.packet_threshold == 7
    assert rec.time_threshold == pytest.approx(9 / 8 + 1 / 8)


def test_reordering_tolerance_is_capped() -> None:
    rec = make()
    for pn in range(100):
        send(rec, pn, 0.0)
    for round_ in range(20):
        rec.on_ack_received([range(99, 100)], 0.0, 0.1 + round_)
        rec.on_ack_received([range(round_, round_ + 1)], 0.0, 0.1 + round_)
    assert rec.packet_threshold == 16
    assert rec.time_threshold == 2.0


# -- persistent congestion -------------------------------------------------


def persistent_setup(ack_in_middle: bool) -> LossRecovery:
    rec = make()
    send(rec, 0, 0.0, size=100)
    rec.on_ack_received([range(0, 1)], 0.0, 0.1)
    for i in range(1, 15):  # one packet every 0.1 s from t=1.0: spans 1.3 s
        send(rec, i, 0.9 + 0.1 * i, size=100)
    if ack_in_middle:
        rec.on_ack_received([range(7, 8)], 0.0, 1.75)
    rec.on_ack_received([range(14, 15)], 0.0, 2.4)
    return rec


def test_persistent_congestion_collapses_the_window() -> None:
    rec = persistent_setup(ack_in_middle=False)
    assert rec.packets_lost == 13
    # Collapsed to the minimum (RFC 9002 A.7 order: losses before acks). The
    # 100-byte packet this ACK acknowledged left with the window nearly empty,
    # so it does not grow the window (RFC 9002 §7.8).
    assert rec.congestion.congestion_window == rec.congestion.minimum_window


def test_an_ack_in_the_middle_prevents_persistent_congestion() -> None:
    rec = persistent_setup(ack_in_middle=True)
    assert rec.packets_lost == 12
    assert rec.congestion.congestion_window > rec.congestion.minimum_window


# -- reliable path and discard ----------------------------------------------


def test_reliable_path_never_reports_loss_or_probes() -> None:
    rec = make(reliable=True)
    for pn in range(100):
        send(rec, pn, pn * 0.001)
    assert rec.can_send()  # congestion control bypassed: 120 kB in flight
    assert rec.next_send_time(5.0) == 5.0
    acked, lost = rec.on_ack_received([range(99, 100)], 0.0, 0.2)
    assert pns(acked) == [99]
    assert lost == []
    assert rec.rtt.has_sample
    assert rec.loss_detection_deadline() is None
    assert rec.on_loss_detection_timeout(1000.0) == ([], 0)
    assert rec.on_nack(range(99), 1000.0) == []
    assert rec.packets_lost == 0
    acked, lost = rec.on_ack_received([range(0, 100)], 0.0, 1000.0)
    assert len(acked) == 99 and lost == []
    assert rec.bytes_in_flight == 0


def test_discard_all_returns_everything_outstanding() -> None:
    rec = make()
    for pn in range(5):
        send(rec, pn, 0.0)
    rec.on_ack_received([range(1, 2)], 0.0, 0.1)
    discarded = rec.discard_all()
    assert pns(discarded) == [0, 2, 3, 4]
    assert discarded[0].frames == [("frame", 0)]
    assert rec.bytes_in_flight == 0
    assert rec.outstanding == 0
    assert rec.loss_detection_deadline() is None
    assert rec.packets_lost == 0


def test_can_send_follows_the_window() -> None:
    rec = make()
    for pn in range(10):
        assert rec.can_send()
        send(rec, pn, 0.0)
    assert not rec.can_send()
    assert rec.can_send(size=0)


# -- a lossy link, end to end ------------------------------------------------


def run_link(
    lost: set[int], count: int, delay: float = 0.05, jitter: Sequence[float] = ()
) -> tuple[LossRecovery, dict[int, str]]:
    """Sender -> receiver over a link with one-way ``delay`` that drops the
    packet numbers in ``lost`` (first transmissions only). Packet ``pn`` gets
    ``jitter[pn % len(jitter)]`` extra delay, which reorders packets. The
    receiver ACKs every packet at once; on PTO the sender sends a probe (never
    lost). Returns the sender and each packet's final fate: "acked" or "lost".
    """
    def extra(pn: int) -> float:
        return jitter[pn % len(jitter)] if jitter else 0.0

    rec = make()
    acks = AckTracker(ack_eliciting_threshold=1)
    fate: dict[int, str] = {}
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(t: float, kind: str, payload: object) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, payload))
        seq += 1

    next_pn = 0
    for i in range(count):
        push(i * 0.01, "send", None)
    now = 0.0
    for _ in range(100_000):
        deadline = rec.loss_detection_deadline()
        if not events and deadline is None:
            break
        if deadline is not None and (not events or deadline < events[0][0]):
            now = max(now, deadline)
            lost_now, probes = rec.on_loss_detection_timeout(now)
            fate.update((p.packet_number, "lost") for p in lost_now)
            for _ in range(probes):
                push(now, "send", "probe")
            continue
        now, _, kind, payload = heapq.heappop(events)
        if kind == "send":
            pn = next_pn
            next_pn += 1
            send(rec, pn, now)
            if pn not in lost or payload == "probe":
                push(now + delay + extra(pn), "arrive", pn)
        elif kind == "arrive":
            assert isinstance(payload, int)
            assert acks.on_packet_received(payload, True, now)
            built = acks.build_ack(now)
            assert built is not None
            push(now + delay, "ack", built)
        else:
            assert isinstance(payload, tuple)
            ack_ranges: list[range] = payload[0]
            acked, lost_now = rec.on_ack_received(ack_ranges, payload[1], now)
            for p in acked:
                assert jitter or not p.declared_lost  # no reordering: no spurious loss
                fate[p.packet_number] = "acked"
            fate.update((p.packet_number, "lost") for p in lost_now)
    return rec, fate


def test_lossless_link_acks_everything() -> None:
    rec, fate = run_link(set(), 50)
    assert [fate[pn] for pn in range(50)] == ["acked"] * 50
    assert rec.bytes_in_flight == 0
    assert rec.rtt.smoothed_rtt == pytest.approx(0.1)
    assert rec.pto_count_total == 0


def test_tail_loss_is_recovered_by_pto() -> None:
    rec, fate = run_link({18, 19}, 20)
    assert fate[18] == fate[19] == "lost"
    assert rec.pto_count_total >= 1
    assert rec.bytes_in_flight == 0


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 59), max_size=30))
def test_every_packet_is_acked_or_lost_exactly_as_the_link_decided(lost: set[int]) -> None:
    rec, fate = run_link(lost, 60)
    for pn in range(60):
        assert fate.get(pn) == ("lost" if pn in lost else "acked"), pn
    assert rec.bytes_in_flight == 0
    assert rec.outstanding == 0
    assert rec.spurious_losses == 0
    assert rec.packets_lost == len(lost)


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.integers(0, 59), max_size=20),
    st.lists(st.floats(0.0, 0.08), min_size=1, max_size=7),
)
def test_reordering_link_ends_consistent(lost: set[int], jitter: list[float]) -> None:
    """With reordering some losses are spurious, but every delivered packet
    ends up acked, every dropped one lost, and the accounting returns to zero."""
    rec, fate = run_link(lost, 60, jitter=jitter)
    for pn in range(60):
        assert fate.get(pn) == ("lost" if pn in lost else "acked"), pn
    assert rec.bytes_in_flight == 0
    assert rec.outstanding == 0
    assert rec.packets_lost == len(lost) + rec.spurious_losses


def test_compact_keeps_outstanding_and_recently_lost_packets() -> None:
    rec = make()
    for pn in range(10):
        send(rec, pn, 0.0)
    acked, lost = rec.on_ack_received([range(5, 7), range(0, 3)], 0.0, now=0.1)
    assert pns(lost) == [3]
    rec.compact()  # tables are not empty: nothing may be forgotten
    assert rec.outstanding == 4 and rec.bytes_in_flight == 4 * MDS
    acked, lost = rec.on_ack_received([range(3, 10)], 0.0, now=0.2)
    assert pns(acked) == [3, 4, 7, 8, 9]  # 3 arrived after all
    assert rec.spurious_losses == 1  # 3 was remembered as lost, then acked
    rec.compact()
    assert rec.outstanding == 0 and rec.bytes_in_flight == 0
    send(rec, 10, 0.3)
    acked, _ = rec.on_ack_received([range(10, 11)], 0.0, now=0.4)
    assert pns(acked) == [10] and rec.outstanding == 0
    assert rec.loss_detection_deadline() is None


# -- window-limited marking (RFC 9002 §7.8) -----------------------------------


def test_a_flight_that_fills_the_window_is_window_limited_as_a_whole() -> None:
    rec = make()  # NewReno, 12000-byte initial window: limited from half of it in slow start
    for pn in range(4):
        send(rec, pn, 0.0)
    acked, _ = rec.on_ack_received([range(0, 2)], 0.0, 0.1)
    assert [p.window_limited for p in acked] == [False, False]  # 4800 bytes: not half yet
    assert rec.congestion.congestion_window == 12000
    for pn in range(4, 8):
        send(rec, pn, 0.1)  # 7200 bytes in flight: the flight reached half the window
    acked, _ = rec.on_ack_received([range(2, 8)], 0.0, 0.2)
    assert all(p.window_limited for p in acked)  # 2 and 3 left early but belong to it
    assert rec.congestion.congestion_window == 12000 + 6 * MDS
    send(rec, 8, 0.3)
    acked, _ = rec.on_ack_received([range(8, 9)], 0.0, 0.4)
    assert not acked[0].window_limited  # sent alone after the flight was acked


@pytest.mark.parametrize("algorithm", ["newreno", "cubic"])
@pytest.mark.parametrize("avoidance", [False, True], ids=["slow_start", "avoidance"])
def test_a_trickle_of_small_messages_never_grows_the_window(
    algorithm: str, avoidance: bool
) -> None:
    """One 200-byte packet every 50 ms for 100 s, each acked 20 ms later."""
    rec = LossRecovery(congestion=create_congestion_controller(algorithm,
                                                               max_datagram_size=MDS))
    if avoidance:
        rec.congestion.congestion_window = rec.congestion.ssthresh = 24000
    start = rec.congestion.congestion_window
    for pn in range(2000):
        t = pn * 0.05
        send(rec, pn, t, size=200)
        rec.on_ack_received([range(pn, pn + 1)], 0.0, t + 0.02)
    assert rec.congestion.congestion_window == start


def fill_window(rec: LossRecovery, pn: int, t: float) -> int:
    """Send full datagrams at ``t`` while the window allows; return the next number."""
    while rec.can_send():
        send(rec, pn, t)
        pn += 1
    return pn


@pytest.mark.parametrize("algorithm", ["newreno", "cubic"])
def test_a_window_limited_sender_doubles_its_window_in_slow_start(algorithm: str) -> None:
    rec = LossRecovery(congestion=create_congestion_controller(algorithm,
                                                               max_datagram_size=MDS))
    windows = [rec.congestion.congestion_window]
    pn, t = 0, 0.0
    for _ in range(5):
        first = pn
        pn = fill_window(rec, pn, t)
        t += 0.1
        rec.on_ack_received([range(first, pn)], 0.0, t)
        windows.append(rec.congestion.congestion_window)
    assert windows == [12000 * 2**i for i in range(6)]


def test_a_window_limited_sender_grows_one_datagram_per_window_in_avoidance() -> None:
    """Acknowledged four packets at a time, each ACK refilled at once (a pipelined sender)."""
    rec = make()
    cc = rec.congestion
    cc.congestion_window = cc.ssthresh = 24000
    pn = fill_window(rec, 0, 0.0)
    t = 0.0
    for acked in range(0, 240, 4):  # 288,000 bytes acknowledged
        t += 0.005
        rec.on_ack_received([range(acked, acked + 4)], 0.0, t)
        pn = fill_window(rec, pn, t)
    # One datagram each time a window's worth is acked: 24000 + 25200 + ... +
    # 33600 = 259,200 bytes pay for nine of them, the tenth would need 294,000.
    assert cc.congestion_window == 24000 + 9 * MDS
