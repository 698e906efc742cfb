"""A closed session leaves no reference cycle, so reference counting frees it.

Why it matters: a server holding thousands of sessions pays for every object
the cyclic garbage collector tracks (a full collection at 10,000 idle sessions
took about 150 ms on the development machine), and ``gc.freeze()``, the remedy
the tuning guide recommends, is safe only if what closes after the freeze
does not need the collector to be freed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest

from stt_anyio import Session, Stream

from .round_trips import connected

pytestmark = pytest.mark.anyio

SEED = b"session gc test seed"


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Collect first, then hand over what only the cyclic collector could free
    among the objects that became garbage inside the block."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def ours(objects: list[object]) -> list[str]:
    return sorted({type(o).__name__ for o in objects if isinstance(o, Session | Stream)})


async def test_closed_sessions_and_their_streams_need_no_cyclic_collector() -> None:
    async with connected(SEED) as (client, server, _, _):
        with cyclic_garbage() as garbage:
            for i in range(20):
                session = await client.connect(server.local_address)
                accepted = await server.accept()
                stream = session.open_stream("gc")
                await stream.write(b"message %d" % i)
                incoming = await accepted.accept_stream()
                assert await incoming.receive() == b"message %d" % i
                await session.close()
                with anyio.fail_after(5):
                    await accepted.wait_closed()
                assert session.streams == [] and accepted.streams == []
                del session, accepted, stream, incoming
            await anyio.sleep(0.05)
    assert ours(garbage) == []


async def test_a_handle_fetched_after_close_is_not_kept_by_the_session() -> None:
    async with connected(SEED) as (_, _, session, _):
        await session.close()
        stream = session.stream(3)
        assert stream.stream_id == 3
        assert session.streams == []
