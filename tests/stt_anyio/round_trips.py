"""What the request/response tests of the node share: an echoing pair of nodes
on one stream, the round trips themselves, and counting calls of a node method."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from stt_anyio import Node, Session, Stream, open_node


@asynccontextmanager
async def connected(seed: bytes) -> AsyncIterator[tuple[Node, Node, Session, Session]]:
    """Client and server nodes on loopback, the client's session and the
    server's side of it."""
    async with open_node(node_id=b"server", shared_seed=seed) as server, \
            open_node(node_id=b"client", shared_seed=seed, server_mode=False) as client:
        session = await client.connect(server.local_address)
        accepted = await server.accept()
        yield client, server, session, accepted


@asynccontextmanager
async def echo_pair(seed: bytes) -> AsyncIterator[tuple[Node, Node, Stream]]:
    """Client and server nodes, and the client's stream to an echoing server
    task; one message has already gone there and back, so the session's
    start-up (credit, path MTU probes) is behind it."""
    async with connected(seed) as (client, server, session, accepted):
        stream = session.open_stream("echo")
        async with anyio.create_task_group() as tg:
            await stream.write(b"first")
            tg.start_soon(_echo, await accepted.accept_stream())
            assert await stream.receive() == b"first"
            yield client, server, stream
            tg.cancel_scope.cancel()


async def _echo(stream: Any) -> None:
    async for message in stream:
        await stream.write(message)


async def round_trips(stream: Stream, count: int) -> None:
    """``count`` distinct 64-byte requests, each answered by the echo before the next."""
    with anyio.fail_after(20):
        for i in range(count):
            request = i.to_bytes(4, "big") * 16
            await stream.write(request)
            assert await stream.receive() == request


def count_calls(node: Node, name: str) -> list[int]:
    """Patch ``node.<name>`` (sync or async) so that every call adds one to the
    returned counter."""
    calls = [0]
    method = getattr(node, name)
    if inspect.iscoroutinefunction(method):
        async def counted_async() -> None:
            calls[0] += 1
            await method()
        setattr(node, name, counted_async)
    else:
        def counted() -> None:
            calls[0] += 1
            method()
        setattr(node, name, counted)
    return calls
