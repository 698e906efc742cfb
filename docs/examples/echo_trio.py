"""Echo server and client on trio, with stt_anyio.

Run (needs trio: ``pip install -e '.[trio]'``)::

    python docs/examples/echo_trio.py                      # server + client in one program
    python docs/examples/echo_trio.py --serve 9000         # only the server, UDP port 9000
    python docs/examples/echo_trio.py --connect 127.0.0.1:9000 "some text"

The server echoes every message on every stream a peer opens, until the peer
closes the stream or the session. The client sends one message with a
confirmed send (it returns when the server acknowledged every byte) and reads
the echo. Nothing here is trio-specific except the nursery and ``trio.run``:
the same stt_anyio calls run under asyncio (see ``file_transfer.py``).

``main(message)`` runs both halves on 127.0.0.1 with free ports and returns
the echo, which is what the docs test checks.
"""

from __future__ import annotations

import argparse

import trio

from stt_anyio import Node, Session, Stream, open_node
from stt_core import SessionClosedError, StreamClosedError

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
        return  # the peer reset the stream or the session ended: nothing to answer


async def echo_session(session: Session) -> None:
    """Serve every stream the peer opens, each in its own task."""
    async with trio.open_nursery() as nursery:
        try:
            while True:
                nursery.start_soon(echo_stream, await session.accept_stream())
        except SessionClosedError:
            return  # the client closed the session (or it timed out)


async def serve_echo(node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
    """Accept sessions forever; each is served in its own task."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            nursery.start_soon(echo_session, await node.accept())
# --8<-- [end:server]


# --8<-- [start:client]
async def echo_once(address: tuple[str, int], message: bytes, *, timeout: float) -> bytes:
    """Connect to the echo server at ``address``, send ``message``, return the echo."""
    async with open_node(node_id=b"echo-client", shared_seed=SHARED_SEED,
                         server_mode=False) as node:
        session = await node.connect(address, peer_node_id=SERVER_ID, timeout=timeout)
        stream = session.open_stream("echo")
        await stream.send(message, timeout=timeout)  # confirmed: the server has it
        reply = await stream.receive(timeout=timeout)
        await session.close()
        return reply
# --8<-- [end:client]


async def run_both(message: bytes, timeout: float) -> bytes:
    """Server and client in one program, on free loopback ports."""
    async with open_node(node_id=SERVER_ID, shared_seed=SHARED_SEED) as server, \
            trio.open_nursery() as nursery:
        await nursery.start(serve_echo, server)
        reply = await echo_once(server.local_address, message, timeout=timeout)
        nursery.cancel_scope.cancel()  # stop serving; leaving open_node closes the node
    return reply


async def run_server(port: int) -> None:
    """Serve on 0.0.0.0:``port`` until interrupted."""
    async with open_node(node_id=SERVER_ID, shared_seed=SHARED_SEED, host="0.0.0.0",
                         port=port) as server:
        print(f"echo server on UDP {server.local_address}")
        await serve_echo(server)


def main(message: bytes = b"hello over trio", *, timeout: float = 5.0) -> bytes:
    """Run server and client on loopback under trio; returns the echo."""
    return trio.run(run_both, message, timeout)


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("message", nargs="?", default="hello over trio")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--serve", type=int, metavar="PORT", help="run only the server")
    group.add_argument("--connect", metavar="HOST:PORT", help="run only the client")
    args = parser.parse_args()
    if args.serve is not None:
        trio.run(run_server, args.serve)
    elif args.connect:
        host, _, port = args.connect.rpartition(":")
        print(trio.run(lambda: echo_once((host, int(port)), args.message.encode(),
                                         timeout=5.0)))
    else:
        print(main(args.message.encode()))


if __name__ == "__main__":
    _cli()
