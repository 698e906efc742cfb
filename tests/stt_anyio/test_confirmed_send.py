"""``Stream.send`` waits for the peer's ACK; the peer must not hold that ACK for its
ACK delay, or a loop of confirmed sends runs at one message per 25 ms."""

from __future__ import annotations

import time

import anyio
import pytest

from .round_trips import connected

pytestmark = pytest.mark.anyio

SEED = b"confirmed send test seed"
SENDS = 40


async def test_a_loop_of_confirmed_sends_runs_at_the_paths_pace() -> None:
    """40 confirmed sends over loopback: about 10 ms in all with IMMEDIATE_ACK,
    at least 40 x 25 ms = 1 s if the receiver held each ACK for its delay. The
    bound sits between the two with a wide margin both ways."""
    async with connected(SEED) as (_, _, session, accepted), anyio.create_task_group() as tg:
        received: list[bytes] = []

        async def read_all() -> None:
            stream = await accepted.accept_stream()
            while len(received) < SENDS + 1:
                received.append(await stream.receive())

        tg.start_soon(read_all)
        stream = session.open_stream("confirmed")
        await stream.send(b"first")
        began = time.perf_counter()
        for i in range(SENDS):
            await stream.send(i.to_bytes(2, "big"))
        elapsed = time.perf_counter() - began
    assert received == [b"first"] + [i.to_bytes(2, "big") for i in range(SENDS)]
    assert elapsed < 0.4, f"{SENDS} confirmed sends took {elapsed:.3f} s"


async def test_a_reply_carries_the_ack_a_confirmed_request_asked_for() -> None:
    """Request and reply both confirmed (the manual's request/response): each side
    sends one datagram per exchange. The requested ACK waits until the woken task
    had its turn, and its reply carries it; sending the ACK at once would make it
    two datagrams each way."""
    pairs = 200
    async with connected(SEED) as (client, server, session, accepted), \
            anyio.create_task_group() as tg:

        async def answer() -> None:
            stream = await accepted.accept_stream()
            for _ in range(pairs + 1):
                await stream.send(await stream.receive())

        tg.start_soon(answer)
        stream = session.open_stream("request/response")
        await stream.send(b"first")
        assert await stream.receive() == b"first"
        sent = client.get_stats()["udp"]["datagrams_sent"], \
            server.get_stats()["udp"]["datagrams_sent"]
        for i in range(pairs):
            await stream.send(i.to_bytes(2, "big"))
            assert await stream.receive() == i.to_bytes(2, "big")
        client_sent = client.get_stats()["udp"]["datagrams_sent"] - sent[0]
        server_sent = server.get_stats()["udp"]["datagrams_sent"] - sent[1]
    assert client_sent <= pairs * 1.1, client_sent
    assert server_sent <= pairs * 1.1, server_sent
