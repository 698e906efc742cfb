"""Tests for stt_core.bbr: the delivery-rate model and application-limited samples.

Driven with explicit ``now`` values: a "round" sends ``count`` full-size
packets at ``t`` and has them all acknowledged one RTT later, marked as
recovery would mark them (``window_limited``: the flight kept the pipe busy).
"""

from __future__ import annotations

import pytest

from stt_core.bbr import Bbr
from stt_core.recovery import LossRecovery, RttEstimator, SentPacket

MDS = 1200
RTT = 0.05


def rtt_of(sample: float = RTT) -> RttEstimator:
    rtt = RttEstimator()
    rtt.update(sample, 0.0)
    return rtt


def one_round(bbr: Bbr, t: float, count: int, pn: int, *, busy: bool = True) -> int:
    """Send ``count`` packets at ``t``, ack them at ``t + RTT``; return the next number."""
    packets = [SentPacket(pn + i, t, MDS, True, True, []) for i in range(count)]
    for packet in packets:
        bbr.on_packet_sent(MDS, t)
        packet.window_limited = busy
    bbr.on_packets_acked(packets, t + RTT, rtt_of())
    return pn + count


def run_rounds(bbr: Bbr, rounds: int, count: int, t: float, pn: int,
               *, busy: bool = True) -> tuple[float, int]:
    for _ in range(rounds):
        pn = one_round(bbr, t, count, pn, busy=busy)
        t += RTT
    return t, pn


def test_window_limited_means_half_a_bdp_in_flight() -> None:
    bbr = Bbr(max_datagram_size=MDS)
    assert bbr.is_window_limited(0)  # no estimate yet: every sample counts
    run_rounds(bbr, 3, 100, 0.0, 0)
    bdp = bbr.bandwidth * RTT
    assert bdp == pytest.approx(100 * MDS)
    assert not bbr.is_window_limited(int(bdp / 2) - 1)
    assert bbr.is_window_limited(int(bdp / 2))


def test_app_limited_rounds_do_not_end_startup() -> None:
    bbr = Bbr(max_datagram_size=MDS)
    t, pn = run_rounds(bbr, 3, 100, 0.0, 0)
    assert bbr.state == "startup"
    t, pn = run_rounds(bbr, 20, 2, t, pn, busy=False)  # a trickle: nothing to send
    assert bbr.state == "startup"
    # Busy rounds without growth do end it (the pipe is full).
    run_rounds(bbr, 5, 100, t, pn)
    assert bbr.state != "startup"


def test_app_limited_samples_neither_lower_nor_age_out_the_estimate() -> None:
    bbr = Bbr(max_datagram_size=MDS)
    t, pn = run_rounds(bbr, 6, 100, 0.0, 0)
    estimate = bbr.bandwidth
    window = bbr.congestion_window
    t, pn = run_rounds(bbr, 50, 2, t, pn, busy=False)  # far beyond the 10-round filter
    assert bbr.bandwidth == estimate
    assert bbr.congestion_window == window


def test_busy_samples_age_out_the_estimate() -> None:
    """The path got slower: busy rounds at the lower rate replace the old maximum."""
    bbr = Bbr(max_datagram_size=MDS)
    t, pn = run_rounds(bbr, 6, 100, 0.0, 0)
    estimate = bbr.bandwidth
    run_rounds(bbr, 15, 60, t, pn)
    assert bbr.bandwidth == pytest.approx(estimate * 0.6)


def test_an_app_limited_sample_above_the_estimate_raises_it() -> None:
    bbr = Bbr(max_datagram_size=MDS)
    t, pn = run_rounds(bbr, 3, 10, 0.0, 0)
    estimate = bbr.bandwidth
    one_round(bbr, t, 40, pn, busy=False)
    assert bbr.bandwidth == pytest.approx(4 * estimate)


def test_recovery_marks_a_trickle_app_limited_for_bbr() -> None:
    """Through LossRecovery: once the model has a BDP, single packets are app-limited."""
    bbr = Bbr(max_datagram_size=MDS)
    rec = LossRecovery(congestion=bbr)
    pn, t = 0, 0.0
    for _ in range(4):  # busy rounds: 50 packets each
        first = pn
        for _ in range(50):
            rec.on_packet_sent(SentPacket(pn, t, MDS, True, True, []))
            pn += 1
        acked, _ = rec.on_ack_received([range(first, pn)], 0.0, t + RTT)
        t += RTT
    assert all(p.window_limited for p in acked)
    estimate = bbr.bandwidth
    for _ in range(30):
        rec.on_packet_sent(SentPacket(pn, t, 200, True, True, []))
        acked, _ = rec.on_ack_received([range(pn, pn + 1)], 0.0, t + RTT)
        assert not acked[0].window_limited
        pn += 1
        t += 0.2
    assert bbr.bandwidth == estimate
