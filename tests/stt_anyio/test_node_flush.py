"""How many flushes a request/response round trip costs the node, under asyncio and trio.

On asyncio the flush after a small receive batch that delivered a message
waits for the next turn of the loop, after the woken task: the reply's own
flush carries the ACK, so each side flushes once per round trip. Taking a
message flushes only when it queued a credit update.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stt_anyio import Node, open_node

pytestmark = pytest.mark.anyio

SEED = b"flush test shared seed"
ROUND_TRIPS = 100


def _count_flushes(node: Node) -> list[int]:
    """Patch ``node`` so that every flush that packs datagrams adds one to the counter."""
    flushes = [0]
    flush = node._flush_inline

    def counted() -> None:
        flushes[0] += 1
        flush()

    node._flush_inline = counted  # type: ignore[method-assign]
    return flushes


async def _echo(stream: Any) -> None:
    async for message in stream:
        await stream.write(message)


async def test_one_flush_per_round_trip_and_side_on_asyncio(anyio_backend: str) -> None:
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address)
        accepted = await server.accept()
        stream = session.open_stream("echo")
        async with anyio.create_task_group() as tg:
            await stream.write(b"first")
            tg.start_soon(_echo, await accepted.accept_stream())
            assert await stream.receive() == b"first"
            counts = _count_flushes(client), _count_flushes(server)
            with anyio.fail_after(20):
                for i in range(ROUND_TRIPS):
                    request = i.to_bytes(4, "big") * 16
                    await stream.write(request)
                    assert await stream.receive() == request
            tg.cancel_scope.cancel()
        # Timers (ACK delay) add a few flushes; credit updates one per 32 KiB or so.
        per_round_trip = 1 if anyio_backend == "asyncio" else 2
        for flushes in counts:
            assert per_round_trip * ROUND_TRIPS <= flushes[0] <= per_round_trip * ROUND_TRIPS + 10


async def test_a_message_nobody_answers_is_still_acknowledged() -> None:
    """The deferred flush arms the ACK timer when the woken task sends nothing."""
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address)
        accepted = await server.accept()
        stream = session.open_stream("quiet")
        await stream.write(b"opening")
        incoming = await accepted.accept_stream()
        for i in range(5):
            assert await incoming.receive() == (b"opening" if i == 0 else b"again")
            with anyio.fail_after(2):
                await stream.send(b"again")
