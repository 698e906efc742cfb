"""How many flushes a request/response round trip costs the node, under asyncio and trio.

On asyncio the flush after a small receive batch that delivered a message
waits for the next turn of the loop, after the woken task: the reply's own
flush carries the ACK, so each side flushes once per round trip. Taking a
message flushes only when it queued a credit update.
"""

from __future__ import annotations

import anyio
import pytest

from .round_trips import connected, count_calls, echo_pair, round_trips

pytestmark = pytest.mark.anyio

SEED = b"flush test shared seed"
ROUND_TRIPS = 100


async def test_one_flush_per_round_trip_and_side_on_asyncio(anyio_backend: str) -> None:
    async with echo_pair(SEED) as (client, server, stream):
        counts = count_calls(client, "_flush_inline"), count_calls(server, "_flush_inline")
        await round_trips(stream, ROUND_TRIPS)
    # Timers (ACK delay) add a few flushes; credit updates one per 32 KiB or so.
    per_round_trip = 1 if anyio_backend == "asyncio" else 2
    for flushes in counts:
        assert per_round_trip * ROUND_TRIPS <= flushes[0] <= per_round_trip * ROUND_TRIPS + 10


async def test_a_message_nobody_answers_is_still_acknowledged() -> None:
    """The deferred flush arms the ACK timer when the woken task sends nothing."""
    async with connected(SEED) as (_, _, session, accepted):
        stream = session.open_stream("quiet")
        await stream.write(b"opening")
        incoming = await accepted.accept_stream()
        for i in range(5):
            assert await incoming.receive() == (b"opening" if i == 0 else b"again")
            with anyio.fail_after(2):
                await stream.send(b"again")


async def test_writes_in_one_turn_of_the_loop_share_packets(anyio_backend: str) -> None:
    """The first write of a turn leaves at once; the ones after it in the same
    turn wait for the turn's end and go out together, so 500 small messages
    written without an await between them need a few dozen packets, not 500.
    On trio the turn is the writing task's step, and the pump sends them."""
    async with connected(SEED) as (client, _, session, accepted):
        stream = session.open_stream("many small")
        await stream.write(b"opening")  # the stream's start-up is behind us
        incoming = await accepted.accept_stream()
        assert await incoming.receive() == b"opening"
        await anyio.sleep(0.05)
        packets = client._endpoint.stats.datagrams_sent
        await stream.write(b"first of the turn")
        assert client._endpoint.stats.datagrams_sent == packets + 1  # inline, no await ran
        for i in range(500):
            await stream.write(i.to_bytes(2, "big") * 32)
        assert client._endpoint.stats.datagrams_sent == packets + 1  # all waiting for the turn
        received = [await incoming.receive() for _ in range(501)]
        assert received == [b"first of the turn"] + [i.to_bytes(2, "big") * 32
                                                     for i in range(500)]
        assert client._endpoint.stats.datagrams_sent - packets < 60
