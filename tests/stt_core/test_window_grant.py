"""The session window after a handshake: MAX_DATA rides on a packet that leaves anyway.

A fresh session's MAX_DATA (``connector.grant_session_window``) waits for the
first ack-eliciting packet its side sends for another reason (data, a control
frame, a probe), or for the peer to have sent a quarter of its initial credit,
so a short or listening session saves a datagram each way; a resuming client
still sends it at once, because the server's amplification limit waits for it.
"""

from __future__ import annotations

from typing import cast

from stt_core import MessageReceived, ResumeTokenReceived, SessionEstablished, SessionRef
from stt_core.config import GRANT_UNASKED_AT, INITIAL_SESSION_CREDIT
from stt_core.session import Session
from stt_core.trace import ListTrace
from stt_core.wire import FrameType

from .helpers import SERVER_ADDR, Pair, make_config

WINDOW = 16 * 1024 * 1024


def traced_pair() -> tuple[Pair, ListTrace, ListTrace]:
    """A pair without path MTU probes (they would add packets of their own)."""
    pair = Pair(client=make_config(b"client", pmtu_probe_limit=1200),
                server=make_config(b"server", server_mode=True, pmtu_probe_limit=1200))
    client_trace, server_trace = ListTrace(), ListTrace()
    pair.client.trace, pair.server.trace = client_trace, server_trace
    return pair, client_trace, server_trace


def connect(pair: Pair) -> SessionRef:
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                       for e in pair.client_events))
    return ref


def session_frames(trace: ListTrace) -> list[list[int]]:
    """The frame types of each packet sent (trace data is dict[str, object])."""
    return [list(cast(list[int], data["frames"])) for data in trace.named("packet_sent")]


def server_session(pair: Pair) -> Session:
    (session,) = pair.server.sessions.values()
    return session


def test_a_fresh_client_sends_no_packet_for_its_window_alone() -> None:
    pair, client_trace, server_trace = traced_pair()
    connect(pair)
    pair.run_for(0.015)  # the server's first session packet has arrived; ACK delay 25 ms
    assert session_frames(client_trace) == []
    server_packets = len(session_frames(server_trace))
    assert server_session(pair).peer_max_data == INITIAL_SESSION_CREDIT
    pair.run_for(0.1)
    # The delayed ACK of the server's token packet goes alone: with the window on
    # it, it would be ack-eliciting, and the server would owe it an ACK of its own.
    assert session_frames(client_trace) == [[FrameType.ACK]]
    assert len(session_frames(server_trace)) == server_packets
    assert server_session(pair).peer_max_data == INITIAL_SESSION_CREDIT
    # The next ack-eliciting packet carries it: here the first keep-alive.
    pair.run_for(15.0)
    assert server_session(pair).peer_max_data == WINDOW
    assert [FrameType.KEEP_ALIVE, FrameType.MAX_DATA] in [
        [f for f in frames if f != FrameType.ACK] for frames in session_frames(client_trace)]


def test_the_first_message_carries_the_window() -> None:
    pair, client_trace, _ = traced_pair()
    ref = connect(pair)
    stream = pair.client.open_stream(ref)
    pair.client.send_message(ref, stream, b"request")
    pair.run_for(0.1, stop=lambda: any(isinstance(e, MessageReceived)
                                       for e in pair.server_events))
    first = session_frames(client_trace)[0]
    assert FrameType.MAX_DATA in first and FrameType.DATA in first
    assert server_session(pair).peer_max_data == WINDOW


def test_the_server_grants_with_its_resume_token() -> None:
    pair, _, server_trace = traced_pair()
    connect(pair)
    pair.run_for(0.1)
    frames = session_frames(server_trace)
    assert frames[0] == [FrameType.RESUME_TOKEN, FrameType.MAX_DATA]
    (client_session,) = pair.client.sessions.values()
    assert client_session.peer_max_data == WINDOW


def test_a_resuming_client_grants_at_once() -> None:
    pair, client_trace, _ = traced_pair()
    connect(pair)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, ResumeTokenReceived)
                                       for e in pair.client_events))
    ticket = next(e for e in pair.client_events if isinstance(e, ResumeTokenReceived)).token
    pair.client_events.clear()
    client_trace.events.clear()
    ref = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished) and e.ref == ref
                                       for e in pair.client_events))
    established_at = pair.now
    pair.run_for(0.001)  # well within the ACK delay
    # No waiting for a packet to ride on: the server's 3x limit lasts until this one.
    sent = [(now, data) for now, r, name, data in client_trace.events
            if name == "packet_sent" and r == ref]
    assert sent, "the resumed client sent nothing right after RESUME_OK"
    now, first = sent[0]
    assert now == established_at
    assert FrameType.MAX_DATA in cast(list[int], first["frames"])


def test_a_server_sending_at_once_is_never_held_by_the_wait() -> None:
    pair, _, _ = traced_pair()
    connect(pair)
    pair.run_for(0.015)
    session = server_session(pair)
    stream = pair.server.open_stream(session.ref)
    message = bytes(3 * 1024 * 1024)
    pair.server.send_message(session.ref, stream, message)
    sent_at_grant: list[int] = []

    def watch() -> bool:
        if not sent_at_grant and session.peer_max_data == WINDOW:
            sent_at_grant.append(session.data_sent)
        return any(isinstance(e, MessageReceived) for e in pair.client_events)

    assert pair.run_for(30.0, stop=watch)
    # The client, which sends nothing ack-eliciting, granted once a quarter of the
    # initial credit had arrived, and the window reached the server before the
    # credit ran out: the server never waited on it.
    assert sent_at_grant and sent_at_grant[0] < INITIAL_SESSION_CREDIT


def test_a_receiver_that_sends_nothing_else_grants_after_a_quarter_of_the_credit() -> None:
    """Stream credit at the protocol's minimum and nothing consumed: the client
    sends no control frame of its own, so only the rule on received bytes can
    put its window on the wire, and it must, before the server runs dry."""
    pair = Pair(client=make_config(b"client", pmtu_probe_limit=1200, auto_consume=False,
                                   stream_receive_window=64 * 1024),
                server=make_config(b"server", server_mode=True, pmtu_probe_limit=1200))
    client_trace = ListTrace()
    pair.client.trace = client_trace
    connect(pair)
    pair.run_for(0.1)
    session = server_session(pair)
    client = pair.client.sessions[next(iter(pair.client.sessions))]
    for _ in range(8):  # 480,000 bytes, each stream within its 64 KiB of credit
        stream = pair.server.open_stream(session.ref)
        for _ in range(15):  # whole messages, never consumed: no stream credit moves
            pair.server.send_message(session.ref, stream, bytes(4_000))
    received_at_grant: list[int] = []

    def watch() -> bool:
        if not received_at_grant and session.peer_max_data == WINDOW:
            received_at_grant.append(client.data_received)
        return sum(isinstance(e, MessageReceived) for e in pair.client_events) == 120

    assert pair.run_for(10.0, stop=watch)
    assert received_at_grant and received_at_grant[0] >= GRANT_UNASKED_AT
    granting = [frames for frames in session_frames(client_trace)
                if FrameType.MAX_DATA in frames]
    assert granting and granting[0] == [FrameType.ACK, FrameType.MAX_DATA]
