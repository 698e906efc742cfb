"""Manual section "Performance": socket buffers, many sessions, frame sizes.

The manual's "1000+ sessions" server is exercised at 50 concurrent sessions
here (fast enough for every run); stt_anyio's own tests and the benchmarks
cover larger counts.
"""

from __future__ import annotations

import hashlib
import os

import anyio
import pytest

from stt_asyncio_compat import STTNode
from stt_asyncio_compat.session import Session

from .helpers import FAST, SEED, NodeFactory, loopback

pytestmark = pytest.mark.anyio


async def test_socket_buffer_example(nodes: NodeFactory) -> None:
    node = STTNode(
        node_id=b"Alice",
        recv_buffer_size=4194304,  # 4MB receive buffer
        send_buffer_size=4194304,  # 4MB send buffer
        shared_seed=SEED,
        bind_address="127.0.0.1",
        **FAST,
    )
    try:
        await node.start()
        bob = nodes(b"Bob")
        await bob.start()
        session = await node.connect(loopback(bob), b"Bob")
        payload = os.urandom(2 * 1024 * 1024)
        await session.open_stream(purpose="burst").send(payload, timeout=20)
        incoming = await (await bob.accept(timeout=5)).accept_stream(timeout=5)
        assert await incoming.receive(timeout=10) == payload
    finally:
        await node.stop()


async def test_server_with_many_concurrent_sessions(nodes: NodeFactory) -> None:
    # Server handling many concurrent sessions
    node = nodes(node_id=b"Server")
    node.start()
    clients = [nodes(b"client-%02d" % i, max_datagram_size=1452) for i in range(50)]
    results: dict[bytes, bytes] = {}

    async def one_client(client: STTNode) -> None:
        session = await client.connect(loopback(node), b"Server", timeout=10)
        stream = session.open_stream(purpose="echo")
        await stream.send(client.node_id, timeout=10)
        results[client.node_id] = await stream.receive(timeout=10)

    async def echo_session(session: Session) -> None:
        stream = await session.accept_stream()
        await stream.send(b"echo:" + await stream.receive())

    async def echo_server() -> None:
        while True:
            tg.start_soon(echo_session, await node.accept())

    # Sessions handled concurrently (event loop), no thread per session
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(echo_server)
            async with anyio.create_task_group() as client_tg:
                for client in clients:
                    client_tg.start_soon(one_client, client)
            tg.cancel_scope.cancel()
    assert results == {c.node_id: b"echo:" + c.node_id for c in clients}
    assert node.session_manager.get_session_count() == 50


@pytest.mark.parametrize("max_frame_size", [4096, 16384, 65536])
async def test_frame_size_choice_carries_large_messages(
        nodes: NodeFactory, max_frame_size: int) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    session = await nodes(b"Alice").connect(loopback(bob), b"Bob")
    stream = session.open_stream(
        max_frame_size=max_frame_size  # the manual: 64 KB frames (vs default 16 KB)
    )
    data = os.urandom(300_000)
    await stream.send(data, timeout=10)
    incoming = await (await bob.accept(timeout=5)).accept_stream(timeout=5)
    received = await incoming.receive(timeout=10)
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
