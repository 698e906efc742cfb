"""Echo server and client on asyncio, with the manual's API (stt_asyncio_compat).

Run::

    python docs/examples/echo_asyncio.py                   # server + client in one program
    python docs/examples/echo_asyncio.py --serve 9000      # only the server, UDP port 9000
    python docs/examples/echo_asyncio.py --connect 127.0.0.1:9000 "some text"

This is the shape an existing asyncio application has: an ``STTNode`` is
built without a running loop, ``start()`` binds it, an ``on_session``
callback serves each session a peer opens, and ``stop()`` closes everything
gracefully. The client sends one message with a confirmed send and reads
the echo.

``main(message)`` runs both halves on 127.0.0.1 with free ports and returns
the echo, which is what the docs test checks.
"""

from __future__ import annotations

import argparse
import asyncio

from stt_asyncio_compat import (
    Session,
    SessionClosedError,
    Stream,
    StreamClosedError,
    STTNode,
)

SHARED_SEED = b"docs example shared seed"
SERVER_ID = b"echo-server"


# --8<-- [start:server]
async def echo_stream(stream: Stream) -> None:
    """Send every message back on the stream it came on, then end our side too."""
    try:
        async for message in stream:  # stops when the peer closes its side
            await stream.send(message)
        await stream.close()
    except (StreamClosedError, SessionClosedError):
        return  # the peer reset the stream or the session ended


async def echo_session(session: Session) -> None:
    """Serve every stream the peer opens, each in its own task."""
    async with asyncio.TaskGroup() as tasks:
        try:
            while True:
                stream = await session.accept_stream()
                tasks.create_task(echo_stream(stream))
        except SessionClosedError:
            return  # the client closed the session (or it timed out)


def make_server(port: int = 0, host: str = "127.0.0.1") -> STTNode:
    """An echo server node; ``start()`` it to listen."""
    node = STTNode(node_id=SERVER_ID, port=port, bind_address=host, shared_seed=SHARED_SEED)
    node.on_session(echo_session)  # a coroutine callback runs as a task per session
    return node
# --8<-- [end:server]


# --8<-- [start:client]
async def echo_once(address: tuple[str, int], message: bytes, *, timeout: float) -> bytes:
    """Connect to the echo server at ``address``, send ``message``, return the echo."""
    client = STTNode(node_id=b"echo-client", bind_address="127.0.0.1",
                     shared_seed=SHARED_SEED)
    await client.start(server_mode=False)  # a client-only node accepts no sessions
    try:
        session = await client.connect(address, peer_node_id=SERVER_ID, timeout=timeout)
        stream = session.open_stream(purpose="echo")
        await stream.send(message, timeout=timeout)  # confirmed: the server has it
        reply = await stream.receive(timeout=timeout)
        await session.close()
        return reply
    finally:
        await client.stop()
# --8<-- [end:client]


async def run_both(message: bytes, timeout: float) -> bytes:
    """Server and client in one program, on free loopback ports."""
    server = make_server()
    host, port = await server.start(server_mode=True)
    try:
        return await echo_once((host, port), message, timeout=timeout)
    finally:
        await server.stop()


async def run_server(port: int) -> None:
    """Serve on 0.0.0.0:``port`` until interrupted."""
    server = make_server(port, "0.0.0.0")
    print(f"echo server on UDP {await server.start()}")
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(message: bytes = b"hello over asyncio", *, timeout: float = 5.0) -> bytes:
    """Run server and client on loopback under asyncio; returns the echo."""
    return asyncio.run(run_both(message, timeout))


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("message", nargs="?", default="hello over asyncio")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--serve", type=int, metavar="PORT", help="run only the server")
    group.add_argument("--connect", metavar="HOST:PORT", help="run only the client")
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(run_server(args.serve))
    elif args.connect:
        host, _, port = args.connect.rpartition(":")
        print(asyncio.run(echo_once((host, int(port)), args.message.encode(), timeout=5.0)))
    else:
        print(main(args.message.encode()))


if __name__ == "__main__":
    _cli()
