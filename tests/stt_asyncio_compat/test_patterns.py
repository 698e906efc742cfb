"""Manual sections "Server mode", "Connecting to peers" and the usage patterns
(request/response, bidirectional streaming, multi-stream)."""

from __future__ import annotations

import asyncio
import itertools

import anyio
import pytest

from stt_asyncio_compat import STTNode
from stt_asyncio_compat.session import Session
from stt_asyncio_compat.stream import Stream

from .helpers import SEED, NodeFactory, loopback

pytestmark = pytest.mark.anyio


async def test_server_mode_broadcast_and_targeted_send(nodes: NodeFactory) -> None:
    server_seed, shared_seed = b"server-seed" * 3, SEED
    # Server accepts multiple connections
    server = nodes(node_seed=server_seed, shared_seed=shared_seed, port=0)
    await server.start(server_mode=True)  # Enable server mode
    clients = [nodes(b"viewer-%d" % i) for i in range(3)]
    # Clients can now connect
    viewer_sessions = [await c.connect(loopback(server)) for c in clients]
    with anyio.fail_after(5):
        while len(server.get_active_sessions()) < 3:
            await anyio.sleep(0.01)
    # Broadcast to all active sessions
    result = await server.send_to_all(b"Broadcast message", stream_id=1)
    assert len(result) == 3 and result.all_delivered
    for session in viewer_sessions:
        stream = await session.accept_stream(timeout=5)
        assert stream.stream_id == 1
        assert await stream.receive(timeout=5) == b"Broadcast message"
    # A second broadcast reuses stream 1 on every session.
    await server.send_to_all(b"second", stream_id=1)
    for session in viewer_sessions:
        assert session.stream(1) == session.stream(1)  # handles of one stream are equal
        assert await session.stream(1).receive(timeout=5) == b"second"
    # Or send to specific sessions
    session_ids = [session.session_id for session in server.get_active_sessions()]
    targeted = await server.send_to_sessions(session_ids[:2], b"Targeted message")
    assert sorted(targeted.delivered) == sorted(session_ids[:2])
    by_id = {s.session_id: s for s in viewer_sessions}
    for sid in session_ids[:2]:
        assert await by_id[sid].stream(0).receive(timeout=5) == b"Targeted message"
    assert by_id[session_ids[2]].stream(0).receive_nowait() is None


async def test_broadcast_survives_a_departed_viewer(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    await server.start(server_mode=True)
    stay, leave = nodes(b"stay"), nodes(b"leave")
    await stay.connect(loopback(server))
    leaving = await leave.connect(loopback(server))
    with anyio.fail_after(5):
        while len(server.get_active_sessions()) < 2:
            await anyio.sleep(0.01)
    targets = server.get_active_sessions()
    await leaving.close()
    result = await server.send_to_sessions(
        [s.session_id for s in targets] + [b"\x00" * 8], b"hello", timeout=2)
    assert result.delivered == [s.session_id for s in targets if s.peer_node_id == b"stay"]
    assert len(result.failed) == 2 and not result.all_delivered


async def test_server_learns_of_sessions_by_accept_and_callback(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    arrived: list[Session] = []
    server.on_session(arrived.append)
    await server.start(server_mode=True)
    client = await nodes(b"Client").connect(loopback(server))
    accepted = await server.accept(timeout=5)
    assert arrived == [accepted]
    assert accepted.session_id == client.session_id and not accepted.initiator
    with pytest.raises(TimeoutError):
        await server.accept(timeout=0.05)


async def test_connect_udp_to_several_peers(
        nodes: NodeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    servers = [nodes(b"peer-%d" % i) for i in range(3)]
    for server in servers:
        await server.start()
    node = nodes(b"Alice")
    # Connect to peer using IP address and port
    session = await node.connect_udp(
        peer_host="127.0.0.1",
        peer_port=servers[0].local_address[1]
    )
    assert session.peer_node_id == b"peer-0"
    await session.close()
    # Or connect to multiple peers
    peers = [loopback(server) for server in servers]
    sessions = []
    for host, port in peers:
        session = await node.connect_udp(host, port)
        sessions.append(session)
    print(f"Connected to {len(sessions)} peers")
    assert capsys.readouterr().out == "Connected to 3 peers\n"
    assert [s.peer_node_id for s in sessions] == [b"peer-0", b"peer-1", b"peer-2"]


async def serve_requests(server: STTNode) -> None:
    """The server half of request/response: answer every request on its stream."""
    session = await server.accept()
    stream = await session.accept_stream()
    request = await stream.receive()
    await stream.send(b"200 OK " + request.split(b" ", 1)[1])


async def test_request_response(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    await server.start()
    session = await nodes(b"Client").connect(loopback(server))
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_requests, server)
        # Client sends request, waits for response
        stream = session.open_stream()
        await stream.send(b"GET /resource")
        response = await stream.receive()
        await stream.close()
    assert response == b"200 OK /resource"


async def test_bidirectional_streaming(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    await server.start()
    client_session = await nodes(b"Client").connect(loopback(server))
    client_stream = client_session.open_stream(purpose="duplex")
    await client_stream.send(b"hello")
    server_stream = await (await server.accept(timeout=5)).accept_stream(timeout=5)
    assert await server_stream.receive(timeout=5) == b"hello"
    counter = itertools.count()
    received: list[bytes] = []

    def get_data_to_send() -> bytes:
        return b"tick %d" % next(counter)

    def process_data(data: bytes) -> None:
        received.append(data)

    # Both peers send/receive concurrently
    async def send_loop(stream: Stream) -> None:
        while True:
            data = get_data_to_send()
            await stream.send(data)
            await asyncio.sleep(0.1)

    async def receive_loop(stream: Stream) -> None:
        while True:
            data = await stream.receive()
            process_data(data)

    with anyio.move_on_after(0.5):
        # Run concurrently (here: both peers' loops in one gather)
        await asyncio.gather(
            send_loop(client_stream),
            receive_loop(client_stream),
            send_loop(server_stream),
            receive_loop(server_stream),
        )
    # Each side sent about five messages in 0.5 s and each arrived on the other side.
    assert len(received) >= 8
    assert all(m.startswith(b"tick ") for m in received)
    assert len(set(received)) == len(received)


async def test_multi_stream_pattern(nodes: NodeFactory) -> None:
    server = nodes(b"Server")
    await server.start()
    session = await nodes(b"Client").connect(loopback(server))
    video_frame, audio_sample, chat_message = b"\x00" * 30_000, b"\x01" * 960, b"hi!"
    # Use separate streams for different purposes
    stream_video = session.open_stream(stream_id=1, purpose='video')
    stream_audio = session.open_stream(stream_id=2, purpose='audio')
    stream_chat = session.open_stream(stream_id=3, purpose='chat')
    # Send on each independently
    await stream_video.send(video_frame)
    await stream_audio.send(audio_sample)
    await stream_chat.send(chat_message)
    peer = await server.accept(timeout=5)
    incoming = {}
    for _ in range(3):
        stream = await peer.accept_stream(timeout=5)
        incoming[stream.stream_id] = (stream.purpose, await stream.receive(timeout=5))
    assert incoming == {1: ("video", video_frame), 2: ("audio", audio_sample),
                        3: ("chat", chat_message)}
