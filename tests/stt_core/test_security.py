"""Security properties of the core, tested end to end (docs/security.md).

Each test is one claim of the security document: the amplification limit,
the stateless answer to a handshake flood, per-packet anti-replay, key update
under load, AEAD nonce uniqueness, secrets kept out of reprs, logs and traces,
and resumption that neither amplifies nor burns tokens on forgeries. What a
malicious peer holding the seed can do is in ``test_security_peer.py``.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from fuzz.harness import SERVER_ADDR as RAW_SERVER_ADDR
from fuzz.harness import RawPeer, establish
from stt_core import (
    Config,
    Endpoint,
    MessageReceived,
    ResumeTokenReceived,
    SessionEstablished,
    SessionState,
)
from stt_core.crypto import PacketProtection
from stt_core.events import Address, SessionRef
from stt_core.handshake import HandshakeKeys
from stt_core.resumption import Ticket
from stt_core.states import AMPLIFICATION_FACTOR
from stt_core.wire import (
    PacketType,
    SimpleFrame,
)

from .helpers import SEED, SERVER_ADDR, Pair, make_config, seeded_random
from .security_helpers import (
    SESSION_TYPES,
    bytes_by_address,
    established,
    hello_from_new_client,
    open_pair,
    received,
)

# --------------------------------------------------------------- anti-amplification


def test_spoofed_hello_source_never_gets_more_than_three_times_its_bytes() -> None:
    """A HELLO from a spoofed source that never answers: count everything sent back."""
    server = Endpoint(make_config(b"server", server_mode=True), now=1000.0,
                      random_bytes=seeded_random(1))
    victim = ("203.0.113.9", 5555)
    hello = hello_from_new_client(1)
    server.receive_datagram(hello, victim, 1000.0)
    sent: dict[Address, int] = {}
    now = 1000.0
    while now < 1000.0 + 3 * server.config.connect_timeout:  # past every deadline
        for addr, size in bytes_by_address(server.datagrams_to_send(now)).items():
            sent[addr] = sent.get(addr, 0) + size
        deadline = server.next_timer()
        now = deadline if deadline is not None and deadline > now else now + 0.5
        server.handle_timer(now)
    assert 0 < sent[victim] <= AMPLIFICATION_FACTOR * len(hello)
    assert not server.sessions  # the half-open handshake expired


def test_duplicate_hellos_never_amplify() -> None:
    """Many copies of one HELLO (and many HELLOs aimed at one victim) stay under 3x."""
    server = Endpoint(make_config(b"server", server_mode=True), now=1000.0,
                      random_bytes=seeded_random(2))
    victim = ("203.0.113.10", 6666)
    hellos = [hello_from_new_client(1)] * 200 + [hello_from_new_client(i) for i in range(2, 40)]
    received_bytes = sent_bytes = 0
    now = 1000.0
    for hello in hellos:
        now += 0.001
        server.receive_datagram(hello, victim, now)
        received_bytes += len(hello)
        sent_bytes += bytes_by_address(server.datagrams_to_send(now)).get(victim, 0)
        assert sent_bytes <= AMPLIFICATION_FACTOR * received_bytes
    assert len(server.sessions) == 39  # one per distinct HELLO, none for the copies


def test_replayed_session_packet_from_new_address_is_dropped_without_probing() -> None:
    """A captured packet replayed from a spoofed address is a duplicate: no answer at all."""
    pair, ref, server_ref = open_pair()
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"x" * 3000)
    pair.run_for(1.0)
    captured = [d for who, d in pair.sent if who == "client" and d[0] in SESSION_TYPES]
    victim = ("203.0.113.11", 7777)
    sent_bytes = 0
    for datagram in captured * 3:
        pair.server.receive_datagram(datagram, victim, pair.now)
        pair.now += 0.2
        sent_bytes += bytes_by_address(pair.server.datagrams_to_send(pair.now)).get(victim, 0)
        pair.server.handle_timer(pair.now)
    assert sent_bytes == 0
    assert pair.server.peer_address(server_ref) == ("10.0.0.1", 40000)  # not hijacked


def test_path_probe_to_a_new_address_stays_within_three_times_its_bytes() -> None:
    """A fresh authenticated packet from a new address: PATH_CHALLENGE within 3x."""
    pair = establish(seed=71)
    raw = RawPeer(pair)
    victim = ("203.0.113.12", 8888)
    tiny = raw.send(SimpleFrame(0x13).encode(), source=victim)  # one small KEEP_ALIVE
    server = pair.server
    sent_bytes = 0
    for _ in range(40):
        pair.net.now += 0.1
        server.handle_timer(pair.net.now)
        sent_bytes += bytes_by_address(server.datagrams_to_send(pair.net.now)).get(victim, 0)
    assert 0 < sent_bytes <= AMPLIFICATION_FACTOR * len(tiny)
    assert server.peer_address(pair.server_ref) == pair.client_addr  # not moved


# --------------------------------------------------------------- handshake flood


def test_handshake_flood_gets_stateless_retry_and_a_real_client_still_connects() -> None:
    threshold = 8
    pair = Pair(server=make_config(b"server", server_mode=True, cookie_threshold=threshold,
                                   max_pending_handshakes=64))
    now = pair.now
    for i in range(200):
        pair.server.receive_datagram(hello_from_new_client(i), ("198.51.100.1", 10_000 + i),
                                     now)
    replies = pair.server.datagrams_to_send(now)
    kinds = [d[0] for d, _ in replies]
    assert kinds.count(PacketType.CHALLENGE) == threshold
    assert kinds.count(PacketType.RETRY) == 200 - threshold
    assert len(pair.server.sessions) == threshold  # spoofed sources cost no more state
    assert pair.server.acceptor.pending == threshold
    assert pair.server.stats.retries_sent == 200 - threshold
    # Every RETRY is smaller than the HELLO it answers: no amplification either.
    assert all(len(d) < 1200 for d, _ in replies)

    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(3.0, stop=lambda: bool(established(pair.client_events)))
    assert [e.ref for e in established(pair.client_events)] == [ref]
    assert any(who == "server" and d[0] == PacketType.RETRY for who, d in pair.sent)
    hellos = [d for who, d in pair.sent if who == "client" and d[0] == PacketType.HELLO]
    assert len(hellos) >= 2 and hellos[0] != hellos[-1]  # the second one echoes the cookie


def test_forged_cookie_from_another_address_is_not_accepted() -> None:
    """A cookie is bound to the address it was issued to."""
    pair = Pair(server=make_config(b"server", server_mode=True, cookie_threshold=0))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(3.0, stop=lambda: bool(established(pair.server_events)))
    assert established(pair.client_events)
    hello_with_cookie = [d for who, d in pair.sent
                         if who == "client" and d[0] == PacketType.HELLO][-1]
    sessions = len(pair.server.sessions)
    pair.server.receive_datagram(hello_with_cookie, ("198.51.100.99", 1), pair.now)
    replies = pair.server.datagrams_to_send(pair.now)
    assert len(pair.server.sessions) == sessions
    assert all(d[0] != PacketType.CHALLENGE for d, _ in replies)
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


# --------------------------------------------------------------- anti-replay


def test_replayed_session_packets_deliver_nothing_twice() -> None:
    pair, ref, server_ref = open_pair()
    stream = pair.client.open_stream(ref, purpose="replay")
    messages = [bytes([i]) * (100 + 700 * i) for i in range(12)]
    for message in messages:
        pair.client.send_message(ref, stream, message)
    pair.run_for(3.0)
    assert received(pair.server_events, stream) == messages
    captured = [d for who, d in pair.sent if who == "client" and d[0] in SESSION_TYPES]
    assert len(captured) > 10
    before = pair.server.session_stats(server_ref).duplicates_dropped
    events_before = len(pair.server_events)
    for _ in range(5):
        for datagram in captured:
            pair.server.receive_datagram(datagram, ("10.0.0.1", 40000), pair.now)
        pair.run_for(0.5)
    new_events = pair.server_events[events_before:]
    assert not [e for e in new_events if isinstance(e, MessageReceived)]
    stats = pair.server.session_stats(server_ref)
    assert stats.duplicates_dropped - before == 5 * len(captured)
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED


def test_replayed_handshake_never_creates_a_second_session() -> None:
    pair, ref, _ = open_pair()
    handshake = [d for who, d in pair.sent if who == "client" and d[0] not in SESSION_TYPES]
    for _ in range(3):
        for datagram in handshake:
            pair.server.receive_datagram(datagram, ("10.0.0.1", 40000), pair.now)
            pair.server.receive_datagram(datagram, ("198.51.100.3", 3), pair.now)
        pair.run_for(0.5)
    assert len(established(pair.server_events)) == 1
    assert len(pair.server.sessions) == 1
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


# --------------------------------------------------------------- key update and nonces


def lossy(rate: float, seed: int) -> Callable[[bytes, object, object], bool]:
    rng = random.Random(seed)
    return lambda datagram, src, dst: datagram[0] in SESSION_TYPES and rng.random() < rate


@contextmanager
def record_nonces() -> Iterator[list[tuple[bytes, bytes]]]:
    """Record ``(key fingerprint, nonce)`` of every packet any PacketProtection seals."""
    original_init = PacketProtection.__init__
    original_seal = PacketProtection.seal
    fingerprints: dict[int, bytes] = {}
    alive: list[PacketProtection] = []  # keeps ids unique for the whole test
    seen: list[tuple[bytes, bytes]] = []

    def init(self: PacketProtection, aead: str, secret: bytes) -> None:
        original_init(self, aead, secret)
        fingerprints[id(self)] = hashlib.sha256(b"key" + secret).digest()
        alive.append(self)

    def seal(self: PacketProtection, packet_number: int, header: bytes,
             plaintext: bytes) -> bytes:
        iv = self._iv
        nonce = (iv ^ packet_number).to_bytes(12, "big")
        seen.append((fingerprints[id(self)], nonce))
        return original_seal(self, packet_number, header, plaintext)

    setattr(PacketProtection, "__init__", init)  # noqa: B010
    setattr(PacketProtection, "seal", seal)  # noqa: B010
    try:
        yield seen
    finally:
        setattr(PacketProtection, "__init__", original_init)  # noqa: B010
        setattr(PacketProtection, "seal", original_seal)  # noqa: B010


def transfer_with_key_updates(total: int, *, loss: float, interval: int,
                              seed: int) -> tuple[Pair, SessionRef, SessionRef, list[bytes]]:
    client = make_config(b"client", key_update_interval_packets=interval)
    server = make_config(b"server", server_mode=True, key_update_interval_packets=interval)
    pair, ref, server_ref = open_pair(client=client, server=server, seed=seed)
    pair.drop = lossy(loss, seed)
    stream = pair.client.open_stream(ref, purpose="bulk")
    back = pair.server.open_stream(server_ref, purpose="back")
    rng = random.Random(seed)
    messages: list[bytes] = []
    sent = 0
    while sent < total:
        message = rng.randbytes(rng.randrange(1, 64 * 1024))
        messages.append(message)
        sent += len(message)
    queue = list(messages)

    def feed() -> bool:
        while queue and pair.client.can_send(ref, stream):
            pair.client.send_message(ref, stream, queue.pop(0))
        if pair.server.can_send(server_ref, back) and len(pair.server_events) % 7 == 0:
            pair.server.send_message(server_ref, back, b"ack-ish %d" % len(pair.server_events))
        return not queue and len(received(pair.server_events, stream)) == len(messages)

    pair.run_for(300.0, stop=feed)
    return pair, ref, server_ref, messages


def test_multi_megabyte_transfer_with_loss_survives_many_key_updates() -> None:
    pair, ref, server_ref, messages = transfer_with_key_updates(
        3 * 1024 * 1024, loss=0.02, interval=50, seed=5)
    got = received(pair.server_events, 1)
    assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(b"".join(messages)).digest()
    assert got == messages
    client_stats = pair.client.session_stats(ref)
    server_stats = pair.server.session_stats(server_ref)
    assert client_stats.packets_lost > 0
    assert client_stats.key_updates >= 20  # our sends rotated, and we followed the peer's
    assert server_stats.key_updates >= 20
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


def test_aead_nonce_never_reused_across_retransmissions_and_key_updates() -> None:
    with record_nonces() as seen:
        pair, ref, server_ref, messages = transfer_with_key_updates(
            1024 * 1024, loss=0.05, interval=40, seed=9)
    assert received(pair.server_events, 1) == messages
    assert pair.client.session_stats(ref).retransmitted_bytes > 0
    assert pair.client.session_stats(ref).key_updates >= 10
    keys = {key for key, _ in seen}
    assert len(keys) >= 20  # many generations, both directions
    assert len(seen) > 1000
    assert len(set(seen)) == len(seen)
    del server_ref


# --------------------------------------------------------------- secrets


def test_secrets_never_appear_in_reprs() -> None:
    seed = b"super-secret-shared-seed-value"
    node_seed = b"super-secret-node-seed"
    config = Config(shared_seed=seed, node_seed=node_seed)
    keys = HandshakeKeys(session_id=b"\x01" * 8, peer_node_id=b"peer",
                         send_secret=b"\xaa" * 32, receive_secret=b"\xbb" * 32,
                         resumption_secret=b"\xcc" * 32)
    ticket = Ticket(token=b"\xdd" * 48, resumption_secret=b"\xee" * 32,
                    session_id=b"\x02" * 8, peer_node_id=b"peer", expires_at=5.0)
    for obj, secrets in ((config, (seed, node_seed)),
                         (keys, (b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32)),
                         (ticket, (b"\xdd" * 48, b"\xee" * 32))):
        text = repr(obj) + str(obj)
        for secret in secrets:
            assert repr(secret) not in text
            assert secret.hex() not in text
            assert repr(secret[:8])[2:-1] not in text
    assert "super-secret" not in repr(config)
    assert "secret hidden" in repr(PacketProtection("aes-256-gcm", b"\x01" * 32))


def test_no_secret_bytes_in_any_log_record_during_a_session() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger("stt"), logging.getLogger()]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        pair, ref, server_ref = open_pair()
        stream = pair.client.open_stream(ref)
        pair.client.send_message(ref, stream, b"hello")
        pair.run_for(1.0)
        tickets = [e for e in pair.client_events if isinstance(e, ResumeTokenReceived)]
        pair.client.close_session(ref, now=pair.now)
        pair.run_for(5.0)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    session_secrets = [SEED, pair.client.psk]
    session_secrets += [t.token for t in tickets]
    text = "\n".join(r.getMessage() + repr(r.args) for r in records)
    for secret in session_secrets:
        assert repr(secret) not in text and secret.hex() not in text
    del server_ref


def test_config_replace_keeps_secret_out_of_repr() -> None:
    config = replace(make_config(b"n"), shared_seed=b"replaced-secret-seed")
    assert "replaced-secret-seed" not in repr(config)


@pytest.mark.parametrize("aead", ["aes-256-gcm", "chacha20-poly1305"])
def test_tampered_session_packets_are_dropped_not_fatal(aead: str) -> None:
    client = make_config(b"client", aead=aead)
    server = make_config(b"server", server_mode=True, aead=aead)
    pair, ref, server_ref = open_pair(client=client, server=server)
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"intact")
    packet = [d for who, d in pair.sent if who == "client" and d[0] in SESSION_TYPES][-1]
    def rejected() -> int:  # failed decryption, or an already-seen packet number
        stats = pair.server.session_stats(server_ref)
        return stats.decrypt_failures + stats.duplicates_dropped

    before = rejected()
    for position in range(len(packet)):
        tampered = bytearray(packet)
        tampered[position] ^= 0x40
        pair.server.receive_datagram(bytes(tampered), ("10.0.0.1", 40000), pair.now)
    assert rejected() - before >= len(packet) - 12  # header bytes may route elsewhere
    pair.run_for(1.0)
    assert received(pair.server_events, stream) == [b"intact"]
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED


def test_resume_ticket_not_in_event_repr() -> None:
    event = ResumeTokenReceived(ref=SessionRef(1), token=b"ticket-with-secret",
                                expires_at=1.0)
    assert "ticket-with-secret" not in repr(event)


def test_forged_resume_does_not_burn_the_token() -> None:
    """A RESUME carrying a real token but a bad MAC is refused and the token stays usable."""
    pair = establish(seed=73)
    ticket = next(e.token for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    pair.client.close_session(pair.client_ref, now=pair.net.now)
    pair.net.run(2.0)
    ref = pair.client.resume(RAW_SERVER_ADDR, ticket, pair.net.now)
    ((resume, _),) = pair.client.datagrams_to_send(pair.net.now)
    assert resume[0] == PacketType.RESUME
    # RESUME body: nonce_c(32) e_c(32) token_length(2) token mac(32) padding (§6.8)
    token_length = int.from_bytes(resume[10 + 64:10 + 66], "big")
    mac_at = 10 + 66 + token_length
    forged = bytearray(resume)
    forged[mac_at] ^= 0x01
    attacker = ("198.51.100.66", 6)
    pair.server.receive_datagram(bytes(forged), attacker, pair.net.now)
    replies = pair.server.datagrams_to_send(pair.net.now)
    assert [d[0] for d, addr in replies if addr == attacker] == [PacketType.REJECT]
    pair.net.inject(resume, pair.client_addr, RAW_SERVER_ADDR)  # the real one, late
    pair.net.run(1.0)
    resumed = [e for e in pair.client_events if isinstance(e, SessionEstablished) and e.ref == ref]
    assert resumed and resumed[0].resumed


def test_resume_from_a_spoofed_address_never_amplifies() -> None:
    """A ticket holder replaying its RESUME from a victim's address gets the victim
    at most 3x the RESUME's bytes, however much the server application sends."""
    pair = establish(seed=75)
    ticket = next(e.token for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    pair.client.close_session(pair.client_ref, now=pair.net.now)
    pair.net.run(2.0)
    pair.client.resume(RAW_SERVER_ADDR, ticket, pair.net.now)
    ((resume, _),) = pair.client.datagrams_to_send(pair.net.now)
    victim = ("203.0.113.50", 9)
    server = pair.server
    server.receive_datagram(resume, victim, pair.net.now)
    (server_ref,) = [e.ref for e in iter(server.next_event, None)
                     if isinstance(e, SessionEstablished)]
    stream = server.open_stream(server_ref)
    while server.can_send(server_ref, stream):
        server.send_message(server_ref, stream, b"push" * 2500)
    sent = 0
    now = pair.net.now
    for _ in range(400):  # 20 s of retransmissions and probes
        now += 0.05
        server.handle_timer(now)
        sent += bytes_by_address(server.datagrams_to_send(now)).get(victim, 0)
    assert 0 < sent <= AMPLIFICATION_FACTOR * len(resume)


def test_resumed_session_still_moves_data_once_the_client_answers() -> None:
    pair = establish(seed=77)
    ticket = next(e.token for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    pair.client.close_session(pair.client_ref, now=pair.net.now)
    pair.net.run(2.0)
    ref = pair.client.resume(RAW_SERVER_ADDR, ticket, pair.net.now)
    pair.net.run(1.0)
    server_ref = [e.ref for e in pair.server_events if isinstance(e, SessionEstablished)][-1]
    stream = pair.server.open_stream(server_ref)
    payload = bytes(range(256)) * 400
    pair.server.send_message(server_ref, stream, payload)
    pair.net.run(2.0)
    assert payload in [e.data for e in pair.client_events
                       if isinstance(e, MessageReceived) and e.ref == ref]


def test_no_secret_bytes_in_trace_records() -> None:
    """The trace sink sees packets, key updates and paths, never key material."""
    from stt_core.trace import ListTrace
    secrets: list[bytes] = []
    original_init = PacketProtection.__init__

    def init(self: PacketProtection, aead: str, secret: bytes) -> None:
        secrets.append(bytes(secret))
        original_init(self, aead, secret)

    client_trace, server_trace = ListTrace(), ListTrace()
    setattr(PacketProtection, "__init__", init)  # noqa: B010
    try:
        pair = Pair(client=make_config(b"client", key_update_interval_packets=20),
                    server=make_config(b"server", server_mode=True,
                                       key_update_interval_packets=20))
        pair.client.trace = client_trace  # sessions created from now on use it
        pair.server.trace = server_trace
        ref = pair.client.connect(SERVER_ADDR, pair.now)
        pair.run_for(1.0)
        stream = pair.client.open_stream(ref)
        for i in range(50):
            pair.client.send_message(ref, stream, bytes([i]) * 3000)
        pair.run_for(5.0)
    finally:
        setattr(PacketProtection, "__init__", original_init)  # noqa: B010
    tickets = [e.token for e in pair.client_events if isinstance(e, ResumeTokenReceived)]
    records = client_trace.events + server_trace.events
    assert any(r[2] == "key_updated" for r in records)
    text = repr(records)
    for secret in [SEED, pair.client.psk, *secrets, *tickets]:
        assert repr(secret) not in text and secret.hex() not in text
