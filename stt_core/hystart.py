"""HyStart++ (RFC 9406): leave slow start when the round-trip time starts to rise.

Why: slow start doubles the window every round trip until a loss. When the
bottleneck has a deep buffer (a receiver's socket buffer on loopback, a
router queue) the doubling fills it and then overflows it, losing up to a
window of packets at once. A rising minimum RTT per round says the queue has
started to build: HyStart++ then grows at a quarter of the rate for a few
rounds (Conservative Slow Start, CSS), falls back to slow start if the RTT
drops again (the rise was noise), and otherwise ends slow start there.

This module owns the round and RTT bookkeeping only; the congestion
controller (``congestion.py``) asks it, on each ACK during its first slow
start, whether to end slow start, and by how much to divide growth. Rounds
are counted by send time: a round ends when a packet sent after it began is
acknowledged (RFC 9406 uses the next sequence number; STT's controller sees
send times, which order the same way).
"""

from __future__ import annotations

import math

__all__ = ["HyStart"]

MIN_RTT_THRESH = 0.004
"""RFC 9406: the smallest RTT rise (seconds) that ends slow start."""
MAX_RTT_THRESH = 0.016
"""RFC 9406: the largest RTT rise (seconds) required."""
MIN_RTT_DIVISOR = 8
"""RFC 9406: the required rise is the last round's minimum RTT divided by this, clamped."""
N_RTT_SAMPLE = 8
"""RFC 9406: RTT samples a round needs before its minimum is trusted."""
CSS_GROWTH_DIVISOR = 4
"""RFC 9406: window growth is divided by this during Conservative Slow Start."""
CSS_ROUNDS = 5
"""RFC 9406: rounds of Conservative Slow Start before slow start ends."""


class HyStart:
    """The HyStart++ state of one controller's initial slow start."""

    __slots__ = ("_css_baseline", "_css_rounds", "_current_min", "_last_min", "_round_start",
                 "_samples")

    def __init__(self) -> None:
        self._round_start = -math.inf
        self._last_min = math.inf
        self._current_min = math.inf
        self._samples = 0
        self._css_baseline: float | None = None  # None: plain slow start
        self._css_rounds = 0

    @property
    def in_css(self) -> bool:
        """True during Conservative Slow Start."""
        return self._css_baseline is not None

    @property
    def growth_divisor(self) -> int:
        """Divide slow-start growth by this (1, or 4 during CSS)."""
        return CSS_GROWTH_DIVISOR if self._css_baseline is not None else 1

    def on_ack(self, newest_sent_time: float, now: float, latest_rtt: float) -> bool:
        """Account one ACK; True when slow start should end now.

        ``newest_sent_time`` is the send time of the newest packet the ACK
        acknowledged, ``latest_rtt`` the RTT sample it gave.
        """
        if newest_sent_time >= self._round_start:  # a packet of the current round: it ended
            self._round_start = now
            self._last_min = self._current_min
            self._current_min = math.inf
            self._samples = 0
            if self._css_baseline is not None:
                self._css_rounds += 1
                if self._css_rounds >= CSS_ROUNDS:
                    return True
        if latest_rtt < self._current_min:
            self._current_min = latest_rtt
        self._samples += 1
        if self._samples < N_RTT_SAMPLE or math.isinf(self._last_min):
            return False
        if self._css_baseline is None:
            threshold = max(MIN_RTT_THRESH,
                            min(self._last_min / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if self._current_min >= self._last_min + threshold:
                self._css_baseline = self._current_min
                self._css_rounds = 0
        elif self._current_min < self._css_baseline:
            self._css_baseline = None  # the rise was noise: back to slow start
        return False
