"""Path MTU black holes (protocol.md §8.3, Appendix B item 12).

Once discovery proved a larger datagram size, a session kept it for good, and
the endpoint's per-address cache handed it to later sessions. When the path's
MTU later shrank (a new route, a tunnel), every full-size packet was lost,
retransmissions and probes included, until the idle timeout ended the session.
"""

from __future__ import annotations

from stt_core import MessageReceived, SessionRef

from .helpers import SERVER_ADDR, Pair, make_config
from .security_helpers import received

JUMBO = 8952


def raised_pair() -> tuple[Pair, SessionRef]:
    """A pair whose client proved 8952-byte datagrams on its first message."""
    pair = Pair(client=make_config(b"client", pmtu_probe_limit=JUMBO))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    stream = pair.client.open_stream(ref, purpose="warm-up")
    pair.client.send_message(ref, stream, b"hello")
    pair.run_for(2.0)
    assert pair.client.sessions[ref].path.max_datagram_size == JUMBO
    assert pair.client.pmtu_cache[SERVER_ADDR] == JUMBO
    return pair, ref


def test_a_path_whose_mtu_shrank_falls_back_and_delivers() -> None:
    pair, ref = raised_pair()
    pair.drop = lambda datagram, source, destination: len(datagram) > 1500  # a tunnel now
    stream = pair.client.open_stream(ref, purpose="after the route changed")
    pair.client.send_message(ref, stream, bytes(range(256)) * 800)  # 200 KiB
    pair.run_for(10.0)
    assert [len(m) for m in received(pair.server_events, stream)] == [256 * 800]
    session = pair.client.sessions[ref]
    assert session.stats.pmtu_fallbacks == 1
    # Discovery started over: 1452 fits the tunnel and is proven again, 8952 is not.
    assert session.path.max_datagram_size == 1452
    assert pair.client.pmtu_cache[SERVER_ADDR] == 1452


def test_an_outage_costs_the_size_only_until_discovery_wins_it_back() -> None:
    """Probe timeouts cannot tell a black hole from an outage; after one the
    first probes restore the size."""
    pair, ref = raised_pair()
    stream = pair.client.open_stream(ref, purpose="through an outage")
    outage_ends = pair.now + 2.0
    pair.drop = lambda datagram, source, destination: pair.now < outage_ends
    pair.client.send_message(ref, stream, bytes(100_000))
    pair.run_for(10.0)
    assert [len(m) for m in received(pair.server_events, stream)] == [100_000]
    session = pair.client.sessions[ref]
    assert session.stats.pmtu_fallbacks == 1
    assert session.path.max_datagram_size == JUMBO
    assert any(isinstance(e, MessageReceived) for e in pair.server_events)
