"""Manual section "Transport types": UDP, WebSocket and the node's network options.

The chapter's examples bind port 8080 and ``0.0.0.0``; here port 0 (any free
port) keeps parallel test runs apart. The first examples pass no
``shared_seed``: such a node starts and listens but authenticates nobody.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from stt_asyncio_compat import STTNode

from .helpers import FAST, NodeFactory, loopback

pytestmark = pytest.mark.anyio


def assert_port_taken(kind: socket.SocketKind, port: int) -> None:
    with socket.socket(socket.AF_INET, kind) as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))


def test_udp_example_binds_at_once() -> None:
    node = STTNode(
        node_id=b"Alice",
        port=0,
        transport='udp'  # Default
    )
    node.start()
    try:
        host, port = node.local_address
        assert host == "0.0.0.0"  # the manual's default bind_address
        assert_port_taken(socket.SOCK_DGRAM, port)
    finally:
        asyncio.run(node.stop())


def test_websocket_example_binds_at_once() -> None:
    node = STTNode(
        node_id=b"Alice",
        port=0,
        transport='websocket'
    )
    node.start()
    try:
        assert node.transports == ("websocket",)
        assert_port_taken(socket.SOCK_STREAM, node.local_address[1])
    finally:
        asyncio.run(node.stop())


async def test_configuration_example(nodes: NodeFactory) -> None:
    node = STTNode(
        node_id=b"Alice",
        port=0,
        transport='udp',
        bind_address='0.0.0.0',  # Listen on all interfaces
        reuse_port=True,  # Allow multiple processes on same port
        recv_buffer_size=2097152,  # 2MB socket buffer
        shared_seed=b"correct-horse-battery-staple",
        **FAST,
    )
    try:
        await node.start()
        port = node.local_address[1]
        # reuse_port: a second node may bind the very same port.
        twin = nodes(b"Twin", port=port, bind_address="0.0.0.0", reuse_port=True)
        await twin.start()
        assert twin.local_address == node.local_address
        # Reachable over loopback although bound to every interface.
        client = nodes(b"Bob")
        session = await client.connect(("127.0.0.1", port), timeout=5)
        assert session.peer_node_id in (b"Alice", b"Twin")
    finally:
        await node.stop()


async def test_host_is_an_alias_of_bind_address(nodes: NodeFactory) -> None:
    node = nodes(b"Alice", bind_address=None, host="127.0.0.1")
    assert (await node.start())[0] == "127.0.0.1"


async def test_websocket_sessions_end_to_end(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob", transport="websocket")
    await bob.start(server_mode=True)
    alice = nodes(b"Alice", transport="websocket")
    session = await alice.connect(loopback(bob, "websocket"), b"Bob", timeout=5)
    stream = session.open_stream(purpose="over-ws")
    await stream.send(b"through TCP", timeout=5)
    peer = await bob.accept(timeout=5)
    assert peer.session_id == session.session_id
    incoming = await peer.accept_stream(timeout=5)
    assert await incoming.receive(timeout=5) == b"through TCP"
    assert "websocket" in bob.get_stats()


async def test_one_node_on_both_transports(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob", transport=("udp", "websocket"))
    await bob.start()
    assert set(bob.local_addresses) == {"udp", "websocket"}
    alice = nodes(b"Alice", transport=("udp", "websocket"))
    over_udp = await alice.connect(loopback(bob), b"Bob", transport="udp")
    over_ws = await alice.connect(loopback(bob, "websocket"), b"Bob", transport="websocket")
    assert over_udp.session_id != over_ws.session_id
    assert bob.session_manager.get_session_count() == 2
    with pytest.raises(ValueError):
        await alice.connect(loopback(bob), b"Bob", transport="tcp")
