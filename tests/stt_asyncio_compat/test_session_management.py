"""Manual sections "Multiple sessions", "Session ID", "Session states", "SessionManager"."""

from __future__ import annotations

from typing import Any, cast

import pytest

from stt_asyncio_compat import SessionClosedError
from stt_asyncio_compat.session import Session, SessionManager, SessionState

from .helpers import NodeFactory, loopback

pytestmark = pytest.mark.anyio


def state_of(session: Session) -> SessionState:
    """Read the state afresh (keeps mypy from narrowing a property across awaits)."""
    return session.state


async def test_one_node_many_sessions(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    carol = nodes(b"Carol")
    await bob.start()
    await carol.start()
    bob_address, carol_address = loopback(bob), loopback(carol)
    # Alice's node
    alice_node = nodes(node_id=b"Alice")
    alice_node.start()
    # Connect to Bob
    session_bob = await alice_node.connect(bob_address, b"Bob")
    # Simultaneously connect to Carol (if needed)
    session_carol = await alice_node.connect(carol_address, b"Carol")
    # Both sessions active concurrently
    assert session_bob.is_active and session_carol.is_active
    assert session_bob.session_id != session_carol.session_id
    # Independent lifecycle: closing one leaves the other working.
    await session_bob.close()
    stream = session_carol.open_stream(purpose="still here")
    await stream.send(b"hi Carol", timeout=5)
    assert state_of(session_bob) is SessionState.CLOSED
    assert session_carol.is_active


async def test_session_id_is_eight_bytes_and_equal_on_both_sides(
        nodes: NodeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    session = await alice.connect(loopback(bob), b"Bob")
    print(session.session_id.hex())
    printed = capsys.readouterr().out.strip()
    assert len(session.session_id) == 8 and len(printed) == 16
    peer_side = await bob.accept(timeout=5)
    assert peer_side.session_id == session.session_id
    assert bob.session_manager.get_session(printed) is peer_side  # hex works too


async def test_states_follow_the_lifecycle(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    session = await alice.connect(loopback(bob), b"Bob")
    stream = session.open_stream()
    data = b"payload"
    sent = False
    # The manual's check:
    if session.state == SessionState.ESTABLISHED:
        # Safe to send data
        await stream.send(data)
        sent = True
    else:
        # Not ready yet
        print(f"Session not ready: {session.state}")
    assert sent
    assert [s.name for s in SessionState] == [
        "INIT", "HANDSHAKING", "ESTABLISHED", "CLOSING", "CLOSED"]
    peer_side = await bob.accept(timeout=5)
    peer_stream = await peer_side.accept_stream(timeout=5)
    await session.close()
    assert state_of(session) is SessionState.CLOSED
    assert await peer_side.wait_closed() == "graceful"
    assert state_of(peer_side) is SessionState.CLOSED
    assert session.close_reason == "graceful"
    # What arrived before the close is still readable; then the close shows.
    assert await peer_stream.receive(timeout=5) == data
    with pytest.raises(SessionClosedError):
        await peer_stream.receive(timeout=5)


async def test_session_manager_counts_and_cleanup(
        nodes: NodeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    node = nodes(b"Hub")
    await node.start()
    peers = [nodes(b"peer-%d" % i) for i in range(3)]
    client_sessions = [await p.connect(loopback(node), b"Hub") for p in peers]
    # Get all active sessions
    sessions = node.session_manager.get_active_sessions()
    print(f"Currently connected to {len(sessions)} peers")
    assert capsys.readouterr().out == "Currently connected to 3 peers\n"
    # Get specific session
    session_id = client_sessions[0].session_id
    session = node.session_manager.get_session(session_id)
    assert session is not None and session.peer_node_id == b"peer-0"
    # Check session count
    count = node.session_manager.get_session_count()
    assert count == 3 and len(node.session_manager) == 3
    assert session_id in node.session_manager
    await client_sessions[0].close()
    await session.wait_closed()
    # Closed sessions stay visible until cleanup.
    assert node.session_manager.get_session_count() == 3
    assert node.session_manager.get_active_session_count() == 2
    assert node.session_manager.get_session(session_id) is session
    # SessionManager automatically removes closed sessions
    removed = await node.session_manager.cleanup_closed_sessions()
    print(f"Cleaned up {removed} closed sessions")
    assert removed == 1
    assert node.session_manager.get_session_count() == 2
    assert node.session_manager.get_session(session_id) is None
    assert await node.session_manager.cleanup_closed_sessions() == 0
    stats = node.get_stats()
    assert stats["sessions_active"] == 2 and stats["sessions_tracked"] == 2
    assert stats["state"] == "running" and stats["server_mode"] is True
    assert stats["endpoint"]["sessions_accepted"] == 3
    assert stats["udp"]["datagrams_received"] > 0
    assert stats["local_addresses"] == {"udp": node.local_address}


class _FakeSession:
    """Stands in for a Session in the manager's bookkeeping (id + closed)."""

    def __init__(self, number: int) -> None:
        self.session_id = number.to_bytes(8, "big")
        self.closed = False

    @property
    def is_active(self) -> bool:
        return not self.closed


def test_manager_forgets_the_oldest_closed_sessions_past_its_bound() -> None:
    manager = SessionManager(closed_memory=2)
    fakes = [_FakeSession(i) for i in range(5)]
    for fake in fakes:
        manager._track(cast(Any, fake))
    for fake in fakes[:4]:
        fake.closed = True
        manager._note_closed(cast(Any, fake))
    # Four closed, two remembered: the two oldest closed are gone.
    assert manager.get_session(fakes[0].session_id) is None
    assert manager.get_session(fakes[1].session_id) is None
    assert manager.get_session_count() == 3
    assert [s.session_id for s in manager.get_active_sessions()] == [fakes[4].session_id]
    with pytest.raises(ValueError):
        SessionManager(closed_memory=-1)
