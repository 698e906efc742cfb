"""Tests for stt_core.hystart (RFC 9406) and its use by the loss-based controllers.

Rounds are driven by hand: each round acknowledges ``N_RTT_SAMPLE`` packets
sent in that round, with a chosen RTT.
"""

from __future__ import annotations

import itertools

import pytest

from stt_core.congestion import Cubic, NewReno
from stt_core.hystart import CSS_GROWTH_DIVISOR, CSS_ROUNDS, N_RTT_SAMPLE, HyStart
from stt_core.recovery import LossRecovery, SentPacket


def play_round(hystart: HyStart, t: float, rtt: float) -> tuple[float, bool]:
    """One round starting at ``t``: packets sent at ``t``, acked at ``t + rtt``."""
    ended = False
    for _ in range(N_RTT_SAMPLE):
        ended = hystart.on_ack(t, t + rtt, rtt) or ended
    return t + rtt, ended


def test_a_steady_rtt_stays_in_slow_start() -> None:
    hystart = HyStart()
    t = 0.0
    for _ in range(20):
        t, ended = play_round(hystart, t, 0.050)
        assert not ended
    assert not hystart.in_css
    assert hystart.growth_divisor == 1


def test_a_rising_rtt_enters_css_then_ends_slow_start() -> None:
    hystart = HyStart()
    t, _ = play_round(hystart, 0.0, 0.050)
    t, _ = play_round(hystart, t, 0.050)
    # 50 ms / 8 = 6.25 ms is the rise needed; 7 ms more is enough.
    t, ended = play_round(hystart, t, 0.057)
    assert hystart.in_css and not ended
    assert hystart.growth_divisor == CSS_GROWTH_DIVISOR
    rounds = 0
    while not ended:
        t, ended = play_round(hystart, t, 0.057)
        rounds += 1
    assert rounds == CSS_ROUNDS


def test_a_small_rise_is_not_enough() -> None:
    hystart = HyStart()
    t, _ = play_round(hystart, 0.0, 0.050)
    t, _ = play_round(hystart, t, 0.056)  # below the 6.25 ms threshold
    assert not hystart.in_css


def test_the_threshold_is_at_least_4_ms_on_short_paths() -> None:
    hystart = HyStart()
    t, _ = play_round(hystart, 0.0, 0.0002)  # loopback
    t, _ = play_round(hystart, t, 0.0038)
    assert not hystart.in_css
    t, _ = play_round(hystart, t, 0.0080)
    assert hystart.in_css


def test_css_falls_back_to_slow_start_when_the_rtt_drops_again() -> None:
    hystart = HyStart()
    t, _ = play_round(hystart, 0.0, 0.050)
    t, _ = play_round(hystart, t, 0.060)
    assert hystart.in_css
    t, _ = play_round(hystart, t, 0.050)
    assert not hystart.in_css


MDS = 1200


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_a_controller_leaves_slow_start_before_any_loss_when_the_rtt_rises(
    cls: type[NewReno] | type[Cubic],
) -> None:
    """A window-limited sender on a 20 ms path whose queue starts to fill at 192 KB."""
    cc = cls(max_datagram_size=MDS)
    rec = LossRecovery(congestion=cc)
    pn, t = 0, 0.0
    windows = []
    while cc.in_slow_start and cc.congestion_window < 10_000_000:
        rtt = 0.020 if cc.congestion_window < 192_000 else 0.030
        first = pn
        while rec.can_send():
            rec.on_packet_sent(SentPacket(pn, t, MDS, True, True, []))
            pn += 1
        for number in range(first, pn):  # one ACK per packet, each an RTT sample
            rec.on_ack_received([range(number, number + 1)], 0.0, t + rtt)
        t += rtt
        windows.append(cc.congestion_window)
    assert not cc.in_slow_start
    assert rec.packets_lost == 0
    # Doubling up to 192 KB. The first round at 30 ms enters CSS once it has
    # its 8 samples; growth is then a quarter (x1.25 per round) until slow
    # start ends after the CSS rounds, without a loss, far below 10 MB.
    assert windows[:4] == [24000, 48000, 96000, 192000]
    css = windows[4:-1]
    assert len(css) == CSS_ROUNDS
    for before, after in itertools.pairwise(css):
        assert after == pytest.approx(1.25 * before, rel=0.01)
    assert cc.ssthresh is not None and cc.ssthresh < 700_000
