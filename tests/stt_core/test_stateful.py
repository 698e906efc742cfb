"""Stateful property test: application commands interleaved with a hostile network.

A hypothesis ``RuleBasedStateMachine`` drives one client/server pair
(``fuzz.harness``): open streams on either side (automatic ids, or a few
explicit ids that both sides may pick and may try to reuse), send messages,
close and reset streams, consume delivered bytes (the server does not
auto-consume, so flow control really pushes back), let time pass, and in
between lose datagrams and inject adversarial ones: garbage, replays of
captured datagrams (a replay of a lost one is a late arrival), truncations
and bit flips, towards either endpoint.

Invariants checked after every step:

* no exception escapes an endpoint (any would fail the rule that caused it);
* on every stream, the messages delivered are exactly a prefix of the
  messages sent, in order and byte-identical;
* the session stays established (the network alone cannot close it: forged,
  replayed or corrupted datagrams are dropped).

At the end the network turns honest, everything is consumed, and every
message sent on a stream that no one reset must have arrived. Then both
sides finish every stream they still hold, and once that settles neither
side may hold a stream: one the other side has forgotten (a stream brought
back to life by a late frame) would never close. Both sides must agree on
every byte of session credit, and the settled session must go quiet: for
four keep-alive intervals it sends only session packets, a few per
keep-alive, and stays up.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from fuzz.harness import Established, establish, make_config, resume
from stt_core import Endpoint, MessageReceived, SessionClosed, SessionState
from stt_core.config import INITIAL_SESSION_CREDIT, INITIAL_STREAM_CREDIT
from stt_core.errors import BufferFullError, InvalidStateError, StreamClosedError
from stt_core.events import Address, SessionRef
from stt_core.wire import PacketType

Side = str  # "client" or "server"
StreamKey = tuple[str, int]
EXPLICIT_IDS = (100, 101, 102)
"""Explicit ids both sides draw from: shared streams, and reuse after a close."""
LOSS_SPELL = 0.5
"""Seconds a ``lose`` rule lasts."""
SESSION_PACKET_TYPES = (PacketType.SESSION, PacketType.SESSION_KEY_PHASE_1)


class HostileNetwork(RuleBasedStateMachine):
    """One session, commands on both sides, adversarial datagrams in between."""

    streams = Bundle("streams")

    config_overrides: dict[str, Any] = {}
    """Config fields both endpoints get (subclasses vary the protocol's options)."""

    def __init__(self) -> None:
        super().__init__()
        server = replace(make_config(b"server", server=True, auto_consume=False),
                         **self.config_overrides)
        client = replace(make_config(b"client"), **self.config_overrides)
        self.pair: Established = establish(seed=3, client=client, server=server)
        self.sent: dict[tuple[Side, int], list[bytes]] = {}
        self.got: dict[tuple[Side, int], list[bytes]] = {}
        self.unconsumed: dict[int, int] = {}
        self.closed: set[tuple[Side, int]] = set()
        self.reset_ids: set[int] = set()
        self.to_lose = 0
        self.lose_until = 0.0
        self.pair.net.drop = self._lose
        self.counter = 0
        self.seen_events = {"client": 0, "server": 0}

    # ---------------------------------------------------------------- helpers

    def _endpoint(self, side: Side) -> tuple[Endpoint, SessionRef]:
        pair = self.pair
        return (pair.client, pair.client_ref) if side == "client" else (
            pair.server, pair.server_ref)

    def _collect(self) -> None:
        """Move new MessageReceived events into ``got`` (keyed by the sender's side)."""
        for side, events in (("client", self.pair.client_events),
                             ("server", self.pair.server_events)):
            sender = "server" if side == "client" else "client"
            for event in events[self.seen_events[side]:]:
                if isinstance(event, MessageReceived):
                    self.got.setdefault((sender, event.stream_id), []).append(event.data)
                    if side == "server":
                        self.unconsumed[event.stream_id] = (
                            self.unconsumed.get(event.stream_id, 0) + len(event.data))
            self.seen_events[side] = len(events)

    def _lose(self, datagram: bytes, source: Address, destination: Address) -> bool:
        if self.to_lose > 0 and self.pair.net.now <= self.lose_until:
            self.to_lose -= 1
            return True
        return False

    def _addresses(self) -> tuple[Address, Address]:
        client = next(a for a, e in self.pair.net.endpoints.items() if e is self.pair.client)
        return client, next(a for a, e in self.pair.net.endpoints.items()
                                           if e is self.pair.server)

    # ---------------------------------------------------------------- commands

    @initialize(target=streams)
    def default_stream(self) -> StreamKey:
        return ("client", 0)

    @rule(target=streams, side=st.sampled_from(["client", "server"]),
          purpose=st.text(max_size=8))
    def open_stream(self, side: Side, purpose: str) -> StreamKey:
        if side == "client":
            stream_id = self.pair.client.open_stream(self.pair.client_ref, purpose=purpose)
        else:
            stream_id = self.pair.server.open_stream(self.pair.server_ref, purpose=purpose)
        return (side, stream_id)

    @rule(target=streams, side=st.sampled_from(["client", "server"]),
          stream_id=st.sampled_from(EXPLICIT_IDS))
    def open_explicit(self, side: Side, stream_id: int) -> object:
        endpoint, ref = self._endpoint(side)
        try:
            endpoint.open_stream(ref, stream_id=stream_id, purpose="explicit")
        except (InvalidStateError, StreamClosedError):  # closed or reset recently
            return multiple()
        self.closed.discard((side, stream_id))
        return (side, stream_id)

    @rule(stream=streams, size=st.sampled_from([0, 1, 100, 1500, 20_000, 200_000]))
    def send(self, stream: StreamKey, size: int) -> None:
        side, stream_id = stream
        if (side, stream_id) in self.closed:
            return
        endpoint, ref = self._endpoint(side)
        self.counter += 1
        body = self.counter.to_bytes(4, "big") * (size // 4 + 1)
        message = body[:size]
        try:
            endpoint.send_message(ref, stream_id, message)
        except BufferFullError:
            return
        except StreamClosedError:  # only a reset, by either side, closes a stream early
            assert stream_id in self.reset_ids, f"stream {stream_id} closed but never reset"
            return
        self.sent.setdefault((side, stream_id), []).append(message)

    @rule(stream=consumes(streams))
    def close_stream(self, stream: StreamKey) -> None:
        side, stream_id = stream
        if stream in self.closed or stream_id == 0:
            return
        endpoint, ref = self._endpoint(side)
        try:
            endpoint.close_stream(ref, stream_id)
        except StreamClosedError:
            assert stream_id in self.reset_ids, f"stream {stream_id} closed but never reset"
        self.closed.add(stream)

    @rule(stream=consumes(streams), code=st.integers(1, 9))
    def reset(self, stream: StreamKey, code: int) -> None:
        side, stream_id = stream
        endpoint, ref = self._endpoint(side)
        endpoint.reset_stream(ref, stream_id, code)
        self.reset_ids.add(stream_id)
        self.closed.add(stream)

    @rule(count=st.integers(1, 6))
    def lose(self, count: int) -> None:
        """Up to ``count`` datagrams, in either direction, sent within the next
        LOSS_SPELL seconds are lost. The spell is short so that losses cannot
        add up to the idle timeout, which would end the session by right."""
        self.to_lose = count
        self.lose_until = self.pair.net.now + LOSS_SPELL

    @rule(fraction=st.sampled_from([0.25, 1.0]))
    def consume(self, fraction: float) -> None:
        for stream_id, pending in list(self.unconsumed.items()):
            amount = int(pending * fraction)
            self.pair.server.consume(self.pair.server_ref, stream_id, amount)
            self.unconsumed[stream_id] = pending - amount

    @rule(seconds=st.sampled_from([0.001, 0.02, 0.2, 1.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.pair.net.run(seconds)

    # ---------------------------------------------------------------- adversary

    def _inject(self, datagram: bytes, to_server: bool) -> None:
        client_addr, server_addr = self._addresses()
        if to_server:
            self.pair.net.inject(datagram, client_addr, server_addr)
        else:
            self.pair.net.inject(datagram, server_addr, client_addr)

    @rule(data=st.binary(max_size=1500), to_server=st.booleans())
    def garbage(self, data: bytes, to_server: bool) -> None:
        self._inject(data, to_server)

    @rule(index=st.integers(min_value=0), copies=st.integers(1, 4))
    def replay(self, index: int, copies: int) -> None:
        log = self.pair.net.log
        source, destination, datagram = log[index % len(log)]
        for _ in range(copies):
            self.pair.net.inject(datagram, source, destination)

    @rule(index=st.integers(min_value=0), cut=st.integers(min_value=0))
    def truncate(self, index: int, cut: int) -> None:
        log = self.pair.net.log
        source, destination, datagram = log[index % len(log)]
        self.pair.net.inject(datagram[:cut % max(1, len(datagram))], source, destination)

    @rule(index=st.integers(min_value=0), position=st.integers(min_value=0),
          bit=st.integers(0, 7))
    def bit_flip(self, index: int, position: int, bit: int) -> None:
        log = self.pair.net.log
        source, destination, datagram = log[index % len(log)]
        flipped = bytearray(datagram)
        flipped[position % len(flipped)] ^= 1 << bit
        self.pair.net.inject(bytes(flipped), source, destination)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def delivered_is_a_prefix_of_sent(self) -> None:
        self._collect()
        for key, got in self.got.items():
            sent = self.sent.get(key, [])
            assert got == sent[:len(got)], f"stream {key}: delivered is not a prefix of sent"

    @invariant()
    def session_stays_up(self) -> None:
        assert self.pair.client.session_state(self.pair.client_ref) is SessionState.ESTABLISHED
        assert self.pair.server.session_state(self.pair.server_ref) is SessionState.ESTABLISHED

    def teardown(self) -> None:
        """The network turns honest: everything sent on streams no one reset must
        arrive, and once both sides finished every stream, none may be left."""
        self.to_lose = 0
        intact = {key: sent for key, sent in self.sent.items() if key[1] not in self.reset_ids}
        for _ in range(30):
            self.consume(1.0)
            self.pair.net.run(2.0)
            self._collect()
            if all(self.got.get(key, []) == sent for key, sent in intact.items()):
                break
        for key, sent in intact.items():
            assert self.got.get(key, []) == sent, f"stream {key}: not everything arrived"
        for _ in range(10):  # a FIN can make a stream appear on the side it reaches
            for side in ("client", "server"):
                endpoint, ref = self._endpoint(side)
                for stream in endpoint.sessions[ref].streams:
                    if not stream.reset and stream.sender.final_size is None:
                        endpoint.close_stream(ref, stream.stream_id)
            self.consume(1.0)
            self.pair.net.run(2.0)
        for side in ("client", "server"):
            endpoint, ref = self._endpoint(side)
            left = [s.stream_id for s in endpoint.sessions[ref].streams]
            assert left == [], f"{side} still holds streams {left} that both sides finished"
        # Every byte one side counted against the other's session limit, the other
        # counted and gave back, resets included (protocol.md §4.7, §5.4).
        client = self.pair.client.sessions[self.pair.client_ref]
        server = self.pair.server.sessions[self.pair.server_ref]
        for sender, receiver in ((client, server), (server, client)):
            assert receiver.data_received == sender.data_sent, "session credit leaked"
            assert receiver.data_consumed == receiver.data_received, "credit not returned"
        self._settled_session_goes_quiet()

    def _settled_session_goes_quiet(self) -> None:
        """With nothing left to do, a session costs only its keep-alives: session
        packets, no handshake message, nothing empty, and both sides stay up."""
        log = self.pair.net.log
        self.pair.net.run(5.0)  # the last ACKs and releases
        start = len(log)
        interval = self.pair.client.config.keep_alive_interval
        self.pair.net.run(4 * interval)
        idle = [datagram for _, _, datagram in log[start:]]
        assert all(datagram and datagram[0] in SESSION_PACKET_TYPES for datagram in idle), \
            f"an idle session sent {sorted({d[0] if d else -1 for d in idle})}"
        # Two datagrams per keep-alive (8 in all), up to 16 where a rebinding had
        # left the server a path to validate; more would be a loop of some kind.
        assert len(idle) <= 4 * 6, f"an idle session sent {len(idle)} datagrams in 4 keep-alives"
        self.session_stays_up()

HostileNetwork.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHostileNetwork = HostileNetwork.TestCase


class KeyUpdatingHostileNetwork(HostileNetwork):
    """Keys change every 16 packets in each direction, so losses, replays and
    late packets straddle key phases (protocol.md §6.4)."""

    config_overrides = {"key_update_interval_packets": 16}


KeyUpdatingHostileNetwork.TestCase.settings = HostileNetwork.TestCase.settings
TestKeyUpdatingHostileNetwork = KeyUpdatingHostileNetwork.TestCase


class TightWindowsHostileNetwork(HostileNetwork):
    """The smallest windows and send buffers the config allows: flow control and
    backpressure (``BufferFullError``) bind all the time."""

    config_overrides = {"stream_receive_window": INITIAL_STREAM_CREDIT,
                        "session_receive_window": INITIAL_SESSION_CREDIT,
                        "stream_send_buffer_bytes": 16 * 1024,
                        "session_send_buffer_bytes": 64 * 1024}


TightWindowsHostileNetwork.TestCase.settings = HostileNetwork.TestCase.settings
TestTightWindowsHostileNetwork = TightWindowsHostileNetwork.TestCase


class ClosingHostileNetwork(HostileNetwork):
    """Ends with a graceful close instead: with the network honest again, the
    client closes the session with whatever is still queued, and everything it
    sent on streams no one reset must arrive before both sides report a
    graceful close (protocol.md §7.2: the close flushes first)."""

    def teardown(self) -> None:
        self.to_lose = 0
        pair = self.pair
        pair.client.close_session(pair.client_ref, now=pair.net.now)
        deadline = pair.net.now + pair.client.config.close_timeout + 1.0
        while pair.net.now < deadline:
            self._collect()
            self.consume(1.0)  # the server reads as it goes
            pair.net.run(0.05)
        self._collect()
        closes = {side: [e for e in events if isinstance(e, SessionClosed) and e.ref == ref]
                  for side, events, ref in (("client", pair.client_events, pair.client_ref),
                                            ("server", pair.server_events, pair.server_ref))}
        assert [(e.reason, e.by_peer, e.abandoned_bytes) for e in closes["client"]] == [
            ("graceful", False, 0)]
        assert [(e.reason, e.by_peer) for e in closes["server"]] == [("graceful", True)]
        for key, sent in self.sent.items():
            if key[0] == "client" and key[1] not in self.reset_ids:
                assert self.got.get(key, []) == sent, f"stream {key}: lost in the close"


ClosingHostileNetwork.TestCase.settings = HostileNetwork.TestCase.settings
TestClosingHostileNetwork = ClosingHostileNetwork.TestCase


class RebindingHostileNetwork(HostileNetwork):
    """The client's address changes under it, as behind a NAT that forgot the
    mapping: packets to the old address go nowhere, and the server must follow
    the session to the new one (protocol.md §8.2) through losses and replays."""

    @rule(port=st.integers(1, 60_000))
    def rebind(self, port: int) -> None:
        net = self.pair.net
        old, _ = self._addresses()
        new: Address = ("198.51.100.7", port)
        if new in net.endpoints:
            return
        net.endpoints[new] = net.endpoints.pop(old)
        net.events[new] = net.events[self.pair.client_addr]  # one list, under both keys


RebindingHostileNetwork.TestCase.settings = HostileNetwork.TestCase.settings
TestRebindingHostileNetwork = RebindingHostileNetwork.TestCase


class ResumingHostileNetwork(HostileNetwork):
    """The session under test is a resumed one (protocol.md §6.8): the first
    session closes, the client resumes from its token, and every rule runs on
    the resumption. Its handshake state differs from a full handshake's (no
    AUTH_PROOF to confirm, RESUME kept for retransmission), and a timer left
    from it once ended resumed sessions after the connect timeout (Appendix B
    item 28)."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = resume(self.pair)
        self.pair.net.drop = self._lose
        self.seen_events = {"client": len(self.pair.client_events),
                            "server": len(self.pair.server_events)}


ResumingHostileNetwork.TestCase.settings = HostileNetwork.TestCase.settings
TestResumingHostileNetwork = ResumingHostileNetwork.TestCase


class LongHostileNetwork(HostileNetwork):
    """The same machine, run long (``-m slow``, about 2.5 minutes): Appendix B items
    24 to 26 took a few thousand examples to show up."""


LongHostileNetwork.TestCase.settings = settings(
    max_examples=5000, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLongHostileNetwork = pytest.mark.slow(LongHostileNetwork.TestCase)
