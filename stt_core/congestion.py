"""Congestion control and pacing: how many bytes may be in flight, and when to send.

This module owns the congestion window (NewReno per RFC 9002 §7 and
Appendix B, CUBIC per RFC 9438), the recovery period, undo after spurious
losses, and the :class:`Pacer` that spreads a window over a round trip
(RFC 9002 §7.7). It must not know about frames, streams, timers or sockets:
:class:`~stt_core.recovery.LossRecovery` tells it what was sent, acked and
lost, and owns ``bytes_in_flight`` (it passes the value in to :meth:`can_send`
and :meth:`~CongestionController.is_window_limited`).

The window grows only on acknowledgements of packets that belonged to a
flight the window limited (RFC 9002 §7.8): recovery asks
:meth:`~CongestionController.is_window_limited` as each packet leaves and marks
the acknowledged packets sent up to the last one that found the window (nearly)
full. A sender short of data (a trickle of small messages) or of the peer's
flow-control credit keeps its window instead of inflating it to sizes it never
used, which would later let it burst far beyond what the path was shown to carry.

Algorithms are registered in the explicit :data:`CONGESTION_CONTROLLERS` dict
(not by an import side effect), so adding BBR later is one class and one entry.

Departures from the RFCs, on purpose:

- Undo: when every loss that started the current recovery period later turns
  out to be spurious, the window is restored (in the spirit of RFC 6582 /
  Linux undo). RFC 9002 leaves this optional.
- Slow start is RFC 9002's, left early by HyStart++ (RFC 9406, ``hystart.py``)
  when the RTT starts to rise; only the first slow start, as RFC 9406 recommends.

Everything here runs per packet, so classes use ``__slots__`` and the hot
paths do arithmetic only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import ConfigError
from .hystart import HyStart

if TYPE_CHECKING:
    from .recovery import SentPacket
    from .rtt import RttEstimator

__all__ = [
    "CONGESTION_CONTROLLERS",
    "CongestionController",
    "Cubic",
    "NewReno",
    "Pacer",
    "create_congestion_controller",
]

K_INITIAL_WINDOW_BYTES = 14720
"""RFC 9002 §7.2: the initial window is min(10 * mds, max(14720, 2 * mds))."""
K_LOSS_REDUCTION_FACTOR = 0.5
"""RFC 9002 §7.3.2: NewReno halves the window on congestion."""
K_MINIMUM_WINDOW_PACKETS = 2
"""RFC 9002 §7.2: the window never drops below two datagrams."""

CUBIC_C = 0.4
"""RFC 9438 §5: the CUBIC scaling constant (segments / s**3)."""
CUBIC_BETA = 0.7
"""RFC 9438 §4.6: multiplicative decrease factor."""
CUBIC_ALPHA = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)
"""RFC 9438 §4.3: additive increase of the Reno-friendly estimate."""

PACING_GAIN = 1.25
"""RFC 9002 §7.7: pace slightly faster than cwnd/srtt so the window is not underused."""
PACER_BURST_PACKETS = 10
"""Datagrams the pacer always lets out back to back (the smallest bucket depth)."""
PACER_BURST_INTERVAL = 0.001
"""Seconds of sending at the pacing rate the bucket may hold (the bucket depth at high rates).

Why: a binding's timer fires late by up to a scheduler tick (about 1 ms on
asyncio and trio). With a bucket of a fixed 10 datagrams, each late wake-up
forfeits the credit it accumulated, so at high rates the sender is capped at
10 datagrams per loop turn (a timer wake-up, a flush and a deadline reset per
10 datagrams) and never reaches the rate it computed. Holding one
millisecond of credit is what Linux TCP allows for one segmentation-offload
burst (``tcp_tso_autosize``: rate >> 10); at 100 Mbit/s it is still 10
datagrams, on loopback it lets a flush send a full batch."""
PACER_TOLERANCE_BYTES = 1e-6
"""Token shortfall treated as none (float rounding)."""

SLOW_START_LIMITED_FRACTION = 0.5
"""In slow start a packet is window-limited once bytes in flight reach this share of the window.

Why half: slow start doubles the window each round trip and the pacer spreads
the sending over it, so a sender with data always in hand keeps only part of
its (fast growing) window in flight at any moment. Linux (``tcp_is_cwnd_limited``)
and Chromium's QUIC (``IsCwndLimited``) draw the line at half the window."""
AVOIDANCE_LIMITED_SLACK_PACKETS = 3
"""In congestion avoidance a packet is window-limited when the room left in the window
after it is at most this many datagrams (Chromium's allowance for a burst)."""


class Pacer:
    """Token bucket: refilled at ``1.25 * cwnd / srtt`` bytes per second.

    Before the first RTT sample the pacer is off (``next_send_time`` returns
    ``now``): without an RTT there is no sensible rate, and the initial window
    is small anyway. Tokens may go negative when a packet is sent regardless
    (a PTO probe); the debt is repaid before the next paced packet.
    """

    __slots__ = ("_capacity", "_floor_capacity", "_last_time", "_rate", "_srtt", "_tokens")

    def __init__(self, max_datagram_size: int) -> None:
        self._floor_capacity = float(PACER_BURST_PACKETS * max_datagram_size)
        self._capacity = self._floor_capacity
        self._tokens = self._capacity
        self._rate = 0.0  # bytes per second; 0 means unpaced
        self._srtt = 0.0
        self._last_time: float | None = None

    @property
    def rate(self) -> float:
        """Current refill rate in bytes per second (0.0 while unpaced)."""
        return self._rate

    def update(self, congestion_window: int, smoothed_rtt: float | None = None) -> None:
        """Set the rate from the window and, when given, a new smoothed RTT.

        Why two inputs: the window changes on loss, when no fresh RTT is at
        hand; the last known RTT is kept for that case.
        """
        if smoothed_rtt is not None and smoothed_rtt > 0:
            self._srtt = smoothed_rtt
        if self._srtt > 0:
            self._set(PACING_GAIN * congestion_window / self._srtt)

    def set_max_datagram_size(self, size: int) -> None:
        """The path now carries larger datagrams (path MTU discovery): resize the bucket."""
        self._floor_capacity = float(PACER_BURST_PACKETS * size)
        self._set(self._rate)

    def set_rate(self, bytes_per_second: float) -> None:
        """Pace at an explicit rate (model-based controllers such as BBR)."""
        self._set(max(0.0, bytes_per_second))

    def _set(self, rate: float) -> None:
        """New rate; the bucket depth follows it (see :data:`PACER_BURST_INTERVAL`)."""
        self._rate = rate
        self._capacity = max(self._floor_capacity, rate * PACER_BURST_INTERVAL)

    def _tokens_at(self, now: float) -> float:
        if self._last_time is None:
            # No paced packet yet: the bucket is full at its current depth. The
            # depth may have grown since birth (path MTU discovery), and the
            # tokens, which only refill after a paced send, must follow it, or
            # a datagram larger than the birth depth would wait forever.
            return self._capacity
        if now <= self._last_time:
            return self._tokens
        return min(self._capacity, self._tokens + (now - self._last_time) * self._rate)

    def next_send_time(self, now: float, size: int) -> float:
        """When a datagram of ``size`` bytes may leave: ``now`` or a later time. Pure."""
        if self._rate <= 0:
            return now
        tokens = self._tokens_at(now)
        size = min(size, int(self._capacity))  # a bucket smaller than a datagram must not stall
        # The tolerance absorbs float rounding: a caller that waits until the
        # returned time must then be allowed to send, not re-arm a 1e-17 s timer.
        if tokens >= size - PACER_TOLERANCE_BYTES:
            return now
        return now + (size - tokens) / self._rate

    def on_packet_sent(self, size: int, now: float) -> None:
        """Spend ``size`` bytes of tokens (after refilling up to ``now``)."""
        if self._rate <= 0:
            return
        self._tokens = max(self._tokens_at(now) - size, -self._capacity)
        if self._last_time is None or now > self._last_time:
            self._last_time = now

    def reset(self) -> None:
        """Back to unpaced with a full bucket (path change)."""
        self._capacity = self._floor_capacity
        self._tokens = self._capacity
        self._rate = 0.0
        self._srtt = 0.0
        self._last_time = None


class CongestionController(ABC):
    """The interface :class:`~stt_core.recovery.LossRecovery` drives.

    The base class implements the parts every loss-based algorithm shares:
    the recovery period keyed on send time (RFC 9002 §7.3.2), undo after
    spurious losses, persistent congestion and pacing. Subclasses implement
    window growth (:meth:`_on_ack`) and reduction (:meth:`_on_congestion_event`)
    and say which extra state an undo restores (:meth:`_save_undo`/:meth:`_restore_undo`).
    """

    __slots__ = (
        "_episode_losses",
        "_episode_start",
        "_recovery_start",
        "_undo",
        "congestion_window",
        "hystart",
        "max_datagram_size",
        "minimum_window",
        "pacer",
        "ssthresh",
    )

    def __init__(self, *, max_datagram_size: int) -> None:
        if max_datagram_size < 1:
            raise ConfigError(f"max_datagram_size must be >= 1, not {max_datagram_size}")
        self.max_datagram_size = max_datagram_size
        self.minimum_window = K_MINIMUM_WINDOW_PACKETS * max_datagram_size
        self.pacer = Pacer(max_datagram_size)
        self.congestion_window = self.initial_window
        self.ssthresh: int | None = None  # None: infinite, still in slow start
        self.hystart = HyStart()
        self._recovery_start: float | None = None
        # The current loss episode covers packets sent in
        # (_episode_start, _recovery_start]; _episode_losses of them were
        # declared lost, and _undo is the state to restore if all were spurious.
        self._episode_start: float | None = None
        self._episode_losses = 0
        self._undo: tuple[int, int | None] | None = None

    @property
    def initial_window(self) -> int:
        """RFC 9002 §7.2 initial window for this datagram size."""
        mds = self.max_datagram_size
        return min(10 * mds, max(K_INITIAL_WINDOW_BYTES, 2 * mds))

    @property
    def in_slow_start(self) -> bool:
        """True while the window is below the slow-start threshold."""
        return self.ssthresh is None or self.congestion_window < self.ssthresh

    def in_recovery(self, sent_time: float) -> bool:
        """True if a packet sent at ``sent_time`` belongs to the current recovery period."""
        return self._recovery_start is not None and sent_time <= self._recovery_start

    # -- the interface ---------------------------------------------------

    def is_window_limited(self, bytes_in_flight: int) -> bool:
        """Is the window the limit, with ``bytes_in_flight`` outstanding (a packet just sent)?

        RFC 9002 §7.8: a window the sender does not fill (it is short of data
        or of the peer's flow-control credit) must not grow. Recovery asks this
        for every in-flight packet as it leaves; only acknowledgements of
        packets of a flight that got this far grow the window. Pure.
        """
        cwnd = self.congestion_window
        if self.ssthresh is None or cwnd < self.ssthresh:
            return bytes_in_flight >= SLOW_START_LIMITED_FRACTION * cwnd
        return bytes_in_flight + AVOIDANCE_LIMITED_SLACK_PACKETS * self.max_datagram_size >= cwnd

    def can_send(self, bytes_in_flight: int, size: int | None = None) -> bool:
        """May a packet of ``size`` bytes (default: a full datagram) be sent now?

        RFC 9002 §7: never exceed the window, except for PTO probes (the
        caller sends those regardless).
        """
        if size is None:
            size = self.max_datagram_size
        return bytes_in_flight + size <= self.congestion_window

    def next_send_time(self, now: float, size: int | None = None) -> float:
        """The pacer's answer: ``now`` if a packet may leave now, else when. Pure."""
        return self.pacer.next_send_time(now, self.max_datagram_size if size is None else size)

    def on_packet_sent(self, size: int, now: float) -> None:
        """Account an in-flight packet with the pacer."""
        self.pacer.on_packet_sent(size, now)

    def on_packets_acked(
        self, packets: Sequence[SentPacket], now: float, rtt: RttEstimator
    ) -> None:
        """Grow the window for newly acked in-flight packets sent outside recovery.

        Only packets of a flight the window limited count
        (``SentPacket.window_limited``, RFC 9002 §7.8); an ACK of others calls
        :meth:`_on_app_limited_ack` instead.
        """
        if self.ssthresh is None and packets and rtt.has_sample and self.hystart.on_ack(
                packets[-1].sent_time, now, rtt.latest_rtt):
            self.ssthresh = self.congestion_window  # the queue is building: slow start ends
        app_limited = False
        for packet in packets:
            if packet.in_flight and not self.in_recovery(packet.sent_time):
                if packet.window_limited:
                    self._on_ack(packet.size, now, rtt)
                else:
                    app_limited = True
        if app_limited:
            self._on_app_limited_ack(now)
        if rtt.has_sample:
            self.pacer.update(self.congestion_window, rtt.smoothed_rtt)

    def on_packets_lost(self, packets: Sequence[SentPacket], now: float) -> None:
        """Reduce the window once per recovery period (RFC 9002 §7.3.2).

        A loss of a packet sent before the current recovery started is part of
        the same congestion episode and does not reduce the window again.
        """
        count = 0
        latest: float | None = None
        for packet in packets:
            if packet.in_flight:
                count += 1
                if latest is None or packet.sent_time > latest:
                    latest = packet.sent_time
        if latest is None:
            return
        if self.in_recovery(latest):
            self._episode_losses += count
            return
        self._undo = (self.congestion_window, self.ssthresh)
        self._save_undo()
        self._episode_start = self._recovery_start
        self._episode_losses = count
        self._recovery_start = now
        self._on_congestion_event(now)
        self.pacer.update(self.congestion_window)

    def on_spurious_loss(self, packets: Sequence[SentPacket], now: float) -> None:
        """Packets declared lost were acked after all: undo the episode if all were.

        Only losses of the current episode count. When the last of them proves
        spurious, window, threshold and algorithm state return to what they
        were before the reduction, and the recovery period ends.
        """
        if self._undo is None or self._recovery_start is None:
            return
        for packet in packets:
            if (
                packet.in_flight
                and packet.sent_time <= self._recovery_start
                and (self._episode_start is None or packet.sent_time > self._episode_start)
            ):
                self._episode_losses -= 1
        if self._episode_losses <= 0:
            cwnd, ssthresh = self._undo
            self.congestion_window = max(self.congestion_window, cwnd)
            self.ssthresh = ssthresh
            self._restore_undo()
            self._undo = None
            self._recovery_start = self._episode_start
            self.pacer.update(self.congestion_window)

    def on_persistent_congestion(self, now: float) -> None:
        """RFC 9002 §7.6.2: collapse to the minimum window; no undo is possible."""
        self.congestion_window = self.minimum_window
        self._recovery_start = None
        self._episode_start = None
        self._undo = None
        self._episode_losses = 0
        self._on_persistent_congestion()
        self.pacer.update(self.congestion_window)

    def reset(self) -> None:
        """Forget everything learnt about the path (path change, RFC 9000 §9.4)."""
        self.congestion_window = self.initial_window
        self.ssthresh = None
        self._recovery_start = None
        self._episode_start = None
        self._episode_losses = 0
        self._undo = None
        self.hystart = HyStart()
        self.pacer.reset()
        self._on_persistent_congestion()

    # -- algorithm hooks -------------------------------------------------

    @abstractmethod
    def _on_ack(self, size: int, now: float, rtt: RttEstimator) -> None:
        """Grow the window for ``size`` newly acked bytes (not in recovery)."""

    @abstractmethod
    def _on_congestion_event(self, now: float) -> None:
        """Reduce the window at the start of a recovery period."""

    def _on_app_limited_ack(self, now: float) -> None:  # noqa: B027 (optional hook)
        """Packets sent while the window was not the limit were acked (default: nothing)."""

    def _on_persistent_congestion(self) -> None:  # noqa: B027 (optional hook)
        """Reset algorithm state after a collapse or a reset (default: nothing)."""

    def _save_undo(self) -> None:  # noqa: B027 (optional hook)
        """Remember algorithm state an undo must restore (default: none)."""

    def _restore_undo(self) -> None:  # noqa: B027 (optional hook)
        """Restore what :meth:`_save_undo` remembered; the base window is already back."""

    def _slow_start(self, size: int) -> None:
        """RFC 9002 §7.3.1: one byte of window per byte acked (a quarter of it in
        HyStart++'s Conservative Slow Start)."""
        if self.ssthresh is None:
            size //= self.hystart.growth_divisor
        self.congestion_window += size


class NewReno(CongestionController):
    """NewReno as in RFC 9002 §7 and Appendix B.

    Congestion avoidance adds one datagram per window acked; an integer byte
    counter avoids fractional windows.
    """

    __slots__ = ("_acked_bytes",)

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._acked_bytes = 0

    def _on_ack(self, size: int, now: float, rtt: RttEstimator) -> None:
        if self.in_slow_start:
            self._slow_start(size)
            return
        self._acked_bytes += size
        if self._acked_bytes >= self.congestion_window:
            self._acked_bytes -= self.congestion_window
            self.congestion_window += self.max_datagram_size

    def _on_congestion_event(self, now: float) -> None:
        reduced = int(self.congestion_window * K_LOSS_REDUCTION_FACTOR)
        self.congestion_window = max(reduced, self.minimum_window)
        self.ssthresh = self.congestion_window
        self._acked_bytes = 0

    def _on_persistent_congestion(self) -> None:
        self._acked_bytes = 0


class Cubic(CongestionController):
    """CUBIC per RFC 9438: a cubic window curve around the last maximum ``W_max``.

    After a reduction the window first grows quickly back toward ``W_max``,
    flattens near it (probing gently where loss happened before), then
    accelerates beyond it. The Reno-friendly estimate ``W_est`` keeps CUBIC at
    least as aggressive as Reno on short-RTT paths. Windows are computed in
    bytes; the RFC's segment formulas are scaled by the datagram size.

    The curve is a function of time since the epoch started, so time spent
    application-limited is taken out of it (RFC 9438 §5.8): otherwise a sender
    back from a quiet spell would find ``W_cubic`` far ahead and jump to it.
    """

    __slots__ = ("_epoch_start", "_k", "_last_ack_time", "_saved", "_w_est", "_w_max",
                 "_window")

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._window = float(self.congestion_window)  # fractional window, bytes
        self._w_max = 0.0
        self._k = 0.0
        self._epoch_start: float | None = None
        self._w_est = 0.0
        self._last_ack_time: float | None = None
        self._saved: tuple[float, float, float, float | None, float] | None = None

    @property
    def w_max(self) -> float:
        """Window (bytes) at the last congestion event, the curve's plateau."""
        return self._w_max

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1: the target window (bytes) ``t`` seconds into the epoch."""
        mds = self.max_datagram_size
        return CUBIC_C * (t - self._k) ** 3 * mds + self._w_max

    def _sync_window(self) -> float:
        """The fractional window, resynchronised if ``congestion_window`` was set directly."""
        if int(self._window) != self.congestion_window:
            self._window = float(self.congestion_window)
        return self._window

    def _on_ack(self, size: int, now: float, rtt: RttEstimator) -> None:
        self._last_ack_time = now
        if self.in_slow_start:
            self._slow_start(size)
            self._window = float(self.congestion_window)
            return
        self._sync_window()
        mds = self.max_datagram_size
        if self._epoch_start is None:
            # Congestion avoidance without a preceding loss (after an undo or
            # persistent congestion): start a flat epoch at the current window.
            self._epoch_start = now
            self._w_max = self._window
            self._k = 0.0
            self._w_est = self._window
        t = now - self._epoch_start
        # RFC 9438 §4.3: Reno-friendly region. alpha rises to 1 past W_max.
        alpha = 1.0 if self._w_est >= self._w_max else CUBIC_ALPHA
        self._w_est += alpha * size * mds / self._window
        if self.w_cubic(t) < self._w_est:
            self._window = self._w_est
        else:
            # RFC 9438 §4.4/4.5: move toward W_cubic one RTT ahead, capped at 1.5x.
            target = min(max(self.w_cubic(t + rtt.smoothed_rtt), self._window), 1.5 * self._window)
            self._window += (target - self._window) * size / self._window
        self.congestion_window = int(self._window)

    def _on_app_limited_ack(self, now: float) -> None:
        """Stop the curve's clock: the time since the last ack was spent app-limited."""
        epoch = self._epoch_start
        if epoch is not None:
            last = self._last_ack_time
            since = epoch if last is None else max(last, epoch)
            self._epoch_start = epoch + max(0.0, now - since)
        self._last_ack_time = now

    def _on_congestion_event(self, now: float) -> None:
        cwnd = self._sync_window()
        # RFC 9438 §4.7 fast convergence: release bandwidth to newer flows.
        self._w_max = cwnd * (1.0 + CUBIC_BETA) / 2.0 if cwnd < self._w_max else cwnd
        reduced = max(cwnd * CUBIC_BETA, float(self.minimum_window))
        self._window = reduced
        self.congestion_window = int(reduced)
        self.ssthresh = self.congestion_window
        self._k = max((self._w_max - reduced) / (CUBIC_C * self.max_datagram_size), 0.0) ** (
            1.0 / 3.0
        )
        self._epoch_start = now
        self._w_est = reduced

    def _on_persistent_congestion(self) -> None:
        self._window = float(self.congestion_window)
        self._epoch_start = None
        self._last_ack_time = None
        self._saved = None

    def reset(self) -> None:
        """Forget the path, including the last maximum ``W_max``."""
        super().reset()
        self._w_max = 0.0
        self._k = 0.0
        self._w_est = 0.0

    def _save_undo(self) -> None:
        self._saved = (self._window, self._w_max, self._k, self._epoch_start, self._w_est)

    def _restore_undo(self) -> None:
        if self._saved is None:
            return
        window, self._w_max, self._k, self._epoch_start, self._w_est = self._saved
        self._saved = None
        self._window = max(window, float(self.congestion_window))
        self.congestion_window = int(self._window)


def _bbr(*, max_datagram_size: int) -> CongestionController:
    from .bbr import Bbr  # bbr.py builds on this module, so it is imported on use
    return Bbr(max_datagram_size=max_datagram_size)


CONGESTION_CONTROLLERS: dict[str, Callable[..., CongestionController]] = {
    "newreno": NewReno,
    "cubic": Cubic,
    "bbr": _bbr,
}
"""Every congestion controller by the name ``Config.congestion_control`` uses."""


def create_congestion_controller(name: str, *, max_datagram_size: int) -> CongestionController:
    """Build the controller registered under ``name``.

    Raises:
        ConfigError: no controller has that name, or the datagram size is < 1.
    """
    try:
        factory = CONGESTION_CONTROLLERS[name]
    except KeyError:
        known = ", ".join(sorted(CONGESTION_CONTROLLERS))
        raise ConfigError(f"unknown congestion controller {name!r} (known: {known})") from None
    return factory(max_datagram_size=max_datagram_size)
