"""Fuzz target: arbitrary frames inside authenticated packets of a live session.

Invariant: any input is parsed or counted as dropped; nothing raises. Also:
a session that an endpoint closed because of its peer's frames reports a
known ``ErrorCode`` (a peer's own ERROR or SESSION_CLOSE may carry any code,
and is reported as the peer's, ``by_peer=True``), ``SessionClosed`` is the
last event of its session, and the
server still accepts and serves a new session afterwards (one misbehaving
peer cannot take the endpoint down).

The fuzzer plays a malicious peer that holds the shared seed
(``harness.RawPeer``): the input is cut at ``harness.SPLIT`` into up to 32
pieces; the first byte of each piece picks the direction (bit 0: client to
server or server to client) and whether the two endpoints may talk and run
their timers before the next piece (bit 1); the rest is a packet payload,
sealed with that side's real send key and next packet number. The AEAD
therefore always verifies and the bytes reach the frame parser and every
frame handler (protocol.md §4, §5, §7).

Run: ``fuzz/run session SECONDS`` (atheris) or, as a plain function,
``check(data)``; ``tests/test_fuzz_corpus.py`` runs it over the seed corpus.
"""

from __future__ import annotations

import sys

from fuzz.harness import (
    CLIENT_ADDR,
    SERVER_ADDR,
    Established,
    establish,
    run_fuzzer,
    split_input,
)
from stt_core import ErrorCode, SessionClosed, SessionEstablished
from stt_core.session import Session
from stt_core.wire import encode_session_header

KNOWN_CODES = frozenset(int(code) for code in ErrorCode)
SECOND_CLIENT = ("192.0.2.3", 40001)


def seal(session: Session, payload: bytes) -> bytes:
    """``payload`` as the plaintext of the session's next protected packet."""
    protection = session.send_protection
    if protection is None:
        raise RuntimeError("session has no send keys")
    pn = session.next_packet_number
    session.next_packet_number = pn + 1
    header = encode_session_header(session.send_phase, session.session_id, pn)
    return header + protection.seal(pn, header, payload)


def _inject(pair: Established, piece: bytes) -> None:
    """Seal one piece on the side its first byte names and deliver it."""
    flags, payload = piece[0], piece[1:]
    to_client = bool(flags & 1)
    endpoint, ref = (pair.server, pair.server_ref) if to_client else (
        pair.client, pair.client_ref)
    session = endpoint.sessions.get(ref)
    if session is None or session.send_protection is None:
        return  # that side already forgot the session
    datagram = seal(session, payload)
    if to_client:
        pair.net.inject(datagram, SERVER_ADDR, CLIENT_ADDR)
    else:
        pair.net.inject(datagram, CLIENT_ADDR, SERVER_ADDR)
    if flags & 2:
        pair.net.run(0.05)


def _closed_codes_known(pair: Established) -> None:
    """Local error closes carry an ErrorCode; SessionClosed is a session's last event."""
    for events in (pair.client_events, pair.server_events):
        closed: set[int] = set()
        for event in events:
            if event.ref in closed:
                raise AssertionError(f"{type(event).__name__} after SessionClosed")
            if isinstance(event, SessionClosed):
                closed.add(event.ref)
                if event.reason == "error" and not event.by_peer \
                        and event.code not in KNOWN_CODES:
                    raise AssertionError(f"session closed with unknown code {event.code}")


def check(data: bytes) -> None:
    """Inject ``data`` as sealed frames; raise AssertionError if an invariant breaks."""
    pair = establish(seed=7)
    for piece in split_input(data):
        if piece:
            _inject(pair, piece)
    pair.net.run(1.0)
    pair.net.run(35.0)  # idle timeouts, close timers, keep-alives: nothing may raise
    _closed_codes_known(pair)
    # The endpoint must still serve a newcomer.
    before = len(pair.server_events)
    other = establish(seed=8, net=pair.net, client_addr=SECOND_CLIENT)
    if not any(isinstance(e, SessionEstablished) for e in pair.server_events[before:]):
        raise AssertionError("the server did not accept a new session")
    stream = other.client.open_stream(other.client_ref)
    other.client.send_message(other.client_ref, stream, b"still alive")
    pair.net.run(1.0)
    if not any(getattr(e, "data", None) == b"still alive" for e in pair.server_events):
        raise AssertionError("the server did not deliver a message on a new session")


if __name__ == "__main__":
    run_fuzzer(check, sys.argv)
