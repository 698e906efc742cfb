"""RTT: the round-trip time estimator of RFC 9002 §5.

This module owns latest, minimum and smoothed RTT, their variance and the
probe-timeout base derived from them. It must not know about packets, ACK
frames or timers; :class:`~stt_core.recovery.LossRecovery` feeds it samples
(and ``recovery.py`` re-exports it as part of the recovery API). It lives in
its own module to keep ``recovery.py`` near 500 lines, and so that
``congestion.py`` can use it without importing the sender's bookkeeping.
"""

from __future__ import annotations

__all__ = ["K_GRANULARITY", "RttEstimator"]

K_GRANULARITY = 0.001
"""RFC 9002 §6.1.2: timer granularity, the smallest loss delay and RTT variance term."""


class RttEstimator:
    """Round-trip time estimates per RFC 9002 §5.

    Before the first sample ``smoothed_rtt`` is the initial RTT and
    ``rttvar`` half of it (§5.3), ``latest_rtt`` and ``min_rtt`` are 0.0 and
    :attr:`has_sample` is False.
    """

    __slots__ = (
        "has_sample",
        "initial_rtt",
        "latest_rtt",
        "max_ack_delay",
        "min_rtt",
        "rttvar",
        "smoothed_rtt",
    )

    def __init__(self, initial_rtt: float = 0.1, max_ack_delay: float = 0.025) -> None:
        if initial_rtt <= 0:
            raise ValueError(f"initial_rtt must be > 0 seconds, not {initial_rtt}")
        if max_ack_delay < 0:
            raise ValueError(f"max_ack_delay must be >= 0 seconds, not {max_ack_delay}")
        self.initial_rtt = initial_rtt
        self.max_ack_delay = max_ack_delay
        self.reset()

    def reset(self) -> None:
        """Forget every sample (a new path has an unknown RTT)."""
        self.has_sample = False
        self.latest_rtt = 0.0
        self.min_rtt = 0.0
        self.smoothed_rtt = self.initial_rtt
        self.rttvar = self.initial_rtt / 2.0

    def update(
        self, latest_rtt: float, ack_delay: float, max_ack_delay: float | None = None
    ) -> None:
        """Take one RTT sample (RFC 9002 §5.3).

        Args:
            latest_rtt: ``now`` minus the send time of the largest newly
                acked packet, in seconds.
            ack_delay: the delay the peer reports it held the ACK; clamped to
                ``[0, max_ack_delay]`` and subtracted only when that does not
                take the sample below ``min_rtt``.
            max_ack_delay: the peer's promise; defaults to the constructor's.

        Raises:
            ValueError: ``latest_rtt`` is negative (a clock going backwards).
        """
        if latest_rtt < 0:
            raise ValueError(f"latest_rtt must be >= 0, not {latest_rtt}")
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            # §5.3: the first sample initialises everything; ack_delay is ignored.
            self.has_sample = True
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2.0
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        limit = self.max_ack_delay if max_ack_delay is None else max_ack_delay
        ack_delay = min(max(ack_delay, 0.0), limit)
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def pto_base(self) -> float:
        """RFC 9002 §6.2.1: srtt + max(4 * rttvar, kGranularity) + max_ack_delay."""
        return self.smoothed_rtt + max(4.0 * self.rttvar, K_GRANULARITY) + self.max_ack_delay
