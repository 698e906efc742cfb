"""Tracing: the injected sink sees packets, losses, metrics and state changes."""

from __future__ import annotations

import random
from typing import cast

from stt_core import Endpoint, SessionEstablished
from stt_core.trace import NULL_TRACE, ListTrace

from .helpers import SERVER_ADDR, Pair, make_config, seeded_random


def traced_pair() -> tuple[Pair, ListTrace]:
    pair = Pair()
    trace = ListTrace()
    pair.client = Endpoint(make_config(b"client"), now=pair.now, random_bytes=seeded_random(3),
                           trace=trace)
    pair.addr[id(pair.client)] = ("10.0.0.1", 40000)
    pair.by_addr[("10.0.0.2", 9000)] = pair.client
    return pair, trace


def test_a_lossy_transfer_is_fully_traced() -> None:
    pair, trace = traced_pair()
    rng = random.Random(1)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                       for e in pair.client_events))
    pair.drop = lambda datagram, source, destination: rng.random() < 0.1
    stream = pair.client.open_stream(ref, purpose="traced")
    for _ in range(20):
        pair.client.send_message(ref, stream, b"t" * 20_000)
    pair.run_for(20.0)
    names = {name for _, _, name, _ in trace.events}
    assert {"packet_sent", "packet_received", "packets_lost", "metrics_updated",
            "session_state_changed"} <= names
    states = [(d["old"], d["new"]) for d in trace.named("session_state_changed")]
    assert ("handshaking", "established") in states
    lost = [pn for d in trace.named("packets_lost")
            for pn in cast(list[int], d["packet_numbers"])]  # trace data is dict[str, object]
    assert len(lost) == pair.client.session_stats(ref).packets_lost
    sent = trace.named("packet_sent")
    numbers = [cast(int, d["packet_number"]) for d in sent]  # trace data is dict[str, object]
    assert numbers == sorted(numbers)
    for _, _, _, data in trace.events:  # plain data only: never key or payload bytes
        assert not any(isinstance(value, (bytes, bytearray)) for value in data.values())


def test_drops_are_traced_with_their_reason() -> None:
    pair, trace = traced_pair()
    pair.client.receive_datagram(b"\x00" * 5, ("10.6.6.6", 1), pair.now)
    assert trace.named("packet_dropped") == [{"trigger": "too_short"}]


def test_tracing_is_off_by_default() -> None:
    endpoint = Endpoint(make_config(b"x"), now=0.0)
    assert endpoint.trace is NULL_TRACE and not endpoint.trace.enabled
