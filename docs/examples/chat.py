"""A chat hub with rooms, one stream per room, on stt_anyio.

Run::

    python docs/examples/chat.py                  # hub + alice, bob and carol, scripted
    python docs/examples/chat.py --backend trio

One session per client carries several streams at once: a client joins a room
by opening a stream whose ``purpose`` is ``"room:<name>"``, and everything it
sends on that stream goes to the other members of the room. Streams are
independent: a slow or busy room does not hold up another one, and each
stream delivers its messages whole and in order.

The hub:

* accepts sessions, then every stream each session opens (``accept_stream``);
* reads the first message of a room stream as the join and answers it with
  a welcome line, so the client knows it is a member before it speaks;
* relays each message to the other members with the buffered ``write``, so
  one slow member does not stall the room for everybody.

``main()`` runs a short scripted conversation on loopback and returns the
transcript as ``(listener, room, line)`` tuples, which the docs test checks.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict

import anyio

from stt_anyio import Node, Session, Stream, open_node
from stt_core import SessionClosedError, StreamClosedError

SHARED_SEED = b"docs example shared seed"
HUB_ID = b"hub"
ROOM_PREFIX = "room:"

Transcript = list[tuple[str, str, str]]
"""``(listener, room, line)`` in the order lines were read."""


# --8<-- [start:hub]
class Hub:
    """Rooms and their members' streams."""

    def __init__(self) -> None:
        self.rooms: defaultdict[str, list[Stream]] = defaultdict(list)

    async def serve(self, node: Node) -> None:
        """Accept sessions forever."""
        async with anyio.create_task_group() as tasks:
            while True:
                tasks.start_soon(self.serve_session, await node.accept())

    async def serve_session(self, session: Session) -> None:
        """Every stream the client opens is one room it joins."""
        async with anyio.create_task_group() as tasks:
            try:
                while True:
                    tasks.start_soon(self.serve_member, await session.accept_stream())
            except SessionClosedError:
                return

    async def serve_member(self, stream: Stream) -> None:
        """Welcome the member, then relay its lines until it leaves."""
        room = stream.purpose.removeprefix(ROOM_PREFIX)
        nick = (stream.session.peer_node_id or b"?").decode(errors="replace")
        members = self.rooms[room]
        members.append(stream)
        try:
            await stream.receive()  # the join message (empty): nothing to relay
            await stream.write(f"* welcome to #{room}, {len(members)} here".encode())
            async for line in stream:
                text = f"{nick}: {line.decode(errors='replace')}".encode()
                for other in list(members):
                    if other is not stream:
                        await other.write(text)
        except (StreamClosedError, SessionClosedError):
            pass  # the member left, reset the stream, or its session ended
        finally:
            members.remove(stream)
# --8<-- [end:hub]


# --8<-- [start:client]
class Client:
    """One chat user: one session to the hub, one stream per joined room."""

    def __init__(self, nick: str, session: Session) -> None:
        self.nick = nick
        self.session = session
        self.rooms: dict[str, Stream] = {}

    async def join(self, room: str, *, timeout: float) -> str:
        """Open the room's stream and wait for the welcome line."""
        stream = self.session.open_stream(ROOM_PREFIX + room)
        await stream.send(b"")  # the join message: the hub answers it with a welcome
        self.rooms[room] = stream
        return (await stream.receive(timeout=timeout)).decode()

    async def say(self, room: str, text: str) -> None:
        """Send one line to a room (confirmed: the hub has it)."""
        await self.rooms[room].send(text.encode())

    async def hear(self, room: str, *, timeout: float) -> str:
        """The next line from a room."""
        return (await self.rooms[room].receive(timeout=timeout)).decode()
# --8<-- [end:client]


async def conversation(timeout: float) -> Transcript:
    """The hub, three clients, two rooms, and a short scripted conversation."""
    transcript: Transcript = []

    async def hear(client: Client, room: str) -> None:
        transcript.append((client.nick, room, await client.hear(room, timeout=timeout)))

    async with open_node(node_id=HUB_ID, shared_seed=SHARED_SEED) as hub_node, \
            anyio.create_task_group() as tasks:
        tasks.start_soon(Hub().serve, hub_node)
        async with contextlib.AsyncExitStack() as nodes:  # leaving it closes the clients
            clients: list[Client] = []
            for nick in ("alice", "bob", "carol"):
                node = await nodes.enter_async_context(open_node(
                    node_id=nick.encode(), shared_seed=SHARED_SEED, server_mode=False))
                session = await node.connect(hub_node.local_address, peer_node_id=HUB_ID,
                                             timeout=timeout)
                clients.append(Client(nick, session))
            alice, bob, carol = clients
            for client, room in ((alice, "general"), (alice, "random"),
                                 (bob, "general"), (carol, "random")):
                transcript.append((client.nick, room,
                                   await client.join(room, timeout=timeout)))
            await alice.say("general", "hi all")
            await hear(bob, "general")
            await carol.say("random", "anyone here?")
            await hear(alice, "random")
            await bob.say("general", "hello alice")
            await hear(alice, "general")
        tasks.cancel_scope.cancel()  # stop the hub; leaving open_node closes it
    return transcript


def main(*, backend: str = "asyncio", timeout: float = 10.0) -> Transcript:
    """Run the scripted conversation; returns the transcript."""

    async def bounded() -> Transcript:
        with anyio.fail_after(timeout):
            return await conversation(timeout)

    return anyio.run(bounded, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    for listener, room, line in main(backend=parser.parse_args().backend):
        print(f"[{listener} #{room}] {line}")
