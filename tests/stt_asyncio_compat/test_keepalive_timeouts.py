"""Manual sections "Keep-alive" and "Timeouts".

Keep-alive intervals are shortened through STTNode's config overrides
(``keep_alive_interval=0.1, idle_timeout=0.6``) so the behaviour the manual
describes at 10 s / 30 s is visible within a second. A dead peer is a UDP
relay that the test cuts: no close, no ICMP, just silence.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import anyio
import pytest

from stt_asyncio_compat import (
    ConnectionTimeoutError,
    SendTimeoutError,
    SessionState,
    STTNode,
)
from stt_asyncio_compat.session import Session
from stt_core import derive_node_id

from .helpers import NodeFactory, UdpRelay, loopback

pytestmark = pytest.mark.anyio

SHORT = {"keep_alive_interval": 0.1, "idle_timeout": 0.6}


def state_of(session: Session) -> SessionState:
    return session.state


async def test_keep_alive_example_node_defaults() -> None:
    # Configured at node level (defaults)
    node = STTNode(
        node_seed=b"my_seed" * 8,
        shared_seed=b"shared" * 8
    )
    # Keep-alive happens automatically in the background
    assert node.config.keep_alive_interval == 10.0
    assert node.config.idle_timeout == 30.0
    assert node.node_id == derive_node_id(b"my_seed" * 8)
    assert node.seed == b"my_seed" * 8
    address = await node.start()
    try:
        assert address[0] == "0.0.0.0" and address[1] > 0  # port 0 picked a free port
    finally:
        await node.stop()


async def test_idle_session_stays_alive_on_keep_alives(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob", **SHORT)
    await bob.start()
    alice = nodes(b"Alice", **SHORT)
    session = await alice.connect(loopback(bob), b"Bob")
    await anyio.sleep(1.2)  # two idle timeouts with no application data
    assert state_of(session) is SessionState.ESTABLISHED
    assert len(bob.session_manager.get_active_sessions()) == 1
    assert session.stats.packets_received > 2  # keep-alive acknowledgements


async def test_dead_peer_is_detected_and_reported_as_timeout(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob", **SHORT)
    await bob.start()
    alice = nodes(b"Alice", **SHORT)
    reasons: dict[str, tuple[bytes, str]] = {}
    both_closed = anyio.Event()

    def recorder(side: str) -> Callable[[bytes, str], None]:
        def on_session_closed(session_id: bytes, reason: str) -> None:
            reasons[side] = (session_id, reason)
            if len(reasons) == 2:
                both_closed.set()
        return on_session_closed

    alice.on_session_closed(recorder("alice"))
    bob.on_session_closed(recorder("bob"))
    async with UdpRelay(loopback(bob)) as network:
        session = await alice.connect(network.address, b"Bob")
        network.cut()  # cable unplugged
        with anyio.fail_after(5):
            await both_closed.wait()
    assert reasons == {"alice": (session.session_id, "timeout"),
                       "bob": (session.session_id, "timeout")}
    assert state_of(session) is SessionState.CLOSED
    assert alice.session_manager.get_active_sessions() == []
    assert bob.session_manager.get_active_sessions() == []


async def test_handshake_timeout(nodes: NodeFactory) -> None:
    alice_node = nodes(b"Alice")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # reads nothing, answers nothing
        started = anyio.current_time()
        with pytest.raises(TimeoutError) as caught:
            session = await alice_node.connect(
                peer_address=silent.getsockname(),
                peer_node_id=b"Bob",
                timeout=0.5  # Give up after 0.5 seconds (the manual: 5.0)
            )
            del session
    assert isinstance(caught.value, ConnectionTimeoutError)
    assert 0.4 < anyio.current_time() - started < 3.0


async def test_stream_send_timeout_when_the_peer_is_gone(nodes: NodeFactory) -> None:
    bob = nodes(b"Bob")
    await bob.start()
    alice = nodes(b"Alice")
    async with UdpRelay(loopback(bob)) as network:
        session = await alice.connect(network.address, b"Bob")
        stream = session.open_stream(purpose="telemetry")
        await stream.send(b"before", timeout=5)
        network.cut()
        data = b"x" * 1000
        with pytest.raises(TimeoutError) as caught:
            await stream.send(data, timeout=0.5)
            # Raises TimeoutError if not acknowledged in 0.5 seconds
    assert isinstance(caught.value, SendTimeoutError)
    assert session.is_active  # a send timeout does not end the session
