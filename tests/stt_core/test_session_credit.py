"""Session credit comes back for every byte (protocol.md §4.7, §5.4).

A sender counts every new byte it sends against the peer's session limit
(MAX_DATA), and the receiver must count and eventually return each of them, or
the session's window shrinks for good and a long session stalls. Two ways it
did not:

* a reset stream's bytes still in flight, or lost, never reached the
  receiver's count (Appendix B item 8): STREAM_CLOSE now carries each side's
  final size;
* messages the application took after their stream had ended (both
  directions over) returned nothing (item 27).
"""

from __future__ import annotations

import random

from stt_core import MessageReceived
from stt_core.events import SessionRef
from stt_core.session import Session

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, make_config
from .security_helpers import received
from .test_endpoint import losing, settled_pair


def sessions(pair: Pair, ref: SessionRef, server_ref: SessionRef) -> tuple[Session, Session]:
    return pair.client.sessions[ref], pair.server.sessions[server_ref]


def assert_credit_balanced(sender: Session, receiver: Session) -> None:
    """Every byte the sender counted against the receiver's limit was counted by
    the receiver too, and returned to the sender's window."""
    assert receiver.data_received == sender.data_sent
    assert receiver.data_consumed == receiver.data_received
    assert sender.peer_max_data - sender.data_sent >= receiver.config.session_receive_window // 2


def test_a_reset_after_its_data_was_lost_returns_the_lost_bytes_credit() -> None:
    """The resetter is the sender: STREAM_CLOSE carries how far it sent."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, purpose="doomed")
    pair.client.send_message(ref, stream, b"x" * 200)
    pair.run_for(1.0)  # the stream is known to the server
    with losing(pair, CLIENT_ADDR) as lost:
        pair.client.send_message(ref, stream, b"y" * 5000)
    pair.client.reset_stream(ref, stream, 3)
    pair.run_for(3.0)
    assert lost
    client, server = sessions(pair, ref, server_ref)
    assert client.data_sent > 5000
    assert_credit_balanced(client, server)


def test_a_reset_by_the_receiver_learns_how_far_the_peer_sent() -> None:
    """The resetter only received on the stream: the peer answers its
    STREAM_CLOSE with one of its own that carries the peer's final size."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, purpose="downloads")
    pair.client.send_message(ref, stream, b"get")
    pair.run_for(1.0)
    with losing(pair, SERVER_ADDR) as lost:
        pair.server.send_message(server_ref, stream, b"z" * 8000)
    pair.client.reset_stream(ref, stream, 3)
    pair.run_for(3.0)
    assert lost
    client, server = sessions(pair, ref, server_ref)
    assert server.data_sent >= 8000
    assert_credit_balanced(server, client)
    assert_credit_balanced(client, server)
    assert len(client.streams) == 0 and len(server.streams) == 0


def test_a_reset_of_a_stream_the_peer_never_saw_returns_its_credit() -> None:
    """Every packet of the stream was lost: the receiver learns of it only from
    STREAM_CLOSE, and still counts and returns its bytes."""
    pair, ref, server_ref = settled_pair()
    with losing(pair, CLIENT_ADDR) as lost:
        stream = pair.client.open_stream(ref, purpose="never seen")
        pair.client.send_message(ref, stream, b"w" * 6000)
    pair.client.reset_stream(ref, stream, 3)
    pair.run_for(3.0)
    assert lost
    client, server = sessions(pair, ref, server_ref)
    assert client.data_sent >= 6000
    assert_credit_balanced(client, server)
    assert len(server.streams) == 0


def test_both_sides_resetting_at_once_still_agree() -> None:
    """Each side's STREAM_CLOSE reaches a peer that already reset: no answer is
    needed, and each counts the other's final size."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, purpose="contested")
    pair.client.send_message(ref, stream, b"a")
    pair.run_for(1.0)
    with losing(pair, CLIENT_ADDR):
        pair.client.send_message(ref, stream, b"c" * 3000)
    with losing(pair, SERVER_ADDR):
        pair.server.send_message(server_ref, stream, b"s" * 3000)
    pair.client.reset_stream(ref, stream, 3)
    pair.server.reset_stream(server_ref, stream, 4)
    pair.run_for(3.0)
    client, server = sessions(pair, ref, server_ref)
    assert_credit_balanced(client, server)
    assert_credit_balanced(server, client)


def test_a_reset_that_reaches_a_peer_which_already_finished_the_stream() -> None:
    """The STREAM_CLOSE is lost, and meanwhile the peer finishes the stream
    normally: its reply and FIN reach us after our reset (we drop them, but
    acknowledge their packet), so it forgets the stream, and the resent
    STREAM_CLOSE then finds nothing to answer for. The FIN we dropped is what
    settles the count. Found by the stateful test's credit check."""
    pair, ref, server_ref = settled_pair()
    stream = pair.client.open_stream(ref, purpose="asked")
    pair.client.send_message(ref, stream, b"q")
    pair.client.close_stream(ref, stream)
    pair.run_for(1.0)
    with losing(pair, CLIENT_ADDR) as lost:
        pair.client.reset_stream(ref, stream, 3)
    pair.server.send_message(server_ref, stream, b"a" * 100)
    pair.server.close_stream(server_ref, stream)
    pair.run_for(3.0)
    assert lost
    client, server = sessions(pair, ref, server_ref)
    assert server.data_sent > 100
    assert_credit_balanced(server, client)
    assert not client.reset_awaiting


def test_many_resets_on_a_lossy_path_do_not_shrink_the_session_window() -> None:
    """40 streams carry data both ways over a path losing 30 % of datagrams, and
    either side resets each after 50 ms. This run leaked 118,660 bytes of the
    1 MiB window before the fix (enough such runs and the session stalls); now
    the two sides agree on every byte, and a message of nearly a whole window
    still arrives."""
    window = 1024 * 1024
    pair = Pair(client=make_config(b"client", session_receive_window=window),
                server=make_config(b"server", server_mode=True, session_receive_window=window))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    (server_ref,) = pair.server.sessions
    client, server = sessions(pair, ref, server_ref)
    rng = random.Random(8)
    pair.drop = lambda datagram, src, dst: rng.random() < 0.3
    for round_number in range(40):
        stream = pair.client.open_stream(ref, purpose=f"round {round_number}")
        pair.client.send_message(ref, stream, bytes(200_000))
        pair.run_for(0.05)
        if server.streams.get(stream) is not None:
            pair.server.send_message(server_ref, stream, bytes(200_000))
        pair.run_for(0.05)
        resetter, resetter_ref = rng.choice(((pair.client, ref), (pair.server, server_ref)))
        if resetter.sessions[resetter_ref].streams.get(stream) is not None:
            resetter.reset_stream(resetter_ref, stream, 7)
        else:
            pair.client.reset_stream(ref, stream, 7)
    pair.drop = None
    pair.run_for(5.0)
    last = pair.client.open_stream(ref, purpose="after the resets")
    pair.client.send_message(ref, last, bytes(window - 1000))
    pair.run_for(10.0)
    assert [len(m) for m in received(pair.server_events, last)] == [window - 1000]
    assert_credit_balanced(client, server)
    assert_credit_balanced(server, client)


def test_responses_taken_after_their_stream_ended_return_their_credit() -> None:
    """Request and response, each side closing its direction: the requester
    forgets the stream as the response arrives, before its application takes
    it (``auto_consume`` off, as in the bindings). 150 responses of 10,000 bytes
    through a 1 MiB window: the session used to stall after 104."""
    window = 1024 * 1024
    pair = Pair(client=make_config(b"client", auto_consume=False,
                                   session_receive_window=window),
                server=make_config(b"server", server_mode=True))
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0)
    (server_ref,) = pair.server.sessions
    responses = 0
    for _ in range(150):
        stream = pair.client.open_stream(ref, purpose="request")
        pair.client.send_message(ref, stream, b"get")
        pair.client.close_stream(ref, stream)
        pair.run_for(0.05)
        pair.server.send_message(server_ref, stream, bytes(10_000))
        pair.server.close_stream(server_ref, stream)
        pair.run_for(0.5)
        assert pair.client.sessions[ref].streams.get(stream) is None  # ended before taken
        for event in pair.client_events:
            if isinstance(event, MessageReceived):
                pair.client.consume(ref, event.stream_id, len(event.data))
                responses += 1
        pair.client_events.clear()
    assert responses == 150
    client, server = sessions(pair, ref, server_ref)
    assert_credit_balanced(server, client)
    assert client.forgotten_unconsumed == {}
