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
