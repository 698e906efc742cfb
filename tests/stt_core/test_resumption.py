"""Resume tokens: one-round-trip re-establishment with fresh keys, single use, expiry."""

from __future__ import annotations

import heapq
from dataclasses import replace

import pytest

from stt_core import (
    DropReason,
    Endpoint,
    MessageReceived,
    ResumeTokenReceived,
    SessionClosed,
    SessionEstablished,
    SessionRef,
    SessionState,
)
from stt_core.errors import ErrorCode, InvalidStateError
from stt_core.resumption import Ticket
from stt_core.wire import PacketType

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, make_config, seeded_random


def establish(pair: Pair) -> tuple[SessionRef, bytes]:
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, ResumeTokenReceived)
                                       for e in pair.client_events))
    token = next(e for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    assert token.ref == ref
    return ref, token.token


def closed_with_ticket(pair: Pair) -> bytes:
    """Establish a session, close it, let the close finish: the ticket to resume it."""
    ref, ticket = establish(pair)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(5.0)
    return ticket


def outcome(pair: Pair, ref: SessionRef) -> object:
    pair.run_for(5.0, stop=lambda: any(
        isinstance(e, (SessionEstablished, SessionClosed)) and e.ref == ref
        for e in pair.client_events))
    return next(e for e in pair.client_events
                if isinstance(e, (SessionEstablished, SessionClosed)) and e.ref == ref)


def test_ticket_hides_secrets_and_round_trips() -> None:
    pair = Pair()
    _, ticket_bytes = establish(pair)
    ticket = Ticket.from_bytes(ticket_bytes)
    assert Ticket.from_bytes(ticket.to_bytes()) == ticket
    assert ticket.resumption_secret.hex() not in repr(ticket)
    with pytest.raises(ValueError):
        Ticket.from_bytes(ticket_bytes[:20])


def test_resume_after_the_path_was_gone_longer_than_the_idle_timeout() -> None:
    pair = Pair()
    ref, ticket = establish(pair)
    original = next(e for e in pair.client_events if isinstance(e, SessionEstablished))
    pair.drop = lambda datagram, source, destination: True  # the network vanishes
    pair.run_for(60.0)  # 2x the idle timeout: both sides declare the session dead
    assert any(isinstance(e, SessionClosed) and e.reason == "timeout"
               for e in pair.client_events)
    assert any(isinstance(e, SessionClosed) and e.reason == "timeout"
               for e in pair.server_events)
    pair.drop = None
    start = pair.now
    sent_before = len(pair.sent)
    new_ref = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    event = outcome(pair, new_ref)
    assert isinstance(event, SessionEstablished)
    assert event.resumed and event.session_id == original.session_id
    assert event.peer_node_id == b"server"
    assert pair.now - start == pytest.approx(2 * pair.delay)  # one round trip
    kinds = [d[0] for _, d in pair.sent[sent_before:] if d[0] < 0x0C and d[0] != 0x08]
    assert kinds[:2] == [PacketType.RESUME, PacketType.RESUME_OK]
    server_event = [e for e in pair.server_events if isinstance(e, SessionEstablished)][-1]
    assert server_event.resumed and server_event.session_id == original.session_id
    stream = pair.client.open_stream(new_ref, purpose="after-resume")
    pair.client.send_message(new_ref, stream, b"still me")
    pair.run_for(1.0)
    assert [e.data for e in pair.server_events if isinstance(e, MessageReceived)] == \
        [b"still me"]
    assert ref != new_ref


def test_a_token_works_only_once() -> None:
    pair = Pair()
    ticket = closed_with_ticket(pair)
    first = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    assert isinstance(outcome(pair, first), SessionEstablished)
    second = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    event = outcome(pair, second)
    assert isinstance(event, SessionClosed) and event.reason == "auth_failure"


def test_an_expired_token_is_refused() -> None:
    pair = Pair(server=make_config(b"server", server_mode=True, resume_token_lifetime=100.0))
    ref, ticket = establish(pair)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(150.0)
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert isinstance(event, SessionClosed) and event.reason == "auth_failure"


def test_a_lost_resume_ok_is_recovered_without_burning_the_token() -> None:
    pair = Pair()
    ticket = closed_with_ticket(pair)
    dropped: list[int] = []

    def drop(datagram: bytes, source: object, destination: object) -> bool:
        if datagram[0] == PacketType.RESUME_OK and not dropped:
            dropped.append(1)
            return True
        return False

    pair.drop = drop
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert dropped and isinstance(event, SessionEstablished) and event.resumed


def test_resume_to_resume_ok_is_the_resumed_sessions_first_rtt_sample() -> None:
    pair = Pair(delay=0.015)
    ticket = closed_with_ticket(pair)
    resumed = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    assert isinstance(outcome(pair, resumed), SessionEstablished)
    rtt = pair.client.sessions[resumed].recovery.rtt
    assert rtt.has_sample and rtt.min_rtt == pytest.approx(0.030)


def test_resuming_with_another_packet_aead_is_refused_and_spares_the_token() -> None:
    """The RESUME proof's key names the packet AEAD, so a client whose
    ``Config.aead`` changed since the token was issued is refused at once, as
    a full handshake would be, instead of resuming into a session where no
    packet opens. The refused attempt does not use the token up."""
    pair = Pair()
    ticket = closed_with_ticket(pair)
    aes_client = pair.client
    other = Endpoint(make_config(b"client", aead="chacha20-poly1305"), now=pair.now,
                     random_bytes=seeded_random(77))
    pair.addr[id(other)] = CLIENT_ADDR
    pair.by_addr[SERVER_ADDR] = pair.client = other
    pair.client_events.clear()
    event = outcome(pair, other.resume(SERVER_ADDR, ticket, pair.now))
    assert isinstance(event, SessionClosed) and event.reason == "auth_failure"
    pair.by_addr[SERVER_ADDR] = pair.client = aes_client
    pair.client_events.clear()
    assert isinstance(outcome(pair, aes_client.resume(SERVER_ADDR, ticket, pair.now)),
                      SessionEstablished)


def test_a_resumed_server_does_not_probe_the_path_mtu_before_the_address_is_valid() -> None:
    """A resumed session starts on an unvalidated address (protocol.md §6.8,
    §8.2). A path MTU probe there would go past the 3x amplification limit:
    with a 9000-byte probe limit it sent about 7.5 times the RESUME's bytes to
    a possibly spoofed address (Appendix B item 11). Here every client packet
    after the RESUME is lost, so the address is never validated, and the
    server's application writes enough to want a probe."""
    pair = Pair(server=make_config(b"server", server_mode=True, max_datagram_size=1452,
                                   pmtu_probe_limit=9000))
    ticket = closed_with_ticket(pair)
    sent_before = len(pair.sent)
    pair.client.resume(SERVER_ADDR, ticket, pair.now)
    pair.flush()  # the RESUME leaves
    resume_bytes = len(next(d for side, d in pair.sent[sent_before:] if side == "client"))
    pair.drop = lambda datagram, source, destination: source == CLIENT_ADDR
    pair.run_for(0.05)
    resumed = [e for e in pair.server_events if isinstance(e, SessionEstablished)][-1]
    assert resumed.resumed
    stream = pair.server.open_stream(resumed.ref, purpose="eager")
    pair.server.send_message(resumed.ref, stream, bytes(20_000))
    pair.run_for(3.0)
    server_bytes = [len(d) for side, d in pair.sent[sent_before:] if side == "server"]
    assert pair.server.sessions[resumed.ref].address_validated is False
    assert max(server_bytes) <= 1452
    assert sum(server_bytes) <= 3 * resume_bytes


def _corrupt_first(pair: Pair, packet_type: int) -> list[bytes]:
    """Deliver the first datagram of ``packet_type`` with one bit flipped: in
    RESUME_OK's AEAD tag, or in RESUME's ephemeral key (which its proof covers);
    returns the corrupted copies."""
    corrupted: list[bytes] = []

    def drop(datagram: bytes, source: tuple[str, int], destination: object) -> bool:
        if datagram[0] != packet_type or corrupted:
            return False
        bad = bytearray(datagram)
        flip_at = len(datagram) - 1 if packet_type == PacketType.RESUME_OK else 50  # e_c_pub
        bad[flip_at] ^= 0x01
        corrupted.append(bytes(bad))
        target = pair.server if destination == SERVER_ADDR else pair.client
        pair._seq += 1  # delivered in place of the original, on time
        heapq.heappush(pair.in_flight, (pair.now + pair.delay, pair._seq, bytes(bad),
                                        source, target))
        return True

    pair.drop = drop
    return corrupted


def test_a_corrupted_resume_ok_is_dropped_and_the_resume_still_succeeds() -> None:
    """The client used to give up on a RESUME_OK that failed authentication,
    after the server had used the token up: a bit flipped in flight cost the
    client its token and a full handshake (protocol.md Appendix B item 5)."""
    pair = Pair()
    ticket = closed_with_ticket(pair)
    corrupted = _corrupt_first(pair, PacketType.RESUME_OK)
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert corrupted
    assert isinstance(event, SessionEstablished) and event.resumed
    assert pair.client.stats.drops.get(DropReason.DECRYPTION_FAILED.value) == 1


def test_a_resume_corrupted_on_the_way_is_asked_again_once() -> None:
    """A RESUME whose proof was damaged in flight is refused (REJECT reason 1),
    and the refusal leaves the token unused; as for HELLO, the client asks once
    more before it gives up (protocol.md §6.5, §6.8)."""
    pair = Pair()
    ticket = closed_with_ticket(pair)
    corrupted = _corrupt_first(pair, PacketType.RESUME)
    start = pair.now
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert corrupted
    assert isinstance(event, SessionEstablished) and event.resumed
    assert pair.now - start == pytest.approx(4 * pair.delay)  # two round trips


def test_a_refused_token_is_reported_after_the_second_refusal() -> None:
    pair = Pair()
    ticket = closed_with_ticket(pair)
    assert isinstance(outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now)),
                      SessionEstablished)
    pair.client_events.clear()
    rejects_before = sum(1 for side, d in pair.sent if d[0] == PacketType.REJECT)
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert isinstance(event, SessionClosed) and event.reason == "auth_failure"
    assert "full handshake" in event.message
    assert sum(1 for side, d in pair.sent if d[0] == PacketType.REJECT) - rejects_before == 2


def test_a_server_not_accepting_refuses_a_resume_without_using_the_token() -> None:
    """The token was used up before the server checked that it accepts sessions
    at all, so the client could not resume once it did again (Appendix B item 5)."""
    pair = Pair()
    ticket = closed_with_ticket(pair)
    accepting = pair.server.config
    pair.server.config = replace(accepting, server_mode=False)
    event = outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now))
    assert isinstance(event, SessionClosed) and event.reason == "refused"
    assert event.code == ErrorCode.REFUSED
    pair.server.config = accepting
    pair.client_events.clear()
    assert isinstance(outcome(pair, pair.client.resume(SERVER_ADDR, ticket, pair.now)),
                      SessionEstablished)


@pytest.mark.parametrize("lower", ["server", "client"])
def test_a_resumed_session_knows_the_peers_stream_limit(lower: str) -> None:
    """RESUME carries the client's stream limit and RESUME_OK the server's, as
    HELLO and CHALLENGE do (protocol.md §6.8, §5.1)."""
    pair = Pair(client=make_config(b"client", max_streams_per_session=4 if lower == "client"
                                   else 1024),
                server=make_config(b"server", server_mode=True,
                                   max_streams_per_session=4 if lower == "server" else 1024))
    ticket = closed_with_ticket(pair)
    resumed = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    assert isinstance(outcome(pair, resumed), SessionEstablished)
    server_ref = [e for e in pair.server_events if isinstance(e, SessionEstablished)][-1].ref
    opener, opener_ref = ((pair.client, resumed) if lower == "server"
                          else (pair.server, server_ref))
    for i in range(4):
        opener.open_stream(opener_ref, purpose=f"s{i}")
    with pytest.raises(InvalidStateError, match="as many as the peer allows"):
        opener.open_stream(opener_ref, purpose="one too many")


def test_a_resumed_session_outlives_the_connect_timeout_and_stops_resending_resume() -> None:
    """RESUME_OK confirms the resumption: the client resends RESUME no more and its
    session stays up. The retransmission timer was once left armed, so the client
    kept sending RESUME (and, once a quiet spell had dropped the packet, empty
    datagrams) and ended the session as unconfirmed after the connect timeout."""
    pair = Pair()
    ticket = closed_with_ticket(pair)
    new_ref = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    assert isinstance(outcome(pair, new_ref), SessionEstablished)
    sent_before = len(pair.sent)
    pair.run_for(3 * pair.client.config.connect_timeout)
    later = [datagram for who, datagram in pair.sent[sent_before:] if who == "client"]
    assert later, "keep-alives should have gone"
    assert all(len(datagram) > 0 for datagram in later)
    assert not [d for d in later if d[0] == PacketType.RESUME]
    assert not any(isinstance(e, SessionClosed) and e.ref == new_ref
                   for e in pair.client_events)
    assert pair.client.session_state(new_ref) is SessionState.ESTABLISHED
