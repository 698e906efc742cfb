"""Path migration on the simulator: NAT rebinding mid-transfer, spoofed
replays, and RTT re-convergence on a new path (protocol.md §8.2)."""

from __future__ import annotations

import functools
import itertools
import random

from stt_core import PathChanged
from stt_core.sim import DropCause, LinkConfig

from .simload import SERVER_ADDR, Scenario


def test_client_address_changes_several_times_under_loss_without_losing_data() -> None:
    scenario = Scenario(21)
    link = LinkConfig(delay=0.015, loss=0.05, reorder=0.02)
    flow = scenario.add_flow("client", link)
    payload = random.Random(2)
    scenario.queue(flow, "bulk", [payload.randbytes(40_000) for _ in range(150)])
    addresses = [flow.address] + [(f"10.0.9.{i}", 50000 + i) for i in range(1, 4)]
    for new in addresses[1:]:
        scenario.net.set_link(new, SERVER_ADDR, link)
    for step, (old, new) in enumerate(itertools.pairwise(addresses)):
        moved_at = 0.5 + step * 0.6
        scenario.net.call_at(moved_at, functools.partial(scenario.net.rebind, "client", old, new))
    assert scenario.run(timeout=120.0)
    assert scenario.received_for(flow, 1) == flow.sent[1]
    changes = [e.new_address for e in scenario.net.events("server")
               if isinstance(e, PathChanged)]
    # the server follows the client (a path abandoned before it was validated may be skipped)
    assert changes[-1] == addresses[-1] and len(changes) >= 2
    assert changes == [a for a in addresses[1:] if a in changes]
    assert flow.endpoint.session_stats(flow.ref).packets_lost > 0


def test_a_replayed_packet_from_a_spoofed_address_does_not_move_the_session() -> None:
    scenario = Scenario(22)
    flow = scenario.add_flow("client", LinkConfig(delay=0.010))
    captured: list[bytes] = []
    scenario.queue(flow, "chat", [b"hello"] * 5)
    capturing = True

    def capture(data: bytes, source: object) -> None:
        if capturing and data[0] in (0x08, 0x09):
            captured.append(data)

    scenario.net.on_deliver("server", capture)
    assert scenario.run(timeout=10.0)
    capturing = False
    replayed = list(captured)
    before = scenario.server.stats.drops.get("duplicate_packet", 0)
    spoofed = ("203.0.113.66", 6666)
    for datagram in replayed:
        scenario.net.inject(datagram, spoofed, SERVER_ADDR)
    scenario.net.run(scenario.net.now + 2.0)
    assert not [e for e in scenario.net.events("server") if isinstance(e, PathChanged)]
    session = next(iter(scenario.server.sessions.values()))
    assert session.address == flow.address
    assert scenario.server.stats.drops.get("duplicate_packet", 0) - before == len(replayed)
    # and the session still works on its real path
    scenario.queue(flow, "after", [b"still here"])
    scenario.net.call_at(scenario.net.now, lambda: scenario._feed(flow))
    assert scenario.run(timeout=10.0)


def test_migration_to_a_slower_path_reconverges_rtt() -> None:
    scenario = Scenario(23)
    fast = LinkConfig(delay=0.005)
    slow = LinkConfig(delay=0.050)
    flow = scenario.add_flow("client", fast)
    new_address = ("10.0.9.9", 50009)
    scenario.net.set_link(new_address, SERVER_ADDR, slow)
    scenario.queue(flow, "bulk", [bytes(20_000) for _ in range(2000)])
    scenario.net.run(0.3)
    before = flow.endpoint.session_stats(flow.ref).smoothed_rtt
    assert flow.sent[1] != [] and len(flow.confirmed.get(1, [])) < 2000
    scenario.net.rebind("client", flow.address, new_address)
    assert scenario.run(timeout=120.0)
    after = flow.endpoint.session_stats(flow.ref)
    assert before < 0.02
    assert 0.09 <= after.smoothed_rtt <= 0.13  # the sender re-learned the 100 ms path
    assert 0.09 <= after.min_rtt <= 0.11
    assert [e.new_address for e in scenario.net.events("server")
            if isinstance(e, PathChanged)] == [new_address]
    assert scenario.received_for(flow, 1) == flow.sent[1]


def test_path_mtu_discovery_settles_on_the_largest_size_the_path_carries() -> None:
    scenario = Scenario(24)
    flow = scenario.add_flow("client", LinkConfig(delay=0.005, mtu=9000),
                             pmtu_probe_limit=65507)
    scenario.queue(flow, "bulk", [bytes(100_000) for _ in range(50)])
    assert scenario.run(timeout=30.0)
    session = flow.endpoint.sessions[flow.ref]
    assert session.path.max_datagram_size == 8952
    assert session.pmtu_candidates == []
    assert scenario.received_for(flow, 1) == flow.sent[1]
    stats = scenario.net.link_stats(flow.address, SERVER_ADDR)
    assert stats.dropped == {DropCause.MTU: 1}  # exactly one probe (16384 bytes) was too large


def test_path_mtu_discovery_is_off_above_the_configured_limit() -> None:
    scenario = Scenario(25)
    flow = scenario.add_flow("client", LinkConfig(delay=0.005))
    scenario.queue(flow, "bulk", [bytes(50_000) for _ in range(10)])
    assert scenario.run(timeout=30.0)
    assert flow.endpoint.sessions[flow.ref].path.max_datagram_size == 1452  # the default limit


def test_transfer_continues_after_the_path_grows_to_64_kib_datagrams() -> None:
    # Regression: the pacer's bucket was sized for 1200-byte datagrams and
    # never held enough tokens for one 64 KiB datagram, so sending stalled.
    scenario = Scenario(26, server_overrides={"pmtu_probe_limit": 65507})
    flow = scenario.add_flow("client", LinkConfig(delay=0.0005), pmtu_probe_limit=65507)
    scenario.queue(flow, "bulk", [bytes(1_000_000) for _ in range(4)])
    assert scenario.run(timeout=5.0)
    assert flow.endpoint.sessions[flow.ref].path.max_datagram_size == 65507
    assert scenario.received_for(flow, 1) == flow.sent[1]


def test_later_sessions_start_at_the_path_mtu_an_earlier_one_learned() -> None:
    scenario = Scenario(27, server_overrides={"pmtu_probe_limit": 65507})
    first = scenario.add_flow("first", LinkConfig(delay=0.001), pmtu_probe_limit=65507)
    scenario.queue(first, "bulk", [bytes(10_000)])
    assert scenario.run(timeout=5.0)
    scenario.net.run(scenario.net.now + 1.0)  # let the probes finish
    assert first.endpoint.sessions[first.ref].path.max_datagram_size == 65507
    second_ref = scenario.net.call("first", lambda: first.endpoint.connect(SERVER_ADDR,
                                                                             scenario.net.now))
    scenario.net.run(scenario.net.now + 0.05)
    second = first.endpoint.sessions[second_ref]
    assert second.path.max_datagram_size == 65507 and second.pmtu_candidates == []
