"""Tests for stt_core.sim, driven by small fake endpoints.

The fakes implement only the SimEndpoint pump; they stand in for the real
Endpoint so the simulator can be checked on its own: every expected time below
is exact because the clock is virtual.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_core.errors import ConfigError
from stt_core.events import Address, Event, SessionRef
from stt_core.sim import (
    DropCause,
    LinkConfig,
    LinkStats,
    Network,
    SimEndpoint,
    SimulationError,
    TraceRecord,
)

A: Address = ("10.0.0.1", 1000)
B: Address = ("10.0.0.2", 2000)
C: Address = ("10.0.0.3", 3000)
REF = SessionRef(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Got(Event):
    """A fake endpoint received a datagram."""

    data: bytes
    src: Address
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Fired(Event):
    """A fake endpoint's timer fired."""

    time: float


@dataclass
class Fake:
    """A scriptable endpoint: records what arrives, sends what it is told to.

    ``echo`` answers every datagram to its sender; ``tick`` arms a periodic
    timer that sends ``tick_payload(n)`` to ``tick_to`` up to ``tick_count`` times.
    """

    echo: bool = False
    tick: float | None = None
    tick_to: Address | None = None
    tick_count: int = 0
    tick_payload: Callable[[int], bytes] = lambda n: n.to_bytes(4, "big")
    received: list[tuple[float, bytes, Address]] = field(default_factory=list)
    outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    deadline: float | None = None
    ticks_sent: int = 0

    def start(self, now: float) -> None:
        if self.tick is not None:
            self.deadline = now + self.tick

    def send(self, data: bytes, dst: Address) -> None:
        self.outbox.append((data, dst))

    def send_all(self, items: list[tuple[bytes, Address]]) -> None:
        self.outbox.extend(items)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((now, data, addr))
        self.events.append(Got(ref=REF, data=data, src=addr, time=now))
        if self.echo:
            self.outbox.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        self.events.append(Fired(ref=REF, time=now))
        if self.tick_to is not None and self.ticks_sent < self.tick_count:
            self.outbox.append((self.tick_payload(self.ticks_sent), self.tick_to))
            self.ticks_sent += 1
        if self.tick is not None and self.ticks_sent < self.tick_count:
            self.deadline += self.tick
        else:
            self.deadline = None

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None


def pair(seed: int = 1, link: LinkConfig | None = None) -> tuple[Network, Fake, Fake]:
    """Node "a" at A and node "b" at B, with ``link`` both ways."""
    net = Network(seed)
    a, b = Fake(), Fake()
    net.add_node("a", a, [A])
    net.add_node("b", b, [B])
    if link is not None:
        net.set_link(A, B, link)
    return net, a, b


def blast(net: Network, count: int, size: int = 100, src: str = "a",
          dst: Address = B) -> None:
    """Node ``src`` sends ``count`` numbered datagrams of ``size`` bytes now."""
    def send() -> None:
        endpoint = net.endpoint(src)
        assert isinstance(endpoint, Fake)
        for n in range(count):
            endpoint.send(n.to_bytes(4, "big") + bytes(size - 4), dst)
    net.call(src, send)


def numbers(fake: Fake) -> list[int]:
    return [int.from_bytes(data[:4], "big") for _, data, _ in fake.received]


# -- LinkConfig -----------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"delay": -0.1}, {"delay": math.inf}, {"jitter": -1.0}, {"loss": 1.5},
    {"loss": -0.1}, {"duplicate": 2.0}, {"corrupt": -0.5}, {"reorder": 1.01},
    {"p_good_to_bad": 1.1}, {"p_bad_to_good": -1.0}, {"loss_in_bad": 7.0},
    {"bandwidth_bps": 0}, {"bandwidth_bps": -5.0}, {"queue_bytes": 100},
    {"bandwidth_bps": 1000, "queue_bytes": 0}, {"mtu": 0},
    {"jitter_distribution": "gaussian"}, {"reorder_delay": math.nan},
])
def test_link_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        LinkConfig(**kwargs)  # type: ignore[arg-type]


def test_link_config_perfect_flag() -> None:
    assert LinkConfig().is_perfect
    assert LinkConfig(delay=1.0).is_perfect
    assert not LinkConfig(loss=0.1).is_perfect
    assert not LinkConfig(bandwidth_bps=1e6).is_perfect
    assert not LinkConfig(mtu=1500).is_perfect


def test_network_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        Network("7")  # type: ignore[arg-type]
    net, _, _ = pair()
    with pytest.raises(SimulationError):
        net.add_node("a", Fake(), [C])
    with pytest.raises(SimulationError):
        net.add_node("c", Fake(), [A])
    with pytest.raises(SimulationError):
        net.add_node("c", Fake(), [])
    with pytest.raises(SimulationError):
        net.endpoint("nobody")
    with pytest.raises(SimulationError):
        net.run(-1.0)
    with pytest.raises(SimulationError):
        net.run(math.inf)
    with pytest.raises(SimulationError):
        net.call_at(-1.0, lambda: None)
    with pytest.raises(SimulationError):
        net.call_at(math.nan, lambda: None)


# -- delivery, timers, driving ----------------------------------------------------

def test_perfect_link_delivers_after_exact_delay() -> None:
    net, a, b = pair(link=LinkConfig(delay=0.25))
    net.run(1.0)
    net.call("a", lambda: a.send(b"hello", B))
    net.run(2.0)
    assert b.received == [(1.25, b"hello", A)]
    assert net.now == 2.0
    got = net.events("b")
    assert got == [Got(ref=REF, data=b"hello", src=A, time=1.25)]


def test_echo_round_trip_and_callbacks() -> None:
    net = Network(3)
    client, server = Fake(), Fake(echo=True)
    net.add_node("client", client, [A])
    net.add_node("server", server, [B])
    seen: list[Event] = []
    net.on_event("client", seen.append)
    net.call("client", lambda: client.send(b"ping", B))
    assert net.run_until(lambda: bool(seen), timeout=1.0)
    assert net.now == pytest.approx(0.020)
    assert seen == [Got(ref=REF, data=b"ping", src=B, time=net.now)]
    assert net.link_stats(A, B).delivered == 1
    assert net.link_stats(B, A).delivered == 1


def test_delivery_taps_see_each_datagram_before_its_endpoint() -> None:
    net = Network(4)
    client, server = Fake(), Fake(echo=True)
    net.add_node("client", client, [A])
    net.add_node("server", server, [B])
    tapped: list[tuple[bytes, Address, int]] = []
    net.on_deliver("server", lambda data, src: tapped.append((data, src, len(server.received))))
    net.call("client", lambda: client.send(b"one", B))
    net.call("client", lambda: client.send(b"two", B))
    net.run(1.0)
    # each datagram is seen once, from its source, before the endpoint had it
    assert tapped == [(b"one", A, 0), (b"two", A, 1)]
    assert [data for _, data, _ in server.received] == [b"one", b"two"]


def test_timers_fire_at_exact_virtual_times() -> None:
    net = Network(1, start_time=10.0)
    ticker = Fake(tick=0.25, tick_to=B, tick_count=4)
    ticker.start(net.now)
    net.add_node("t", ticker, [A])
    net.add_node("b", Fake(), [B])
    net.run(20.0)
    fired = [e.time for e in net.events("t") if isinstance(e, Fired)]
    assert fired == [10.25, 10.5, 10.75, 11.0]
    assert net.now == 20.0


def test_run_until_times_out_and_advances_clock() -> None:
    net, _, _ = pair()
    assert not net.run_until(lambda: False, timeout=5.0)
    assert net.now == 5.0
    assert net.run_until(lambda: True, timeout=5.0)
    assert net.now == 5.0


def test_run_until_stops_at_the_action_that_satisfies_it() -> None:
    net, a, b = pair(link=LinkConfig(delay=0.5))
    net.call("a", lambda: a.send_all([(bytes([i]), B) for i in range(3)]))
    net.call_at(0.2, lambda: a.send(b"late", B))
    net.call_at(0.2, lambda: net.flush("a"))
    assert net.run_until(lambda: len(b.received) == 3, timeout=10.0)
    assert net.now == 0.5
    assert net.run_until(lambda: len(b.received) == 4, timeout=10.0)
    assert net.now == pytest.approx(0.7)


def test_step_runs_one_action_at_a_time() -> None:
    net, a, b = pair(link=LinkConfig(delay=1.0))
    assert not net.step()
    net.call("a", lambda: a.send_all([(b"x", B), (b"y", B)]))
    assert net.step()
    assert [d for _, d, _ in b.received] == [b"x"]
    assert net.step()
    assert [d for _, d, _ in b.received] == [b"x", b"y"]
    assert not net.step()
    assert net.now == 1.0


def test_stale_timer_entries_are_skipped() -> None:
    net = Network(1)
    fake = Fake()
    fake.deadline = 5.0
    net.add_node("a", fake, [A])
    fake.deadline = 2.0
    net.flush("a")
    fake.deadline = None
    net.flush("a")
    net.run(10.0)
    assert not any(isinstance(e, Fired) for e in net.events("a"))


def test_spinning_timer_raises_with_seed_note() -> None:
    class Spinner(Fake):
        def handle_timer(self, now: float) -> None:
            pass  # never clears its deadline

    net = Network(4242)
    spinner = Spinner()
    spinner.deadline = 1.0
    net.add_node("s", spinner, [A])
    with pytest.raises(SimulationError, match="fired its timer") as info:
        net.run(2.0)
    assert any("seed=4242" in note for note in info.value.__notes__)


def test_endpoint_exception_carries_seed_note() -> None:
    class Broken(Fake):
        def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
            raise RuntimeError("boom")

    net = Network(99)
    a = Fake()
    net.add_node("a", a, [A])
    net.add_node("b", Broken(), [B])
    net.call("a", lambda: a.send(b"x", B))
    with pytest.raises(RuntimeError) as info:
        net.run(1.0)
    assert "seed=99" in info.value.__notes__[0]


def test_run_from_a_callback_is_refused() -> None:
    net, a, _ = pair()
    errors: list[Exception] = []

    def reenter(event: Event) -> None:
        try:
            net.run(net.now + 1)
        except SimulationError as exc:
            errors.append(exc)

    net.on_event("b", reenter)
    net.call("a", lambda: a.send(b"x", B))
    net.run(1.0)
    assert len(errors) == 1


def test_callback_commands_are_flushed_by_the_pump() -> None:
    net, a, b = pair()
    net.on_event("b", lambda e: b.send(b"re:" + e.data, A) if isinstance(e, Got) else None)
    net.call("a", lambda: a.send(b"q", B))
    net.run(1.0)
    assert [d for _, d, _ in a.received] == [b"re:q"]
    assert a.received[0][0] == pytest.approx(0.02)


def test_collect_events_off() -> None:
    net = Network(1)
    fake = Fake()
    net.add_node("a", fake, [A], collect_events=False)
    seen: list[Event] = []
    net.on_event("a", seen.append)
    net.inject(b"x", B, A)
    net.run(1.0)
    assert len(seen) == 1
    with pytest.raises(SimulationError):
        net.events("a")


def test_add_node_flushes_pending_output() -> None:
    net = Network(1)
    net.add_node("b", Fake(), [B])
    a = Fake()
    a.send(b"early", B)
    net.add_node("a", a, [A])
    net.run(1.0)
    assert net.link_stats(A, B).delivered == 1


# -- determinism -------------------------------------------------------------------

ROUGH = LinkConfig(delay=0.01, jitter=0.02, loss=0.1, duplicate=0.05, reorder=0.1,
                   corrupt=0.05, bandwidth_bps=2e6, queue_bytes=20_000)


def rough_run(seed: int) -> tuple[str, list[tuple[float, bytes, Address]], LinkStats]:
    net = Network(seed)
    a, b = Fake(tick=0.001, tick_to=B, tick_count=500), Fake(echo=True)
    a.start(net.now)
    net.add_node("a", a, [A])
    net.add_node("b", b, [B])
    net.set_link(A, B, ROUGH)
    net.run(5.0)
    return net.trace_digest(), a.received, net.stats()


def test_same_seed_replays_exactly() -> None:
    first, second = rough_run(7), rough_run(7)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]
    assert len(first[1]) > 300


def test_different_seeds_differ() -> None:
    first, second = rough_run(7), rough_run(8)
    assert first[0] != second[0]
    assert first[1] != second[1]


def test_random_bytes_for_is_deterministic_per_label() -> None:
    one, two = Network(5), Network(5)
    assert one.random_bytes_for("x")(16) == two.random_bytes_for("x")(16)
    assert one.random_bytes_for("x")(16) != one.random_bytes_for("y")(16)
    assert Network(6).random_bytes_for("x")(16) != one.random_bytes_for("x")(16)


# -- impairments ----------------------------------------------------------------------

def test_loss_rate_matches_configuration() -> None:
    net, _, b = pair(seed=11, link=LinkConfig(loss=0.1))
    blast(net, 20_000)
    net.run(1.0)
    stats = net.link_stats(A, B)
    assert stats.sent == 20_000
    assert stats.delivered + stats.dropped[DropCause.LOSS] == 20_000
    assert stats.dropped_total == stats.dropped[DropCause.LOSS]
    # Binomial sd is 0.0021: allow five of them.
    assert abs(stats.dropped[DropCause.LOSS] / 20_000 - 0.1) < 0.0106
    assert len(b.received) == stats.delivered


def loss_runs(fake: Fake, count: int) -> list[int]:
    """Lengths of runs of consecutive missing numbers."""
    got = set(numbers(fake))
    runs, current = [], 0
    for n in range(count):
        if n in got:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


def test_gilbert_elliott_losses_come_in_bursts() -> None:
    link = LinkConfig(p_good_to_bad=0.01, p_bad_to_good=0.2, loss_in_bad=1.0)
    net, _, b = pair(seed=12, link=link)
    blast(net, 50_000)
    net.run(1.0)
    lost = net.link_stats(A, B).dropped[DropCause.BURST_LOSS]
    # Stationary bad-state share: 0.01 / (0.01 + 0.2) = 0.0476.
    assert abs(lost / 50_000 - 0.0476) < 0.012
    runs = loss_runs(b, 50_000)
    assert 3.5 < statistics.mean(runs) < 6.5  # mean bad sojourn 1/0.2 = 5


def test_independent_loss_is_not_bursty() -> None:
    net, _, b = pair(seed=12, link=LinkConfig(loss=0.05))
    blast(net, 50_000)
    net.run(1.0)
    assert statistics.mean(loss_runs(b, 50_000)) < 1.2


def test_bandwidth_serialization_timing_is_exact() -> None:
    # 128 bytes at 8192 bit/s take exactly 0.125 s on the wire.
    net, _, b = pair(link=LinkConfig(delay=0.5, bandwidth_bps=8192))
    blast(net, 4, size=128)
    net.run(10.0)
    assert [t for t, _, _ in b.received] == [0.625, 0.75, 0.875, 1.0]
    assert numbers(b) == [0, 1, 2, 3]


def test_queue_tail_drop_then_recovers() -> None:
    link = LinkConfig(delay=0.0, bandwidth_bps=8192, queue_bytes=300)
    net, _, b = pair(link=link)
    blast(net, 10, size=128)   # backlog 0, 128, then 256 + 128 > 300
    stats = net.link_stats(A, B)
    assert stats.dropped == {DropCause.QUEUE: 8}
    net.run(0.25)               # the queue has drained
    blast(net, 2, size=128)
    net.run(1.0)
    assert stats.delivered == 4
    assert [t for t, _, _ in b.received] == [0.125, 0.25, 0.375, 0.5]


def test_queue_admits_exactly_up_to_its_limit() -> None:
    link = LinkConfig(delay=0.0, bandwidth_bps=8192, queue_bytes=384)
    net, _, _ = pair(link=link)
    blast(net, 4, size=128)
    assert net.link_stats(A, B).dropped == {DropCause.QUEUE: 1}


def test_shared_queue_is_a_bottleneck_for_two_senders() -> None:
    net = Network(1)
    for name, addr in (("a", A), ("c", C)):
        net.add_node(name, Fake(), [addr])
    sink = Fake()
    net.add_node("b", sink, [B])
    link = LinkConfig(delay=0.0, bandwidth_bps=8192)
    net.set_link(A, B, link, symmetric=False, queue="to-b")
    net.set_link(C, B, link, symmetric=False, queue="to-b")
    blast(net, 2, size=128, src="a")
    blast(net, 2, size=128, src="c")
    net.run(5.0)
    assert [t for t, _, _ in sink.received] == [0.125, 0.25, 0.375, 0.5]
    assert [src for _, _, src in sink.received] == [A, A, C, C]


def test_shared_queue_must_agree_on_rate() -> None:
    net = Network(1)
    net.set_link(A, B, LinkConfig(bandwidth_bps=8192), queue="q")
    with pytest.raises(ConfigError):
        net.set_link(C, B, LinkConfig(bandwidth_bps=4096), queue="q")
    with pytest.raises(ConfigError):
        net.set_link(C, B, LinkConfig(), queue="q2")


def test_duplication_delivers_twice() -> None:
    net, _, b = pair(link=LinkConfig(duplicate=1.0))
    blast(net, 50)
    net.run(1.0)
    stats = net.link_stats(A, B)
    assert stats.duplicated == 50
    assert stats.delivered == 100
    assert sorted(numbers(b)) == sorted(list(range(50)) * 2)


def test_reordering_is_observed_and_counted() -> None:
    link = LinkConfig(reorder=0.3, reorder_delay=0.05)
    net = Network(13)
    sender = Fake(tick=0.001, tick_to=B, tick_count=1000)
    sender.start(net.now)
    sink = Fake()
    net.add_node("a", sender, [A])
    net.add_node("b", sink, [B])
    net.set_link(A, B, link)
    net.run(5.0)
    got = numbers(sink)
    assert sorted(got) == list(range(1000))
    assert got != sorted(got)
    assert 200 < net.link_stats(A, B).reordered < 400


def test_no_reordering_without_impairment() -> None:
    net, _, b = pair(link=LinkConfig(loss=0.2))
    blast(net, 1000)
    net.run(1.0)
    got = numbers(b)
    assert got == sorted(got)


@pytest.mark.parametrize("distribution", ["uniform", "exponential"])
def test_jitter_reorders_unless_order_is_preserved(
        distribution: Literal["uniform", "exponential"]) -> None:
    results = {}
    for preserve in (False, True):
        link = LinkConfig(delay=0.01, jitter=0.01, preserve_order=preserve,
                          jitter_distribution=distribution)
        net = Network(14)
        sender = Fake(tick=0.001, tick_to=B, tick_count=300)
        sender.start(net.now)
        sink = Fake()
        net.add_node("a", sender, [A])
        net.add_node("b", sink, [B])
        net.set_link(A, B, link)
        net.run(5.0)
        delays = [t - (n + 1) * 0.001 for (t, _, _), n in zip(sink.received, numbers(sink),
                                                               strict=True)]
        assert min(delays) >= 0.01 - 1e-9
        if distribution == "uniform":
            assert max(delays) <= 0.02 + 1e-9 or preserve
        results[preserve] = numbers(sink)
    assert results[False] != sorted(results[False])
    assert results[True] == list(range(300))


def test_corruption_flips_one_to_three_bits() -> None:
    net, _, b = pair(seed=15, link=LinkConfig(corrupt=1.0))
    blast(net, 200, size=64)
    net.run(1.0)
    assert net.link_stats(A, B).corrupted == 200
    flips = []
    for _, data, _ in b.received:
        # Sent payloads were number + zeros; recover the sent number by position.
        diffs = 0
        for n in range(200):
            original = n.to_bytes(4, "big") + bytes(60)
            diffs = sum(bin(x ^ y).count("1") for x, y in zip(original, data, strict=True))
            if diffs <= 3:
                break
        flips.append(diffs)
    assert set(flips) <= {1, 2, 3}
    assert set(flips) == {1, 2, 3}


def test_no_corruption_when_disabled() -> None:
    net, _, b = pair(link=LinkConfig(loss=0.1, duplicate=0.1, reorder=0.1, jitter=0.01))
    blast(net, 500)
    net.run(2.0)
    for _, data, _ in b.received:
        n = int.from_bytes(data[:4], "big")
        assert data == n.to_bytes(4, "big") + bytes(96)
    assert net.link_stats(A, B).corrupted == 0


def test_mtu_drops_oversized_datagrams() -> None:
    net, a, b = pair(link=LinkConfig(mtu=1200))
    net.call("a", lambda: a.send_all([(bytes(1200), B), (bytes(1201), B)]))
    net.run(1.0)
    assert [len(d) for _, d, _ in b.received] == [1200]
    assert net.link_stats(A, B).dropped == {DropCause.MTU: 1}


def test_default_link_and_per_direction_override() -> None:
    net, a, b = pair()
    net.set_default_link(LinkConfig(delay=0.1))
    net.set_link(B, A, LinkConfig(delay=0.3), symmetric=False)
    net.call("a", lambda: a.send(b"x", B))
    net.call("b", lambda: b.send(b"y", A))
    net.run(1.0)
    assert b.received[0][0] == pytest.approx(0.1)
    assert a.received[0][0] == pytest.approx(0.3)
    assert net.link_config(A, B).delay == 0.1
    assert net.link_config(B, A).delay == 0.3


# -- partitions -----------------------------------------------------------------------

def ticking_pair(count: int, interval: float = 0.125) -> tuple[Network, Fake]:
    net = Network(16)
    sender = Fake(tick=interval, tick_to=B, tick_count=count)
    sender.start(net.now)
    sink = Fake()
    net.add_node("a", sender, [A])
    net.add_node("b", sink, [B])
    net.set_link(A, B, LinkConfig(delay=0.05))
    return net, sink


def test_partition_drops_in_window_and_heals() -> None:
    net, sink = ticking_pair(30)              # datagram n is sent at (n + 1) / 8
    net.partition([A], [B], start=1.0, end=2.0)
    net.run(5.0)
    arrivals = [t for t, _, _ in sink.received]
    assert all(not 1.0 <= t < 2.0 for t in arrivals)
    # Sent at 1.0 .. 1.875 are dropped; from 2.0 on everything arrives again.
    assert numbers(sink) == list(range(7)) + list(range(15, 30))
    assert net.link_stats(A, B).dropped == {DropCause.PARTITION: 8}


def test_partition_catches_datagrams_in_flight() -> None:
    net, a, b = pair(link=LinkConfig(delay=1.0))
    net.call("a", lambda: a.send(b"x", B))
    net.partition([B], [A], start=0.5, end=1.5)
    net.run(3.0)
    assert b.received == []
    assert net.link_stats(A, B).dropped == {DropCause.PARTITION: 1}


def test_heal_ends_a_partition_early() -> None:
    net, sink = ticking_pair(30)
    part = net.partition([A], [B])
    net.run(1.0)
    net.heal(part)
    net.run(5.0)
    # run(1.0) includes the send due at exactly 1.0, before the heal.
    assert numbers(sink)[0] == 8
    assert len(sink.received) == 22


def test_partition_only_blocks_named_groups() -> None:
    net = Network(1)
    a, b, c = Fake(), Fake(), Fake()
    for name, fake, addr in (("a", a, A), ("b", b, B), ("c", c, C)):
        net.add_node(name, fake, [addr])
    net.partition([A], [B])
    net.call("a", lambda: a.send_all([(b"1", B), (b"2", C)]))
    net.run(1.0)
    assert b.received == [] and len(c.received) == 1


# -- addresses: rebinding, multi-homing ------------------------------------------------

A2: Address = ("10.0.0.9", 1999)


def test_rebind_changes_source_and_drops_old_address() -> None:
    net = Network(1)
    client, server = Fake(), Fake(echo=True)
    net.add_node("client", client, [A])
    net.add_node("server", server, [B])
    net.call("client", lambda: client.send(b"one", B))
    net.run(0.015)                      # "one" reached the server; its echo is in flight
    net.rebind("client", A, A2)
    net.run(1.0)
    assert client.received == []        # the echo to A found nobody
    assert net.link_stats(B, A).dropped == {DropCause.NO_ROUTE: 1}
    net.call("client", lambda: client.send(b"two", B))
    net.run(2.0)
    assert [src for _, _, src in server.received] == [A, A2]
    assert [d for _, d, _ in client.received] == [b"two"]
    assert net.address("client") == A2
    assert net.addresses("client") == [A2]


def test_rebind_keep_old_still_delivers_to_old_address() -> None:
    net = Network(1)
    client, server = Fake(), Fake(echo=True)
    net.add_node("client", client, [A])
    net.add_node("server", server, [B])
    net.call("client", lambda: client.send(b"one", B))
    net.run(0.015)
    net.rebind("client", A, A2, keep_old=True)
    net.run(1.0)
    assert [d for _, d, _ in client.received] == [b"one"]
    net.call("client", lambda: client.send(b"two", B))
    net.run(2.0)
    assert [src for _, _, src in server.received] == [A, A2]


def test_rebind_validates_addresses() -> None:
    net, _, _ = pair()
    with pytest.raises(SimulationError):
        net.rebind("a", C, A2)
    with pytest.raises(SimulationError):
        net.rebind("a", A, B)
    with pytest.raises(SimulationError):
        net.rebind("a", A, A)


def test_multi_homed_node_answers_from_the_address_that_received() -> None:
    net = Network(1)
    server = Fake(echo=True)
    net.add_node("server", server, [B, C])
    x, y = Fake(), Fake()
    net.add_node("x", x, [A])
    net.add_node("y", y, [A2])
    net.call("x", lambda: x.send(b"to-b", B))
    net.call("y", lambda: y.send(b"to-c", C))
    net.run(1.0)
    assert x.received[0][2] == B
    assert y.received[0][2] == C


def test_set_route_picks_source_address() -> None:
    net = Network(1)
    node = Fake()
    net.add_node("n", node, [A, A2])
    sink = Fake()
    net.add_node("b", sink, [B])
    net.set_route("n", B, A2)
    net.call("n", lambda: node.send(b"x", B))
    net.run(1.0)
    assert sink.received[0][2] == A2
    with pytest.raises(SimulationError):
        net.set_route("n", B, C)


def test_inject_spoofed_datagram_and_tracer() -> None:
    records: list[TraceRecord] = []
    net = Network(1, tracer=records.append)
    sink = Fake()
    net.add_node("b", sink, [B])
    net.inject(b"spoof", ("6.6.6.6", 6), B)
    net.inject(b"lost", ("6.6.6.6", 6), ("9.9.9.9", 9))
    net.run(1.0)
    assert sink.received == [(0.01, b"spoof", ("6.6.6.6", 6))]
    kinds = [(r.kind, r.cause) for r in records]
    assert kinds == [("send", None), ("send", None), ("deliver", None),
                     ("drop", DropCause.NO_ROUTE)]


# -- properties -------------------------------------------------------------------------

probabilities = st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0])
link_configs = st.builds(
    LinkConfig,
    delay=st.sampled_from([0.0, 0.001, 0.05]),
    jitter=st.sampled_from([0.0, 0.01]),
    jitter_distribution=st.sampled_from(["uniform", "exponential"]),
    preserve_order=st.booleans(),
    bandwidth_bps=st.sampled_from([None, 1e5, 1e7]),
    loss=probabilities, p_good_to_bad=probabilities, p_bad_to_good=probabilities,
    loss_in_bad=probabilities, duplicate=probabilities, reorder=probabilities,
    corrupt=probabilities, mtu=st.sampled_from([None, 64, 1500]),
)


@settings(max_examples=60, deadline=None)
@given(config=link_configs, seed=st.integers(0, 2**32), sizes=st.lists(
    st.integers(0, 2000), min_size=1, max_size=40))
def test_every_datagram_is_accounted_for(config: LinkConfig, seed: int,
                                         sizes: list[int]) -> None:
    net = Network(seed)
    sink, source = Fake(), Fake()
    net.add_node("a", source, [A])
    net.add_node("b", sink, [B])
    net.set_link(A, B, config)
    net.call("a", lambda: source.send_all([(bytes(n), B) for n in sizes]))
    net.run(1000.0)
    stats = net.link_stats(A, B)
    assert stats.sent == len(sizes)
    assert stats.sent + stats.duplicated == stats.delivered + stats.dropped_total
    assert stats.delivered == len(sink.received)
    assert all(t >= config.delay for t, _, _ in sink.received)
    assert stats == net.stats()


def test_fake_endpoint_satisfies_protocol() -> None:
    endpoint: SimEndpoint = Fake()
    assert endpoint.next_timer() is None


# -- with the real Endpoint -------------------------------------------------------------

def real_transfer(seed: int, link: LinkConfig) -> tuple[bool, list[bytes], list[bytes], str]:
    """Alice connects to Bob through ``link`` and sends 19 messages; returns what Bob got."""
    from stt_core import (
        Config,
        Endpoint,
        MessageDelivered,
        MessageReceived,
        SessionEstablished,
    )

    net = Network(seed)
    secret = b"simulated-shared-seed"
    alice = Endpoint(Config(shared_seed=secret, node_id=b"alice"), now=net.now,
                     random_bytes=net.random_bytes_for("alice"))
    bob = Endpoint(Config(shared_seed=secret, node_id=b"bob", server_mode=True),
                   now=net.now, random_bytes=net.random_bytes_for("bob"))
    net.add_node("alice", alice, [A])
    net.add_node("bob", bob, [B])
    net.set_link(A, B, link)
    ref = net.call("alice", lambda: alice.connect(B, net.now))
    established = net.run_until(
        lambda: any(isinstance(e, SessionEstablished) for e in net.events("alice")), 30.0)
    assert established, f"no handshake with seed={seed}"
    stream = net.call("alice", lambda: alice.open_stream(ref))
    sent = [bytes([i]) * (i * 300) for i in range(1, 20)]
    for message in sent:
        net.call("alice", functools.partial(alice.send_message, ref, stream, message))

    def delivered() -> int:
        return sum(isinstance(e, MessageDelivered) for e in net.events("alice"))

    done = net.run_until(lambda: delivered() == len(sent), 120.0)
    got = [e.data for e in net.events("bob") if isinstance(e, MessageReceived)]
    return done, sent, got, net.trace_digest()


REAL_ROUGH = LinkConfig(delay=0.02, jitter=0.01, loss=0.1, duplicate=0.05, reorder=0.05,
                        corrupt=0.02)


@pytest.mark.parametrize("seed", range(3))
def test_real_endpoints_survive_a_rough_link(seed: int) -> None:
    done, sent, got, _ = real_transfer(seed, REAL_ROUGH)
    assert done, f"not all messages confirmed, seed={seed}"
    assert got == sent, f"seed={seed}"


def test_real_endpoints_replay_exactly() -> None:
    assert real_transfer(5, REAL_ROUGH)[3] == real_transfer(5, REAL_ROUGH)[3]
    assert real_transfer(5, REAL_ROUGH)[3] != real_transfer(6, REAL_ROUGH)[3]


def test_real_handshake_survives_corruption() -> None:
    done, sent, got, _ = real_transfer(1, LinkConfig(delay=0.02, corrupt=0.3))
    assert done and got == sent


def test_docs_example_runs() -> None:
    """The complete example in docs/simulator.md stays runnable."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).parents[2] / "docs" / "simulator.md"
    example = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)[0]
    namespace: dict[str, object] = {}
    exec(compile(example, str(doc), "exec"), namespace)
    net = namespace["net"]
    assert isinstance(net, Network)
    assert net.stats().delivered > 0


def test_real_endpoint_follows_nat_rebinding() -> None:
    """The docs' rebinding recipe: the server sees PathChanged and keeps the session."""
    from stt_core import Config, Endpoint, MessageDelivered, MessageReceived, PathChanged

    net = Network(21)
    secret = b"simulated-shared-seed"
    alice = Endpoint(Config(shared_seed=secret, node_id=b"alice"), now=net.now,
                     random_bytes=net.random_bytes_for("alice"))
    bob = Endpoint(Config(shared_seed=secret, node_id=b"bob", server_mode=True),
                   now=net.now, random_bytes=net.random_bytes_for("bob"))
    net.add_node("alice", alice, [A])
    net.add_node("bob", bob, [B])
    ref = net.call("alice", lambda: alice.connect(B, net.now))
    net.run(1.0)
    stream = net.call("alice", lambda: alice.open_stream(ref))
    net.rebind("alice", A, A2)
    net.call("alice", lambda: alice.send_message(ref, stream, b"after the move"))
    assert net.run_until(
        lambda: any(isinstance(e, MessageDelivered) for e in net.events("alice")), 10.0)
    bob_events = net.events("bob")
    assert [e.data for e in bob_events if isinstance(e, MessageReceived)] == [
        b"after the move"]
    moves = [e for e in bob_events if isinstance(e, PathChanged)]
    assert [(m.old_address, m.new_address) for m in moves] == [(A, A2)]
