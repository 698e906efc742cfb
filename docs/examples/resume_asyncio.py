"""Resuming a session with the manual's ``CryptoSessionContinuity`` (stt_asyncio_compat).

Run::

    python docs/examples/resume_asyncio.py

A client connects to a server and makes the session resumable. Then it
resumes it, as it would after losing its path for longer than the idle
timeout or after moving to another address or transport: one round trip,
fresh keys, and the **same session id** on both sides. The old session is
closed locally; the application carries on with the resumed one.

``main()`` returns whether the ids matched and the message the server read
on the resumed session, which is what the docs test checks.
"""

from __future__ import annotations

import asyncio

from stt_asyncio_compat import CryptoSessionContinuity, STTNode

SHARED_SEED = b"docs example shared seed"


# --8<-- [start:resume]
async def resume_demo(server: STTNode, client: STTNode, *,
                      timeout: float) -> tuple[bool, bytes]:
    """Connect, make the session resumable, resume it, and use the resumed session."""
    continuity = CryptoSessionContinuity(node=client)
    session = await client.connect(server.local_address, peer_node_id=b"server",
                                   timeout=timeout)
    await server.accept(timeout=timeout)
    session_id, token = continuity.create_resumable_session(session=session)
    # ... the path dies, the laptop sleeps, the phone changes networks ...
    resumed = await continuity.resume_session(token, timeout=timeout)  # a running task
    server_side = await server.accept(timeout=timeout)  # the resumed session arrives
    await resumed.open_stream(purpose="after").send(b"still here", timeout=timeout)
    stream = await server_side.accept_stream(timeout=timeout)
    same_id = resumed.session_id == server_side.session_id == session_id
    return same_id, await stream.receive(timeout=timeout)
# --8<-- [end:resume]


async def run(timeout: float) -> tuple[bool, bytes]:
    """A server and a client on loopback."""
    server = STTNode(node_id=b"server", bind_address="127.0.0.1", shared_seed=SHARED_SEED)
    client = STTNode(node_id=b"client", bind_address="127.0.0.1", shared_seed=SHARED_SEED)
    await server.start(server_mode=True)
    await client.start(server_mode=False)
    try:
        return await resume_demo(server, client, timeout=timeout)
    finally:
        await client.stop()
        await server.stop()


def main(*, timeout: float = 5.0) -> tuple[bool, bytes]:
    """Run the demo; returns (same session id?, what the server read after resuming)."""
    return asyncio.run(run(timeout))


if __name__ == "__main__":
    same_id, message = main()
    print(f"same session id after resuming: {same_id}; server read {message!r}")
