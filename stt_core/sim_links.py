"""Simulator links: the vocabulary of the network simulator's links.

Owns the records that describe a link direction (``LinkConfig``), what
happened on it (``LinkStats``, ``DropCause``, ``TraceRecord``), partitions,
and the small mutable per-link state the ``Network`` keeps. No scheduling and
no randomness here: ``sim.py`` owns both. Users import these names from
``stt_core.sim``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError
from .events import Address

__all__ = [
    "DropCause",
    "LinkConfig",
    "LinkQueue",
    "LinkState",
    "LinkStats",
    "Partition",
    "TraceRecord",
    "check_probability",
    "check_seconds",
]


class DropCause(enum.Enum):
    """Why the network dropped a datagram; counted in :attr:`LinkStats.dropped`."""

    MTU = "mtu"
    """Larger than the link's ``mtu``."""
    PARTITION = "partition"
    """Sent, or due to arrive, while a partition separated the two addresses."""
    QUEUE = "queue"
    """Tail drop: the link's serialization queue was full."""
    LOSS = "loss"
    """Random loss (``loss``, or ``loss_in_bad`` counts as BURST_LOSS)."""
    BURST_LOSS = "burst_loss"
    """Lost while the Gilbert-Elliott model was in its bad state."""
    NO_ROUTE = "no_route"
    """No node owns the destination address when the datagram arrives."""


def check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], not {value!r}")


def check_seconds(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """Behaviour of one direction of a link. The defaults are a perfect 10 ms link.

    Order in which a datagram meets the impairments: MTU check, partition,
    bandwidth queue (tail drop), loss (a lost datagram has still used its
    serialization time), corruption, then delay + jitter + reordering for the
    datagram and, independently, for a duplicate copy.
    """

    delay: float = 0.010
    """One-way propagation delay in seconds: the minimum latency of the link."""
    jitter: float = 0.0
    """Extra random delay per datagram in seconds (see ``jitter_distribution``)."""
    jitter_distribution: Literal["uniform", "exponential"] = "uniform"
    """``uniform``: extra delay uniform in [0, jitter]; ``exponential``: mean ``jitter``."""
    preserve_order: bool = False
    """When True jitter never lets a datagram overtake an earlier one on this
    link direction (``reorder`` still applies). When False jitter reorders."""
    bandwidth_bps: float | None = None
    """Serialization rate in bits per second; None means infinitely fast."""
    queue_bytes: int | None = None
    """Bytes that may wait to be serialized (including the datagram on the
    wire); beyond it datagrams are tail-dropped. None: unlimited. Needs
    ``bandwidth_bps``."""
    loss: float = 0.0
    """Probability that a datagram is lost (in the good state of the burst model)."""
    p_good_to_bad: float = 0.0
    """Gilbert-Elliott: per-datagram probability of entering the bad state (0 disables)."""
    p_bad_to_good: float = 1.0
    """Gilbert-Elliott: per-datagram probability of leaving the bad state."""
    loss_in_bad: float = 1.0
    """Gilbert-Elliott: loss probability while in the bad state (replaces ``loss``)."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice."""
    reorder: float = 0.0
    """Probability that a datagram is held back an extra ``reorder_delay``."""
    reorder_delay: float = 0.020
    """Seconds a reordered datagram is held back."""
    corrupt: float = 0.0
    """Probability that 1-3 distinct random bits of a datagram are flipped."""
    mtu: int | None = None
    """Largest datagram in bytes the link carries; larger ones are dropped. None: no limit."""

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "reorder_delay"):
            check_seconds(name, getattr(self, name))
        if self.jitter_distribution not in ("uniform", "exponential"):
            raise ConfigError("jitter_distribution must be 'uniform' or 'exponential', "
                              f"not {self.jitter_distribution!r}")
        for name in ("loss", "p_good_to_bad", "p_bad_to_good", "loss_in_bad",
                     "duplicate", "reorder", "corrupt"):
            check_probability(name, getattr(self, name))
        bandwidth = self.bandwidth_bps
        if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ConfigError(f"bandwidth_bps must be None or > 0, not {bandwidth!r}")
        if self.queue_bytes is not None:
            if bandwidth is None:
                raise ConfigError("queue_bytes needs bandwidth_bps (an infinitely fast "
                                  "link never queues)")
            if self.queue_bytes < 1:
                raise ConfigError(f"queue_bytes must be >= 1, not {self.queue_bytes!r}")
        if self.mtu is not None and self.mtu < 1:
            raise ConfigError(f"mtu must be None or >= 1, not {self.mtu!r}")

    @property
    def is_perfect(self) -> bool:
        """True when only ``delay`` applies (the simulator then takes a fast path)."""
        return (self.jitter == 0.0 and self.bandwidth_bps is None and self.mtu is None
                and self.loss == 0.0 and self.p_good_to_bad == 0.0 and self.duplicate == 0.0
                and self.reorder == 0.0 and self.corrupt == 0.0)


@dataclass(slots=True)
class LinkStats:
    """Counters of one link direction (or, from :meth:`Network.stats`, of all links).

    ``delivered`` can exceed ``sent`` when datagrams are duplicated.
    """

    sent: int = 0
    """Datagrams handed to the link."""
    delivered: int = 0
    """Datagrams handed to the destination endpoint (duplicates included)."""
    bytes_sent: int = 0
    """Bytes handed to the link."""
    bytes_delivered: int = 0
    """Bytes handed to destination endpoints."""
    duplicated: int = 0
    """Extra copies created."""
    corrupted: int = 0
    """Datagrams whose bits were flipped."""
    reordered: int = 0
    """Datagrams (or copies) held back by ``reorder``."""
    dropped: dict[DropCause, int] = field(default_factory=dict)
    """Datagrams dropped, by cause."""

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the cause."""
        return sum(self.dropped.values())

    def add(self, other: LinkStats) -> None:
        """Add ``other``'s counters into this one (for totals)."""
        self.sent += other.sent
        self.delivered += other.delivered
        self.bytes_sent += other.bytes_sent
        self.bytes_delivered += other.bytes_delivered
        self.duplicated += other.duplicated
        self.corrupted += other.corrupted
        self.reordered += other.reordered
        for cause, count in other.dropped.items():
            self.dropped[cause] = self.dropped.get(cause, 0) + count


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One thing that happened in the network, handed to the ``tracer`` callback.

    ``time`` is virtual; ``src``, ``dst`` and ``size`` (bytes) describe the
    datagram of a send, deliver or drop; ``cause`` says why it was dropped;
    ``node`` names the node whose timer fired.
    """

    time: float
    kind: Literal["send", "deliver", "drop", "timer"]
    src: Address | None = None
    dst: Address | None = None
    size: int = 0
    cause: DropCause | None = None
    node: str | None = None


@dataclass(slots=True)
class Partition:
    """Two groups of addresses that cannot talk from ``start`` (inclusive) to ``end``.

    Returned by :meth:`Network.partition`; pass it to :meth:`Network.heal` to
    end it early. Addresses are matched as given: a node that rebinds to a new
    address escapes a partition that named only its old one.
    """

    group_a: frozenset[Address]
    group_b: frozenset[Address]
    start: float
    end: float

    def separates(self, src: Address, dst: Address, time: float) -> bool:
        """True when a datagram from ``src`` to ``dst`` at ``time`` is blocked."""
        if not self.start <= time < self.end:
            return False
        a, b = self.group_a, self.group_b
        return (src in a and dst in b) or (src in b and dst in a)


@dataclass(slots=True)
class LinkQueue:
    """A serialization queue: free again at ``busy_until``."""

    bandwidth_bps: float | None
    queue_bytes: int | None
    busy_until: float = -math.inf


@dataclass(slots=True)
class LinkState:
    """State of one link direction ``src -> dst``."""

    config: LinkConfig
    queue: LinkQueue
    perfect: bool
    explicit: bool
    stats: LinkStats = field(default_factory=LinkStats)
    bad: bool = False
    last_arrival: float = -math.inf
