"""Helpers of the security tests: session pairs, spoofed HELLOs, byte counts,
memory peaks, and an offender/bystander pair on one server.

Shared by ``test_security.py`` and ``test_security_peer.py``; no tests here.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Unpack

from fuzz.harness import Established, establish
from fuzz.harness import make_config as raw_config
from stt_core import (
    Config,
    Endpoint,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
)
from stt_core.events import Address, Event, SessionRef
from stt_core.wire import (
    PacketType,
)

from .helpers import SEED, SERVER_ADDR, Pair, PairOptions, seeded_random

SESSION_TYPES = (PacketType.SESSION, PacketType.SESSION_KEY_PHASE_1)


def established(events: list[Event]) -> list[SessionEstablished]:
    return [e for e in events if isinstance(e, SessionEstablished)]


def received(events: list[Event], stream_id: int | None = None) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)
            and (stream_id is None or e.stream_id == stream_id)]


def open_pair(**kwargs: Unpack[PairOptions]) -> tuple[Pair, SessionRef, SessionRef]:
    """A Pair with one established session: (pair, client ref, server ref)."""
    pair = Pair(**kwargs)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(2.0, stop=lambda: bool(established(pair.server_events)))
    server_ref = established(pair.server_events)[0].ref
    pair.run_for(0.1)
    return pair, ref, server_ref


def hello_from_new_client(index: int, *, seed: bytes = SEED) -> bytes:
    """A valid HELLO datagram from a fresh client that will never answer."""
    client = Endpoint(Config(shared_seed=seed, node_id=b"spoof%d" % index), now=1000.0,
                      random_bytes=seeded_random(50_000 + index))
    client.connect(SERVER_ADDR, 1000.0)
    ((hello, _),) = client.datagrams_to_send(1000.0)
    assert hello[0] == PacketType.HELLO
    return hello


def bytes_by_address(out: list[tuple[bytes, Address]]) -> dict[Address, int]:
    totals: dict[Address, int] = {}
    for datagram, addr in out:
        totals[addr] = totals.get(addr, 0) + len(datagram)
    return totals


def closed_events(events: list[Event], ref: SessionRef | None = None) -> list[SessionClosed]:
    return [e for e in events if isinstance(e, SessionClosed) and (ref is None or e.ref == ref)]


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yield a list that holds the tracemalloc peak (bytes) once the block ends."""
    result: list[int] = []
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()


def stream_open_frames(first_id: int, count: int) -> bytes:
    from stt_core.wire import StreamOpenFrame
    return b"".join(StreamOpenFrame(first_id + 2 * i, 0, 1024, "x").encode()
                    for i in range(count))


def attacked_pair(seed: int, **server_overrides: object) -> tuple[Established, Established]:
    """An offender and a bystander session on one server."""
    server = raw_config(b"server", server=True, **server_overrides)
    offender = establish(seed=seed, server=server)
    bystander = establish(seed=seed + 1, net=offender.net, client_addr=("192.0.2.66", 2))
    return offender, bystander


def bystander_works(bystander: Established, tag: bytes) -> bool:
    stream = bystander.client.open_stream(bystander.client_ref)
    bystander.client.send_message(bystander.client_ref, stream, tag)
    bystander.net.run(1.0)
    return tag in received(bystander.server_events)
