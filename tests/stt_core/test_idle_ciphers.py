"""A quiet established session frees its cipher contexts, and rebuilds them
transparently: delivery, key updates and keep-alives behave exactly as before.
It also forgets the handshake packets kept for retransmission once the peer is
provably past them; a late copy is then dropped as the replay it is."""

from __future__ import annotations

from stt_core import DropReason, Endpoint, ResumeTokenReceived, SessionEstablished, SessionState
from stt_core.events import SessionRef
from stt_core.session import CIPHER_RELEASE_GRANULARITY, CIPHER_RELEASE_INTERVAL, Session
from stt_core.wire import PacketType

from .helpers import CLIENT_ADDR, SERVER_ADDR, Pair, make_config
from .security_helpers import established, open_pair, received

QUIET = CIPHER_RELEASE_INTERVAL + 1.0
"""Long enough for a release: its deadline is rounded up to the release grid."""


def _session(endpoint: Endpoint, ref: SessionRef) -> Session:
    return endpoint.sessions[ref]


def _holding(session: Session) -> list[bool]:
    """Which of the session's current packet protections hold a cipher context."""
    return [protection.holds_context
            for protection in (session.send_protection, session.recv_protection)
            if protection is not None]


def test_quiet_session_releases_both_directions_after_the_interval() -> None:
    pair, ref, server_ref = open_pair()
    client, server = _session(pair.client, ref), _session(pair.server, server_ref)
    assert _holding(client) == _holding(server) == [True, True]
    pair.run_for(QUIET)
    assert _holding(client) == _holding(server) == [False, False]
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


def test_released_session_still_delivers_both_ways_and_holds_contexts_again() -> None:
    pair, ref, server_ref = open_pair()
    pair.run_for(QUIET)
    up = pair.client.open_stream(ref, purpose="up")
    pair.client.send_message(ref, up, b"after a quiet spell")
    pair.run_for(0.1)
    assert received(pair.server_events, up) == [b"after a quiet spell"]
    down = pair.server.open_stream(server_ref, purpose="down")
    pair.server.send_message(server_ref, down, b"and back")
    pair.run_for(0.1)
    assert received(pair.client_events, down) == [b"and back"]
    assert _holding(_session(pair.client, ref)) == [True, True]
    pair.run_for(QUIET)
    assert _holding(_session(pair.client, ref)) == [False, False]


def test_released_timer_does_not_spin_and_keep_alives_continue() -> None:
    pair, ref, server_ref = open_pair()
    pair.run_for(QUIET)
    client = _session(pair.client, ref)
    quiet_since = client.quiet_since
    # Released: the next deadline is the keep-alive, not an already-past release.
    assert client.next_timer() == quiet_since + client.config.keep_alive_interval
    assert client.cipher_release_mark == quiet_since
    sent_before = len(pair.sent)
    pair.run_for(60.0)
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED
    # one keep-alive exchange (plus acks) per 10 s, as without the release
    assert 6 <= len(pair.sent) - sent_before <= 30


def test_key_updates_across_quiet_spells_keep_every_message() -> None:
    client_config = make_config(b"client", key_update_interval_packets=3)
    server_config = make_config(b"server", server_mode=True, key_update_interval_packets=3)
    pair, ref, server_ref = open_pair(client=client_config, server=server_config)
    stream = pair.client.open_stream(ref, purpose="bursts")
    sent: list[bytes] = []
    for burst in range(6):
        for index in range(4):
            message = b"burst %d message %d" % (burst, index)
            sent.append(message)
            pair.client.send_message(ref, stream, message)
        pair.run_for(0.2)
        pair.run_for(QUIET)  # quiet: everything released
        client = _session(pair.client, ref)
        assert _holding(client) == [False, False]
        assert client.recv_previous is None or not client.recv_previous.holds_context
    assert received(pair.server_events, stream) == sent
    assert pair.client.session_stats(ref).key_updates >= 3
    assert pair.server.session_stats(server_ref).key_updates >= 3


def _replays(endpoint: Endpoint) -> int:
    return endpoint.stats.drops.get(DropReason.REPLAYED_HANDSHAKE.value, 0)


def test_quiet_session_forgets_handshake_packets_and_a_late_auth_proof_is_a_replay() -> None:
    pair, ref, server_ref = open_pair()
    server = _session(pair.server, server_ref)
    # FINAL was not needed (a session packet confirmed the client), so it was
    # not built; the server can still build it for a repeated AUTH_PROOF.
    assert server.final_packet == b"" and len(server.final_material) == 64
    assert server.auth_proof_packet
    pair.run_for(QUIET)
    client = _session(pair.client, ref)
    assert server.final_packet == server.auth_proof_packet == server.hs_packet == b""
    assert server.final_material == b""
    assert client.hs_packet == b""
    auth_proof = next(d for who, d in pair.sent
                      if who == "client" and d[0] == PacketType.AUTH_PROOF)
    sent_before = len(pair.sent)
    pair.server.receive_datagram(auth_proof, CLIENT_ADDR, pair.now)
    pair.run_for(0.5)
    assert _replays(pair.server) == 1
    assert not any(d[0] == PacketType.FINAL for _, d in pair.sent[sent_before:])
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED
    stream = pair.client.open_stream(ref, purpose="still fine")
    pair.client.send_message(ref, stream, b"hello")
    pair.run_for(0.2)
    assert received(pair.server_events, stream) == [b"hello"]


def test_final_lost_for_longer_than_the_interval_is_still_resent() -> None:
    pair = Pair()

    def drop(datagram: bytes, source: object, destination: object) -> bool:
        # Everything the server sends after CHALLENGE: FINAL, and the session
        # packets that would confirm the client in its place.
        return (source == SERVER_ADDR and datagram[0] != PacketType.CHALLENGE
                and pair.now < 1000.0 + 3 * CIPHER_RELEASE_INTERVAL)

    pair.drop = drop
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    # Established on CHALLENGE, the client is confirmed only once a FINAL the
    # server re-sent for a retransmitted AUTH_PROOF gets through: the server
    # keeps FINAL although the client's own session packets reached it.
    session = _session(pair.client, ref)
    pair.run_for(10.0, stop=lambda: session.handshake is None)
    assert established(pair.client_events)[0].ref == ref
    assert session.handshake is None
    assert pair.now >= 1000.0 + 3 * CIPHER_RELEASE_INTERVAL
    assert pair.client.session_state(ref) is SessionState.ESTABLISHED


def test_resumed_session_forgets_resume_ok_and_a_late_resume_is_a_replay() -> None:
    pair = Pair()
    ref = pair.client.connect(SERVER_ADDR, pair.now)
    pair.run_for(1.0, stop=lambda: any(isinstance(e, ResumeTokenReceived)
                                       for e in pair.client_events))
    ticket = next(e for e in pair.client_events if isinstance(e, ResumeTokenReceived)).token
    pair.client.close_session(ref, now=pair.now)
    pair.run_for(5.0)
    new_ref = pair.client.resume(SERVER_ADDR, ticket, pair.now)
    pair.run_for(0.5)
    server_ref = [e for e in pair.server_events if isinstance(e, SessionEstablished)][-1].ref
    pair.run_for(QUIET)
    assert _session(pair.server, server_ref).final_packet == b""
    resume = [d for who, d in pair.sent if who == "client" and d[0] == PacketType.RESUME][-1]
    replays = _replays(pair.server)
    pair.server.receive_datagram(resume, CLIENT_ADDR, pair.now)
    pair.run_for(0.5)
    assert _replays(pair.server) == replays + 1
    assert pair.client.session_state(new_ref) is SessionState.ESTABLISHED
    assert pair.server.session_state(server_ref) is SessionState.ESTABLISHED


def test_release_deadlines_fall_on_a_grid_so_sessions_share_them() -> None:
    pair, ref, server_ref = open_pair()
    for session in (_session(pair.client, ref), _session(pair.server, server_ref)):
        quiet_since = session.quiet_since
        deadline = session.next_timer()
        assert deadline is not None
        steps = deadline / CIPHER_RELEASE_GRANULARITY
        assert steps == int(steps)
        earliest = quiet_since + CIPHER_RELEASE_INTERVAL
        assert earliest <= deadline < earliest + CIPHER_RELEASE_GRANULARITY


def test_release_comes_within_a_grid_step_of_the_interval() -> None:
    """A quiet session holds its contexts for at most the interval plus one step
    of the grid: with whole seconds it held them up to twice the interval."""
    pair, ref, server_ref = open_pair()
    sessions = (_session(pair.client, ref), _session(pair.server, server_ref))
    quiet_since = max(s.quiet_since for s in sessions)
    pair.run(quiet_since + CIPHER_RELEASE_INTERVAL + 0.25)  # the promise, whatever the grid
    assert [_holding(s) for s in sessions] == [[False, False], [False, False]]
