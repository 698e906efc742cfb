"""The smallest STT program: two nodes on this machine, one authenticated message.

Run it with ``python docs/examples/hello.py``; it prints ``b'hello'``.

Both nodes live in one process and bind free ports on 127.0.0.1. The client
connects (a four-message handshake proving that both know the shared seed),
opens a stream and makes a confirmed send; the server accepts the session and
the stream and reads the message. ``main()`` returns what the server read, so
a test can check it. The part between the markers is shown on the docs' home
page.
"""

from __future__ import annotations

import anyio

# --8<-- [start:hello]
from stt_anyio import open_node


async def hello() -> bytes:
    seed = b"a secret every node shares"
    async with open_node(node_id=b"server", shared_seed=seed) as server, \
            open_node(node_id=b"client", shared_seed=seed, server_mode=False) as client:
        session = await client.connect(server.local_address, peer_node_id=b"server")
        await session.open_stream("greeting").send(b"hello")  # returns once acknowledged
        incoming = await (await server.accept()).accept_stream()
        return await incoming.receive()  # b'hello'
# --8<-- [end:hello]


def main(*, timeout: float = 10.0) -> bytes:
    """Run :func:`hello` under asyncio, giving up after ``timeout`` seconds."""

    async def bounded() -> bytes:
        with anyio.fail_after(timeout):
            return await hello()

    return anyio.run(bounded)


if __name__ == "__main__":
    print(main())
