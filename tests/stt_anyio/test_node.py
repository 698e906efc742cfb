"""Node, Session and Stream on real loopback sockets, under asyncio and trio."""

from __future__ import annotations

import builtins
import hashlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest

from stt_anyio import Node, Session, open_node
from stt_anyio.node import TransportName
from stt_anyio.websocket import WsPeer
from stt_core import SessionState
from stt_core.errors import (
    AuthenticationError,
    ConnectionRefusedError,
    ConnectionTimeoutError,
    InvalidStateError,
    SendTimeoutError,
    SessionClosedError,
    StreamClosedError,
)

pytestmark = pytest.mark.anyio

SEED = b"test shared seed 0123456789"
FAST = {"max_datagram_size": 1452, "close_timeout": 1.0}
"""Loopback-friendly overrides: a larger datagram, a short close."""


@asynccontextmanager
async def server_and_client(transport: Any = "udp", **client_kwargs: Any
                            ) -> AsyncIterator[tuple[Node, Node]]:
    async with open_node(node_id=b"server", shared_seed=SEED, transport=transport,
                         config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=client_kwargs.pop("seed", SEED),
                      transport=transport, server_mode=False,
                      config_overrides=FAST, **client_kwargs) as client:
        yield server, client


async def connected(server: Node, client: Node, transport: TransportName = "udp",
                    **kwargs: Any) -> tuple[Session, Session]:
    """Connect client -> server and return (client_session, server_session)."""
    with anyio.fail_after(10):
        address = server.local_addresses[transport]
        client_session = await client.connect(address, transport=transport,
                                              **kwargs)
        server_session = await server.accept()
    return client_session, server_session


def _free_udp_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def _free_tcp_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


@pytest.mark.parametrize("transport", ["udp", "websocket"])
async def test_handshake(transport: TransportName) -> None:
    async with server_and_client(transport) as (server, client):
        client_session, server_session = await connected(server, client, transport,
                                                         peer_node_id=b"server")
        assert client_session.session_id == server_session.session_id
        assert len(client_session.session_id) == 8
        assert client_session.peer_node_id == b"server"
        assert server_session.peer_node_id == b"client"
        assert client_session.state is SessionState.ESTABLISHED
        assert server_session.state is SessionState.ESTABLISHED
        if transport == "websocket":
            assert isinstance(client_session.peer_address, WsPeer)
        else:
            assert client_session.peer_address == server.local_address
        assert client.sessions == [client_session]
        stats = client.get_stats()
        assert stats["sessions"] == 1
        assert stats["endpoint"]["datagrams_sent"] >= 2


@pytest.mark.parametrize("transport", ["udp", "websocket"])
async def test_echo_on_several_streams(transport: TransportName) -> None:
    async with server_and_client(transport) as (server, client):
        client_session, server_session = await connected(server, client, transport)

        async def echo_server() -> None:
            for _ in range(3):
                stream = await server_session.accept_stream(timeout=5)
                tg.start_soon(echo_stream, stream)

        purposes: list[str] = []

        async def echo_stream(stream: Any) -> None:
            purposes.append(stream.purpose)
            async for message in stream:
                await stream.send(message, timeout=5)
            await stream.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(echo_server)
            streams = [client_session.open_stream(purpose, priority=i)
                       for i, purpose in enumerate(("chat", "video", "files"))]
            for round_no in range(5):
                for stream in streams:
                    message = f"{stream.purpose} {round_no}".encode() * (round_no + 1)
                    await stream.send(message, timeout=5)
                    assert await stream.receive(timeout=5) == message
            for stream in streams:
                await stream.close()
                with pytest.raises(StreamClosedError):
                    await stream.receive(timeout=5)
        assert sorted(purposes) == ["chat", "files", "video"]
        # Streams finished in both directions are not kept by the sessions.
        with anyio.fail_after(5):
            while client_session.streams or server_session.streams:
                await anyio.sleep(0.01)


async def test_reset_and_closed_stream_errors() -> None:
    async with server_and_client() as (server, client):
        client_session, server_session = await connected(server, client)
        stream = client_session.open_stream("doomed")
        await stream.send(b"first", timeout=5)
        incoming = await server_session.accept_stream(timeout=5)
        assert incoming.purpose == "doomed"
        assert incoming.receive_nowait() == b"first"
        assert incoming.receive_nowait() is None
        readable = [incoming.readable]
        await stream.reset(7)
        with pytest.raises(StreamClosedError, match="reset"):
            await incoming.receive(timeout=5)
        readable.append(incoming.readable)
        assert readable == [True, False]
        with pytest.raises(StreamClosedError):
            await stream.send(b"after reset")
        other = client_session.open_stream("closed")
        await other.close()
        with pytest.raises(StreamClosedError):
            await other.write(b"after close")


async def test_a_finished_explicit_id_cannot_be_reopened_but_a_new_one_can() -> None:
    """The peer ignores frames for an id it closed recently: reopening it would
    have lost its messages (protocol.md §5.1, Appendix B item 23)."""
    async with server_and_client() as (server, client):
        client_session, server_session = await connected(server, client)
        stream = client_session.open_stream("first", stream_id=7)
        await stream.write(b"one", timeout=5)
        await stream.close()
        incoming = await server_session.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"one"
        await incoming.close()
        core_streams = client.endpoint.sessions[client_session.ref].streams
        with anyio.fail_after(5):  # until both directions are over and the core forgot it
            while core_streams.get(7) is not None:
                await anyio.sleep(0.01)
        with pytest.raises(InvalidStateError, match="stream 7 was closed"):
            client_session.open_stream("again", stream_id=7)
        fresh = client_session.open_stream("again", stream_id=9)
        await fresh.write(b"two", timeout=5)
        second = await server_session.accept_stream(timeout=5)
        assert (second.stream_id, await second.receive(timeout=5)) == (9, b"two")


async def test_responses_read_after_their_stream_ended_return_their_credit() -> None:
    """Request and response, each side closing its direction: the client's core
    forgets the stream as the response arrives, before the reader takes it. The
    credit of such responses was never returned, so the session stalled once
    they added up to its window (protocol.md Appendix B item 27)."""
    window = 1024 * 1024
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides={**FAST, "session_receive_window": window}) as client:
        client_session, server_session = await connected(server, client)
        response = bytes(range(256)) * 256  # 64 KiB

        async def respond() -> None:
            while True:
                incoming = await server_session.accept_stream(timeout=5)
                assert await incoming.receive(timeout=5) == b"get"
                await incoming.write(response, timeout=5)
                await incoming.close()  # the FIN rides on the response's last frame

        async with anyio.create_task_group() as tg:
            tg.start_soon(respond)
            for _ in range(3 * window // len(response)):
                stream = client_session.open_stream("request")
                await stream.send(b"get", timeout=5)
                await stream.close()
                assert await stream.receive(timeout=5) == response
            tg.cancel_scope.cancel()
        core = client.endpoint.sessions[client_session.ref]
        assert core.data_consumed == core.data_received >= 3 * window


async def test_the_servers_lower_stream_limit_is_obeyed_by_the_client() -> None:
    """The limit travels in the handshake: the client refuses its own fifth
    stream instead of the server closing the session (protocol.md §5.1)."""
    async with open_node(node_id=b"server", shared_seed=SEED,
                         config_overrides={**FAST, "max_streams_per_session": 4}) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=FAST) as client:
        client_session, server_session = await connected(server, client)
        streams = [client_session.open_stream(f"s{i}") for i in range(4)]
        with pytest.raises(InvalidStateError, match="as many as the peer allows"):
            client_session.open_stream("one too many")
        for stream in streams:
            await stream.send(b"fits", timeout=5)
        for _ in streams:
            incoming = await server_session.accept_stream(timeout=5)
            assert await incoming.receive(timeout=5) == b"fits"
        assert not client_session.closed and not server_session.closed


async def test_default_stream_zero_is_implicit() -> None:
    async with server_and_client() as (server, client):
        client_session, server_session = await connected(server, client)
        await client_session.default_stream.send(b"on stream zero", timeout=5)
        assert await server_session.stream(0).receive(timeout=5) == b"on stream zero"
        await server_session.default_stream.write(b"reply")
        assert await client_session.stream(0).receive(timeout=5) == b"reply"


async def test_wrong_seed_raises_authentication_error() -> None:
    async with server_and_client(seed=b"a different seed!!") as (server, client):
        with anyio.fail_after(5), pytest.raises(AuthenticationError):
            await client.connect(server.local_address, timeout=4)
        assert client.sessions == []


async def test_a_different_packet_aead_is_refused_with_what_to_fix() -> None:
    """It used to connect, then lose every packet until the idle timeout."""
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides={**FAST, "aead": "chacha20-poly1305"}) as client:
        with anyio.fail_after(2), pytest.raises(ConnectionRefusedError, match=r"Config\.aead"):
            await client.connect(server.local_address, timeout=4)
        assert client.sessions == [] and server.sessions == []


async def test_wrong_peer_node_id_raises_authentication_error() -> None:
    async with server_and_client() as (server, client):
        with anyio.fail_after(5), pytest.raises(AuthenticationError):
            await client.connect(server.local_address, peer_node_id=b"mallory", timeout=4)


async def test_connect_to_closed_udp_port_fails_within_timeout() -> None:
    async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False) as client:
        started = anyio.current_time()
        # Linux reports the ICMP port-unreachable (IP_RECVERR): a fast refusal.
        expected = ConnectionRefusedError if sys.platform == "linux" else (
            ConnectionRefusedError, ConnectionTimeoutError)
        with pytest.raises(expected):
            await client.connect(("127.0.0.1", _free_udp_port()), timeout=2)
        assert anyio.current_time() - started < 3.5
        assert client.get_stats()["udp"]["unreachable_reports"] >= (
            1 if sys.platform == "linux" else 0)


async def test_connect_to_a_silent_peer_times_out_when_the_core_gives_up() -> None:
    """No cancel scope of the binding bounds ``connect``: the core's handshake
    timeout must end it, and ``connect`` must raise the core's reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, so no ICMP refusal; never answers
        async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False) as client:
            started = anyio.current_time()
            with anyio.fail_after(5), pytest.raises(ConnectionTimeoutError,
                                                    match="handshake timed out"):
                await client.connect(silent.getsockname(), timeout=0.5)
            assert 0.4 <= anyio.current_time() - started < 2.0
            assert client.sessions == []


async def test_close_without_timeout_ends_when_the_core_gives_up_on_the_peer() -> None:
    """The peer vanishes without a word: the default ``close`` waits for the
    core's ``close_timeout`` (1 s here), not for ever."""
    async with server_and_client() as (server, client):
        client_session, _ = await connected(server, client)
        assert server._udp is not None
        server._udp._sock.close()
        started = anyio.current_time()
        with anyio.fail_after(5):
            await client_session.close()
        assert client_session.closed
        assert anyio.current_time() - started < 2.0


@pytest.mark.parametrize("host", [b"127.0.0.1", 2130706433, None])
async def test_connect_to_a_host_that_is_not_text_is_a_value_error(host: object) -> None:
    async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False) as client:
        with pytest.raises(ValueError, match="host, port"):
            await client.connect((host, 9))  # type: ignore[arg-type]


async def test_connect_to_closed_websocket_port_is_refused() -> None:
    async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False,
                         transport="websocket") as client:
        with anyio.fail_after(5), pytest.raises(ConnectionRefusedError):
            await client.connect(("127.0.0.1", _free_tcp_port()), timeout=2)


def test_refused_is_a_builtin_and_timeout_is_a_timeout_error() -> None:
    assert issubclass(ConnectionRefusedError, builtins.ConnectionRefusedError)
    assert issubclass(ConnectionTimeoutError, TimeoutError)
    assert issubclass(SendTimeoutError, TimeoutError)


async def test_accept_needs_server_mode_and_connect_needs_transport() -> None:
    async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False) as client:
        with pytest.raises(InvalidStateError):
            await client.accept(timeout=0.1)
        with pytest.raises(InvalidStateError):
            await client.connect(("127.0.0.1", 1), transport="websocket")


async def test_accept_times_out_or_waits_until_cancelled() -> None:
    async with open_node(node_id=b"s", shared_seed=SEED) as server:
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await server.accept(timeout=0.05)
        with anyio.move_on_after(0.05) as scope:
            await server.accept()
        assert scope.cancelled_caught
        async with open_node(node_id=b"c", shared_seed=SEED, server_mode=False) as client:
            session = await client.connect(server.local_address, timeout=5)
            with anyio.fail_after(5):
                accepted = await server.accept()
            assert accepted.session_id == session.session_id


async def test_send_timeout_raises_send_timeout_error() -> None:
    async with server_and_client() as (server, client):
        client_session, _ = await connected(server, client)
        stream = client_session.open_stream("t")
        with pytest.raises(SendTimeoutError):
            await stream.send(b"x" * 200_000, timeout=0)


async def test_session_close_is_seen_by_both_sides() -> None:
    async with server_and_client() as (server, client):
        client_session, server_session = await connected(server, client)
        stream = server_session.open_stream("pending")
        await stream.write(b"last words")
        with anyio.fail_after(5):
            await client_session.close()
            closed = await server_session.wait_closed()
        assert client_session.closed and client_session.state is SessionState.CLOSED
        assert closed.reason == "graceful"
        with pytest.raises(SessionClosedError):
            client_session.open_stream("late")
        with pytest.raises(SessionClosedError):
            await client_session.default_stream.send(b"late")


async def _transfer(transport: TransportName, size: int, timeout: float) -> None:
    data = os.urandom(size)
    digest = hashlib.sha256(data).digest()
    chunk = 60_000
    async with server_and_client(transport) as (server, client):
        client_session, server_session = await connected(server, client, transport)

        async def receiver() -> None:
            stream = await server_session.accept_stream(timeout=5)
            hasher, received = hashlib.sha256(), 0
            async for message in stream:
                hasher.update(message)
                received += len(message)
            assert received == size
            assert hasher.digest() == digest
            await stream.send(b"ok", timeout=5)

        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                stream = client_session.open_stream("bulk")
                for offset in range(0, size, chunk):
                    await stream.write(data[offset:offset + chunk])
                await stream.close()
                assert await stream.receive() == b"ok"
        stats = client_session.stats
        assert stats.stream_bytes_sent >= size


@pytest.mark.parametrize("transport", ["udp", "websocket"])
async def test_8_mib_transfer_sha256(transport: TransportName) -> None:
    await _transfer(transport, 8 * 1024 * 1024, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["udp", "websocket"])
async def test_64_mib_transfer_sha256(transport: TransportName) -> None:
    await _transfer(transport, 64 * 1024 * 1024, timeout=600)


async def test_slow_reader_pushes_back_on_writer() -> None:
    """auto_consume=False: unread messages stop the writer at the windows."""
    async with server_and_client() as (server, client):
        client_session, server_session = await connected(server, client)
        stream = client_session.open_stream("firehose")
        message = b"m" * 32_768
        written = 0
        with anyio.move_on_after(1.5):
            while written < 64 * 1024 * 1024:
                await stream.write(message)
                written += len(message)
        assert written < 64 * 1024 * 1024, "the writer was never held back"
        incoming = await server_session.accept_stream(timeout=5)
        received = 0
        with anyio.fail_after(30):
            while received < written:
                received += len(await incoming.receive())
        assert received == written


async def test_fifty_concurrent_sessions() -> None:
    async with open_node(node_id=b"server", shared_seed=SEED,
                         config_overrides=FAST) as server:
        results: list[bytes] = []

        async def serve() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    session = await server.accept(timeout=20)
                    tg.start_soon(echo_once, session)

        async def echo_once(session: Session) -> None:
            stream = await session.accept_stream(timeout=20)
            await stream.send(await stream.receive(timeout=20), timeout=20)

        async def one_client(index: int) -> None:
            async with open_node(node_id=f"client{index}".encode(), shared_seed=SEED,
                                 server_mode=False, config_overrides=FAST) as client:
                session = await client.connect(server.local_address, timeout=20)
                stream = session.open_stream("hello")
                await stream.send(f"hi {index}".encode(), timeout=20)
                results.append(await stream.receive(timeout=20))
                await session.close()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                for index in range(50):
                    tg.start_soon(one_client, index)
        assert sorted(results) == sorted(f"hi {i}".encode() for i in range(50))


async def test_shutdown_with_open_sessions_leaves_nothing_behind() -> None:
    before = {task.id for task in anyio.get_running_tasks()}
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=FAST,
                         transport=("udp", "websocket")) as server:
        udp_port = server.local_addresses["udp"][1]
        ws_port = server.local_addresses["websocket"][1]
        async with open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                             config_overrides=FAST,
                             transport=("udp", "websocket")) as client:
            udp_session, _ = await connected(server, client, "udp")
            ws_session, _ = await connected(server, client, "websocket")
            await udp_session.open_stream("x").write(b"unread")
            await ws_session.open_stream("y").write(b"unread")
        # The client left its block: both sessions closed gracefully.
        assert udp_session.closed and ws_session.closed
        assert udp_session.close_reason is not None
        assert udp_session.close_reason.reason == "graceful"
        with anyio.fail_after(5):
            for session in list(server._sessions.values()):
                await session.wait_closed()
    after = {task.id for task in anyio.get_running_tasks()}
    assert after == before
    # The sockets are closed: the ports can be bound again.
    for kind, port in ((socket.SOCK_DGRAM, udp_port), (socket.SOCK_STREAM, ws_port)):
        probe = socket.socket(socket.AF_INET, kind)
        # SO_REUSEADDR: the server closed its WebSocket first (RFC 6455 §7.1.1),
        # so its side of that connection sits in TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.close()


async def test_node_seed_and_both_transports_on_one_node() -> None:
    async with open_node(node_seed=b"server seed", shared_seed=SEED, config_overrides=FAST,
                         transport=("websocket", "udp")) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=FAST, transport=("udp", "websocket")) as client:
        assert len(server.node_id) == 16
        assert server.local_address == server.local_addresses["websocket"]
        over_udp, _ = await connected(server, client, "udp")
        over_ws, _ = await connected(server, client, "websocket")
        assert over_udp.peer_node_id == over_ws.peer_node_id == server.node_id
        await over_ws.default_stream.send(b"via ws", timeout=5)
        await over_udp.default_stream.send(b"via udp", timeout=5)


async def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        async with open_node(node_id=b"n", shared_seed=SEED, transport="carrier-pigeon"):
            pass
    from stt_core.errors import ConfigError
    with pytest.raises(ConfigError):
        async with open_node(node_id=b"n", shared_seed=b"short"):
            pass


async def test_garbage_input_is_counted_not_fatal() -> None:
    """Random datagrams (UDP) and binary messages (WebSocket) never hurt the node."""
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=FAST,
                         transport=("udp", "websocket")) as server:
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for size in (0, 1, 9, 40, 1200, 1500):
            junk.sendto(os.urandom(size), server.local_addresses["udp"])
        junk.close()
        ws_host, ws_port = server.local_addresses["websocket"]

        def websocket_junk() -> None:
            from websockets.sync.client import connect as ws_connect
            with ws_connect(f"ws://{ws_host}:{ws_port}/stt") as ws:
                for size in (1, 30, 2000):
                    ws.send(os.urandom(size))
                ws.send("text")

        await anyio.to_thread.run_sync(websocket_junk)
        with anyio.fail_after(5):
            while server.get_stats()["endpoint"]["datagrams_received"] < 8:
                await anyio.sleep(0.01)
        stats = server.get_stats()
        assert sum(stats["endpoint"]["drops"].values()) >= 8
        assert stats["websocket"]["text_dropped"] == 1
        async with open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                             config_overrides=FAST) as client:
            session, _ = await connected(server, client)
            await session.default_stream.send(b"still fine", timeout=5)
