"""Recovery: RTT estimation, loss detection, probe timeouts and ACK generation.

This module owns, after RFC 9002:

- :class:`RttEstimator` (defined in ``rtt.py``, re-exported here):
  latest/min/smoothed RTT and its variance (§5);
- :class:`LossRecovery`, the sender side: which packets are outstanding,
  which are acknowledged, which are lost by packet or time threshold (§6.1,
  both raised after spurious losses so that persistent reordering stops
  causing retransmissions), the probe timeout (§6.2), NACK-driven fast
  repair, spurious-loss detection, and persistent congestion (§7.6); it drives a
  :class:`~stt_core.congestion.CongestionController` and owns ``bytes_in_flight``;
- :class:`AckTracker` (defined in ``ack_tracker.py``, re-exported here), the
  receiver side: duplicate detection (the anti-replay window), when an ACK is
  due, what it reports, and which holes to NACK.

It must not know about frames, streams, keys or sockets: a :class:`SentPacket`
carries the session's frame records as an opaque list, and the session
retransmits frame *content* when packets are lost (packet numbers are never
reused). Time is always the caller's ``now``.

Rules the session relies on:

1. Every ack-eliciting packet is given to :meth:`LossRecovery.on_packet_sent`
   with strictly increasing packet numbers. ACK-only packets need not be;
   the peer may acknowledge them, which is accepted.
2. A packet may be reported lost and later appear in the acked list (a
   spurious loss, flagged by ``SentPacket.declared_lost``). Frame handlers must
   be idempotent; an early ACK of requeued content simply cancels the resend.
3. :meth:`LossRecovery.loss_detection_deadline` is pure; the session arms a
   timer at it and calls :meth:`LossRecovery.on_loss_detection_timeout`, which
   works out for itself what is due (harmless when early).
4. On a reliable path (WebSocket) nothing is ever declared lost, no probe is
   ever requested and congestion control is bypassed; ACKs still flow for
   ``MessageDelivered`` and RTT.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .ack_tracker import AckTracker
from .congestion import CongestionController
from .ranges import RangeSet
from .rtt import K_GRANULARITY, RttEstimator

__all__ = [
    "K_GRANULARITY",
    "K_PACKET_THRESHOLD",
    "K_TIME_THRESHOLD",
    "AckTracker",
    "LossRecovery",
    "RttEstimator",
    "SentPacket",
]

K_PACKET_THRESHOLD = 3
"""RFC 9002 §6.1.1: a packet is lost once a packet this many numbers later is acked."""
K_TIME_THRESHOLD = 9.0 / 8.0
"""RFC 9002 §6.1.2: ... or once it is older than 9/8 of an RTT at an ACK."""
MAX_PACKET_THRESHOLD = 16
"""Ceiling of the adaptive packet threshold (reordering tolerance in packets)."""
MAX_TIME_THRESHOLD = 2.0
"""Ceiling of the adaptive time threshold (reordering tolerance in RTTs)."""
TIME_THRESHOLD_STEP = 1.0 / 8.0
"""How much the time threshold grows each time reordering fooled it."""
K_PERSISTENT_CONGESTION_THRESHOLD = 3
"""RFC 9002 §7.6.1: persistent congestion spans this many PTOs."""
K_NACK_REORDER_FRACTION = 1.0 / 8.0
"""A NACKed packet must have been sent this fraction of srtt before the largest
acked one: a smaller gap could still be reordering, not loss."""
MAX_PTO_BACKOFF_EXPONENT = 16
"""The PTO doubles at most this many times (far beyond any idle timeout)."""
ACKED_MAX_RANGES = 256
"""Ranges of acknowledged packet numbers the sender remembers."""
LOST_MEMORY_PACKETS = 1024
"""Declared-lost packets remembered so that a late ACK is recognised as spurious."""


@dataclass(slots=True)
class SentPacket:
    """A packet the session sent, as loss recovery sees it."""

    packet_number: int
    """The packet number (strictly increasing per session)."""
    sent_time: float
    """``now`` when the packet was sent."""
    size: int
    """Bytes on the wire, counted against the congestion window when in flight."""
    ack_eliciting: bool
    """True if the packet carries frames the peer must acknowledge."""
    in_flight: bool
    """True if the packet counts toward ``bytes_in_flight`` (ack-eliciting or padding)."""
    frames: list[Any]
    """The session's records of what the packet carried; opaque here."""
    declared_lost: bool = False
    """Set when recovery declared the packet lost; if it shows up acked later
    the loss was spurious."""
    window_limited: bool = True
    """Whether the packet belonged to a flight the congestion window limited:
    some packet sent at or after it, before its ACK, found the window (nearly)
    full (:meth:`~stt_core.congestion.CongestionController.is_window_limited`).
    :meth:`LossRecovery.on_ack_received` sets it before the controller sees
    the ACK; only acknowledgements of such packets grow the window (RFC 9002 §7.8)."""

    def __init__(self, packet_number: int, sent_time: float, size: int, ack_eliciting: bool,
                 in_flight: bool, frames: list[Any], declared_lost: bool = False,
                 window_limited: bool = True) -> None:
        # Written out rather than generated (one is made per packet sent): the
        # compiled core then builds it natively; see docs/performance.md.
        self.packet_number = packet_number
        self.sent_time = sent_time
        self.size = size
        self.ack_eliciting = ack_eliciting
        self.in_flight = in_flight
        self.frames = frames
        self.declared_lost = declared_lost
        self.window_limited = window_limited


class LossRecovery:
    """Sender-side loss recovery for one session on one path.

    Args:
        congestion: the controller this instance drives (not used on a
            reliable path).
        initial_rtt: RTT assumed before the first sample, seconds.
        max_ack_delay: the longest the peer holds an ACK, seconds.
        reliable_path: True on an already reliable, ordered transport
            (WebSocket): no loss, no probes, no congestion control.

    Raises:
        ValueError: a negative or zero time parameter.
    """

    __slots__ = (
        "_ack_eliciting_in_flight",
        "_acked",
        "_first_rtt_sample_time",
        "_largest_acked_sent_time",
        "_largest_sent",
        "_last_ack_eliciting_time",
        "_loss_time",
        "_lost",
        "_sent",
        "_window_limited_through",
        "bytes_in_flight",
        "congestion",
        "largest_acked",
        "packet_threshold",
        "packets_lost",
        "pto_count",
        "pto_count_total",
        "reliable_path",
        "rtt",
        "spurious_losses",
        "time_threshold",
    )

    def __init__(
        self,
        *,
        congestion: CongestionController,
        initial_rtt: float = 0.1,
        max_ack_delay: float = 0.025,
        reliable_path: bool = False,
    ) -> None:
        self.congestion = congestion
        self.rtt = RttEstimator(initial_rtt, max_ack_delay)
        self.reliable_path = reliable_path
        self.bytes_in_flight = 0
        """Bytes of in-flight packets neither acked, lost nor discarded."""
        self.largest_acked: int | None = None
        """Largest packet number the peer acknowledged so far."""
        self.pto_count = 0
        """Consecutive PTOs without an ACK (the backoff exponent)."""
        self.packets_lost = 0
        """Packets declared lost, spurious ones included."""
        self.spurious_losses = 0
        """Packets declared lost and acknowledged afterwards."""
        self.pto_count_total = 0
        """PTOs fired over the lifetime."""
        self.packet_threshold = K_PACKET_THRESHOLD
        """Current packet reordering threshold; grows after spurious losses."""
        self.time_threshold = K_TIME_THRESHOLD
        """Current time threshold in RTTs; grows after spurious losses."""
        # Outstanding packets by number; insertion order is ascending order.
        self._sent: dict[int, SentPacket] = {}
        # Recently declared lost, kept to recognise spurious losses.
        self._lost: dict[int, SentPacket] = {}
        # Everything the peer acknowledged. Capped: a packet below its floor
        # can no longer be seen acked (it is eventually declared lost), so the
        # cap is generous; the lowest ranges border old losses, not live packets.
        self._acked = RangeSet(ACKED_MAX_RANGES)
        self._largest_sent = -1
        # The last packet whose sending found the congestion window (nearly)
        # full: it and every packet sent before it, acknowledged from now on,
        # belonged to a window-limited flight (RFC 9002 §7.8). Marking the whole
        # flight, not only the packets sent near the top of the window, matters
        # because a window is often sent from empty in one burst (the first
        # flight, or the refill after an ACK covering a whole receive batch).
        self._window_limited_through = -1
        self._ack_eliciting_in_flight = 0
        self._last_ack_eliciting_time: float | None = None
        self._largest_acked_sent_time: float | None = None
        self._loss_time: float | None = None
        self._first_rtt_sample_time: float | None = None

    # -- queries ---------------------------------------------------------

    @property
    def ack_eliciting_in_flight(self) -> int:
        """Outstanding ack-eliciting packets (the PTO is armed while > 0)."""
        return self._ack_eliciting_in_flight

    @property
    def outstanding(self) -> int:
        """Packets sent and neither acked, lost nor discarded."""
        return len(self._sent)

    def can_send(self, size: int | None = None) -> bool:
        """May a packet of ``size`` bytes (default: a full datagram) go now?

        Always True on a reliable path. PTO probes are sent regardless.
        """
        return self.reliable_path or self.congestion.can_send(self.bytes_in_flight, size)

    def next_send_time(self, now: float, size: int | None = None) -> float:
        """The pacer's earliest send time (``now`` on a reliable path). Pure."""
        if self.reliable_path:
            return now
        return self.congestion.next_send_time(now, size)

    def pto_interval(self) -> float:
        """The current probe timeout: ``pto_base() * 2**pto_count`` seconds."""
        return self.rtt.pto_base() * (1 << min(self.pto_count, MAX_PTO_BACKOFF_EXPONENT))

    def _pto_deadline(self) -> float | None:
        if self._ack_eliciting_in_flight == 0 or self._last_ack_eliciting_time is None:
            return None
        return self._last_ack_eliciting_time + self.pto_interval()

    def loss_detection_deadline(self) -> float | None:
        """When :meth:`on_loss_detection_timeout` has work: a time-threshold
        loss or the PTO, whichever is earlier. None when nothing ack-eliciting
        is outstanding, and always on a reliable path. Pure.
        """
        if self.reliable_path:
            return None
        pto = self._pto_deadline()
        if self._loss_time is None:
            return pto
        return self._loss_time if pto is None else min(self._loss_time, pto)

    # -- events ----------------------------------------------------------

    def on_packet_sent(self, packet: SentPacket) -> None:
        """Record a sent packet. Call it for every ack-eliciting packet.

        Raises:
            ValueError: the packet number does not exceed every earlier one.
        """
        pn = packet.packet_number
        if pn <= self._largest_sent:
            raise ValueError(f"packet number {pn} sent after {self._largest_sent}")
        self._largest_sent = pn
        self._sent[pn] = packet
        if packet.in_flight:
            self.bytes_in_flight += packet.size
            if not self.reliable_path:
                congestion = self.congestion
                if congestion.is_window_limited(self.bytes_in_flight):
                    self._window_limited_through = pn
                congestion.on_packet_sent(packet.size, packet.sent_time)
        if packet.ack_eliciting:
            self._ack_eliciting_in_flight += 1
            self._last_ack_eliciting_time = packet.sent_time

    def on_handshake_rtt(self, sample: float, now: float) -> None:
        """A handshake message's round trip: the session's first RTT sample.

        As QUIC's handshake does (RFC 9002 §5), it gives ``min_rtt`` a value
        no delayed ACK inflated. The reply's own processing time is part of
        the sample (a fraction of a millisecond), as it is in QUIC's.
        """
        self.rtt.update(sample, 0.0)
        if self._first_rtt_sample_time is None:
            self._first_rtt_sample_time = now

    def on_ack_received(
        self, ack_ranges: Iterable[range], ack_delay: float, now: float
    ) -> tuple[list[SentPacket], list[SentPacket]]:
        """Process an ACK frame (RFC 9002 §A.7).

        Args:
            ack_ranges: acknowledged packet numbers, in any order.
            ack_delay: the delay the peer reports, seconds.
            now: the current time.

        Returns:
            ``(newly_acked, newly_lost)``, each in ascending packet number
            order. ``newly_acked`` includes packets earlier declared lost
            (``declared_lost`` is True on those). The session releases the
            frames of the first list and requeues those of the second.

        Raises:
            ValueError: a range with a negative start or a step other than 1.
        """
        largest, fresh = self._new_ranges(ack_ranges)
        if largest < 0:
            return [], []
        acked = _take(self._sent, fresh)
        spurious = _take(self._lost, fresh)
        # Packets the session does not track (ACK-only ones) can raise the
        # largest acked without acking anything here; that still advances
        # packet-threshold loss detection.
        advanced = self.largest_acked is None or largest > self.largest_acked
        if advanced:
            self.largest_acked = largest
        if not acked and not spurious and not advanced:
            return [], []
        for packet in acked:
            self._forget(packet)
        if acked and acked[-1].packet_number == largest:
            self._on_largest_newly_acked(acked, ack_delay, now)
        self.pto_count = 0
        lost: list[SentPacket] = []
        if not self.reliable_path:
            lost = self._detect_lost(now)
            self._report_lost(lost, now)
            if spurious:
                self.congestion.on_spurious_loss(spurious, now)
            through = self._window_limited_through
            for packet in acked:
                packet.window_limited = packet.packet_number <= through
            self.congestion.on_packets_acked(acked, now, self.rtt)
        if spurious:
            self.spurious_losses += len(spurious)
            self._adapt_to_reordering(spurious)
            acked = sorted(acked + spurious, key=_packet_number)
        return acked, lost

    def on_nack(self, packet_numbers: Iterable[int], now: float) -> list[SentPacket]:
        """The peer reports holes: declare those packets lost now (fast repair).

        Only packets older than the largest acked one, sent at least
        ``srtt / 8`` before it, qualify: anything younger might merely be
        reordered, and a NACK must never make us drop a packet still
        legitimately in flight. Process the ACK of the same packet first.
        The congestion controller sees the losses; it reduces its window at
        most once per recovery period.

        Returns:
            The packets newly declared lost, ascending; requeue their frames.
        """
        if self.reliable_path or self.largest_acked is None:
            return []
        reference = self._largest_acked_sent_time
        if reference is None:
            return []
        cutoff = reference - max(K_NACK_REORDER_FRACTION * self.rtt.smoothed_rtt, K_GRANULARITY)
        largest_acked = self.largest_acked
        lost: list[SentPacket] = []
        for pn in packet_numbers:
            packet = self._sent.get(pn)
            if packet is None or pn >= largest_acked or packet.sent_time > cutoff:
                continue
            self._declare_lost(packet)
            lost.append(packet)
        lost.sort(key=_packet_number)
        self._report_lost(lost, now)
        return lost

    def on_loss_detection_timeout(self, now: float) -> tuple[list[SentPacket], int]:
        """Do whatever is due at ``now`` (RFC 9002 §A.9).

        Returns:
            ``(lost, probes)``: packets lost by the time threshold (requeue
            their frames), or, when the PTO expired, the number of probe
            packets (1 or 2) to send now even if the window is full. The
            probes should carry new or requeued data, else a KEEP_ALIVE.
            ``([], 0)`` when nothing is due yet or on a reliable path.
        """
        if self.reliable_path:
            return [], 0
        if self._loss_time is not None and now >= self._loss_time:
            lost = self._detect_lost(now)
            if lost:
                self._report_lost(lost, now)
                return lost, 0
        deadline = self._pto_deadline()
        if deadline is None or now < deadline:
            return [], 0
        self.pto_count += 1
        self.pto_count_total += 1
        # Two probes guard against the loss of one (§6.2.4), unless a single
        # packet is outstanding: one copy of its content covers everything.
        return [], 2 if self._ack_eliciting_in_flight > 1 else 1

    def discard_all(self) -> list[SentPacket]:
        """Forget every outstanding packet (path change, close).

        Returns:
            The discarded packets, ascending, so their frames can be requeued.
            They are not counted as lost and the congestion controller is not
            told: on a path change the session builds a fresh one.
        """
        packets = list(self._sent.values())
        self._sent.clear()
        self._lost.clear()
        self.bytes_in_flight = 0
        self._ack_eliciting_in_flight = 0
        self._last_ack_eliciting_time = None
        self._loss_time = None
        self.pto_count = 0
        return packets

    def compact(self) -> None:
        """Give back the packet tables' memory while they are empty.

        A dict keeps its grown table after its last entry goes, so an idle
        session that once had packets in flight would hold it for good. Called
        by the session when it has been quiet, never per packet.
        """
        if not self._sent:
            self._sent = {}
        if not self._lost:
            self._lost = {}

    # -- internals -------------------------------------------------------

    def _new_ranges(self, ack_ranges: Iterable[range]) -> tuple[int, list[range]]:
        """Validate an ACK's ranges; return its largest number and what is new.

        Peers repeat old ranges in every ACK, so ranges already known are
        skipped with one bisection each and only new parts are looked up:
        the cost per ACK stays near O(ranges + newly acked packets). The new
        parts are recorded as acknowledged. ``largest`` is -1 for an ACK
        without any (non-empty) range.

        Numbers above every tracked packet are accepted: the session does not
        report ACK-only packets, and the peer acknowledges those too. (A peer
        acknowledging packets it never got only hurts its own transfer.)

        Raises:
            ValueError: a range with a negative start or a step other than 1
                (the frame decoder never produces one).
        """
        known = self._acked
        largest = -1
        fresh: list[range] = []
        for r in ack_ranges:
            start, stop = r.start, r.stop
            if r.step != 1 or start < 0:
                raise ValueError(f"ACK ranges must be non-negative with step 1, not {r!r}")
            if start >= stop:
                continue
            if stop - 1 > largest:
                largest = stop - 1
            if not known.covers(start, stop):
                fresh.extend(known.difference(start, stop))
        for part in fresh:
            known.add(part.start, part.stop)
        return largest, fresh

    def _on_largest_newly_acked(
        self, acked: list[SentPacket], ack_delay: float, now: float
    ) -> None:
        """RFC 9002 §5.1: take an RTT sample if anything newly acked was ack-eliciting."""
        largest = acked[-1]
        self._largest_acked_sent_time = largest.sent_time
        if any(p.ack_eliciting for p in acked):
            self.rtt.update(now - largest.sent_time, ack_delay)
            if self._first_rtt_sample_time is None:
                self._first_rtt_sample_time = now

    def _forget(self, packet: SentPacket) -> None:
        """Take an acked or lost packet out of the in-flight accounting."""
        if packet.in_flight:
            self.bytes_in_flight -= packet.size
        if packet.ack_eliciting:
            self._ack_eliciting_in_flight -= 1

    def _declare_lost(self, packet: SentPacket) -> None:
        del self._sent[packet.packet_number]
        self._forget(packet)
        packet.declared_lost = True
        self.packets_lost += 1
        lost = self._lost
        lost[packet.packet_number] = packet
        if len(lost) > LOST_MEMORY_PACKETS:
            del lost[next(iter(lost))]

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RFC 9002 §6.1: declare lost what the packet or time threshold says.

        Also recomputes the time-threshold deadline for the packets below the
        largest acked that are not lost yet. The comparison uses the same
        expression as the deadline, so a timer fired at exactly that deadline
        always finds its packet lost (no spinning on float rounding).
        """
        self._loss_time = None
        largest_acked = self.largest_acked
        if largest_acked is None:
            return []
        rtt = self.rtt
        loss_delay = max(self.time_threshold * max(rtt.latest_rtt, rtt.smoothed_rtt), K_GRANULARITY)
        packet_threshold = self.packet_threshold
        lost: list[SentPacket] = []
        loss_time: float | None = None
        for pn, packet in self._sent.items():
            if pn > largest_acked:
                break
            deadline = packet.sent_time + loss_delay
            if deadline <= now or largest_acked >= pn + packet_threshold:
                lost.append(packet)
            elif loss_time is None or deadline < loss_time:
                loss_time = deadline
        self._loss_time = loss_time
        for packet in lost:
            self._declare_lost(packet)
        return lost

    def _adapt_to_reordering(self, spurious: list[SentPacket]) -> None:
        """Losses that were only reordering: tolerate more of it from now on.

        RFC 9002 §6.1 lets a sender raise both thresholds after spurious
        losses. The packet threshold grows to the reordering depth just seen
        (how far the largest acked has moved past the late packet), the time
        threshold by 1/8 RTT per ACK revealing spurious losses; both are
        capped so that real losses are still found within about two RTTs.
        They never shrink back: a new path starts a new LossRecovery.
        """
        largest_acked = self.largest_acked if self.largest_acked is not None else 0
        depth = largest_acked - spurious[0].packet_number + 1
        self.packet_threshold = min(max(self.packet_threshold, depth), MAX_PACKET_THRESHOLD)
        self.time_threshold = min(self.time_threshold + TIME_THRESHOLD_STEP, MAX_TIME_THRESHOLD)

    def _report_lost(self, lost: list[SentPacket], now: float) -> None:
        """Tell the congestion controller, including persistent congestion."""
        if not lost:
            return
        self.congestion.on_packets_lost(lost, now)
        if self._is_persistent_congestion(lost):
            self.congestion.on_persistent_congestion(now)

    def _is_persistent_congestion(self, lost: list[SentPacket]) -> bool:
        """RFC 9002 §7.6: two ack-eliciting losses further apart than 3 PTOs,
        with nothing acked in between, all sent after the first RTT sample.

        Simplification: only packets lost in the same batch are considered,
        which can miss persistent congestion but never invents it.
        """
        first_sample = self._first_rtt_sample_time
        if first_sample is None:
            return False
        duration = self.rtt.pto_base() * K_PERSISTENT_CONGESTION_THRESHOLD
        start: SentPacket | None = None
        previous: SentPacket | None = None
        for packet in lost:
            if not packet.ack_eliciting or packet.sent_time <= first_sample:
                continue
            if start is None or previous is None or self._acked.intersects(
                previous.packet_number + 1, packet.packet_number
            ):
                start = packet
            elif packet.sent_time - start.sent_time > duration:
                return True
            previous = packet
        return False


def _packet_number(packet: SentPacket) -> int:
    return packet.packet_number


def _take(store: dict[int, SentPacket], ranges: list[range]) -> list[SentPacket]:
    """Pop every packet whose number lies in ``ranges``, ascending.

    Each range costs O(min(len(range), len(store))): a huge range from the
    peer is matched against the (bounded) store instead of being walked.
    """
    taken: list[SentPacket] = []
    for r in ranges:
        if not store:
            break
        if len(r) <= len(store):
            for pn in r:
                packet = store.pop(pn, None)
                if packet is not None:
                    taken.append(packet)
        else:
            for pn in [pn for pn in store if pn in r]:
                taken.append(store.pop(pn))
    taken.sort(key=_packet_number)
    return taken

