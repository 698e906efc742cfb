"""Manual section "Error handling": common failures, retries, callbacks, reconnection.

The manual's ``except ConnectionRefusedError`` / ``except TimeoutError``
clauses use the builtin names without importing them; STT's exceptions
subclass the builtins, so those clauses catch them as printed.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import anyio
import pytest

from stt_asyncio_compat import (
    AuthenticationError,
    ConnectionTimeoutError,
    SessionClosedError,
    SessionState,
    StreamClosedError,
    STTNode,
)

from .helpers import NodeFactory, free_udp_port, loopback, make_node

pytestmark = pytest.mark.anyio


async def common_failures(node: STTNode, address: tuple[str, int], *,
                          timeout: float = 5.0) -> str:
    """The manual's "Common failures" block, returning what it printed."""
    try:
        session = await node.connect(address, b"Bob", timeout=timeout)
    except ConnectionRefusedError:
        return "Peer not listening (wrong IP or port)"
    except ConnectionTimeoutError:
        return "Handshake timeout (peer slow/dead/wrong seed)"
    except AuthenticationError:
        return "Wrong shared_seed (authentication failed)"
    except Exception as e:
        return f"Unexpected error: {e}"
    await session.close()
    return "connected"


async def test_common_failures(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    assert await common_failures(alice, loopback(bob)) == "connected"
    # Nothing listening: the ICMP port-unreachable makes this fast.
    assert await common_failures(alice, ("127.0.0.1", free_udp_port())) == \
        "Peer not listening (wrong IP or port)"
    intruder = nodes(b"Mallory", shared_seed=b"wrong-horse-battery-staple")
    assert await common_failures(intruder, loopback(bob)) == \
        "Wrong shared_seed (authentication failed)"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        assert await common_failures(alice, silent.getsockname(), timeout=0.3) == \
            "Handshake timeout (peer slow/dead/wrong seed)"


async def test_wrong_peer_node_id_is_an_authentication_error(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    with pytest.raises(AuthenticationError):
        await alice.connect(loopback(bob), b"Not-Bob", timeout=5)


async def test_retry_logic_example(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    node = nodes(b"Alice")
    session: Any = None
    max_retries = 3
    for attempt in range(max_retries):
        try:
            session = await node.connect(loopback(bob), b"Bob", timeout=5.0)
            break  # Success
        except ConnectionTimeoutError:
            if attempt < max_retries - 1:
                await asyncio.sleep(2)  # Wait 2 seconds
            else:
                raise  # Give up
    assert session is not None and session.is_active


async def connect_with_retry(node: STTNode, peer_address: tuple[str, int],
                             peer_node_id: bytes) -> Any:
    """Connect with exponential backoff retry (the manual's function, verbatim)."""
    delay = 1.0  # Start with 1 second
    max_delay = 60.0

    while True:
        try:
            session = await node.connect(peer_address, peer_node_id, timeout=10.0)
            return session  # Success
        except (ConnectionTimeoutError, ConnectionRefusedError):
            print(f"Connection failed, retrying in {delay:.1f}s...")
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)  # Double delay, cap at 60s


async def test_backoff_retry_reaches_a_server_that_comes_up_late(
        nodes: NodeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_udp_port()
    alice = nodes(b"Alice")
    late_server = nodes(b"Bob", port=port)

    async def bring_server_up() -> None:
        await anyio.sleep(0.5)
        await late_server.start()

    async with anyio.create_task_group() as tg:
        tg.start_soon(bring_server_up)
        with anyio.fail_after(10):
            session = await connect_with_retry(alice, ("127.0.0.1", port), b"Bob")
    assert session.is_active and session.peer_node_id == b"Bob"
    assert "Connection failed, retrying in 1.0s..." in capsys.readouterr().out


async def test_errors_during_an_active_session(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    session = await alice.connect(loopback(bob), b"Bob")
    stream = session.open_stream(purpose="upload")
    await stream.close()
    with pytest.raises(StreamClosedError):
        await stream.send(b"after close")  # Stream closed (application-level close)
    other = session.open_stream(purpose="upload-2")
    peer = await bob.accept(timeout=5)
    await peer.close()  # the peer disconnects
    await session.wait_closed()
    large_data = b"x" * 100_000
    with pytest.raises(SessionClosedError):
        await other.send(large_data)  # Session closed while sending


async def test_reconnect_after_the_session_was_lost(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    node = nodes(b"Alice")
    peer_address, peer_node_id = loopback(bob), b"Bob"
    session = await node.connect(peer_address, peer_node_id)
    stream = session.open_stream()
    await (await bob.accept(timeout=5)).close()
    await session.wait_closed()
    data = b"important"
    reconnected = False
    if session.state == SessionState.CLOSED:  # the manual checks ESTABLISHED first
        try:
            await stream.send(data)
        except SessionClosedError:
            # Session died unexpectedly
            session = await node.connect(peer_address, peer_node_id)
            reconnected = True
            # Retry send on new session
            await session.open_stream().send(data, timeout=5)
    assert reconnected and session.is_active


async def test_on_session_closed_reasons(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    log: list[str] = []

    # Register callback for session events
    def on_session_closed(session_id: bytes, reason: str) -> None:
        log.append(f"Session {session_id.hex()} closed: {reason}")

    alice.on_session_closed(on_session_closed)
    session = await alice.connect(loopback(bob), b"Bob")
    await session.close()
    assert log == [f"Session {session.session_id.hex()} closed: graceful"]
    mallory = nodes(b"Mallory", shared_seed=b"wrong-horse-battery-staple")
    mallory.on_session_closed(on_session_closed)
    with pytest.raises(AuthenticationError):
        await mallory.connect(loopback(bob), b"Bob")
    assert log[-1] == "Session  closed: auth_failure"


async def test_stop_reports_graceful_for_every_session(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    reasons: list[str] = []
    alice.on_session_closed(lambda sid, reason: reasons.append(reason))
    for _ in range(3):
        await alice.connect(loopback(bob), b"Bob")
    await alice.stop()
    assert reasons == ["graceful"] * 3


async def test_failing_and_async_callbacks_do_not_hurt_the_node(
        nodes: NodeFactory, caplog: pytest.LogCaptureFixture) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    seen: list[str] = []
    done = anyio.Event()

    def broken(session_id: bytes, reason: str) -> None:
        raise RuntimeError("application bug")

    async def async_callback(session_id: bytes, reason: str) -> None:
        await anyio.sleep(0)
        seen.append(reason)
        done.set()

    alice.on_session_closed(broken)
    alice.on_session_closed(async_callback)
    session = await alice.connect(loopback(bob), b"Bob")
    await session.close()
    with anyio.fail_after(5):
        await done.wait()
    assert seen == ["graceful"]
    assert "application bug" in caplog.text
    assert (await alice.connect(loopback(bob), b"Bob")).is_active


async def test_unknown_override_is_a_config_error() -> None:
    from stt_asyncio_compat import ConfigError

    with pytest.raises(ConfigError):
        make_node(b"x", keep_alive_intervall=1.0)
    with pytest.raises(ConfigError):
        make_node(b"x", server_mode=False)
    with pytest.raises(ConfigError):
        make_node(b"x", keep_alive_interval=5.0, idle_timeout=1.0)
    with pytest.raises(ConfigError):
        STTNode(node_id=b"x", shared_seed=b"short")
    with pytest.raises(ConfigError):
        STTNode(node_id=b"x", shared_seed=b"12345678", transport="tcp")
    with pytest.raises(ConfigError):
        STTNode(node_id=b"x", bind_address="127.0.0.1", host="0.0.0.0")
    with pytest.raises(ConfigError):
        STTNode(node_id=b"x", port=70000)


async def test_a_session_the_server_never_confirms_times_out_as_a_connect(
        nodes: NodeFactory) -> None:
    """connect waits for the server to hold the session too (protocol.md §6.3),
    within the one timeout it was given, and reports running out as a connect
    timeout, like a handshake that got no answer."""
    server, client = nodes(b"Bob"), nodes(b"Alice")
    await server.start()
    await client.start()
    inner = client._inner
    assert inner is not None
    carrier = inner._udp
    assert carrier is not None
    deliver = carrier._on_datagram

    def only_challenge(data: Any, addr: Any) -> None:
        if bytes(data[:1]) == b"\x02":  # CHALLENGE: the client is established on it
            deliver(data, addr)         # but hears nothing that would confirm it

    carrier._on_datagram = only_challenge
    start = anyio.current_time()
    with pytest.raises(ConnectionTimeoutError):
        await client.connect(loopback(server), b"Bob", timeout=1.0)
    assert anyio.current_time() - start < 1.9
