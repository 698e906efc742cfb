"""connect returns on CHALLENGE; Session.confirmed / wait_confirmed report when
the server holds the session too (protocol.md §6.3), on both backends."""

from __future__ import annotations

import pytest

from stt_anyio import open_node

pytestmark = pytest.mark.anyio

SEED = b"confirmation test shared seed"


async def test_connect_returns_before_confirmation_and_wait_confirmed_waits() -> None:
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address, peer_node_id=b"server")
        # Client and server share one event loop: the server has not run since
        # the CHALLENGE, so it cannot have read the AUTH_PROOF yet.
        confirmed_on_return = session.confirmed  # a local, so the check below is not narrowed
        assert not confirmed_on_return
        await session.wait_confirmed(timeout=5)
        assert session.confirmed
        accepted = await server.accept(timeout=5)
        assert accepted.confirmed  # the responder is confirmed from the start
        assert accepted.session_id == session.session_id
        # The session was usable before confirmation, and still is.
        stream = session.open_stream("echo")
        await stream.send(b"ping", timeout=5)
        incoming = await accepted.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"ping"


async def test_data_sent_at_once_after_connect_arrives() -> None:
    """The first message leaves in the same flush as AUTH_PROOF, after it."""
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address)
        stream = session.open_stream("first")
        await stream.write(b"x" * 5000)
        accepted = await server.accept(timeout=5)
        incoming = await accepted.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"x" * 5000
        # Nothing reached the server ahead of the AUTH_PROOF.
        assert server._endpoint.stats.drops.get("unexpected_packet", 0) == 0
