"""Node.resume: one-round-trip resumption from a ticket, on real loopback sockets.

Added with the compat layer's ``CryptoSessionContinuity``, which needs it.
"""

from __future__ import annotations

import anyio
import pytest

from stt_anyio import open_node
from stt_core.errors import AuthenticationError

pytestmark = pytest.mark.anyio

SEED = b"test shared seed 0123456789"
FAST = {"max_datagram_size": 1452, "close_timeout": 1.0}


async def wait_for_ticket(session: object) -> bytes:
    with anyio.fail_after(5):
        while getattr(session, "resume_token", None) is None:
            await anyio.sleep(0.01)
    ticket = getattr(session, "resume_token", None)
    assert isinstance(ticket, bytes)
    return ticket


@pytest.mark.parametrize("second_transport", ["udp", "websocket"])
async def test_resume_keeps_the_session_id(second_transport: str) -> None:
    async with open_node(node_id=b"server", shared_seed=SEED, transport=("udp", "websocket"),
                         config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=SEED, transport=("udp", "websocket"),
                      server_mode=False, config_overrides=FAST) as client:
        first = await client.connect(server.local_addresses["udp"], timeout=5)
        ticket = await wait_for_ticket(first)
        await (await server.accept(timeout=5)).close()
        await first.wait_closed()
        resumed = await client.resume(server.local_addresses[second_transport], ticket,
                                      transport=second_transport, timeout=5)  # type: ignore[arg-type]
        assert resumed.session_id == first.session_id
        peer = await server.accept(timeout=5)
        assert peer.session_id == first.session_id
        stream = resumed.open_stream("after-resume")
        await stream.send(b"still me", timeout=5)
        incoming = await peer.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"still me"
        # Tickets are single use: the same one again is refused.
        with pytest.raises(AuthenticationError):
            await client.resume(server.local_addresses["udp"], ticket, timeout=5)
