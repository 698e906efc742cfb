"""The node's one timer on a request/response exchange, under asyncio and trio.

An inline flush moves the timer itself when the core's deadline moved earlier
(the ACK delay of a received request), so the pump task only runs when the
timer fires; and the timer armed that way still fires on time.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stt_anyio import Node, open_node

pytestmark = pytest.mark.anyio

SEED = b"timer test shared seed"
ROUND_TRIPS = 200


def _count_pump_steps(node: Node) -> list[int]:
    """Patch ``node`` so that every pump step adds one to the returned counter."""
    steps = [0]
    step = node._step

    async def counted() -> None:
        steps[0] += 1
        await step()

    node._step = counted  # type: ignore[method-assign]
    return steps


async def _echo(stream: Any) -> None:
    async for message in stream:
        await stream.write(message)


async def test_round_trips_leave_the_pump_asleep() -> None:
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address)
        accepted = await server.accept()
        stream = session.open_stream("echo")
        async with anyio.create_task_group() as tg:
            await stream.write(b"first")
            tg.start_soon(_echo, await accepted.accept_stream())
            assert await stream.receive() == b"first"
            client_steps, server_steps = _count_pump_steps(client), _count_pump_steps(server)
            with anyio.fail_after(20):
                for i in range(ROUND_TRIPS):
                    request = i.to_bytes(4, "big") * 16
                    await stream.write(request)
                    assert await stream.receive() == request
            tg.cancel_scope.cancel()
        # One step per timer firing: the ACK-delay timer fires at most every
        # 25 ms; before, the pump also woke at about every other received request.
        assert client_steps[0] < ROUND_TRIPS // 4
        assert server_steps[0] < ROUND_TRIPS // 4


async def test_an_ack_delay_armed_inline_still_fires() -> None:
    """The peer's ACK of a message nobody answers comes from the re-armed timer."""
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        session = await client.connect(server.local_address)
        accepted = await server.accept()
        stream = session.open_stream("quiet")
        await stream.send(b"opening", timeout=5)
        incoming = await accepted.accept_stream()
        assert await incoming.receive() == b"opening"
        for _ in range(3):
            with anyio.fail_after(2):
                await stream.send(b"acknowledged by the delayed ACK alone")
            assert await incoming.receive() == b"acknowledged by the delayed ACK alone"
