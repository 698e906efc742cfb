"""Small request/response round trips: how many datagrams and flushes one costs.

The round-trip latency of a small message is mostly per-datagram and per-flush
work, so these tests pin the count: one datagram each way (the response
carries the ACK of the request, the next request the ACK of the response),
and no flush for a command that queued nothing.
"""

from __future__ import annotations

from stt_core import Endpoint, MessageReceived, SessionRef

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, make_config

REQUEST = bytes(range(64))
ONE_WAY = 0.0002
"""Seconds each hop takes in these tests: far below the ACK delay, as on loopback."""


def shuttle(source: Endpoint, sink: Endpoint, source_addr: tuple[str, int],
            now: float) -> list[bytes]:
    """Deliver everything ``source`` wants to send to ``sink``; returns the datagrams."""
    sent = [datagram for datagram, _ in source.datagrams_to_send(now)]
    for datagram in sent:
        sink.receive_datagram(datagram, source_addr, now + ONE_WAY)
    return sent


def messages(endpoint: Endpoint) -> list[MessageReceived]:
    received = []
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, MessageReceived):
            received.append(event)
    return received


def settled_pair() -> tuple[Pair, SessionRef, int]:
    """An established pair (credit not returned automatically, as in the binding)
    whose handshake follow-ups (tokens, path MTU probes) are done; returns the
    pair, the client's session ref and the stream id."""
    pair = Pair(client=make_config(b"client", auto_consume=False),
                server=make_config(b"server", server_mode=True, auto_consume=False),
                delay=ONE_WAY)
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(3.0)
    stream_id = pair.client.open_stream(ref, purpose="rtt")
    # Each side probes the path MTU once it has sent a message: one exchange,
    # then time for the probes and their ACKs.
    round_trip(pair, ref, stream_id)
    pair.run_for(3.0)
    return pair, ref, stream_id


def round_trip(pair: Pair, ref: SessionRef, stream_id: int) -> tuple[int, int]:
    """One request and its echo; returns (datagrams client->server, server->client)."""
    client, server = pair.client, pair.server
    client.send_message(ref, stream_id, REQUEST)
    up = shuttle(client, server, CLIENT_ADDR, pair.now)
    pair.now += ONE_WAY
    (request,) = messages(server)
    server.consume(request.ref, request.stream_id, len(request.data))
    server.send_message(request.ref, request.stream_id, request.data)
    down = shuttle(server, client, SERVER_ADDR, pair.now)
    pair.now += ONE_WAY
    (reply,) = messages(client)
    assert reply.data == REQUEST
    client.consume(ref, stream_id, len(reply.data))
    return len(up), len(down)


def test_request_response_is_one_datagram_each_way() -> None:
    pair, ref, stream_id = settled_pair()
    counts = [round_trip(pair, ref, stream_id) for _ in range(200)]
    assert counts == [(1, 1)] * 200
    # Nothing was left behind for a timer to send as an ACK-only datagram:
    # each side's pending ACK rides on its next packet.
    assert pair.client.datagrams_to_send(pair.now) == []
    assert pair.server.datagrams_to_send(pair.now) == []


def test_taking_a_small_message_needs_no_flush() -> None:
    pair, ref, stream_id = settled_pair()
    round_trip(pair, ref, stream_id)
    server = pair.server
    pair.client.send_message(ref, stream_id, REQUEST)
    shuttle(pair.client, server, CLIENT_ADDR, pair.now)
    (request,) = messages(server)
    server.datagrams_to_send(pair.now)  # the binding's flush after the input
    assert not server.flush_needed
    assert server.consume(request.ref, request.stream_id, len(request.data)) is False
    assert not server.flush_needed  # the credit goes back later, with more of it
    server.send_message(request.ref, request.stream_id, request.data)
    assert server.flush_needed


def test_credit_update_still_flushes() -> None:
    """Consuming enough to warrant a credit update does mark the session for a flush."""
    pair, ref, stream_id = settled_pair()
    window = pair.server.sessions[next(iter(pair.server.sessions))].config \
        .stream_receive_window
    big = bytes(window // 2 + 1)
    client, server = pair.client, pair.server
    taken = 0
    while taken < window // 2 + 1:
        client.send_message(ref, stream_id, big[:4096])
        for _ in range(8):
            shuttle(client, server, CLIENT_ADDR, pair.now)
            shuttle(server, client, SERVER_ADDR, pair.now)
            pair.now += ONE_WAY
        for message in messages(server):
            server.datagrams_to_send(pair.now)
            before = server.flush_needed
            queued = server.consume(message.ref, message.stream_id, len(message.data))
            taken += len(message.data)
            assert queued == (server.flush_needed and not before)
            if queued:
                assert server.datagrams_to_send(pair.now)  # the credit update leaves now
                return
    raise AssertionError("consuming half the window never queued a credit update")


def test_an_unanswered_request_is_acknowledged_when_the_ack_delay_ends() -> None:
    """The flush after the request sends nothing (the reply could carry the ACK);
    once the ACK delay has passed the ACK leaves on its own."""
    pair, ref, stream_id = settled_pair()
    round_trip(pair, ref, stream_id)
    client, server = pair.client, pair.server
    client.send_message(ref, stream_id, REQUEST)
    shuttle(client, server, CLIENT_ADDR, pair.now)
    pair.now += ONE_WAY
    assert len(messages(server)) == 1
    assert server.datagrams_to_send(pair.now) == []
    deadline = server.next_timer()
    assert deadline is not None and deadline > pair.now
    assert server.datagrams_to_send(deadline - 0.001) == []
    server.handle_timer(deadline)
    acks = shuttle(server, client, SERVER_ADDR, deadline)
    assert len(acks) == 1
    assert messages(client) == []  # an ACK only: no message travels back
    assert client.sessions[ref].recovery.bytes_in_flight == 0


def test_output_due_is_false_only_when_a_flush_would_send_nothing() -> None:
    pair, ref, stream_id = settled_pair()
    client, server = pair.client, pair.server
    quiet = 0
    for _ in range(50):
        client.send_message(ref, stream_id, REQUEST)
        assert client.output_due(pair.now)
        shuttle(client, server, CLIENT_ADDR, pair.now)
        pair.now += ONE_WAY
        (request,) = messages(server)
        # The request's ACK may wait for the reply: nothing is due yet.
        if not server.output_due(pair.now):
            quiet += 1
            assert server.datagrams_to_send(pair.now) == []
        server.consume(request.ref, request.stream_id, len(request.data))
        server.send_message(request.ref, request.stream_id, request.data)
        assert server.output_due(pair.now)
        shuttle(server, client, SERVER_ADDR, pair.now)
        pair.now += ONE_WAY
        (reply,) = messages(client)
        client.consume(ref, stream_id, len(reply.data))
    assert quiet >= 45  # a credit update now and then is due at once
    # Once the ACK delay has passed, the held ACK is due.
    client.send_message(ref, stream_id, REQUEST)
    shuttle(client, server, CLIENT_ADDR, pair.now)
    assert not server.output_due(pair.now + ONE_WAY)
    assert server.output_due(pair.now + 1.0)
