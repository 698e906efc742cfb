"""Fuzz target: arbitrary datagrams into fresh endpoints (protocol.md §3, §9).

Invariant: any input is parsed or counted as dropped; nothing raises. Also:
before an address is validated, the server never sends it more than three
times the bytes it received from it (protocol.md §9.4), and the endpoints'
counters add up (every datagram fed is counted as received, and no more are
counted as dropped than were fed).

The input is cut at ``harness.SPLIT`` into up to 32 datagrams, each fed both to
a server endpoint and to a client endpoint that has a ``connect`` pending
towards the fuzzer's address. Both endpoints use seeded randomness, so the
client's HELLO nonce is the same in every run: the seed corpus holds real
CHALLENGE/REJECT/RETRY replies to it, and mutations of them reach deep into
the connector.

Run: ``fuzz/run datagram SECONDS`` (atheris) or, as a plain function,
``check(data)``; ``tests/test_fuzz_corpus.py`` runs it over the seed corpus.
"""

from __future__ import annotations

import sys

from fuzz.harness import START, make_config, run_fuzzer, seeded_random, split_input
from stt_core import Endpoint
from stt_core.states import AMPLIFICATION_FACTOR

ATTACKER = ("198.51.100.7", 4433)
"""The address every fuzzed datagram claims to come from."""
SERVER_SEED = 11
CLIENT_SEED = 12


def fresh_endpoints() -> tuple[Endpoint, Endpoint]:
    """A listening server and a client with one connect pending to ``ATTACKER``."""
    server = Endpoint(make_config(b"server", server=True, cookie_threshold=4),
                      now=START, random_bytes=seeded_random(SERVER_SEED))
    client = Endpoint(make_config(b"client"), now=START, random_bytes=seeded_random(CLIENT_SEED))
    client.connect(ATTACKER, START)
    client.datagrams_to_send(START)
    return server, client


def _validated(endpoint: Endpoint) -> bool:
    """True once some session at ``ATTACKER`` proved its address (a replayed handshake)."""
    return any(s.address_validated and s.address == ATTACKER
               for s in endpoint.sessions.values())


def _pump(endpoint: Endpoint, now: float) -> int:
    """Flush, run timers, drain events; returns the bytes sent to ``ATTACKER``."""
    out = endpoint.datagrams_to_send(now)
    if (deadline := endpoint.next_timer()) is not None and deadline <= now:
        endpoint.handle_timer(now)
    while endpoint.next_event() is not None:
        pass
    return sum(len(d) for d, addr in out if addr == ATTACKER)


def check(data: bytes) -> None:
    """Feed ``data`` as datagrams; raise AssertionError if an invariant breaks."""
    server, client = fresh_endpoints()
    now = START
    received = sent = 0
    validated = False
    pieces = split_input(data)
    for piece in pieces:
        now += 0.01
        received += len(piece)
        server.receive_datagram(piece, ATTACKER, now)
        client.receive_datagram(piece, ATTACKER, now)
        validated = validated or _validated(server)  # a proven address: no limit then
        sent += _pump(server, now)
        if not validated and sent > AMPLIFICATION_FACTOR * received:
            raise AssertionError(f"sent {sent} bytes to an unvalidated address "
                                 f"that sent {received}")
        _pump(client, now)
    # Later: timers fire (retransmissions, expiry); nothing may raise.
    for later in (now + 0.3, now + 11.0, now + 40.0):
        for endpoint in (server, client):
            endpoint.handle_timer(later)
            endpoint.datagrams_to_send(later)
            while endpoint.next_event() is not None:
                pass
    for endpoint in (server, client):
        stats = endpoint.stats
        if stats.datagrams_received != len(pieces):
            raise AssertionError("a datagram was not counted as received")
        if stats.datagrams_dropped > len(pieces):
            raise AssertionError("more drops than datagrams")


if __name__ == "__main__":
    run_fuzzer(check, sys.argv)
