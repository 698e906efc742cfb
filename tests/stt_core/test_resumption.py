"""Resume tokens: one-round-trip re-establishment with fresh keys, single use, expiry."""

from __future__ import annotations

import pytest

from stt_core import (
    MessageReceived,
    ResumeTokenReceived,
    SessionClosed,
    SessionEstablished,
)
from stt_core.resumption import Ticket
from stt_core.wire import PacketType

from .helpers import SERVER_ADDR, Pair, make_config


def establish(pair: Pair) -> tuple[int, bytes]:
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, ResumeTokenReceived)
                                       for e in pair.client_events))
    token = next(e for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    assert token.ref == ref
    return ref, token.token


def outcome(pair: Pair, ref: int) -> object:
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
    ref, ticket = establish(pair)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(5.0)
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
    ref, ticket = establish(pair)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(5.0)
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
    ref, ticket = establish(pair)
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(5.0)
    resumed = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    assert isinstance(outcome(pair, resumed), SessionEstablished)
    rtt = pair.client.sessions[resumed].recovery.rtt
    assert rtt.has_sample and rtt.min_rtt == pytest.approx(0.030)
