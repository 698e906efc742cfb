"""Ack tracker: the receiver side of recovery (RFC 9000 §13.2).

This module owns which packet numbers arrived (the anti-replay window), when
an ACK is due, what an ACK frame reports, and which holes a NACK frame names.
It must not know about frames, keys or sockets, nor about the sender side
(``recovery.py``, which re-exports :class:`AckTracker` as part of the recovery
API). It was split out of ``recovery.py`` to keep both modules near 500 lines.
Time is the caller's ``now``.
"""

from __future__ import annotations

from .ranges import DEFAULT_MAX_RANGES, RangeSet

__all__ = ["DEFAULT_MAX_ACK_RANGES", "AckTracker"]

DEFAULT_MAX_ACK_RANGES = DEFAULT_MAX_RANGES
"""Ranges an ACK frame reports by default (the newest ones): the whole window,
as docs/protocol.md §4.3 states. Lower it to trade ACK size for the (rare)
spurious retransmission of a packet whose range is no longer repeated."""


class AckTracker:
    """Receiver side: which packets arrived, when to ACK, what to report.

    The received set doubles as the anti-replay window: it is a
    :class:`~stt_core.ranges.RangeSet` capped at ``max_ranges``, and packet
    numbers below its floor (too old to tell) count as duplicates.

    ACK timing follows RFC 9000 §13.2: acknowledge at once after
    ``ack_eliciting_threshold`` ack-eliciting packets or when an ack-eliciting
    packet arrives out of order or past a gap; otherwise within
    ``max_ack_delay`` of the first unacknowledged ack-eliciting packet.
    Packets that are not ack-eliciting are recorded (and reported in the next
    ACK) but never make an ACK due.

    Args:
        max_ranges: cap on remembered ranges (the anti-replay window).
        max_ack_ranges: ranges an ACK reports by default, the newest ones.
            Older ranges were reported by earlier ACKs; repeating all of them
            costs wire bytes and sender time on every ACK of a lossy link.
        max_ack_delay: longest an ACK is held, seconds.
        ack_eliciting_threshold: ack-eliciting packets that force an ACK.

    Raises:
        ValueError: a parameter out of range.
    """

    __slots__ = (
        "_first_unacked_time",
        "_immediate",
        "_largest_time",
        "_new_since_ack",
        "_received",
        "_requested",
        "_unacked_eliciting",
        "ack_eliciting_threshold",
        "duplicates",
        "largest_received",
        "max_ack_delay",
        "max_ack_ranges",
    )

    def __init__(
        self,
        *,
        max_ranges: int = DEFAULT_MAX_RANGES,
        max_ack_ranges: int = DEFAULT_MAX_ACK_RANGES,
        max_ack_delay: float = 0.025,
        ack_eliciting_threshold: int = 2,
    ) -> None:
        if max_ack_delay < 0:
            raise ValueError(f"max_ack_delay must be >= 0 seconds, not {max_ack_delay}")
        if ack_eliciting_threshold < 1:
            raise ValueError("ack_eliciting_threshold must be >= 1")
        if max_ack_ranges < 1:
            raise ValueError("max_ack_ranges must be >= 1")
        self.max_ack_ranges = max_ack_ranges
        self._received = RangeSet(max_ranges)
        self.max_ack_delay = max_ack_delay
        self.ack_eliciting_threshold = ack_eliciting_threshold
        self.largest_received: int | None = None
        """Largest packet number received so far."""
        self.duplicates = 0
        """Packets rejected as duplicates (or too old to tell)."""
        self._largest_time = 0.0
        self._unacked_eliciting = 0
        self._first_unacked_time: float | None = None
        self._immediate = False
        self._requested = False
        self._new_since_ack = False

    @property
    def received(self) -> RangeSet:
        """The received packet numbers (read it, do not modify it)."""
        return self._received

    @property
    def ack_needed(self) -> bool:
        """True while an ack-eliciting packet waits for an ACK."""
        return self._unacked_eliciting > 0

    def on_packet_received(self, pn: int, ack_eliciting: bool, now: float) -> bool:
        """Record an authenticated packet; call it after decryption, before its frames.

        Returns:
            False for a duplicate (already received, or below the window's
            floor): drop the packet without processing its frames.
        """
        if pn in self._received or pn < 0:
            self.duplicates += 1
            return False
        largest = self.largest_received
        if ack_eliciting and largest is not None and (pn < largest or pn > largest + 1):
            # Reordering or a gap: the sender wants to know now (RFC 9000 §13.2.1).
            self._immediate = True
        self._received.add(pn)
        if largest is None or pn > largest:
            self.largest_received = pn
            self._largest_time = now
        self._new_since_ack = True
        if ack_eliciting:
            self._unacked_eliciting += 1
            if self._first_unacked_time is None:
                self._first_unacked_time = now
        return True

    def ack_now(self) -> None:
        """Make a pending ACK due at once instead of after ``max_ack_delay``.

        For packets whose sender waits on the ACK with nothing else to come
        (a peer's SESSION_CLOSE): holding it back saves no packet, it only
        delays the peer's close and costs one more timer wake-up here.
        """
        self._immediate = True

    def ack_requested(self) -> None:
        """The peer asked for an ACK at once (IMMEDIATE_ACK): it waits on one.

        Due at once like :meth:`ack_now`, with one difference
        (:meth:`ack_due` with ``patient``): a binding may let the application
        have its turn first, since a reply written then carries the ACK.
        """
        self._requested = True

    def ack_due(self, now: float, *, patient: bool = False) -> bool:
        """True when an ACK should go out at ``now``. Pure.

        With ``patient``, an ACK due only because the peer asked for it
        (:meth:`ack_requested`) does not count: the caller is about to let the
        application run and will flush right after it.
        """
        deadline = self._deadline(counting_request=not patient)
        return deadline is not None and deadline <= now

    def ack_deadline(self) -> float | None:
        """When an ACK must be sent; a time at or before ``now`` means at once. Pure.

        None when no ack-eliciting packet is waiting.
        """
        return self._deadline(counting_request=True)

    def _deadline(self, *, counting_request: bool) -> float | None:
        first = self._first_unacked_time
        if first is None:
            return None
        if self._immediate or (counting_request and self._requested) \
                or self._unacked_eliciting >= self.ack_eliciting_threshold:
            return first
        return first + self.max_ack_delay

    def build_ack(
        self, now: float, max_ranges: int | None = None
    ) -> tuple[list[range], float] | None:
        """The content of an ACK frame, and mark it as sent.

        Args:
            now: the current time.
            max_ranges: report at most this many ranges (the newest ones);
                defaults to ``max_ack_ranges``.

        Returns:
            ``(ranges, ack_delay)``: received ranges in DESCENDING order
            (largest first, as the ACK frame lists them) and the seconds since
            the largest packet arrived. None when nothing arrived since the
            last ACK.
        """
        if not self._new_since_ack or not self._received:
            return None
        limit = self.max_ack_ranges if max_ranges is None else max_ranges
        ranges = self._received.descending(limit)
        self._new_since_ack = False
        self._unacked_eliciting = 0
        self._first_unacked_time = None
        self._immediate = False
        self._requested = False
        return ranges, max(now - self._largest_time, 0.0)

    def missing_ranges(self, limit: int = 16) -> list[range]:
        """Holes below the largest received packet, for a NACK frame.

        Returns:
            At most ``limit`` holes, the newest first (DESCENDING). Holes below
            the window's floor are forgotten and never reported.
        """
        if limit <= 0:
            return []
        gaps = list(self._received.gaps())
        return gaps[: -limit - 1 : -1]
