"""Endpoint behaviour end to end on a scripted link: handshake, keep-alive,
timeouts, close, and robustness against garbage input."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_core import (
    Config,
    DropReason,
    Event,
    HandshakeConfirmed,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
    SessionState,
    StreamClosed,
    StreamOpened,
)
from stt_core.errors import InvalidStateError, StreamClosedError
from stt_core.events import SessionRef
from stt_core.session import CIPHER_RELEASE_INTERVAL, Session, drain_due, keep_alive_wait
from stt_core.wire import PacketType

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, make_config
from .security_helpers import received


def established(events: list[Event]) -> list[SessionEstablished]:
    return [e for e in events if isinstance(e, SessionEstablished)]


def closed(events: list[Event]) -> list[SessionClosed]:
    return [e for e in events if isinstance(e, SessionClosed)]


def connect(pair: Pair, *, peer_node_id: bytes | None = None) -> SessionRef:
    ref = pair.client.connect(SERVER_ADDR, pair.now, peer_node_id=peer_node_id)
    # Until both sides are up: the client is established on CHALLENGE, a
    # one-way trip before the server (on AUTH_PROOF).
    pair.run_for(2.0, stop=lambda: bool((established(pair.client_events)
                                         and established(pair.server_events))
                                        or closed(pair.client_events)))
    return ref


def test_handshake_establishes_both_sides_with_equal_session_ids() -> None:
    pair = Pair()
    ref = connect(pair, peer_node_id=b"server")
    pair.run_for(0.1)
    (client_event,) = established(pair.client_events)
    (server_event,) = established(pair.server_events)
    assert client_event.ref == ref
    assert len(client_event.session_id) == 8
    assert client_event.session_id == server_event.session_id
    assert client_event.peer_node_id == b"server"
    assert server_event.peer_node_id == b"client"
    assert client_event.initiator and not server_event.initiator
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    assert pair.server.session_state(server_event.ref) is SessionState.ESTABLISHED


def test_handshake_messages_have_expected_sizes() -> None:
    pair = Pair()
    pair.drop = drop_server_session_packets_until_auth_proof_is_resent()  # so that FINAL has to go
    connect(pair)
    pair.run_for(1.0)
    kinds = {datagram[0]: len(datagram) for _, datagram in pair.sent if datagram[0] < 8}
    assert kinds[PacketType.HELLO] == 1200
    assert kinds[PacketType.CHALLENGE] < 200
    assert kinds[PacketType.AUTH_PROOF] < 100
    assert kinds[PacketType.FINAL] < 100


def drop_server_session_packets_until_auth_proof_is_resent(
) -> Callable[[bytes, object, object], bool]:
    """A drop rule for ``Pair``: the responder's session packets, the first of
    which stands in for FINAL, are lost until the initiator resends AUTH_PROOF."""
    auth_proofs = [0]

    def drop(datagram: bytes, source: object, destination: object) -> bool:
        if datagram[0] == PacketType.AUTH_PROOF:
            auth_proofs[0] += 1
        return source == SERVER_ADDR and datagram[0] == PacketType.SESSION and auth_proofs[0] < 2

    return drop


def test_the_responders_first_session_packet_stands_in_for_final() -> None:
    """FINAL stays home when a session packet leaves in the same flush (§6.3):
    the handshake is one datagram each way less, and still confirmed."""
    pair = Pair()
    ref = connect(pair)
    pair.run_for(1.0)
    server_kinds = [d[0] for who, d in pair.sent if who == "server"]
    assert server_kinds[:2] == [PacketType.CHALLENGE, PacketType.SESSION]
    assert PacketType.FINAL not in server_kinds
    session = pair.client.sessions[ref]
    assert session.handshake is None
    assert [e.ref for e in pair.client_events if isinstance(e, HandshakeConfirmed)] == [ref]


def test_final_answers_a_repeated_auth_proof_when_the_stand_in_was_lost() -> None:
    pair = Pair()
    pair.drop = drop_server_session_packets_until_auth_proof_is_resent()
    ref = connect(pair)
    pair.run_for(1.0)
    session = pair.client.sessions[ref]
    assert session.handshake is None  # confirmed after all
    client_kinds = [d[0] for who, d in pair.sent if who == "client" and d[0] < 8]
    server_kinds = [d[0] for who, d in pair.sent if who == "server" and d[0] < 8]
    assert client_kinds.count(PacketType.AUTH_PROOF) >= 2
    assert server_kinds == [PacketType.CHALLENGE, PacketType.FINAL]


def test_wrong_seed_fails_on_initiator_within_two_round_trips() -> None:
    pair = Pair(client=Config(shared_seed=b"a-different-seed", node_id=b"client"))
    start = pair.now
    ref = connect(pair)
    (event,) = closed(pair.client_events)
    assert event.ref == ref
    assert event.reason == "auth_failure"
    assert not event.established
    # one REJECT could be a corrupted HELLO, so the initiator asks twice
    assert pair.now - start <= 4 * pair.delay + 1e-9
    assert not established(pair.server_events)
    assert pair.server.stats.drops[DropReason.BAD_HANDSHAKE.value] == 2
    assert not pair.server.sessions


def test_peer_node_id_mismatch_is_an_authentication_failure() -> None:
    pair = Pair()
    connect(pair, peer_node_id=b"somebody-else")
    (event,) = closed(pair.client_events)
    assert event.reason == "auth_failure"
    assert not established(pair.client_events)


@pytest.mark.parametrize("lost_type", [PacketType.HELLO, PacketType.CHALLENGE,
                                       PacketType.AUTH_PROOF, PacketType.SESSION])
def test_each_handshake_message_lost_once_still_establishes(lost_type: int) -> None:
    """SESSION: the responder's first session packet, which stands in for FINAL."""
    pair = Pair()
    dropped: list[int] = []

    def drop(datagram: bytes, source: object, destination: object) -> bool:
        from_server_if_session = lost_type != PacketType.SESSION or source == SERVER_ADDR
        if datagram[0] == lost_type and from_server_if_session and not dropped:
            dropped.append(lost_type)
            return True
        return False

    pair.drop = drop
    connect(pair)
    pair.run_for(1.0)
    assert dropped == [lost_type]
    assert len(established(pair.client_events)) == 1
    assert len(established(pair.server_events)) == 1
    assert established(pair.client_events)[0].session_id == \
        established(pair.server_events)[0].session_id


def test_a_responder_with_another_packet_aead_refuses_at_once() -> None:
    """Both sides used to reach ESTABLISHED and then fail to open every packet,
    until the idle timeout 30 s later (protocol.md Appendix B item 2). The AEAD
    rides in HELLO's sealed part now, and the responder refuses a mismatch."""
    pair = Pair(client=make_config(b"client", aead="chacha20-poly1305"))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    (event,) = closed(pair.client_events)
    assert (event.ref, event.reason, event.established) == (ref, "refused", False)
    assert "Config.aead" in event.message and "chacha20-poly1305" in event.message
    assert established(pair.server_events) == []
    assert pair.server.sessions == {}
    assert pair.server.stats.drops == {DropReason.AEAD_MISMATCH.value: 1}


@pytest.mark.parametrize("aead", ["aes-256-gcm", "chacha20-poly1305"])
def test_peers_with_the_same_packet_aead_agree(aead: str) -> None:
    pair = Pair(client=make_config(b"client", aead=aead),
                server=make_config(b"server", server_mode=True, aead=aead))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    stream = pair.client.open_stream(ref, purpose="same cipher")
    pair.client.send_message(ref, stream, b"sealed alike")
    pair.run_for(1.0)
    assert received(pair.server_events) == [b"sealed alike"]


def test_silent_peer_times_out_at_the_connect_timeout() -> None:
    pair = Pair(client=make_config(b"client", connect_timeout=5.0))
    pair.drop = lambda datagram, source, destination: True
    start = pair.now
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(10.0, stop=lambda: bool(closed(pair.client_events)))
    (event,) = closed(pair.client_events)
    assert event.ref == ref and event.reason == "timeout" and not event.established
    assert pair.now - start == pytest.approx(5.0)
    hellos = [d for who, d in pair.sent if who == "client" and d[0] == PacketType.HELLO]
    assert 3 <= len(hellos) <= 6  # retransmitted with exponential backoff


def test_not_accepting_server_refuses() -> None:
    pair = Pair(server=make_config(b"server", server_mode=False))
    connect(pair)
    (event,) = closed(pair.client_events)
    assert event.reason == "refused"


def test_replayed_hello_never_creates_a_second_session() -> None:
    pair = Pair()
    connect(pair)
    pair.run_for(0.1)
    hello = next(d for who, d in pair.sent if who == "client" and d[0] == PacketType.HELLO)
    for _ in range(5):
        pair.server.receive_datagram(hello, ("10.9.9.9", 5555), pair.now)
    pair.run_for(1.0)
    assert len(established(pair.server_events)) == 1
    assert len(pair.server.sessions) == 1
    assert pair.server.stats.drops[DropReason.REPLAYED_HANDSHAKE.value] == 5


def test_idle_session_stays_alive_with_keep_alives_only() -> None:
    pair = Pair()
    connect(pair)
    sent_before = len(pair.sent)
    pair.run_for(300.0)
    assert not closed(pair.client_events) and not closed(pair.server_events)
    keep_alive_traffic = len(pair.sent) - sent_before
    # One keep-alive exchange per 10 s interval, and it is two packets: KEEP_ALIVE,
    # then KEEP_ALIVE_ACK with the ACK, which itself asks for no ACK (§4.5).
    assert 58 <= keep_alive_traffic <= 62


def test_a_keep_alive_ack_is_answered_by_nothing() -> None:
    pair = Pair()
    connect(pair)
    pair.run_for(5.0)
    sent_before = len(pair.sent)
    pair.run_for(10.0, stop=lambda: len(pair.sent) > sent_before)  # the next KEEP_ALIVE
    pair.run_for(5.0)  # its answer, and anything that answer would elicit
    kinds = [who for who, _ in pair.sent[sent_before:]]
    assert len(kinds) == 2 and kinds[0] != kinds[1]


def _idle_senders(pair: Pair, seconds: float, *, after: float = 5.0) -> list[str]:
    """Who sent each datagram of an idle spell of ``seconds``, in order, starting
    ``after`` seconds from now (past the handshake's tail)."""
    pair.run_for(after)
    sent_before = len(pair.sent)
    pair.run_for(seconds)
    return [who for who, _ in pair.sent[sent_before:]]


def test_with_equal_settings_only_the_initiator_sends_keep_alives() -> None:
    """The responder waits half an interval longer (protocol.md §4.5): with equal
    waits the two deadlines fell one one-way delay apart, the responder's
    KEEP_ALIVE arrived just as the initiator's own fell due, and in real time
    both often went (four packets an interval instead of two)."""
    pair = Pair()
    connect(pair)
    senders = _idle_senders(pair, 120.0)
    assert len(senders) == 24
    assert senders == ["client", "server"] * 12  # each exchange opened by the client


def test_the_responder_keeps_the_session_alive_alone() -> None:
    """An initiator whose keep-alive interval is nearly its idle timeout leaves the
    keep-alives to the responder, which waits 1.5 of its own intervals."""
    pair = Pair(client=make_config(b"client", keep_alive_interval=28.0))
    connect(pair)
    # The first exchange (at 15 s) is three packets: the client's answer carries
    # its window grant, which is ack-eliciting (§5.4). Count from the second.
    senders = _idle_senders(pair, 300.0, after=20.0)
    assert not closed(pair.client_events) and not closed(pair.server_events)
    assert senders == ["server", "client"] * 20  # one exchange per 15 s


def test_the_responders_keep_alive_wait_stays_inside_its_idle_timeout() -> None:
    config = make_config(b"server", keep_alive_interval=25.0, idle_timeout=30.0)
    assert keep_alive_wait(config, initiator=True) == 25.0
    assert keep_alive_wait(config, initiator=False) == 27.5  # not 37.5
    assert keep_alive_wait(make_config(b"server"), initiator=False) == 15.0


def test_vanished_peer_times_out_between_30_and_31_seconds() -> None:
    pair = Pair()
    ref = connect(pair)
    pair.run_for(0.5)
    pair.drop = lambda datagram, source, destination: destination == ("10.0.0.1", 40000)
    pair.run_for(40.0, stop=lambda: bool(closed(pair.client_events)))
    (event,) = closed(pair.client_events)
    assert event.ref == ref and event.reason == "timeout" and event.established
    silent_for = pair.now - pair.last_delivery["client"]
    assert 30.0 <= silent_for <= 31.0


def test_graceful_close_is_seen_as_graceful_on_both_sides() -> None:
    pair = Pair()
    ref = connect(pair)
    pair.run_for(0.1)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(2.0)
    (client_event,) = closed(pair.client_events)
    (server_event,) = closed(pair.server_events)
    assert client_event.reason == server_event.reason == "graceful"
    assert server_event.by_peer and not client_event.by_peer
    pair.run_for(5.0)
    assert not pair.client.sessions and not pair.server.sessions


def test_a_complete_graceful_close_abandons_nothing() -> None:
    pair = Pair()
    ref = connect(pair)
    stream = pair.client.open_stream(ref, purpose="data")
    pair.client.send_message(ref, stream, b"x" * 50_000)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(3.0)
    (client_event,) = closed(pair.client_events)
    assert (client_event.reason, client_event.abandoned_bytes, client_event.message) == (
        "graceful", 0, "")
    assert sum(map(len, received(pair.server_events))) == 50_000


def test_a_close_whose_flush_runs_out_of_time_says_how_much_it_abandoned() -> None:
    """The peer stopped reading, so its window stays shut and the flush cannot
    finish: after close_timeout the closer still says goodbye (SESSION_CLOSE), and
    both ends report what was lost instead of a clean close."""
    server = make_config(b"server", server_mode=True, auto_consume=False)
    pair = Pair(server=server)
    ref = connect(pair)
    stream = pair.client.open_stream(ref, purpose="bulk")
    written = 0
    while pair.client.can_send(ref, stream):
        written += 100_000
        pair.client.send_message(ref, stream, b"y" * 100_000)
    pair.run_for(1.0)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(pair.client.config.close_timeout + 2.0)
    (client_event,) = closed(pair.client_events)
    (server_event,) = closed(pair.server_events)
    assert client_event.reason == "graceful" and not client_event.by_peer
    assert server_event.reason == "graceful" and server_event.by_peer  # it was told
    arrived = sum(map(len, received(pair.server_events)))
    assert 0 < arrived < written
    # The peer's stream window let exactly that much through; a 4-byte length
    # precedes each message on the wire (§5.2).
    on_the_wire = written + 4 * (written // 100_000)
    assert client_event.abandoned_bytes == on_the_wire - server.stream_receive_window
    assert f"{client_event.abandoned_bytes} stream bytes unacknowledged" in client_event.message
    assert server_event.abandoned_bytes == 0  # it had written nothing


def test_a_peer_close_is_acknowledged_at_once_so_the_closer_ends_after_one_round_trip() -> None:
    pair = Pair(delay=0.010)
    ref = connect(pair)
    pair.run_for(0.1)
    closed_at = pair.now
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(1.0, stop=lambda: bool(closed(pair.client_events)))
    (client_event,) = closed(pair.client_events)
    assert client_event.reason == "graceful"
    # SESSION_CLOSE out, ACK back: one 20 ms round trip, no 25 ms ACK delay on top.
    assert pair.now - closed_at == pytest.approx(0.020)


def test_a_retransmitted_close_while_draining_is_acknowledged_at_once() -> None:
    pair = Pair(delay=0.010)
    ref = connect(pair)
    pair.run_for(0.1)
    # Lose the server's first ACK of SESSION_CLOSE: the client retransmits after a PTO.
    server_acks: list[float] = []

    def drop_first_server_datagram(datagram: bytes, source: object, _: object) -> bool:
        if source != SERVER_ADDR:
            return False
        server_acks.append(pair.now)
        return len(server_acks) == 1

    pair.drop = drop_first_server_datagram
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(2.0, stop=lambda: bool(closed(pair.client_events)))
    assert closed(pair.client_events)[0].reason == "graceful"
    assert len(server_acks) == 2
    # The second ACK answers the retransmission as soon as it arrived.
    assert pair.last_delivery["server"] == pytest.approx(server_acks[1])


@given(now=st.floats(0.0, 1e6), close_timeout=st.floats(0.01, 600.0))
def test_a_drain_ends_on_a_grid_no_sooner_than_close_timeout_and_at_most_an_eighth_late(
        now: float, close_timeout: float) -> None:
    due = drain_due(now, close_timeout)
    assert now + close_timeout <= due <= now + close_timeout * 1.125 + 1e-6 * due
    step = 2.0 ** math.floor(math.log2(close_timeout / 8))
    assert due / step == int(due / step)  # a multiple of a power-of-two step: exact


def test_sessions_that_close_together_are_forgotten_by_one_timer() -> None:
    pair = Pair(delay=0.010)
    refs = [pair.client.connect(SERVER_ADDR, pair.now) for _ in range(2)]
    assert pair.run_for(2.0, stop=lambda: len(established(pair.server_events)) == 2)
    close_timeout = pair.server.config.close_timeout
    step = 0.25  # the grid for the default close_timeout of 3 s
    assert close_timeout == 3.0 and drain_due(0.001, close_timeout) == 3.25
    # Both drains begin (on the server, when SESSION_CLOSE arrives) inside one step.
    pair.run_for(step - pair.now % step + 0.001)
    pair.client.close_session(refs[0], now=pair.now)
    pair.run_for(0.050)
    pair.client.close_session(refs[1], now=pair.now)
    last_drain_began = pair.now + 0.010
    forgotten_at: list[float] = []
    give_up = pair.now + 10.0
    while pair.server.sessions and pair.now < give_up:
        held = len(pair.server.sessions)
        pair.run_for(0.001)
        forgotten_at += [pair.now] * (held - len(pair.server.sessions))
    assert len(forgotten_at) == 2 and forgotten_at[0] == forgotten_at[1]
    assert last_drain_began + close_timeout <= forgotten_at[0]
    assert forgotten_at[0] <= last_drain_began + close_timeout + step + 0.001


def _garbage(rng: random.Random, real: list[bytes]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0 or not real:
        return rng.randbytes(rng.randrange(0, 1500))
    sample = rng.choice(real)
    if kind == 1:
        return sample[: rng.randrange(len(sample))]
    if kind == 2:
        flipped = bytearray(sample)
        position = rng.randrange(len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    return sample[:10] + rng.randbytes(rng.randrange(0, 200))


def test_garbage_datagrams_are_dropped_and_counted_without_harm() -> None:
    pair = Pair()
    ref = connect(pair)
    pair.run_for(0.1)
    server_ref = established(pair.server_events)[0].ref
    real = [d for _, d in pair.sent]
    rng = random.Random(7)
    drops_before = pair.server.stats.datagrams_dropped
    for _ in range(1000):
        pair.server.receive_datagram(_garbage(rng, real), ("10.6.6.6", 666), pair.now)
        pair.client.receive_datagram(_garbage(rng, real), ("10.6.6.6", 666), pair.now)
    pair.run_for(0.5)
    assert pair.server.stats.datagrams_dropped >= drops_before + 900
    assert pair.client.stats.datagrams_dropped >= 900
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED
    stream = pair.client.open_stream(ref, purpose="check")
    pair.client.send_message(ref, stream, b"still alive")
    pair.run_for(1.0)
    received = [e for e in pair.server_events if isinstance(e, MessageReceived)]
    assert [e.data for e in received] == [b"still alive"]


def test_initiator_closes_when_the_responder_forgot_the_handshake() -> None:
    """The initiator is established on CHALLENGE; if the responder then forgets
    the handshake (it gives up on half-open ones after 2 s, and our AUTH_PROOFs
    are lost for 4 s), nothing can confirm it: after the AUTH_PROOF attempts a
    handshake makes, the session fails instead of sending into nothing until
    the idle timeout."""
    pair = Pair(client=make_config(b"client", connect_timeout=8.0, idle_timeout=60.0),
                server=make_config(b"server", server_mode=True, connect_timeout=2.0))
    lost_until = pair.now + 4.0
    pair.drop = lambda datagram, source, destination: (
        datagram[0] == PacketType.AUTH_PROOF and pair.now < lost_until)
    start = pair.now
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(30.0, stop=lambda: bool(closed(pair.client_events)))
    (event,) = established(pair.client_events)
    assert event.ref == ref
    assert not established(pair.server_events)
    (end,) = closed(pair.client_events)
    assert end.established and end.reason == "timeout"
    assert "never confirmed" in end.message
    # Not before the 8 s connect timeout, and well before the 60 s idle timeout.
    assert 8.0 <= pair.now - start < 11.0
    proofs = [d for who, d in pair.sent if who == "client" and d[0] == PacketType.AUTH_PROOF]
    assert len(proofs) >= 5


def test_a_partition_right_after_challenge_does_not_fail_the_handshake() -> None:
    """Five AUTH_PROOFs span about 6 s; a partition of 7 s that begins right after
    CHALLENGE would have used them all up. The initiator keeps trying until its
    connect timeout, and the session is confirmed once the path is back."""
    pair = Pair(client=make_config(b"client", connect_timeout=20.0))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: bool(established(pair.client_events)))
    healed_at = pair.now + 7.0
    pair.drop = lambda datagram, source, destination: pair.now < healed_at
    session = pair.client.sessions[ref]
    pair.run_for(20.0, stop=lambda: session.handshake is None or bool(closed(pair.client_events)))
    assert not closed(pair.client_events)
    assert pair.now >= healed_at and session.handshake is None  # confirmed after the partition
    assert established(pair.server_events)


def _pending_server_session(pair: Pair) -> Session:
    """The server's one half-open session."""
    (session,) = [s for s in pair.server.sessions.values()
                  if s.state is SessionState.HANDSHAKING]
    return session


def test_a_challenge_that_arrives_late_still_leaves_time_for_auth_proof() -> None:
    """Seeds 5151 and 8189 of the long sweep: the CHALLENGEs are lost for most of
    the responder's 10 s connect timeout, the one that arrives answers a HELLO
    sent 9.75 s after the first, and the first AUTH_PROOFs are lost too. The
    responder counted its pending handshake from the first HELLO and forgot it
    before an AUTH_PROOF got through; the initiator, established on CHALLENGE,
    then sent AUTH_PROOF into nothing until its 30 s connect timeout. Each
    retransmitted HELLO now keeps the pending handshake for another
    ``connect_timeout``, and the session is confirmed."""
    pair = Pair(client=make_config(b"client", connect_timeout=30.0))
    start = pair.now
    pair.drop = lambda datagram, source, destination: (
        (datagram[0] == PacketType.CHALLENGE and pair.now < start + 9.5)
        or (datagram[0] == PacketType.AUTH_PROOF and pair.now < start + 11.0))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    session = pair.client.sessions[ref]
    pair.run_for(30.0, stop=lambda: session.handshake is None or bool(closed(pair.client_events)))
    assert not closed(pair.client_events)
    assert session.handshake is None  # confirmed
    (accepted,) = established(pair.server_events)
    assert accepted.session_id == session.session_id
    # Established past the 10 s a pending handshake used to live from its first HELLO.
    assert pair.now - start > 11.0
    assert pair.server.stats.drops.get(DropReason.UNKNOWN_SESSION.value, 0) == 0


def test_a_pending_handshake_lives_at_most_two_connect_timeouts() -> None:
    """Retransmitted HELLOs keep a pending handshake past its ``connect_timeout``
    (2 s here), but never past twice that from the first HELLO: the responder
    keeps no half-open state for longer, however long the initiator (or a
    replay of its HELLO) keeps asking. Later copies of the HELLO hit the replay
    cache and start nothing."""
    pair = Pair(client=make_config(b"client", connect_timeout=60.0),
                server=make_config(b"server", server_mode=True, connect_timeout=2.0))
    pair.drop = lambda datagram, source, destination: datagram[0] == PacketType.CHALLENGE
    start = pair.now
    pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(0.1)
    created = _pending_server_session(pair).created_at
    # The HELLOs resent at 0.25, 0.75, 1.75 and 3.75 s keep it beyond its first
    # 2 s, but the last of them only up to 4 s after the first HELLO.
    pair.run(start + 3.9)
    assert pair.server.acceptor.pending == 1
    assert _pending_server_session(pair).hs_deadline == pytest.approx(created + 4.0)
    pair.run(created + 4.0 + 1e-6)
    assert pair.server.acceptor.pending == 0 and not pair.server.sessions
    replays = pair.server.stats.drops.get(DropReason.REPLAYED_HANDSHAKE.value, 0)
    pair.run(start + 8.0)  # HELLOs at 5.75 and 7.75 s: replays, no new state
    assert pair.server.acceptor.pending == 0
    assert pair.server.stats.drops[DropReason.REPLAYED_HANDSHAKE.value] == replays + 2


def test_only_an_authentic_hello_keeps_a_pending_handshake_alive() -> None:
    """A copy of the HELLO that does not authenticate still brings the CHALLENGE
    again (that costs nothing) but does not move the pending handshake's
    deadline; the authentic retransmission does."""
    pair = Pair()
    pair.drop = lambda datagram, source, destination: pair.now > 1000.0  # only the first HELLO
    pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(0.1)
    pending = _pending_server_session(pair)
    deadline = pending.hs_deadline
    assert deadline == pytest.approx(pending.created_at + 10.0)
    (hello,) = [d for who, d in pair.sent if who == "client" and d[0] == PacketType.HELLO]
    forged = bytearray(hello)
    forged[10 + 32 + 1 + 2] ^= 0x01  # a bit of the sealed part: it no longer opens
    pair.now += 5.0
    challenges = len([d for who, d in pair.sent if d[0] == PacketType.CHALLENGE])
    pair.server.receive_datagram(bytes(forged), CLIENT_ADDR, pair.now)
    pair.flush()
    assert pending.hs_deadline == deadline
    assert len([d for who, d in pair.sent if d[0] == PacketType.CHALLENGE]) == challenges + 1
    pair.server.receive_datagram(hello, CLIENT_ADDR, pair.now)
    pair.flush()
    assert pending.hs_deadline == pytest.approx(pair.now + 10.0)


def test_initiator_is_established_on_challenge_and_confirmed_by_a_session_packet() -> None:
    pair = Pair()
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: bool(established(pair.client_events)))
    session = pair.client.sessions[ref]
    assert not established(pair.server_events)  # AUTH_PROOF is still on its way
    assert session.handshake is not None and session.hs_retransmit_at is not None
    sent = [d[0] for who, d in pair.sent if who == "client" and d[0] < 8]
    assert sent == [PacketType.HELLO, PacketType.AUTH_PROOF]
    assert established(pair.client_events)[0].confirmed is False
    pair.run_for(1.0, stop=lambda: session.handshake is None)
    session = pair.client.sessions[ref]  # read again: the run confirmed the handshake
    assert established(pair.server_events)[0].confirmed is True
    assert [e.ref for e in pair.client_events if isinstance(e, HandshakeConfirmed)] == [ref]
    assert session.hs_retransmit_at is None and session.hs_packet == b""
    # Confirmed by the session packet that stood in for FINAL.
    assert [d[0] for who, d in pair.sent if who == "server" and d[0] < 8] == [
        PacketType.CHALLENGE]


def test_forged_final_does_not_confirm_the_initiator() -> None:
    pair = Pair()
    pair.drop = lambda datagram, source, destination: datagram[0] == PacketType.FINAL
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: bool(established(pair.client_events)))
    session = pair.client.sessions[ref]
    forged = bytes([PacketType.FINAL]) + session.hs_packet[1:10] + bytes(48)
    before = pair.client.stats.drops.get(DropReason.DECRYPTION_FAILED.value, 0)
    pair.client.receive_datagram(forged, SERVER_ADDR, pair.now)
    assert pair.client.stats.drops.get(DropReason.DECRYPTION_FAILED.value, 0) == before + 1
    assert session.handshake is not None


def test_path_mtu_is_probed_only_by_a_confirmed_side_that_sends() -> None:
    pair = Pair()
    pair.drop = lambda datagram, source, destination: (  # all but CHALLENGE, for a while
        source == SERVER_ADDR and datagram[0] != PacketType.CHALLENGE and pair.now < 1000.1)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    session = pair.client.sessions[ref]

    def probes(side: str) -> list[bytes]:
        return [d for who, d in pair.sent if who == side and len(d) == 1452]

    pair.run_for(0.09)
    assert established(pair.client_events) and session.handshake is not None
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"hello")
    pair.run_for(0.005)
    assert probes("client") == []  # it sends, but nothing confirmed it yet
    pair.run_for(1.0, stop=lambda: bool(probes("client")))
    assert session.handshake is None and len(probes("client")) == 1
    pair.run_for(1.0)
    assert established(pair.server_events)
    assert probes("server") == []  # the server never sent a message: it never needs to


def test_the_handshake_gives_each_side_its_first_rtt_sample() -> None:
    """HELLO to CHALLENGE times the initiator's round trip, CHALLENGE to AUTH_PROOF
    the responder's: 20 ms on a link with 10 ms each way."""
    pair = Pair(delay=0.010)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: bool(established(pair.client_events)))
    client_rtt = pair.client.sessions[ref].recovery.rtt
    assert client_rtt.has_sample and client_rtt.min_rtt == pytest.approx(0.020)
    pair.run_for(1.0, stop=lambda: bool(established(pair.server_events)))
    (server_session,) = pair.server.sessions.values()
    server_rtt = server_session.recovery.rtt
    assert server_rtt.has_sample and server_rtt.min_rtt == pytest.approx(0.020)


def test_an_idle_session_keeps_the_path_rtt_after_the_delayed_window_grant() -> None:
    """Right after a handshake the only ack-eliciting frame in flight is the window
    grant, and its ACK waits max_ack_delay (25 ms). Were that the first RTT sample,
    min_rtt (never corrected for ACK delay) would read 35 ms on this 10 ms path,
    and the smoothed RTT, the pacing rate and the PTO would follow it."""
    pair = Pair(delay=0.005)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)  # the handshake, the grant and its delayed ACK, then nothing
    (server_session,) = pair.server.sessions.values()
    sessions = (pair.client.sessions[ref], server_session)
    for session in sessions:
        rtt = session.recovery.rtt
        assert rtt.min_rtt == pytest.approx(0.010)
        assert rtt.smoothed_rtt < 0.015
    pair.run_for(CIPHER_RELEASE_INTERVAL + 1.0)  # an idle session sheds its handshake packets
    for session in sessions:
        assert session.hs_timed == b"" and session.hs_packet == b""


def test_a_resent_hello_is_not_timed_but_auth_proof_to_confirmation_is() -> None:
    """Karn's rule: a CHALLENGE cannot say which copy of a resent HELLO it answers.
    The session packet that stands in for FINAL times AUTH_PROOF instead."""
    pair = Pair(delay=0.010)
    hellos = [0]

    def drop_first_hello(datagram: bytes, source: object, destination: object) -> bool:
        if datagram[0] == PacketType.HELLO:
            hellos[0] += 1
            return hellos[0] == 1
        return False

    pair.drop = drop_first_hello
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(5.0, stop=lambda: bool(established(pair.client_events)))
    session = pair.client.sessions[ref]
    assert hellos[0] == 2
    assert not session.recovery.rtt.has_sample
    pair.run_for(1.0, stop=lambda: session.handshake is None)  # the first session packet
    assert session.recovery.rtt.min_rtt == pytest.approx(0.020)


def settled_pair() -> tuple[Pair, SessionRef, SessionRef]:
    """A pair whose session is up on both sides and past its handshake's packets:
    (pair, client ref, server ref)."""
    pair = Pair()
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    (server_ref,) = pair.server.sessions
    return pair, ref, server_ref


@contextmanager
def losing(pair: Pair, source: tuple[str, int]) -> Iterator[list[bytes]]:
    """Lose every datagram ``source`` sends for the commands given in the block
    (flushed as it ends); yields the list of lost datagrams."""
    lost: list[bytes] = []

    def drop(datagram: bytes, src: tuple[str, int], dst: object) -> bool:
        if src != source:
            return False
        lost.append(datagram)
        return True

    pair.drop = drop
    try:
        yield lost
        pair.flush()
    finally:
        pair.drop = None


def test_a_closed_explicit_id_is_refused_instead_of_silently_dropped() -> None:
    """The receiver ignores frames for an id it closed recently (§5.1). Reopening
    that id used to be allowed: its messages were acknowledged, reported
    delivered, and never received. The opener now refuses it with a clear error."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, stream_id=7, purpose="first")
    pair.client.send_message(ref, stream, b"first")
    pair.client.close_stream(ref, stream)
    pair.run_for(1.0)
    pair.server.close_stream(server_ref, stream)
    pair.run_for(1.0)
    assert pair.client.sessions[ref].streams.get(7) is None
    with pytest.raises(InvalidStateError, match="stream 7 was closed"):
        pair.client.open_stream(ref, stream_id=7, purpose="again")
    fresh = pair.client.open_stream(ref, stream_id=9, purpose="again")
    pair.client.send_message(ref, fresh, b"second")
    pair.run_for(1.0)
    assert received(pair.server_events, 7) == [b"first"]
    assert received(pair.server_events, 9) == [b"second"]


def _reset_right_after_opening(pair: Pair, ref: SessionRef) -> list[bytes]:
    """Open stream 5 with a message, lose what that sends, then reset the stream;
    returns the lost datagrams."""
    with losing(pair, CLIENT_ADDR) as lost:
        stream = pair.client.open_stream(ref, stream_id=5, purpose="short-lived")
        pair.client.send_message(ref, stream, b"hello")
    pair.client.reset_stream(ref, stream, 3)
    assert lost
    return lost


def opened_streams(events: list[Event]) -> list[int]:
    return [e.stream_id for e in events if isinstance(e, StreamOpened)]


def test_a_lost_stream_open_is_not_resent_for_a_stream_reset_since() -> None:
    """Resending it opened the stream on the peer after the reset: the peer's
    application got a stream nobody read, its replies were acknowledged and
    dropped, and the stream never closed."""
    pair, ref, server_ref = settled_pair()
    _reset_right_after_opening(pair, ref)
    pair.run_for(3.0)
    assert opened_streams(pair.server_events) == []
    assert len(pair.server.sessions[server_ref].streams) == 0
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


def test_a_stream_open_lost_with_its_reset_is_not_resent_ahead_of_it() -> None:
    """The STREAM_CLOSE is lost as well: resent together, the STREAM_OPEN went
    first and announced to the peer's application a stream already reset."""
    pair, ref, server_ref = settled_pair()
    with losing(pair, CLIENT_ADDR) as lost_open:
        stream = pair.client.open_stream(ref, stream_id=5, purpose="short-lived")
        pair.client.send_message(ref, stream, b"hello")
    with losing(pair, CLIENT_ADDR) as lost_reset:
        pair.client.reset_stream(ref, stream, 3)
    pair.run_for(3.0)
    assert lost_open and lost_reset
    assert opened_streams(pair.server_events) == []
    assert len(pair.server.sessions[server_ref].streams) == 0


def test_a_stream_open_that_arrives_after_the_reset_opens_nothing() -> None:
    """Reordered: the STREAM_CLOSE overtakes the packet that opened the stream."""
    pair, ref, server_ref = settled_pair()
    late = _reset_right_after_opening(pair, ref)
    pair.run_for(0.05)  # the STREAM_CLOSE arrives
    for datagram in late:
        pair.server.receive_datagram(datagram, CLIENT_ADDR, pair.now)
    pair.run_for(3.0)
    assert opened_streams(pair.server_events) == []
    assert len(pair.server.sessions[server_ref].streams) == 0
    assert received(pair.server_events) == []


def test_a_stream_is_not_forgotten_while_a_frame_before_its_fin_is_lost() -> None:
    """The FIN rides on the last frame; its ACK can come while an earlier frame
    is lost. Forgetting the stream then (the peer had finished its side) dropped
    the lost frame for good: its message never arrived."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, purpose="last words")
    pair.client.send_message(ref, stream, b"m0")
    pair.run_for(1.0)
    pair.server.close_stream(server_ref, stream)  # the server's side is over
    pair.run_for(1.0)
    with losing(pair, CLIENT_ADDR) as lost:
        pair.client.send_message(ref, stream, b"m1")  # m1's packet is lost
    pair.client.send_message(ref, stream, b"m2")
    pair.client.close_stream(ref, stream)
    pair.run_for(3.0)
    assert lost
    assert received(pair.server_events) == [b"m0", b"m1", b"m2"]
    assert len(pair.client.sessions[ref].streams) == 0
    assert len(pair.server.sessions[server_ref].streams) == 0


def test_opening_an_id_whose_peer_messages_wait_for_its_stream_open_delivers_them() -> None:
    """Messages that arrive before the peer's STREAM_OPEN wait for it. When this
    side opened the same id first, they used to wait for ever: the stream counted
    as announced, so the late STREAM_OPEN no longer delivered them."""
    pair, ref, server_ref = settled_pair()
    with losing(pair, SERVER_ADDR) as lost:
        pair.server.open_stream(server_ref, stream_id=5, purpose="shared")  # STREAM_OPEN lost
    pair.server.send_message(server_ref, 5, b"hi")
    pair.server.close_stream(server_ref, 5)
    pair.run_for(0.015)  # "hi" and the FIN arrive (10 ms), and wait for the STREAM_OPEN
    assert lost
    assert received(pair.client_events) == []
    pair.client.open_stream(ref, stream_id=5, purpose="shared")
    pair.run_for(3.0)
    assert received(pair.client_events) == [b"hi"]
    assert [e.stream_id for e in pair.client_events
            if isinstance(e, StreamClosed) and e.by_peer] == [5]
    assert opened_streams(pair.client_events) == []  # this side opened it


def test_writing_on_or_reopening_a_stream_this_side_closed_says_it_is_closed() -> None:
    """It raised BufferFullError, which tells the caller to wait for a
    StreamWritable that never comes."""
    pair, ref, _ = settled_pair()
    stream = pair.client.open_stream(ref, purpose="done")
    pair.client.send_message(ref, stream, b"last")
    pair.client.close_stream(ref, stream)
    with pytest.raises(StreamClosedError, match="closed for sending"):
        pair.client.send_message(ref, stream, b"one more")
    with pytest.raises(InvalidStateError, match="closed for sending"):
        pair.client.open_stream(ref, stream_id=stream, purpose="again")


def test_opening_more_streams_than_the_limit_is_refused_locally() -> None:
    """The peer would close the whole session on one stream past its limit; the
    opener refuses it with a clear error, and a stream that ended in both
    directions frees its slot."""
    pair = Pair(client=make_config(b"client", max_streams_per_session=4),
                server=make_config(b"server", server_mode=True, max_streams_per_session=4))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    streams = [pair.client.open_stream(ref, purpose=f"s{i}") for i in range(4)]
    with pytest.raises(InvalidStateError, match="max_streams_per_session"):
        pair.client.open_stream(ref, purpose="one too many")
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    pair.client.send_message(ref, streams[0], b"done")
    pair.client.close_stream(ref, streams[0])
    pair.run_for(1.0)
    (server_ref,) = pair.server.sessions
    pair.server.close_stream(server_ref, streams[0])
    pair.run_for(1.0)
    fifth = pair.client.open_stream(ref, purpose="fits now")
    pair.client.send_message(ref, fifth, b"hello")
    pair.run_for(1.0)
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    assert any(isinstance(e, MessageReceived) and e.stream_id == fifth
               for e in pair.server_events)


@pytest.mark.parametrize("lower", ["server", "client"])
def test_each_side_obeys_the_stream_limit_the_other_announced(lower: str) -> None:
    """The limits differ: the side with the higher one used to take the peer's
    limit to be its own, open a fifth stream, and lose the whole session to a
    STREAM_LIMIT_ERROR (protocol.md Appendix B item 18). The handshake carries
    each side's limit now, so the fifth open is refused where it is made."""
    low, high = {"max_streams_per_session": 4}, {"max_streams_per_session": 1024}
    pair = Pair(client=make_config(b"client", **(low if lower == "client" else high)),
                server=make_config(b"server", server_mode=True,
                                   **(low if lower == "server" else high)))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    (server_ref,) = pair.server.sessions
    opener, opener_ref = ((pair.client, ref) if lower == "server" else (pair.server, server_ref))
    streams = [opener.open_stream(opener_ref, purpose=f"s{i}") for i in range(4)]
    with pytest.raises(InvalidStateError, match="as many as the peer allows"):
        opener.open_stream(opener_ref, purpose="one too many")
    for stream in streams:
        opener.send_message(opener_ref, stream, b"fits")
    pair.run_for(1.0)
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED
    events = pair.server_events if lower == "server" else pair.client_events
    assert received(events) == [b"fits"] * 4
