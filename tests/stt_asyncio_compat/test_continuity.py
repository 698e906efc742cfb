"""Manual section "Session continuity": CryptoSessionContinuity on real resume tickets.

The manual's example resumes on another transport and address after a
network change (Wi-Fi to LTE). Here the first path runs through a UDP relay
that the test cuts, and the resumption goes over WebSocket to the server's
WebSocket port on loopback.
"""

from __future__ import annotations

import anyio
import pytest

from stt_asyncio_compat import (
    AuthenticationError,
    InvalidStateError,
    ResumeToken,
    SessionState,
)
from stt_asyncio_compat.session import CryptoSessionContinuity

from .helpers import SEED, NodeFactory, UdpRelay, loopback

pytestmark = pytest.mark.anyio


async def ticket_of(token: ResumeToken) -> bytes:
    """Wait for the server's token (it follows the handshake by one packet)."""
    with anyio.fail_after(5):
        while token.ticket is None:
            await anyio.sleep(0.01)
    return token.ticket


async def test_manual_example_resumes_on_websocket_after_the_path_died(
        nodes: NodeFactory) -> None:
    peer_id = b"peer"
    server = nodes(peer_id, transport=("udp", "websocket"))
    await server.start(server_mode=True)
    node = nodes(node_seed=b"my_seed" * 8, transport=("udp", "websocket"))
    await node.start()
    shared_secret = SEED
    stc_wrapper = stc = object()  # the manual's crypto wrapper: accepted, unused
    closed: list[tuple[bytes, str]] = []
    node.on_session_closed(lambda sid, reason: closed.append((b"client", reason)))
    server.on_session_closed(lambda sid, reason: closed.append((b"server", reason)))

    # Create continuity manager
    continuity = CryptoSessionContinuity(stc_wrapper, resumption_timeout=86400)
    # Create resumable session
    session_id, resume_token = continuity.create_resumable_session(
        peer_node_id=b"peer",
        node_seed=node.seed,
        shared_seed=shared_secret,
    )
    assert session_id == b"" and resume_token.ticket is None  # no session yet
    async with UdpRelay(loopback(server)) as wifi:
        # Initial session on WiFi/UDP
        session = await node.connect(wifi.address, peer_id)
        assert resume_token.session is session
        assert resume_token.session_id == session.session_id
        await ticket_of(resume_token)
        # ... network change (WiFi -> LTE) ...
        wifi.cut()
        # Resume on different transport/IP
        resumed = await continuity.resume_session(
            resume_token,
            new_transport_type='websocket',
            new_peer_addr=loopback(server, "websocket"),
            stc_wrapper=stc,
        )
    assert resumed.session_id == session.session_id
    assert resumed.state is SessionState.ESTABLISHED
    assert resumed.peer_node_id == peer_id
    server_side = server.session_manager.get_session(session.session_id)
    assert server_side is not None and server_side.is_active
    stream = resumed.open_stream(purpose="after-resume")
    await stream.send(b"same session, new path", timeout=5)
    incoming = await server_side.accept_stream(timeout=5)
    assert await incoming.receive(timeout=5) == b"same session, new path"
    # The old session objects were superseded, not reported as closed.
    assert session.closed
    assert closed == []
    assert node.session_manager.get_session(session.session_id) is resumed


async def test_a_token_resumes_again_after_a_resume(nodes: NodeFactory) -> None:
    server = nodes(b"Bob")
    await server.start()
    client = nodes(b"Alice")
    session = await client.connect(loopback(server), b"Bob", timeout=5)
    continuity = CryptoSessionContinuity(node=client)
    sid, token = continuity.create_resumable_session(session=session)
    assert sid == session.session_id
    await ticket_of(token)
    first = await continuity.resume_session(token, timeout=5)
    await ticket_of(token)  # the server issued a fresh ticket to the resumed session
    second = await continuity.resume_session(token, new_peer_addr=loopback(server),
                                             timeout=5)
    assert first.session_id == second.session_id == session.session_id
    assert second.is_active and first.closed


async def test_a_used_ticket_is_refused(nodes: NodeFactory) -> None:
    server = nodes(b"Bob")
    await server.start()
    client = nodes(b"Alice")
    session = await client.connect(loopback(server), b"Bob", timeout=5)
    ticket = await ticket_of(CryptoSessionContinuity().create_resumable_session(
        session=session)[1])
    await client.resume(loopback(server), ticket, timeout=5)
    failures: list[tuple[bytes, str]] = []
    client.on_session_closed(lambda sid, reason: failures.append((sid, reason)))
    with pytest.raises(AuthenticationError):
        await client.resume(loopback(server), ticket, timeout=5)
    assert failures == [(b"", "auth_failure")]


async def test_token_without_a_session_cannot_resume(nodes: NodeFactory) -> None:
    node = nodes(node_seed=b"seed-one" * 4)
    await node.start()
    continuity = CryptoSessionContinuity()
    _, token = continuity.create_resumable_session(
        peer_node_id=b"nobody", node_seed=b"seed-one" * 4, shared_seed=SEED)
    assert token.node is node and "waiting" in repr(token)
    with pytest.raises(InvalidStateError):
        await continuity.resume_session(token)


async def test_expired_token_is_refused_locally(nodes: NodeFactory) -> None:
    server = nodes(b"Bob")
    await server.start()
    client = nodes(b"Alice")
    session = await client.connect(loopback(server), b"Bob", timeout=5)
    continuity = CryptoSessionContinuity(resumption_timeout=0.05)
    _, token = continuity.create_resumable_session(session=session)
    await ticket_of(token)
    await anyio.sleep(0.1)
    assert token.expired
    with pytest.raises(AuthenticationError):
        await continuity.resume_session(token)


async def test_seeds_pick_the_node_and_secrets_stay_out_of_repr(nodes: NodeFactory) -> None:
    server = nodes(b"Bob")
    await server.start()
    one = nodes(node_seed=b"seed-one" * 4)
    two = nodes(node_seed=b"seed-two" * 4)
    await one.start()
    await two.start()
    continuity = CryptoSessionContinuity()
    _, token = continuity.create_resumable_session(
        peer_node_id=b"Bob", node_seed=b"seed-two" * 4, shared_seed=SEED)
    assert token.node is two
    session = await two.connect(loopback(server), b"Bob", timeout=5)
    ticket = await ticket_of(token)
    assert token.session is session
    assert ticket.hex() not in repr(token) and "ready" in repr(token)
    with pytest.raises(InvalidStateError):
        continuity.create_resumable_session(node_seed=b"no such seed", shared_seed=SEED)
    with pytest.raises(ValueError):
        CryptoSessionContinuity(resumption_timeout=0)
