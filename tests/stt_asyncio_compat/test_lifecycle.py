"""Manual section "Session lifecycle": setup, active phase, teardown.

The examples run as printed in the chapter with the import changed, port
8080 replaced by 0 (any free port) and the 10.x addresses by loopback.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from stt_asyncio_compat import (
    AuthenticationError,
    ConfigError,
    ConnectionRefusedError,
    InvalidStateError,
    SessionState,
)
from stt_asyncio_compat.node import STTNode

from .helpers import FAST, SEED, NodeFactory, loopback

pytestmark = pytest.mark.anyio


async def manual_flow(alice_node: STTNode, bob_node: STTNode,
                      closed: list[tuple[bytes, str]]) -> None:
    """Setup, active phase and teardown as the chapter prints them."""
    session = await alice_node.connect(
        peer_address=("127.0.0.1", bob_node.local_address[1]),
        peer_node_id=b"Bob-67890",
    )
    assert session.is_active
    # Open a stream for file transfer
    stream = session.open_stream(purpose='file_transfer')
    # Send data
    await stream.send(b"Hello Bob!")
    bob_session = await bob_node.accept(timeout=5)
    bob_stream = await bob_session.accept_stream(timeout=5)
    assert bob_stream.purpose == "file_transfer"
    assert await bob_stream.receive(timeout=5) == b"Hello Bob!"
    await bob_stream.send(b"Hello Alice!")
    # Receive data
    data = await stream.receive()
    assert data == b"Hello Alice!"
    assert session.session_id == bob_session.session_id
    assert session.peer_node_id == b"Bob-67890"
    assert bob_session.peer_node_id == b"Alice-12345"
    # Close specific stream
    await stream.close()
    # Close entire session
    await session.close()
    assert session.state == SessionState.CLOSED
    assert await bob_session.wait_closed() == "graceful"
    # Shutdown node (closes all sessions)
    await alice_node.stop()
    await bob_node.stop()
    assert closed == [(session.session_id, "graceful")]


def test_manual_flow_with_top_level_start() -> None:
    """The chapter's flow: ``start()`` at top level, before any event loop exists."""
    # Alice's side
    alice_node = STTNode(
        node_id=b"Alice-12345",
        port=0,
        shared_seed=b"correct-horse-battery-staple",
        **FAST,
    )
    alice_node.start()  # Starts listening
    bob_node = STTNode(node_id=b"Bob-67890", port=0,
                       shared_seed=b"correct-horse-battery-staple", **FAST)
    bob_node.start()
    # Bound at once, without a loop: the port is taken and known.
    port = alice_node.local_address[1]
    assert port != 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, \
            pytest.raises(OSError):
        probe.bind(("0.0.0.0", port))

    closed: list[tuple[bytes, str]] = []
    bob_node.on_session_closed(lambda sid, reason: closed.append((sid, reason)))

    asyncio.run(manual_flow(alice_node, bob_node, closed))
    assert not alice_node.is_running and not bob_node.is_running


async def test_awaited_start_returns_the_local_address(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    address = await server.start(server_mode=True)  # Enable server mode
    assert address == server.local_address
    assert address[0] == "127.0.0.1" and address[1] > 0
    assert server.is_running and server.server_mode


async def test_plain_start_inside_a_loop_serves_without_any_await(
        nodes: NodeFactory) -> None:
    """``node.start()`` without ``await`` in a coroutine: the node still serves."""
    bob = nodes(b"Bob")
    bob.start()
    alice = nodes(b"Alice")
    session = await alice.connect(loopback(bob), b"Bob", timeout=5)
    assert session.state is SessionState.ESTABLISHED
    assert bob.session_manager.get_session(session.session_id) is not None


async def test_connect_starts_an_unstarted_node(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    session = await alice.connect(loopback(bob), b"Bob", timeout=5)
    assert alice.is_running and alice.server_mode
    assert session.initiator


async def test_stop_is_final_and_idempotent(nodes: NodeFactory) -> None:
    node = nodes(b"Alice")
    await node.start()
    await node.stop()
    await node.stop()
    assert node.get_stats()["state"] == "stopped"
    with pytest.raises(InvalidStateError):
        node.start()
    with pytest.raises(InvalidStateError):
        await node.connect(("127.0.0.1", 9), b"x")


async def test_stop_of_a_never_started_node_releases_nothing_twice() -> None:
    node = STTNode(node_id=b"idle", shared_seed=SEED)
    await node.stop()
    with pytest.raises(InvalidStateError):
        await node.start()


async def test_async_with_starts_and_stops() -> None:
    async with STTNode(node_id=b"ctx", shared_seed=SEED, bind_address="127.0.0.1") as node:
        assert node.get_stats()["state"] == "running"
        port = node.local_address[1]
    assert not node.is_running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))  # the port was released


async def test_start_twice_with_another_mode_is_refused(nodes: NodeFactory) -> None:
    node = nodes(b"n")
    await node.start(server_mode=True)
    assert await node.start() == node.local_address  # same mode: harmless
    with pytest.raises(InvalidStateError):
        node.start(server_mode=False)


async def test_client_only_node_refuses_sessions(nodes: NodeFactory) -> None:
    client = nodes(b"Client")
    await client.start(server_mode=False)
    other = nodes(b"Other")
    with pytest.raises(ConnectionRefusedError):
        await other.connect(loopback(client), timeout=5)
    with pytest.raises(InvalidStateError):
        await client.accept(timeout=0.1)


async def test_node_without_shared_seed_authenticates_nobody(nodes: NodeFactory) -> None:
    lonely = STTNode(node_id=b"Alice", bind_address="127.0.0.1", **FAST)
    try:
        await lonely.start()
        with pytest.raises(ConfigError):
            await lonely.connect(("127.0.0.1", 9), b"Bob")
        peer = nodes(b"Bob")
        with pytest.raises(AuthenticationError):
            await peer.connect(loopback(lonely), timeout=5)
    finally:
        await lonely.stop()


async def test_bind_failure_is_raised_by_start(nodes: NodeFactory) -> None:
    first = nodes(b"first")
    await first.start()
    second = nodes(b"second", port=first.local_address[1])
    with pytest.raises(OSError):
        second.start()


def test_port_taken_in_the_rebind_gap_fails_the_awaited_start() -> None:
    node = STTNode(node_id=b"unlucky", shared_seed=SEED, bind_address="127.0.0.1")
    node.start()  # bound, no loop yet
    port = node.local_address[1]
    reservation = node._reservation
    assert reservation is not None
    reservation.release()  # simulate another process winning the re-bind race
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief:
        thief.bind(("127.0.0.1", port))

        async def main() -> None:
            with pytest.raises(OSError):
                await node.start()
            await node.stop()  # the failure was delivered; stop does not raise it again

        asyncio.run(main())
    assert node.get_stats()["state"] == "stopped"
