"""WebSocket carrier: our client and server, and interop with ``websockets``.

Every test runs under asyncio and trio. The ``websockets`` peer runs in a
thread through its synchronous API, so it works under both backends; one
extra test uses its asyncio API natively (asyncio backend only).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping as WsPing
from wsproto.events import Request

from stt_anyio.websocket import MAX_MESSAGE_BYTES, WebSocketCarrier, WsPeer

pytestmark = pytest.mark.anyio


class CarrierOptions(TypedDict, total=False):
    """The WebSocketCarrier keyword arguments a test may set besides the callbacks."""

    path: str
    max_message_size: int
    max_queue_bytes: int
    handshake_timeout: float
    close_timeout: float


class Recorder:
    """Callbacks of one carrier, with a way to wait for progress."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, WsPeer]] = []
        self.connected: list[WsPeer] = []
        self.closed: list[WsPeer] = []
        self._changed = anyio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def on_datagram(self, data: bytes, peer: WsPeer) -> None:
        assert peer in self.connected, "datagram before on_connected"
        self.datagrams.append((data, peer))
        self._poke()

    def on_connected(self, peer: WsPeer) -> None:
        self.connected.append(peer)
        self._poke()

    def on_closed(self, peer: WsPeer) -> None:
        self.closed.append(peer)
        self._poke()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    def carrier(self, **kwargs: Unpack[CarrierOptions]) -> WebSocketCarrier:
        return WebSocketCarrier(on_datagram=self.on_datagram,
                                on_connected=self.on_connected,
                                on_closed=self.on_closed, **kwargs)


def _echo(carrier: WebSocketCarrier) -> Callable[[bytes, WsPeer], None]:
    """on_datagram that sends every datagram back to where it came from."""
    def on_datagram(data: bytes, peer: WsPeer) -> None:
        carrier.send(data, peer)
    return on_datagram


async def test_client_server_echo() -> None:
    server_rec, client_rec = Recorder(), Recorder()
    async with server_rec.carrier() as server, client_rec.carrier() as client:
        host, port = await server.listen("127.0.0.1", 0)
        peer = await client.connect(host, port)
        assert client.is_open(peer)
        payloads = [bytes([i % 251]) * (1 + i * 97 % 65507) for i in range(200)]
        payloads.append(b"")
        for data in payloads:
            assert client.send(data, peer)
        await server_rec.wait(lambda: len(server_rec.datagrams) == len(payloads))
        assert [d for d, _ in server_rec.datagrams] == payloads
        server_peer = server_rec.datagrams[0][1]
        assert server_rec.connected == [server_peer]
        for data, _ in server_rec.datagrams:
            server.send(data, server_peer)
        await client_rec.wait(lambda: len(client_rec.datagrams) == len(payloads))
        assert [d for d, _ in client_rec.datagrams] == payloads
        assert client_rec.connected == [peer]
        rtt = await client.ping(peer)
        assert 0 <= rtt < 5
        assert server.stats.pings_received == 1
        await client.close(peer)
        assert client_rec.closed == [peer]
        await server_rec.wait(lambda: server_rec.closed == [server_peer])
        assert not client.is_open(peer)
        assert not client.send(b"late", peer)
        assert client.stats.send_dropped == 1
        with pytest.raises(ConnectionError):
            await client.ping(peer)


async def test_wrong_path_is_refused_with_404() -> None:
    rec = Recorder()
    async with rec.carrier(path="/stt") as server, Recorder().carrier() as client:
        host, port = await server.listen()
        with pytest.raises(ConnectionRefusedError, match="404"):
            await client.connect(host, port, "/other")
        assert rec.connected == []
        assert server.stats.connections_rejected == 1


async def test_connect_to_closed_port_raises_oserror() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    async with Recorder().carrier() as client:
        with pytest.raises(OSError):
            await client.connect("127.0.0.1", port, timeout=5)


async def test_handshake_timeout_drops_silent_client() -> None:
    rec = Recorder()
    async with rec.carrier(handshake_timeout=0.2) as server:
        host, port = await server.listen()
        stream = await anyio.connect_tcp(host, port)
        with anyio.fail_after(5):
            # The server gives up and closes: we read EOF.
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        await stream.aclose()
        assert server.stats.connections_rejected == 1
        assert rec.connected == []


async def test_exit_closes_connections_cleanly() -> None:
    server_rec, client_rec = Recorder(), Recorder()
    async with server_rec.carrier() as server:
        host, port = await server.listen()
        async with client_rec.carrier() as client:
            peer = await client.connect(host, port)
            await server_rec.wait(lambda: len(server_rec.connected) == 1)
        # Leaving the client's context ran the close handshake.
        assert client_rec.closed == [peer]
        await server_rec.wait(lambda: len(server_rec.closed) == 1)
        assert server.peers == []


async def test_queue_overflow_aborts_a_peer_that_stops_reading() -> None:
    """A reliable path never drops silently: a stuck reader is disconnected."""
    rec = Recorder()
    async with rec.carrier(max_queue_bytes=256 * 1024) as server:
        host, port = await server.listen()
        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.sendall(b"GET /stt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        await rec.wait(lambda: len(rec.connected) == 1)
        peer = rec.connected[0]
        with anyio.fail_after(10):
            while server.send(b"x" * 60000, peer):
                await anyio.sleep(0.001)
        assert server.stats.queue_overflows == 1
        await rec.wait(lambda: rec.closed == [peer])
        raw.close()


# -- interop with the websockets library ----------------------------------------


async def test_websockets_client_against_our_server() -> None:
    rec = Recorder()
    async with rec.carrier() as server:
        server._on_datagram = _echo(server)
        host, port = await server.listen()
        result: dict[str, object] = {}

        def client() -> None:
            with ws_connect(f"ws://{host}:{port}/stt", max_size=2**20) as ws:
                replies = []
                for i in range(50):
                    payload = bytes([i]) * (i * 1000 + 1)
                    ws.send(payload)
                    replies.append(ws.recv(timeout=5) == payload)
                big = b"B" * 65507
                ws.send(big)
                replies.append(ws.recv(timeout=5) == big)
                result["replies"] = replies
                result["pong"] = ws.ping(b"hello").wait(5)
                ws.send("text is dropped")
                ws.send(b"T" * (MAX_MESSAGE_BYTES + 1))
                ws.send(b"after")
                result["after"] = ws.recv(timeout=5)
                ws.close(code=1000)
                result["close_code"] = ws.close_code

        await anyio.to_thread.run_sync(client)
        assert result["replies"] == [True] * 51
        assert result["pong"] is True
        assert result["after"] == b"after"
        assert result["close_code"] == 1000
        assert server.stats.text_dropped == 1
        assert server.stats.oversize_dropped == 1
        assert server.stats.pings_received >= 1
        await rec.wait(lambda: len(rec.closed) == 1)


async def test_websockets_server_against_our_client() -> None:
    info: dict[str, object] = {}

    def handler(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)
        info["close_code"] = ws.close_code

    with ws_serve(handler, "127.0.0.1", 0, max_size=2**20) as ws_server:
        port = ws_server.socket.getsockname()[1]
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        try:
            rec = Recorder()
            async with rec.carrier() as client:
                peer = await client.connect("127.0.0.1", port, "/anything")
                payloads = [bytes([i]) * (i * 1300 + 1) for i in range(40)]
                for data in payloads:
                    client.send(data, peer)
                await rec.wait(lambda: len(rec.datagrams) == len(payloads))
                assert [d for d, _ in rec.datagrams] == payloads
                assert await client.ping(peer) < 5
                assert client.stats.pongs_received == 1
                await client.close(peer)
                assert rec.closed == [peer]
            await anyio.sleep(0.05)
            assert info.get("close_code") == 1000
        finally:
            ws_server.shutdown()
            await anyio.to_thread.run_sync(thread.join, 5)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websockets_asyncio_client_against_our_server() -> None:
    from websockets.asyncio.client import connect as aconnect

    rec = Recorder()
    async with rec.carrier() as server:
        server._on_datagram = _echo(server)
        host, port = await server.listen()
        async with aconnect(f"ws://{host}:{port}/stt") as ws:
            for i in range(20):
                await ws.send(bytes([i]) * 500)
                assert await ws.recv() == bytes([i]) * 500
            pong = await ws.ping()
            await pong
        assert ws.close_code == 1000
        await rec.wait(lambda: len(rec.closed) == 1)


# -- TLS --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[ssl.SSLContext, ssl.SSLContext]]:
    """A self-signed certificate for 127.0.0.1: (server context, client context)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stt-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory: Path = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    yield server_ctx, client_ctx


async def test_tls_client_server_echo(
        tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    server_rec, client_rec = Recorder(), Recorder()
    async with server_rec.carrier() as server, client_rec.carrier() as client:
        server._on_datagram = _echo(server)
        host, port = await server.listen("127.0.0.1", 0, ssl_context=server_ctx)
        peer = await client.connect(host, port, ssl_context=client_ctx)
        for i in range(30):
            client.send(bytes([i]) * 3000, peer)
        await client_rec.wait(lambda: len(client_rec.datagrams) == 30)
        assert [d for d, _ in client_rec.datagrams] == [bytes([i]) * 3000 for i in range(30)]
        await client.close(peer)
        assert client_rec.closed == [peer]
        # A plain-text client cannot talk to the TLS listener.
        with pytest.raises((ConnectionRefusedError, TimeoutError, OSError)):
            await client.connect(host, port, timeout=2)


# -- property: fragmented messages reassemble, oversize ones are dropped --------

LIMIT = 4000


async def _send_fragmented(messages: list[tuple[bytes, int]]) -> tuple[list[bytes], int]:
    """Send each message in ``parts`` fragments (with a ping in between) from a raw
    wsproto client; return what the carrier delivered and its oversize count."""
    from wsproto.events import Message as WsMessage

    rec = Recorder()
    async with rec.carrier(max_message_size=LIMIT) as server:
        host, port = await server.listen()
        client = WSConnection(ConnectionType.CLIENT)
        stream = await anyio.connect_tcp(host, port)
        await stream.send(client.send(Request(host=f"{host}:{port}", target="/stt")))
        while client.state is not ConnectionState.OPEN:
            client.receive_data(await stream.receive())
            list(client.events())
        for data, parts in messages:
            step = max(1, -(-len(data) // parts))
            chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
            for index, chunk in enumerate(chunks):
                wire = client.send(WsMessage(data=chunk,
                                             message_finished=index == len(chunks) - 1))
                if index == 0:
                    wire += client.send(WsPing(payload=b"p"))
                await stream.send(wire)
        expected = sum(1 for data, _ in messages if len(data) <= LIMIT)
        await rec.wait(lambda: len(rec.datagrams) == expected)
        await stream.aclose()
        return [d for d, _ in rec.datagrams], server.stats.oversize_dropped


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.tuples(st.binary(max_size=LIMIT + 1500), st.integers(1, 5)),
                         max_size=10))
def test_fragmented_messages_reassemble(anyio_backend: str,
                                        messages: list[tuple[bytes, int]]) -> None:
    delivered, oversize = anyio.run(_send_fragmented, messages, backend=anyio_backend)
    assert delivered == [data for data, _ in messages if len(data) <= LIMIT]
    assert oversize == sum(1 for data, _ in messages if len(data) > LIMIT)
