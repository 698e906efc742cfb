"""A broadcast server: one message to every connected session (``send_to_all``).

Run::

    python docs/examples/broadcast.py             # a server and 3 listeners
    python docs/examples/broadcast.py --listeners 10

Written with the manual's asyncio API (stt_asyncio_compat). The server waits
until its listeners are connected, then calls ``send_to_all``: one confirmed
send per session, run concurrently. A session that fails (its peer left, or
the send timed out) does not spoil the broadcast for the others; the
returned ``BroadcastResult`` lists who acknowledged the message and why the
others did not. Listeners read the broadcast on stream 0, the stream every
session has without opening it.

``main()`` returns the result and what each listener read; the docs test
checks that every listener got the message and the server saw every ack.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from stt_asyncio_compat import BroadcastResult, STTNode

SHARED_SEED = b"docs example shared seed"
SERVER_ID = b"broadcaster"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the broadcast did, seen from both ends."""

    result: BroadcastResult
    """The server's view: delivered session ids and failures."""
    received: dict[bytes, bytes]
    """Listener node id -> the message it read."""


# --8<-- [start:broadcast]
async def broadcast(server: STTNode, listeners: int, message: bytes, *,
                    timeout: float) -> BroadcastResult:
    """Wait for ``listeners`` sessions, then send ``message`` to all of them."""
    for _ in range(listeners):
        await server.accept(timeout=timeout)  # or count server.get_active_sessions()
    return await server.send_to_all(message, timeout=timeout)


async def listen(node: STTNode, address: tuple[str, int], *, timeout: float) -> bytes:
    """Connect to the broadcaster and read one broadcast from stream 0."""
    session = await node.connect(address, peer_node_id=SERVER_ID, timeout=timeout)
    return await session.stream(0).receive(timeout=timeout)
# --8<-- [end:broadcast]


async def run(listeners: int, message: bytes, timeout: float) -> Outcome:
    """A server and ``listeners`` client nodes on loopback."""
    server = STTNode(node_id=SERVER_ID, bind_address="127.0.0.1", shared_seed=SHARED_SEED)
    address = await server.start(server_mode=True)
    nodes = [STTNode(node_id=f"listener-{i}".encode(), bind_address="127.0.0.1",
                     shared_seed=SHARED_SEED) for i in range(listeners)]
    try:
        for node in nodes:
            await node.start(server_mode=False)
        reads = [asyncio.create_task(listen(node, address, timeout=timeout))
                 for node in nodes]
        result = await broadcast(server, listeners, message, timeout=timeout)
        received = await asyncio.gather(*reads)
    finally:
        for node in nodes:
            await node.stop()
        await server.stop()
    return Outcome(result=result,
                   received={node.node_id: data for node, data in zip(nodes, received,
                                                                      strict=True)})


def main(*, listeners: int = 3, message: bytes = b"news for everyone",
         timeout: float = 10.0) -> Outcome:
    """Run the broadcast on loopback; returns what happened."""
    return asyncio.run(run(listeners, message, timeout))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listeners", type=int, default=3)
    outcome = main(listeners=parser.parse_args().listeners)
    print(f"acknowledged by {len(outcome.result)} sessions, "
          f"all delivered: {outcome.result.all_delivered}")
    for node_id, data in outcome.received.items():
        print(f"{node_id.decode()} read {data!r}")
