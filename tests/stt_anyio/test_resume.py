"""Node.resume: one-round-trip resumption from a ticket, on real loopback sockets.

Added with the compat layer's ``CryptoSessionContinuity``, which needs it.
"""

from __future__ import annotations

import anyio
import pytest

from stt_anyio import open_node
from stt_anyio.node import TransportName
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
async def test_resume_keeps_the_session_id(second_transport: TransportName) -> None:
    async with open_node(node_id=b"server", shared_seed=SEED, transport=("udp", "websocket"),
                         config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=SEED, transport=("udp", "websocket"),
                      server_mode=False, config_overrides=FAST) as client:
        first = await client.connect(server.local_addresses["udp"], timeout=5)
        ticket = await wait_for_ticket(first)
        await (await server.accept(timeout=5)).close()
        await first.wait_closed()
        resumed = await client.resume(server.local_addresses[second_transport], ticket,
                                      transport=second_transport, timeout=5)
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


async def test_resume_after_losing_the_path_for_twice_the_idle_timeout() -> None:
    """The client's path dies without a goodbye; after 2x the idle timeout both sides
    have given the session up. A new client node (a restarted process holding the
    ticket) resumes in one round trip and keeps sending; the ticket then is spent."""
    from stt_anyio.cli_relay import LossyRelay

    short = {**FAST, "idle_timeout": 1.0, "keep_alive_interval": 0.3}
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=short) as server, \
            anyio.create_task_group() as relay_tasks:
        relay = await LossyRelay.open(server.local_address, loss=0.0, seed=1)
        relay_tasks.start_soon(relay.run)
        async with open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                             config_overrides=short) as client:
            first = await client.connect(relay.address, timeout=5)
            ticket = await wait_for_ticket(first)
            server_side = await server.accept(timeout=5)
            await relay.aclose()  # the path is gone: nothing more reaches the server
            relay_tasks.cancel_scope.cancel()
            with anyio.fail_after(5):
                closed = await server_side.wait_closed()
            assert closed.reason == "timeout"
            await anyio.sleep(2.0)  # 2x the idle timeout in all
        async with open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                             config_overrides=short) as restarted:
            resumed = await restarted.resume(server.local_address, ticket, timeout=5)
            assert resumed.session_id == first.session_id
            peer = await server.accept(timeout=5)
            stream = resumed.open_stream("after-restart")
            for index in range(20):
                await stream.send(b"message %d" % index, timeout=5)
            incoming = await peer.accept_stream(timeout=5)
            assert [await incoming.receive(timeout=5) for _ in range(20)] == \
                [b"message %d" % i for i in range(20)]
            with pytest.raises(AuthenticationError):
                await restarted.resume(server.local_address, ticket, timeout=5)


async def test_a_resumed_session_stays_up_past_its_connect_timeout() -> None:
    """RESUME_OK confirms the resumption. The client's handshake timer was once
    left armed by it: the client kept resending RESUME and closed the session as
    unconfirmed after its connect timeout (protocol.md Appendix B item 28). With
    fast retransmissions and a 0.5 s timeout that took 1.55 s; hold it for 2.5."""
    quick = {**FAST, "handshake_retransmit_interval": 0.05}
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=quick) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=quick) as client:
        first = await client.connect(server.local_address, timeout=5)
        ticket = await wait_for_ticket(first)
        await first.close()
        await (await server.accept(timeout=5)).wait_closed()
        resumed = await client.resume(server.local_address, ticket, timeout=0.5)
        peer = await server.accept(timeout=5)
        sent_before = client.endpoint.stats.datagrams_sent
        await anyio.sleep(2.5)
        assert not resumed.closed and not peer.closed
        stream = resumed.open_stream("later")
        await stream.send(b"still here", timeout=5)
        incoming = await peer.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"still here"
        # The wait itself needs at most an ACK or two from the client.
        assert client.endpoint.stats.datagrams_sent - sent_before < 10, \
            "the client kept resending RESUME"
