"""Fuzz target: the handshake state machines with one message replaced (protocol.md §6).

Invariant: any input is parsed or counted as dropped; nothing raises. Also:
the initiator's ``connect``/``resume`` always ends, established or closed,
by its timeout (a garbled message never makes it hang), and one connect never
yields more than one session on the server.

The first input byte picks which message of a real, deterministic handshake
is replaced by the rest of the input: 0 HELLO, 1 CHALLENGE, 2 AUTH_PROOF,
3 FINAL, 4 RESUME, 5 RESUME_OK (value modulo 6). Bit 0x80 replaces the whole
datagram instead of only the body after the 10-byte header; bit 0x40 delivers
the fuzzed bytes in addition to the real message instead of in its place.
Only the first occurrence is touched, so retransmissions carry the real
message and the handshake can still complete after a forgery was dropped.

Run: ``fuzz/run handshake SECONDS`` (atheris) or, as a plain function,
``check(data)``; ``tests/test_fuzz_corpus.py`` runs it over the seed corpus.
"""

from __future__ import annotations

import sys

from fuzz.harness import (
    CLIENT_ADDR,
    SERVER_ADDR,
    Net,
    establish,
    make_config,
    run_fuzzer,
    seeded_random,
)
from stt_core import Endpoint, ResumeTokenReceived, SessionClosed, SessionEstablished
from stt_core.events import Address, Event, SessionRef
from stt_core.wire import PacketType

SLOTS = (PacketType.HELLO, PacketType.CHALLENGE, PacketType.AUTH_PROOF, PacketType.FINAL,
         PacketType.RESUME, PacketType.RESUME_OK)
TIMEOUT = 3.0


class Mutator:
    """Replaces the first datagram of one packet type with the fuzzer's bytes."""

    def __init__(self, packet_type: int, replacement: bytes, *, whole: bool,
                 keep_original: bool) -> None:
        self.packet_type = packet_type
        self.replacement = replacement
        self.whole = whole
        self.keep_original = keep_original
        self.done = False
        self.extra: list[tuple[bytes, Address, Address]] = []

    def __call__(self, datagram: bytes, source: Address, destination: Address) -> bytes | None:
        if self.done or not datagram or datagram[0] != self.packet_type:
            return datagram
        self.done = True
        fuzzed = self.replacement if self.whole else datagram[:10] + self.replacement
        if self.keep_original:
            self.extra.append((fuzzed, source, destination))
            return datagram
        return fuzzed


def _outcome(events: list[Event], ref: SessionRef) -> str | None:
    for event in events:
        if event.ref == ref and isinstance(event, SessionEstablished):
            return "established"
        if event.ref == ref and isinstance(event, SessionClosed):
            return "closed"
    return None


def _run(net: Net, mutator: Mutator) -> None:
    """Pump with the mutator, delivering any extra copies right after the real one."""
    net.rewrite = mutator
    deadline = net.now + TIMEOUT + 1.0
    while net.now < deadline:
        net.run(deadline - net.now, stop=lambda: bool(mutator.extra))
        for datagram, source, destination in mutator.extra:
            net.inject(datagram, source, destination)
        mutator.extra.clear()


def _full_handshake(mutator: Mutator) -> None:
    net = Net()
    server = net.add(SERVER_ADDR, Endpoint(make_config(b"server", server=True), now=net.now,
                                           random_bytes=seeded_random(21)))
    client = net.add(CLIENT_ADDR, Endpoint(make_config(b"client"), now=net.now,
                                           random_bytes=seeded_random(22)))
    ref = client.connect(SERVER_ADDR, net.now, timeout=TIMEOUT)
    _run(net, mutator)
    _check(net, ref)
    if server.stats.datagrams_received < 1:
        raise AssertionError("the server saw nothing")


def _resumption(mutator: Mutator) -> None:
    pair = establish(seed=23)
    tickets = [e for e in pair.client_events if isinstance(e, ResumeTokenReceived)]
    if not tickets:
        raise RuntimeError("the server issued no resume token")
    pair.client.close_session(pair.client_ref, now=pair.net.now)
    pair.net.run(1.0)
    before = len(pair.server_events)
    ref = pair.client.resume(SERVER_ADDR, tickets[0].token, pair.net.now, timeout=TIMEOUT)
    _run(pair.net, mutator)
    _check(pair.net, ref, server_from=before)


def _check(net: Net, ref: SessionRef, *, server_from: int = 0) -> None:
    if _outcome(net.events[CLIENT_ADDR], ref) is None:
        raise AssertionError("the handshake neither completed nor failed by its timeout")
    established = [e for e in net.events[SERVER_ADDR][server_from:]
                   if isinstance(e, SessionEstablished)]
    if len(established) > 1:
        raise AssertionError("one connect produced several sessions on the server")


def check(data: bytes) -> None:
    """Run one handshake with a fuzzed message; raise AssertionError on a broken invariant."""
    if not data:
        return
    control, body = data[0], data[1:]
    slot = (control & 0x3F) % len(SLOTS)
    mutator = Mutator(SLOTS[slot], body, whole=bool(control & 0x80),
                      keep_original=bool(control & 0x40))
    if slot < 4:
        _full_handshake(mutator)
    else:
        _resumption(mutator)


if __name__ == "__main__":
    run_fuzzer(check, sys.argv)
