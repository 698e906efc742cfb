"""BBR: a model-based congestion controller (after BBR v1, Cardwell et al. 2016).

Why STT ships it: loss-based controllers read every loss as congestion. On a
path with 1% random loss and a 50 ms round trip, NewReno and CUBIC settle
near 2 Mbit/s whatever the capacity (the Mathis bound), while links with
random loss (Wi-Fi, LTE, long-haul) are exactly where STT's users run. BBR
instead measures the path: the bottleneck bandwidth (the highest delivery
rate seen in the last ten round trips) and the minimum RTT, and sends at
that rate with a window of about two bandwidth-delay products. Random loss
does not shrink the model, so it does not shrink the rate.

What this implementation keeps and drops from BBR v1:

* STARTUP (gain 2/ln2 until the bandwidth stops growing 25% per round for
  three rounds), DRAIN (one round at the inverse gain), PROBE_BW (gain cycle
  1.25, 0.75, then six rounds at 1.0, each phase one minimum RTT long).
* Delivery-rate samples from per-send snapshots of the delivered byte count,
  keyed by send time (all packets sent at one ``now`` share a snapshot).
* No PROBE_RTT phase: the minimum RTT comes from the shared RTT estimator.
  Loss is ignored except persistent congestion, which restarts the model.
* Application-limited samples (the acked flight never had half a
  bandwidth-delay product in flight: the sender was short of data or of
  flow-control credit) only ever raise the bandwidth estimate, never age it
  out, and do not count as STARTUP rounds without growth: a quiet sender
  would otherwise measure its own idleness and forget the path.

It plugs into the same interface as NewReno and CUBIC (congestion.py), so
``Config(congestion_control="bbr")`` selects it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .congestion import CongestionController

if TYPE_CHECKING:
    from .recovery import RttEstimator, SentPacket

__all__ = ["Bbr"]

STARTUP_GAIN = 2.0 / math.log(2.0)
"""2/ln 2 ≈ 2.885: doubles the sending rate every round trip."""
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN = 2.0
BANDWIDTH_WINDOW_ROUNDS = 10
FULL_PIPE_GROWTH = 1.25
FULL_PIPE_ROUNDS = 3
MIN_WINDOW_PACKETS = 4
APP_LIMITED_BDP_FRACTION = 0.5
"""A flight is application-limited if bytes in flight stayed below this share of the
estimated bandwidth-delay product. Why half, not all of it: the 0.75 gain phase of
PROBE_BW and ordinary RTT noise keep a busy sender somewhat below one BDP."""

_STARTUP, _DRAIN, _PROBE_BW = "startup", "drain", "probe_bw"


class Bbr(CongestionController):
    """Bottleneck bandwidth and round-trip propagation time."""

    __slots__ = (
        "_bandwidth_samples", "_cycle_index", "_cycle_start", "_delivered",
        "_delivered_time", "_full_bandwidth", "_full_rounds", "_min_rtt", "_next_round",
        "_pacing_gain", "_round", "_snapshots", "_state",
    )

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._state = _STARTUP
        self._pacing_gain = STARTUP_GAIN
        self._delivered = 0
        self._delivered_time = 0.0
        self._snapshots: dict[float, tuple[int, float]] = {}
        self._bandwidth_samples: deque[tuple[int, float]] = deque()
        self._round = 0
        self._next_round = 0
        self._full_bandwidth = 0.0
        self._full_rounds = 0
        self._cycle_index = 0
        self._cycle_start = 0.0
        self._min_rtt = 0.0

    @property
    def bandwidth(self) -> float:
        """Estimated bottleneck bandwidth in bytes per second (0 before samples)."""
        samples = self._bandwidth_samples
        return samples[0][1] if samples else 0.0  # a monotone deque: the front is the max

    def is_window_limited(self, bytes_in_flight: int) -> bool:
        """Does the sender keep the pipe busy: half a BDP in flight, or no estimate yet?

        BBR's window is two BDPs and its pacing keeps about one in flight, so
        the base class's window rule would call a busy BBR sender idle; what
        matters for a rate sample is whether the flight could fill the pipe.
        """
        bdp = self.bandwidth * self._min_rtt
        return bdp <= 0 or bytes_in_flight >= APP_LIMITED_BDP_FRACTION * bdp

    @property
    def state(self) -> str:
        """``startup``, ``drain`` or ``probe_bw``."""
        return self._state

    def on_packet_sent(self, size: int, now: float) -> None:
        """Remember how much had been delivered when this packet left."""
        if not self._snapshots and self._delivered_time == 0.0:
            self._delivered_time = now
        self._snapshots.setdefault(now, (self._delivered, self._delivered_time))
        super().on_packet_sent(size, now)

    def on_packets_acked(self, packets: Sequence[SentPacket], now: float,
                         rtt: RttEstimator) -> None:
        """Update the delivery-rate model, the round count and the state."""
        newest: SentPacket | None = None
        for packet in packets:
            if packet.in_flight:
                self._delivered += packet.size
                if newest is None or packet.sent_time > newest.sent_time:
                    newest = packet
        if newest is None:
            return
        self._delivered_time = now
        snapshot = self._snapshots.get(newest.sent_time)
        for sent_time in [t for t in self._snapshots if t <= newest.sent_time]:
            del self._snapshots[sent_time]
        if rtt.has_sample:
            self._min_rtt = rtt.min_rtt
        app_limited = not newest.window_limited
        if snapshot is not None:
            self._on_rate_sample(snapshot, now, app_limited)
        self._advance_state(now, app_limited)
        self._apply_model(rtt)

    def _on_rate_sample(self, snapshot: tuple[int, float], now: float,
                        app_limited: bool) -> None:
        delivered_before, delivered_time = snapshot
        if delivered_before >= self._next_round:  # a packet of the new round was acked
            self._round += 1
            self._next_round = self._delivered
        elapsed = now - delivered_time
        if elapsed <= 0:
            return
        rate = (self._delivered - delivered_before) / elapsed
        if app_limited and rate < self.bandwidth:
            return  # says how busy the sender was, not what the path carries
        samples = self._bandwidth_samples
        while samples and samples[-1][1] <= rate:
            samples.pop()  # monotone deque: a running windowed maximum
        samples.append((self._round, rate))
        while samples and samples[0][0] <= self._round - BANDWIDTH_WINDOW_ROUNDS:
            samples.popleft()

    def _advance_state(self, now: float, app_limited: bool) -> None:
        if self._state == _STARTUP:
            if app_limited:
                return  # an idle round says nothing about whether the pipe is full
            bandwidth = self.bandwidth
            if bandwidth >= self._full_bandwidth * FULL_PIPE_GROWTH:
                self._full_bandwidth = bandwidth
                self._full_rounds = self._round
            elif self._round - self._full_rounds >= FULL_PIPE_ROUNDS:
                self._state = _DRAIN
                self._pacing_gain = 1.0 / STARTUP_GAIN
                self._cycle_start = now
        elif self._state == _DRAIN:
            if now - self._cycle_start >= max(self._min_rtt, 0.001):
                self._state = _PROBE_BW
                self._cycle_index = 2  # start cruising; probe up on the next cycle
                self._cycle_start = now
                self._pacing_gain = PROBE_BW_GAINS[self._cycle_index]
        elif now - self._cycle_start >= max(self._min_rtt, 0.001):
            self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
            self._cycle_start = now
            self._pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _apply_model(self, rtt: RttEstimator) -> None:
        bandwidth = self.bandwidth
        if bandwidth <= 0 or self._min_rtt <= 0:
            return
        bdp = bandwidth * self._min_rtt
        gain = STARTUP_GAIN if self._state == _STARTUP else CWND_GAIN
        floor = MIN_WINDOW_PACKETS * self.max_datagram_size
        self.congestion_window = max(int(gain * bdp) + 3 * self.max_datagram_size, floor)
        self.pacer.set_rate(self._pacing_gain * bandwidth)

    def on_packets_lost(self, packets: Sequence[SentPacket], now: float) -> None:
        """Random loss says nothing about the bottleneck: the model is kept."""

    def on_spurious_loss(self, packets: Sequence[SentPacket], now: float) -> None:
        """Nothing to undo: losses never changed the model."""

    def on_persistent_congestion(self, now: float) -> None:
        """Everything in flight for several PTOs was lost: start measuring again."""
        self.reset()

    def reset(self) -> None:
        """Forget the path model (path change or persistent congestion)."""
        super().reset()
        self._state = _STARTUP
        self._pacing_gain = STARTUP_GAIN
        self._bandwidth_samples.clear()
        self._snapshots.clear()
        self._full_bandwidth = 0.0
        self._full_rounds = self._round

    def _on_ack(self, size: int, now: float, rtt: RttEstimator) -> None:
        """Unused: BBR sizes the window from its model, not per acked byte."""

    def _on_congestion_event(self, now: float) -> None:
        """Unused: BBR does not react to individual losses."""
