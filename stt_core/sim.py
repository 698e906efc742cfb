"""Deterministic discrete-event network simulator for sans-I/O endpoints.

Owns: a virtual clock, one heap of scheduled actions (datagram deliveries,
endpoint timers, user calls), the table of nodes and the addresses they own,
and the links between addresses with their impairments (delay, jitter,
bandwidth and queue, random and burst loss, duplication, reordering,
corruption, MTU, partitions) and counters.

Must not know: anything about STT itself. It moves opaque bytes between opaque
addresses and drives any object that has the five pump methods of
:class:`SimEndpoint`. It never reads a wall clock and never touches the global
``random`` module: all randomness comes from one ``random.Random(seed)`` owned
by the :class:`Network` (the one place in ``stt_core`` allowed to create one),
so a run is exactly reproducible from its seed. See ``docs/simulator.md``.

Scheduling is a heap of ``(time, seq, kind, a, b, c, d)`` tuples; ``seq`` is a
counter that breaks ties in insertion order, so two actions due at the same
virtual instant always run in the same order. Timers are re-armed lazily: a
node keeps the sequence number of its live timer entry, and entries with an
older number are skipped when they surface (cheaper than deleting from a heap).

The link vocabulary (``LinkConfig``, ``LinkStats``, ``DropCause``,
``Partition``, ``TraceRecord`` and the per-link state) lives in
``sim_links.py``; it is re-exported here, the public home of the simulator.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import math
import random
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import ConfigError, LocalError
from .events import Address, Event
from .sim_links import (
    DropCause,
    LinkConfig,
    LinkQueue,
    LinkState,
    LinkStats,
    Partition,
    TraceRecord,
    check_seconds,
)

__all__ = [
    "DropCause",
    "LinkConfig",
    "LinkStats",
    "Network",
    "Partition",
    "SimEndpoint",
    "SimulationError",
    "TraceRecord",
]

T = TypeVar("T")

_DELIVER = 0
_TIMER = 1
_CALL = 2
_DIGEST_HEADER = struct.Struct("<dQQ")
_QUEUE_SLACK_BYTES = 1e-6
"""Float noise tolerated when comparing a queue's backlog with its limit."""


class SimEndpoint(Protocol):
    """What the simulator drives: the pump half of ``stt_core.Endpoint``.

    Any object with these methods can be a node, which is how tests use small
    fake endpoints and how users embed their own sans-I/O state machines.
    """

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram that arrived from ``addr``."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return the datagrams due now as ``(datagram, destination)``."""
        ...

    def next_timer(self) -> float | None:
        """Return the absolute deadline of the next timer, or None; must be pure."""
        ...

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``; harmless when early."""

    def next_event(self) -> Event | None:
        """Return the next pending event, or None."""
        ...


class SimulationError(LocalError):
    """The simulator was misused, or an endpoint spun its timer in place."""


@dataclass(slots=True, eq=False)
class _Node:
    """A named endpoint, its addresses and its pump state."""

    name: str
    endpoint: SimEndpoint
    addresses: list[Address]
    events: list[Event] | None
    callbacks: list[Callable[[Event], None]] = field(default_factory=list)
    taps: list[Callable[[bytes, Address], None]] = field(default_factory=list)
    routes: dict[Address, Address] = field(default_factory=dict)
    """Destination -> local source address to send from (see Network docs)."""
    timer_deadline: float | None = None
    timer_seq: int = -1
    fire_time: float = math.nan
    fire_count: int = 0


Tracer = Callable[[TraceRecord], None]
Action = tuple[float, int, int, Any, Any, Any, Any]


class Network:
    """A deterministic network of nodes, driven in virtual time.

    Args:
        seed: seeds the network's only random generator; the same seed and
            the same inputs give exactly the same run.
        default_link: the :class:`LinkConfig` of every link direction not set
            with :meth:`set_link` (default: a perfect 10 ms link).
        start_time: the virtual clock's initial value in seconds.
        tracer: optional callback receiving a :class:`TraceRecord` for every
            send, delivery, drop and timer firing (for debugging; it costs time).

    The pump: after any input to an endpoint (delivery, timer, :meth:`call`,
    :meth:`flush`) the network drains its events, then its datagrams (repeating
    while callbacks produce events), then re-arms its single timer.

    Source addresses: a datagram to ``dst`` leaves from the local address that
    most recently received from ``dst`` (or that :meth:`set_route` chose,
    whichever came last), else from the node's primary (first) address.
    """

    MAX_TIMER_FIRINGS_PER_INSTANT = 1000
    """A node whose timer fires this often without virtual time moving is
    spinning (its ``handle_timer`` does not clear what ``next_timer`` reports):
    the run stops with :class:`SimulationError` instead of hanging."""

    def __init__(self, seed: int, *, default_link: LinkConfig | None = None,
                 start_time: float = 0.0, tracer: Tracer | None = None) -> None:
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, not {type(seed).__name__}")
        check_seconds("start_time", start_time)
        self._seed = seed
        self._rng = random.Random(seed)
        self._now = float(start_time)
        self._heap: list[Action] = []
        self._seq = 0
        self._running = False
        self._nodes: dict[str, _Node] = {}
        self._owner: dict[Address, tuple[_Node, Address]] = {}
        self._address_ids: dict[Address, int] = {}
        self._links: dict[tuple[Address, Address], LinkState] = {}
        self._queues: dict[str, LinkQueue] = {}
        self._default = default_link if default_link is not None else LinkConfig()
        self._partitions: list[Partition] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self._tracer = tracer

    def __repr__(self) -> str:
        return f"<Network seed={self._seed} now={self._now!r} nodes={list(self._nodes)}>"

    # -- clock, seed, randomness ------------------------------------------------

    @property
    def now(self) -> float:
        """The virtual time in seconds."""
        return self._now

    @property
    def seed(self) -> int:
        """The seed this network was created with (print it when a test fails)."""
        return self._seed

    def random_bytes_for(self, label: str) -> Callable[[int], bytes]:
        """A deterministic ``random_bytes(n)`` for an endpoint, derived from the seed.

        Each label gets its own stream, so adding a node or changing how much
        randomness one endpoint uses does not shift the link impairments.
        """
        return random.Random(f"stt-sim:{self._seed}:{label}").randbytes

    # -- nodes and addresses -----------------------------------------------------

    def add_node(self, name: str, endpoint: SimEndpoint, addresses: Sequence[Address], *,
                 collect_events: bool = True) -> None:
        """Attach ``endpoint`` as node ``name`` owning ``addresses`` (the first is primary).

        The node is flushed at once, so datagrams and a timer the endpoint
        already has (say, from a ``connect`` issued before) take effect now.
        With ``collect_events=False`` events go only to ``on_event`` callbacks,
        which keeps memory flat in long sweeps.

        Raises:
            SimulationError: the name is taken, no address is given, or an
                address belongs to another node.
        """
        if name in self._nodes:
            raise SimulationError(f"a node named {name!r} already exists")
        addrs = list(addresses)
        if not addrs:
            raise SimulationError("a node needs at least one address")
        for addr in addrs:
            if addr in self._owner or addrs.count(addr) > 1:
                raise SimulationError(f"address {addr!r} is already in use")
        node = _Node(name, endpoint, addrs, [] if collect_events else None)
        self._nodes[name] = node
        for addr in addrs:
            self._owner[addr] = (node, addr)
            self._address_id(addr)
        self._pump(node)

    def endpoint(self, name: str) -> SimEndpoint:
        """The endpoint of node ``name``."""
        return self._node(name).endpoint

    def address(self, name: str) -> Address:
        """The primary address of node ``name`` (where it sends from by default)."""
        return self._node(name).addresses[0]

    def addresses(self, name: str) -> list[Address]:
        """Every address node ``name`` owns, primary first."""
        return list(self._node(name).addresses)

    def rebind(self, name: str, old: Address, new: Address, *, keep_old: bool = False) -> None:
        """Move node ``name`` from address ``old`` to ``new`` (NAT rebinding, migration).

        From now on every datagram the node would have sent from ``old`` leaves
        from ``new``. Datagrams addressed to ``old``, including those already in
        flight, are dropped as ``NO_ROUTE`` unless ``keep_old`` is True, in which
        case they are still delivered, as if they had arrived at ``new`` (an old
        NAT mapping that has not expired yet).

        Raises:
            SimulationError: ``old`` is not the node's, or ``new`` is another node's.
        """
        node = self._node(name)
        if old == new:
            raise SimulationError("rebind needs a new address different from the old one")
        if old not in node.addresses:
            raise SimulationError(f"{old!r} is not an address of node {name!r}")
        owner = self._owner.get(new)
        if owner is not None and owner[0] is not node:
            raise SimulationError(f"address {new!r} belongs to node {owner[0].name!r}")
        if new in node.addresses:
            node.addresses.remove(old)
        else:
            node.addresses[node.addresses.index(old)] = new
        for addr, (owner_node, local) in list(self._owner.items()):
            if owner_node is node and local == old:
                self._owner[addr] = (node, new)
        self._owner[new] = (node, new)
        if not keep_old:
            del self._owner[old]
        for dst, src in node.routes.items():
            if src == old:
                node.routes[dst] = new
        self._address_id(new)

    def set_route(self, name: str, dst: Address, src: Address) -> None:
        """Make node ``name`` send datagrams for ``dst`` from its address ``src``.

        A later datagram from ``dst`` arriving at another of the node's
        addresses replaces this choice (see the class docstring).
        """
        node = self._node(name)
        if src not in node.addresses:
            raise SimulationError(f"{src!r} is not an address of node {name!r}")
        node.routes[dst] = src

    # -- events --------------------------------------------------------------

    def on_event(self, name: str, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every event node ``name`` produces, in order.

        Callbacks run inside the pump; a command they issue on the same node's
        endpoint is flushed by that pump. To command another node, use
        :meth:`call` (which flushes it).
        """
        self._node(name).callbacks.append(callback)

    def on_deliver(self, name: str, callback: Callable[[bytes, Address], None]) -> None:
        """Call ``callback(datagram, source)`` for every datagram delivered to node
        ``name``, just before its endpoint receives it: a packet capture, for
        tests that replay or inspect what crossed the network."""
        self._node(name).taps.append(callback)

    def events(self, name: str) -> list[Event]:
        """The events node ``name`` produced so far (the live list: clearing it is fine).

        Raises:
            SimulationError: the node was added with ``collect_events=False``.
        """
        events = self._node(name).events
        if events is None:
            raise SimulationError(f"node {name!r} does not collect events")
        return events

    # -- links -----------------------------------------------------------------

    def set_link(self, a: Address, b: Address, config: LinkConfig, *,
                 symmetric: bool = True, queue: str | None = None) -> None:
        """Use ``config`` for datagrams from ``a`` to ``b`` (and ``b`` to ``a`` if symmetric).

        Counters and in-flight datagrams are kept, so this can also change a
        link in the middle of a run (from :meth:`call_at`). Link directions
        given the same ``queue`` name share one serialization queue: a
        bottleneck that several senders compete for. They must agree on
        ``bandwidth_bps`` and ``queue_bytes``.

        Raises:
            ConfigError: ``queue`` is named without ``bandwidth_bps``, or
                disagrees with the links already sharing it.
        """
        shared: LinkQueue | None = None
        if queue is not None:
            if config.bandwidth_bps is None:
                raise ConfigError("a shared queue needs bandwidth_bps")
            shared = self._queues.setdefault(
                queue, LinkQueue(config.bandwidth_bps, config.queue_bytes))
            if (shared.bandwidth_bps, shared.queue_bytes) != (config.bandwidth_bps,
                                                              config.queue_bytes):
                raise ConfigError(f"links sharing queue {queue!r} must have the same "
                                  "bandwidth_bps and queue_bytes")
        pairs = [(a, b), (b, a)] if symmetric and a != b else [(a, b)]
        for pair in pairs:
            link = self._links.get(pair)
            if link is None:
                link = self._links[pair] = self._make_link(config, explicit=True)
            link.config, link.perfect, link.explicit = config, config.is_perfect, True
            if shared is not None:
                link.queue = shared
            elif any(link.queue is q for q in self._queues.values()):
                link.queue = LinkQueue(None, None)

    def set_default_link(self, config: LinkConfig) -> None:
        """Use ``config`` for every link direction not set with :meth:`set_link`."""
        self._default = config
        for link in self._links.values():
            if not link.explicit:
                link.config, link.perfect = config, config.is_perfect

    def link_config(self, src: Address, dst: Address) -> LinkConfig:
        """The configuration used for datagrams from ``src`` to ``dst``."""
        link = self._links.get((src, dst))
        return self._default if link is None else link.config

    def partition(self, group_a: Iterable[Address], group_b: Iterable[Address], *,
                  start: float | None = None, end: float = math.inf) -> Partition:
        """Drop every datagram between the two groups from ``start`` (default: now) to ``end``.

        A datagram is dropped if it is sent, or would arrive, inside the window;
        after ``end`` the network heals by itself. Returns a handle for :meth:`heal`.
        """
        begin = self._now if start is None else start
        if not begin <= end:
            raise SimulationError(f"partition start {begin!r} is after its end {end!r}")
        part = Partition(frozenset(group_a), frozenset(group_b), begin, end)
        self._partitions.append(part)
        return part

    def heal(self, partition: Partition) -> None:
        """End ``partition`` now (if it is still active or pending)."""
        partition.end = min(partition.end, self._now)
        partition.start = min(partition.start, partition.end)

    # -- statistics and determinism ------------------------------------------------

    def link_stats(self, src: Address, dst: Address) -> LinkStats:
        """The live counters of the link direction ``src -> dst`` (zeros if unused)."""
        link = self._links.get((src, dst))
        return LinkStats() if link is None else link.stats

    def stats(self) -> LinkStats:
        """Counters summed over every link direction (a fresh object)."""
        total = LinkStats()
        for link in self._links.values():
            total.add(link.stats)
        return total

    def trace_digest(self) -> str:
        """A hex digest of every delivery so far (time, source, destination, bytes).

        Two runs with the same seed and the same inputs have the same digest;
        compare digests to prove a run replays exactly.
        """
        return self._digest.hexdigest()

    @property
    def pending(self) -> int:
        """Scheduled actions still in the heap (stale timer entries included)."""
        return len(self._heap)

    # -- commands ------------------------------------------------------------

    def flush(self, name: str) -> None:
        """Pump node ``name`` now: events, then datagrams, then its timer.

        Call it after issuing a command directly on an endpoint, or use :meth:`call`.
        """
        self._pump(self._node(name))

    def call(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` (a command on node ``name``'s endpoint), then flush the node.

        Returns what ``fn`` returns; the node is flushed even if ``fn`` raises.
        """
        node = self._node(name)
        try:
            return fn()
        finally:
            self._pump(node)

    def call_at(self, time: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` at virtual ``time`` (in order with everything else due then).

        Use :meth:`call` inside ``fn`` to command an endpoint so that it is flushed.
        """
        if not (math.isfinite(time) and time >= self._now):
            raise SimulationError(f"call_at({time!r}) is not a finite time >= now "
                                  f"({self._now!r})")
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, _CALL, fn, None, None, None))

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Send ``data`` from ``src`` to ``dst`` now, through the link, as if a node had.

        ``src`` need not belong to a node: this is how tests spoof, replay or
        fuzz datagrams.
        """
        self._transmit(self._link(src, dst), bytes(data), src, dst, self._now)

    # -- driving -----------------------------------------------------------------

    def step(self) -> bool:
        """Run the next scheduled action. Returns False when nothing is scheduled."""
        with self._driving():
            heap = self._heap
            while heap:
                if self._process(heapq.heappop(heap)):
                    return True
            return False

    def run(self, until: float) -> None:
        """Run every action due at or before virtual time ``until``, then set ``now = until``."""
        if not (math.isfinite(until) and until >= self._now):
            raise SimulationError(f"run(until={until!r}) needs a finite time >= now "
                                  f"({self._now!r})")
        with self._driving():
            heap, process, pop = self._heap, self._process, heapq.heappop
            while heap and heap[0][0] <= until:
                process(pop(heap))
            self._now = until

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` is true, for at most ``timeout`` seconds of virtual time.

        The predicate is checked before starting and after every action.
        Returns True as soon as it holds (``now`` is then the time of the
        action that made it true); False at the timeout, with ``now`` advanced
        to ``now + timeout``.
        """
        check_seconds("timeout", timeout)
        deadline = self._now + timeout
        if predicate():
            return True
        with self._driving():
            heap, process, pop = self._heap, self._process, heapq.heappop
            while heap and heap[0][0] <= deadline:
                if process(pop(heap)) and predicate():
                    return True
            self._now = deadline
            return False

    @contextlib.contextmanager
    def _driving(self) -> Iterator[None]:
        """Guard against re-entry, and note the seed on any exception raised.

        The note (``seed=..., t=...``) appears under the traceback pytest
        prints, so a failing simulation always says how to replay it.
        """
        if self._running:
            raise SimulationError("the network is already running (do not call run/step "
                                  "from a callback; use call_at)")
        self._running = True
        try:
            yield
        except BaseException as exc:
            exc.add_note(f"stt_core.sim: seed={self._seed}, virtual time t={self._now!r}")
            raise
        finally:
            self._running = False

    def _process(self, action: Action) -> bool:
        """Run one heap entry; False for a stale timer entry (nothing happened)."""
        time, seq, kind, a, b, c, d = action
        if kind == _DELIVER:
            self._now = time
            self._deliver(a, b, c, d)
        elif kind == _TIMER:
            if seq != a.timer_seq:
                return False
            self._now = time
            self._fire_timer(a)
        else:
            self._now = time
            a()
        return True

    # -- the pump ----------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            raise SimulationError(f"no node named {name!r}")
        return node

    def _address_id(self, addr: Address) -> int:
        ids = self._address_ids
        found = ids.get(addr)
        if found is None:
            found = ids[addr] = len(ids)
        return found

    def _pump(self, node: _Node) -> None:
        """Drain events, send datagrams, re-arm the timer (the class docstring's contract)."""
        endpoint, events, callbacks, now = node.endpoint, node.events, node.callbacks, self._now
        event = endpoint.next_event()
        while True:
            while event is not None:
                if events is not None:
                    events.append(event)
                for callback in callbacks:
                    callback(event)
                event = endpoint.next_event()
            routes, primary = node.routes, node.addresses[0]
            for data, dst in endpoint.datagrams_to_send(now):
                src = routes.get(dst, primary)
                link = self._links.get((src, dst)) or self._link(src, dst)
                self._transmit(link, data, src, dst, now)
            event = endpoint.next_event()
            if event is None:
                break
        deadline = endpoint.next_timer()
        if deadline != node.timer_deadline:
            node.timer_deadline = deadline
            if deadline is None:
                node.timer_seq = -1
            else:
                self._seq += 1
                node.timer_seq = self._seq
                heapq.heappush(self._heap, (deadline if deadline > now else now, self._seq,
                                            _TIMER, node, None, None, None))

    def _fire_timer(self, node: _Node) -> None:
        now = self._now
        if now == node.fire_time:
            node.fire_count += 1
            if node.fire_count > self.MAX_TIMER_FIRINGS_PER_INSTANT:
                raise SimulationError(
                    f"node {node.name!r} fired its timer {node.fire_count} times at "
                    f"t={now!r}: handle_timer does not clear what next_timer reports")
        else:
            node.fire_time, node.fire_count = now, 1
        node.timer_deadline, node.timer_seq = None, -1
        if self._tracer is not None:
            self._tracer(TraceRecord(now, "timer", node=node.name))
        node.endpoint.handle_timer(now)
        self._pump(node)

    # -- links: the per-datagram path ---------------------------------------------

    def _link(self, src: Address, dst: Address)  -> LinkState:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[(src, dst)] = self._make_link(self._default, explicit=False)
        return link

    @staticmethod
    def _make_link(config: LinkConfig, *, explicit: bool)  -> LinkState:
        return LinkState(config, LinkQueue(None, None), config.is_perfect, explicit)

    def _transmit(self, link: LinkState, data: bytes, src: Address, dst: Address,
                  now: float) -> None:
        """Put one datagram on ``link`` at ``now``: count it, impair it, schedule it."""
        stats = link.stats
        stats.sent += 1
        stats.bytes_sent += len(data)
        if self._tracer is not None:
            self._tracer(TraceRecord(now, "send", src, dst, len(data)))
        if link.perfect and not self._partitions:
            self._seq += 1
            heapq.heappush(self._heap, (now + link.config.delay, self._seq, _DELIVER,
                                        link, data, src, dst))
            return
        cfg = link.config
        if cfg.mtu is not None and len(data) > cfg.mtu:
            self._drop(link, DropCause.MTU, src, dst, len(data))
            return
        if self._partitions and self._partitioned(src, dst, now):
            self._drop(link, DropCause.PARTITION, src, dst, len(data))
            return
        departure = now
        if cfg.bandwidth_bps is not None:
            finish = self._serialize(link, cfg, len(data), now)
            if finish is None:
                self._drop(link, DropCause.QUEUE, src, dst, len(data))
                return
            departure = finish
        cause = self._loss(link, cfg)
        if cause is not None:
            self._drop(link, cause, src, dst, len(data))
            return
        rand = self._rng.random
        if cfg.corrupt and data and rand() < cfg.corrupt:
            data = self._corrupt(data)
            stats.corrupted += 1
        self._schedule(link, cfg, departure + cfg.delay, data, src, dst)
        if cfg.duplicate and rand() < cfg.duplicate:
            stats.duplicated += 1
            self._schedule(link, cfg, departure + cfg.delay, data, src, dst)

    @staticmethod
    def _serialize(link: LinkState, cfg: LinkConfig, size: int, now: float) -> float | None:
        """Queue ``size`` bytes; return when the last bit leaves, or None for a tail drop.

        The backlog is computed from when the queue becomes free, which is
        exact for a FIFO queue with no per-datagram bookkeeping.
        """
        bandwidth = cfg.bandwidth_bps
        if bandwidth is None:
            return now
        queue = link.queue
        start = queue.busy_until if queue.busy_until > now else now
        limit = cfg.queue_bytes
        if limit is not None and (start - now) * bandwidth / 8.0 + size > (
                limit + _QUEUE_SLACK_BYTES):
            return None
        finish = start + size * 8.0 / bandwidth
        queue.busy_until = finish
        return finish

    def _loss(self, link: LinkState, cfg: LinkConfig) -> DropCause | None:
        """Decide random and burst loss; advances the Gilbert-Elliott state per datagram."""
        rand = self._rng.random
        if cfg.p_good_to_bad:
            if link.bad:
                if rand() < cfg.p_bad_to_good:
                    link.bad = False
            elif rand() < cfg.p_good_to_bad:
                link.bad = True
            if link.bad:
                return DropCause.BURST_LOSS if rand() < cfg.loss_in_bad else None
        if cfg.loss and rand() < cfg.loss:
            return DropCause.LOSS
        return None

    def _schedule(self, link: LinkState, cfg: LinkConfig, arrival: float, data: bytes,
                  src: Address, dst: Address) -> None:
        """Add jitter and reordering to one copy and put it on the heap."""
        jitter = cfg.jitter
        if jitter:
            if cfg.jitter_distribution == "uniform":
                arrival += self._rng.random() * jitter
            else:
                arrival += self._rng.expovariate(1.0 / jitter)
        if cfg.preserve_order:
            if arrival < link.last_arrival:
                arrival = link.last_arrival
            link.last_arrival = arrival
        if cfg.reorder and self._rng.random() < cfg.reorder:
            arrival += cfg.reorder_delay
            link.stats.reordered += 1
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, _DELIVER, link, data, src, dst))

    def _corrupt(self, data: bytes) -> bytes:
        """A copy of ``data`` with 1-3 distinct bits flipped (the only place data is copied)."""
        buf = bytearray(data)
        nbits = len(buf) * 8
        count = min(self._rng.randint(1, 3), nbits)
        for bit in self._rng.sample(range(nbits), count):
            buf[bit >> 3] ^= 1 << (bit & 7)
        return bytes(buf)

    def _partitioned(self, src: Address, dst: Address, time: float) -> bool:
        """True if an active partition separates the addresses; prunes healed ones."""
        now = self._now
        parts = self._partitions
        if any(p.end <= now for p in parts):
            parts[:] = [p for p in parts if p.end > now]
        return any(p.separates(src, dst, time) for p in parts)

    def _drop(self, link: LinkState, cause: DropCause, src: Address, dst: Address,
              size: int) -> None:
        dropped = link.stats.dropped
        dropped[cause] = dropped.get(cause, 0) + 1
        if self._tracer is not None:
            self._tracer(TraceRecord(self._now, "drop", src, dst, size, cause))

    def _deliver(self, link: LinkState, data: bytes, src: Address, dst: Address) -> None:
        """Hand a datagram that reached ``dst`` to the node owning it, then pump the node."""
        now = self._now
        if self._partitions and self._partitioned(src, dst, now):
            self._drop(link, DropCause.PARTITION, src, dst, len(data))
            return
        owner = self._owner.get(dst)
        if owner is None:
            self._drop(link, DropCause.NO_ROUTE, src, dst, len(data))
            return
        node, local = owner
        stats = link.stats
        stats.delivered += 1
        stats.bytes_delivered += len(data)
        node.routes[src] = local
        self._digest.update(_DIGEST_HEADER.pack(now, self._address_id(src),
                                                self._address_id(local)))
        self._digest.update(data)
        if self._tracer is not None:
            self._tracer(TraceRecord(now, "deliver", src, dst, len(data)))
        for tap in node.taps:
            tap(data, src)
        node.endpoint.receive_datagram(data, src, now)
        self._pump(node)

