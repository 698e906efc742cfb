"""The node's one timer on a request/response exchange, under asyncio and trio.

An inline flush moves the timer itself when the core's deadline moved earlier
(the ACK delay of a received request), so the pump task only runs when the
timer fires; and the timer armed that way still fires on time.
"""

from __future__ import annotations

import anyio
import pytest

from .round_trips import connected, count_calls, echo_pair, round_trips

pytestmark = pytest.mark.anyio

SEED = b"timer test shared seed"
ROUND_TRIPS = 200


async def test_round_trips_leave_the_pump_asleep() -> None:
    async with echo_pair(SEED) as (client, server, stream):
        client_steps, server_steps = count_calls(client, "_step"), count_calls(server, "_step")
        await round_trips(stream, ROUND_TRIPS)
    # One step per timer firing: the ACK-delay timer fires at most every
    # 25 ms; before, the pump also woke at about every other received request.
    assert client_steps[0] < ROUND_TRIPS // 4
    assert server_steps[0] < ROUND_TRIPS // 4


async def test_an_ack_delay_armed_inline_still_fires() -> None:
    """The peer's ACK of a message nobody answers comes from the re-armed timer."""
    async with connected(SEED) as (_, _, session, accepted):
        stream = session.open_stream("quiet")
        await stream.send(b"opening", timeout=5)
        incoming = await accepted.accept_stream()
        assert await incoming.receive() == b"opening"
        for _ in range(3):
            with anyio.fail_after(2):
                await stream.send(b"acknowledged by the delayed ACK alone")
            assert await incoming.receive() == b"acknowledged by the delayed ACK alone"
