"""Tests for stt_core.congestion: NewReno, CUBIC, undo, persistent congestion, pacing.

Everything is driven with explicit ``now`` values: a "round" sends one window
of full-size packets at ``t`` and has them all acked at ``t + rtt``.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_core.config import CONGESTION_ALGORITHMS
from stt_core.congestion import (
    CONGESTION_CONTROLLERS,
    CUBIC_BETA,
    CongestionController,
    Cubic,
    NewReno,
    Pacer,
    create_congestion_controller,
)
from stt_core.errors import ConfigError
from stt_core.recovery import RttEstimator, SentPacket

MDS = 1200
RTT = 0.1


def packet(pn: int, sent_time: float, size: int = MDS, in_flight: bool = True) -> SentPacket:
    return SentPacket(pn, sent_time, size, True, in_flight, [])


def rtt_of(sample: float = RTT) -> RttEstimator:
    rtt = RttEstimator()
    rtt.update(sample, 0.0)
    return rtt


def one_round(cc: CongestionController, t: float, rtt: RttEstimator, pn: int = 0) -> int:
    """Send a window at ``t``, ack all of it at ``t + srtt``; return the next pn."""
    count = max(cc.congestion_window // MDS, 1)
    packets = [packet(pn + i, t) for i in range(count)]
    for p in packets:
        cc.on_packet_sent(p.size, t)
    cc.on_packets_acked(packets, t + rtt.smoothed_rtt, rtt)
    return pn + count


def test_initial_window_rfc9002() -> None:
    assert NewReno(max_datagram_size=1200).congestion_window == 12000
    assert NewReno(max_datagram_size=1500).congestion_window == 14720
    assert NewReno(max_datagram_size=9000).congestion_window == 18000
    assert NewReno(max_datagram_size=1200).minimum_window == 2400


def test_registry_and_factory() -> None:
    assert set(CONGESTION_CONTROLLERS) == set(CONGESTION_ALGORITHMS)
    assert isinstance(create_congestion_controller("newreno", max_datagram_size=MDS), NewReno)
    assert isinstance(create_congestion_controller("cubic", max_datagram_size=MDS), Cubic)
    with pytest.raises(ConfigError, match="vegas"):
        create_congestion_controller("vegas", max_datagram_size=MDS)
    with pytest.raises(ConfigError):
        NewReno(max_datagram_size=0)


def test_can_send_respects_window() -> None:
    cc = NewReno(max_datagram_size=MDS)
    assert cc.can_send(0)
    assert cc.can_send(12000 - MDS)
    assert not cc.can_send(12000 - MDS + 1)
    assert cc.can_send(11900, size=100)


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_doubles_per_rtt(cls: type[CongestionController]) -> None:
    cc = cls(max_datagram_size=MDS)
    rtt = rtt_of()
    windows = [cc.congestion_window]
    t, pn = 0.0, 0
    for _ in range(5):
        pn = one_round(cc, t, rtt, pn)
        t += RTT
        windows.append(cc.congestion_window)
    assert windows == [12000 * 2**i for i in range(6)]
    assert cc.in_slow_start


def test_newreno_halves_once_per_recovery_period() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 96000
    cc.on_packets_lost([packet(1, 1.0)], now=1.2)
    assert cc.congestion_window == 48000
    assert cc.ssthresh == 48000
    # More losses of packets sent before recovery began: same episode.
    cc.on_packets_lost([packet(2, 1.05), packet(3, 1.19)], now=1.25)
    assert cc.congestion_window == 48000
    # Acks of packets sent before recovery began do not grow the window.
    cc.on_packets_acked([packet(4, 1.1)], 1.3, rtt_of())
    assert cc.congestion_window == 48000
    # A loss of a packet sent after recovery began is a new congestion event.
    cc.on_packets_lost([packet(5, 1.21)], now=1.4)
    assert cc.congestion_window == 24000


def test_newreno_never_below_minimum_window() -> None:
    cc = NewReno(max_datagram_size=MDS)
    for i in range(10):
        cc.on_packets_lost([packet(i, float(i))], now=i + 0.5)
    assert cc.congestion_window == cc.minimum_window


def test_losses_of_packets_not_in_flight_are_ignored() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.on_packets_lost([packet(1, 0.0, in_flight=False)], now=0.5)
    assert cc.congestion_window == 12000


def test_newreno_congestion_avoidance_adds_one_datagram_per_window() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 48000
    cc.on_packets_lost([packet(0, 0.0)], now=0.1)
    assert cc.congestion_window == 24000
    assert not cc.in_slow_start
    rtt = rtt_of()
    t, pn = 0.2, 1
    for i in range(1, 6):
        pn = one_round(cc, t, rtt, pn)
        t += RTT
        assert cc.congestion_window == 24000 + i * MDS


def test_undo_after_spurious_loss() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 60000
    first, second = packet(1, 1.0), packet(2, 1.01)
    cc.on_packets_lost([first, second], now=1.2)
    assert cc.congestion_window == 30000
    cc.on_spurious_loss([first], now=1.3)
    assert cc.congestion_window == 30000  # one real loss may remain
    cc.on_spurious_loss([second], now=1.3)
    assert cc.congestion_window == 60000
    assert cc.ssthresh is None
    # The recovery period ended with the undo: acks grow the window again.
    cc.on_packets_acked([packet(3, 1.1)], 1.35, rtt_of())
    assert cc.congestion_window == 60000 + MDS


def test_spurious_loss_from_an_older_episode_does_not_undo() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 80000
    old = packet(1, 1.0)
    cc.on_packets_lost([old], now=1.2)  # episode 1 -> 40000
    cc.on_packets_lost([packet(5, 1.3)], now=1.5)  # episode 2 -> 20000
    cc.on_spurious_loss([old], now=1.6)
    assert cc.congestion_window == 20000


def test_persistent_congestion_collapses_window() -> None:
    for cls in (NewReno, Cubic):
        cc = cls(max_datagram_size=MDS)
        cc.congestion_window = 50000
        cc.on_packets_lost([packet(1, 1.0)], now=1.1)
        cc.on_persistent_congestion(now=1.1)
        assert cc.congestion_window == cc.minimum_window
        cc.on_spurious_loss([packet(1, 1.0)], now=1.2)  # no undo after a collapse
        assert cc.congestion_window == cc.minimum_window


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_reset_restores_initial_state(cls: type[CongestionController]) -> None:
    cc = cls(max_datagram_size=MDS)
    one_round(cc, 0.0, rtt_of())
    cc.on_packets_lost([packet(100, 0.05)], now=0.2)
    cc.reset()
    assert cc.congestion_window == cc.initial_window
    assert cc.ssthresh is None
    assert cc.pacer.rate == 0.0


def test_cubic_reduction_and_k() -> None:
    cc = Cubic(max_datagram_size=MDS)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([packet(1, 0.5)], now=1.0)
    assert cc.congestion_window == int(100 * MDS * CUBIC_BETA)
    assert cc.w_max == 100 * MDS
    # K = cbrt(W_max * (1 - beta) / C) in segments: cbrt(100 * 0.3 / 0.4) = cbrt(75).
    assert cc.w_cubic(75 ** (1 / 3)) == pytest.approx(100 * MDS)


def grow_cubic_after_loss(rtt_s: float, rounds: int, w_max_packets: int = 100) -> list[int]:
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(rtt_s)
    t, pn = 0.0, 0
    while cc.congestion_window < w_max_packets * MDS:
        pn = one_round(cc, t, rtt, pn)
        t += rtt_s
    cc.on_packets_lost([packet(pn, t)], now=t + rtt_s)
    t += rtt_s
    pn += 1
    windows = [cc.congestion_window]
    for _ in range(rounds):
        pn = one_round(cc, t, rtt, pn)
        t += rtt_s
        windows.append(cc.congestion_window)
    return windows


def test_cubic_grows_back_toward_w_max_concave_then_convex() -> None:
    windows = grow_cubic_after_loss(rtt_s=0.1, rounds=100)
    w_max = windows[0] / CUBIC_BETA
    k_rounds = round((w_max / MDS * (1 - CUBIC_BETA) / 0.4) ** (1 / 3) / 0.1)
    # Back near W_max around K (the plateau), not before half-way there.
    assert windows[k_rounds] == pytest.approx(w_max, rel=0.08)
    assert windows[k_rounds // 2] < 0.97 * w_max
    # Concave: early growth per round exceeds growth next to the plateau.
    early = windows[3] - windows[2]
    plateau = windows[k_rounds] - windows[k_rounds - 1]
    assert early > 3 * plateau
    # Convex beyond the plateau: probing for more bandwidth, accelerating.
    assert windows[-1] > 1.2 * w_max
    assert windows[-1] - windows[-2] > windows[k_rounds + 5] - windows[k_rounds + 4]
    assert all(b >= a for a, b in itertools.pairwise(windows))


def test_cubic_reno_friendly_on_short_rtt() -> None:
    # At 1 ms RTT the cubic curve barely moves within 100 RTTs; the
    # Reno-friendly estimate (alpha ~0.53 datagrams per RTT) takes over.
    windows = grow_cubic_after_loss(rtt_s=0.001, rounds=100)
    growth_packets = (windows[-1] - windows[0]) / MDS
    assert 40 <= growth_packets <= 60


def test_cubic_fast_convergence() -> None:
    cc = Cubic(max_datagram_size=MDS)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([packet(1, 0.5)], now=1.0)
    cc.on_packets_lost([packet(2, 1.5)], now=2.0)  # window 70 < W_max 100
    assert cc.w_max == pytest.approx(70 * MDS * (1 + CUBIC_BETA) / 2, rel=0.01)


def test_cubic_undo_restores_curve() -> None:
    cc = Cubic(max_datagram_size=MDS)
    cc.congestion_window = 100 * MDS
    lost = packet(1, 0.5)
    cc.on_packets_lost([lost], now=1.0)
    cc.on_spurious_loss([lost], now=1.1)
    assert cc.congestion_window == 100 * MDS
    assert cc.ssthresh is None
    assert cc.w_max == 0.0


events = st.lists(
    st.tuples(
        st.sampled_from(["ack", "lost", "spurious", "persistent"]),
        st.floats(0.0, 0.3),  # how far back the packet was sent
        st.integers(1, MDS),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["newreno", "cubic"]), events)
def test_window_stays_sane_under_any_event_sequence(
    name: str, script: list[tuple[str, float, int]]
) -> None:
    cc = create_congestion_controller(name, max_datagram_size=MDS)
    rtt = rtt_of()
    now = 1.0
    history: list[SentPacket] = []
    for pn, (kind, age, size) in enumerate(script):
        now += 0.01
        p = packet(pn, now - age, size)
        if kind == "ack":
            cc.on_packets_acked([p], now, rtt)
        elif kind == "lost":
            cc.on_packets_lost([p], now)
            history.append(p)
        elif kind == "spurious" and history:
            cc.on_spurious_loss([history.pop()], now)
        elif kind == "persistent":
            cc.on_persistent_congestion(now)
        assert cc.congestion_window >= cc.minimum_window
        assert cc.ssthresh is None or cc.ssthresh >= cc.minimum_window
        assert cc.next_send_time(now) >= now


# -- pacing --------------------------------------------------------------


def test_pacer_unpaced_before_rtt_sample() -> None:
    cc = NewReno(max_datagram_size=MDS)
    for i in range(50):
        assert cc.next_send_time(float(i) * 1e-6) == float(i) * 1e-6
        cc.on_packet_sent(MDS, float(i) * 1e-6)


def test_pacer_spreads_a_window_over_an_rtt() -> None:
    pacer = Pacer(MDS)
    cwnd = 100 * MDS
    pacer.update(cwnd, 0.1)
    now = 10.0
    times = []
    for _ in range(100):
        now = pacer.next_send_time(now, MDS)
        times.append(now)
        pacer.on_packet_sent(MDS, now)
    # The first burst (10 datagrams) leaves at once, the rest at the paced rate.
    assert times[:10] == [10.0] * 10
    assert times[10] > 10.0
    elapsed = times[-1] - times[0]
    expected = 90 * MDS / (1.25 * cwnd / 0.1)  # 0.072 s
    assert elapsed == pytest.approx(expected, rel=0.01)
    assert 0.5 * 0.1 < elapsed < 0.1
    gaps = [b - a for a, b in itertools.pairwise(times[10:])]
    assert max(gaps) == pytest.approx(min(gaps), rel=1e-6)


def test_pacer_query_is_pure_and_refills() -> None:
    pacer = Pacer(MDS)
    pacer.update(10 * MDS, 0.1)  # rate 150 000 B/s: one datagram per 8 ms
    for _ in range(10):
        pacer.on_packet_sent(MDS, 0.0)
    first = pacer.next_send_time(0.0, MDS)
    assert first == pytest.approx(0.008)
    assert pacer.next_send_time(0.0, MDS) == first  # asking twice changes nothing
    assert pacer.next_send_time(0.009, MDS) == 0.009
    assert pacer.next_send_time(10.0, MDS) == 10.0  # bucket full again


def test_pacer_bucket_grown_before_any_paced_send_does_not_stall() -> None:
    """Path MTU discovery can raise the datagram size after the first RTT sample
    but before the first paced packet (data sent before the sample is unpaced).
    The tokens must follow the deeper bucket: a full-size datagram used to wait
    forever, since tokens only refill after a paced send."""
    pacer = Pacer(MDS)
    pacer.on_packet_sent(MDS, 0.0)  # before any RTT sample: unpaced, spends nothing
    pacer.update(100 * 65_507, 0.001)
    pacer.set_max_datagram_size(65_507)
    assert pacer.next_send_time(1.0, 65_507) == 1.0
    pacer.on_packet_sent(65_507, 1.0)
    later = pacer.next_send_time(1.0, 65_507)
    assert later >= 1.0 and pacer.next_send_time(later, 65_507) == later


def test_pacer_follows_window_after_loss() -> None:
    cc = NewReno(max_datagram_size=MDS)
    one_round(cc, 0.0, rtt_of())
    rate_before = cc.pacer.rate
    assert rate_before == pytest.approx(1.25 * cc.congestion_window / RTT)
    cc.on_packets_lost([packet(100, 0.05)], now=0.2)
    assert cc.pacer.rate == pytest.approx(rate_before / 2)


@given(
    st.integers(2 * MDS, 1000 * MDS),
    st.floats(0.001, 2.0),
    st.lists(st.integers(1, MDS), min_size=1, max_size=50),
)
def test_pacer_allows_sending_at_the_time_it_returned(
    cwnd: int, srtt: float, sizes: list[int]
) -> None:
    """No float-rounding spin: waiting until the answer always permits the send."""
    pacer = Pacer(MDS)
    pacer.update(cwnd, srtt)
    now = 3.0
    for size in sizes * 5:
        when = pacer.next_send_time(now, size)
        assert when >= now
        assert pacer.next_send_time(when, size) == when
        pacer.on_packet_sent(size, when)
        now = when


# -- growth only while the window is the limit (RFC 9002 §7.8) --------------


def test_window_limited_rule_in_slow_start_is_half_the_window() -> None:
    cc = NewReno(max_datagram_size=MDS)
    assert cc.in_slow_start
    assert not cc.is_window_limited(5999)
    assert cc.is_window_limited(6000)
    assert cc.is_window_limited(12000)


def test_window_limited_rule_in_avoidance_allows_three_datagrams() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = cc.ssthresh = 48000
    assert not cc.in_slow_start
    assert not cc.is_window_limited(48000 - 3 * MDS - 1)
    assert cc.is_window_limited(48000 - 3 * MDS)
    assert cc.is_window_limited(48000)


def app_limited(pn: int, sent_time: float) -> SentPacket:
    p = packet(pn, sent_time)
    p.window_limited = False
    return p


@pytest.mark.parametrize("cls", [NewReno, Cubic])
@pytest.mark.parametrize("avoidance", [False, True], ids=["slow_start", "avoidance"])
def test_acks_of_packets_sent_below_the_window_do_not_grow_it(
    cls: type[CongestionController], avoidance: bool
) -> None:
    cc = cls(max_datagram_size=MDS)
    if avoidance:
        cc.on_packets_lost([packet(0, 0.0)], now=0.0)
    start = cc.congestion_window
    rtt = rtt_of()
    for i in range(1, 200):
        cc.on_packets_acked([app_limited(i, i * 0.1)], i * 0.1 + RTT, rtt)
    assert cc.congestion_window == start
    # The same acknowledgements of window-limited packets do grow it.
    for i in range(200, 400):
        cc.on_packets_acked([packet(i, i * 0.1)], i * 0.1 + RTT, rtt)
    assert cc.congestion_window > start


def test_cubic_curve_does_not_advance_while_app_limited() -> None:
    """RFC 9438 §5.8: after a quiet spell the window resumes where it left off."""
    rtt = rtt_of()
    fresh = Cubic(max_datagram_size=MDS)
    quiet = Cubic(max_datagram_size=MDS)
    for cc in (fresh, quiet):
        cc.congestion_window = 100 * MDS
        cc.on_packets_lost([packet(0, 0.0)], now=0.0)
    # fresh: one window-limited ack 0.1 s into the epoch.
    fresh.on_packets_acked([packet(1, 0.05)], 0.1, rtt)
    # quiet: ten seconds of app-limited acks first, then the same ack.
    for i in range(1, 101):
        quiet.on_packets_acked([app_limited(i, i * 0.1 - RTT)], i * 0.1, rtt)
    assert quiet.congestion_window == int(70 * MDS)
    quiet.on_packets_acked([packet(101, 10.0)], 10.1, rtt)
    assert quiet.congestion_window == fresh.congestion_window
    # Without the pause the curve would be ten seconds further on (far above W_max).
    assert quiet.w_cubic(10.1) > 1.5 * quiet.w_max
