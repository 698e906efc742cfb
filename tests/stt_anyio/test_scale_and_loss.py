"""Loopback tests at scale and under real loss, on both anyio backends.

* 200 concurrent sessions from one client node to one server, each echoing.
* 16 MiB through a UDP relay that drops 5% of real datagrams each way,
  delivered intact (SHA-256) with retransmissions visible in the stats.
"""

from __future__ import annotations

import hashlib
import os

import anyio
import pytest

from stt_anyio import Session, open_node
from stt_anyio.cli_relay import LossyRelay

pytestmark = pytest.mark.anyio

SEED = b"scale-and-loss-seed"


async def test_two_hundred_concurrent_sessions_to_one_server() -> None:
    count = 200
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client:
        echoed: list[bytes] = []

        async def echo(session: Session) -> None:
            stream = await session.accept_stream(timeout=30)
            await stream.send(await stream.receive(timeout=30), timeout=30)

        async def serve() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(echo, await server.accept(timeout=30))

        async def one(index: int) -> None:
            session = await client.connect(server.local_address, timeout=30)
            stream = session.open_stream("echo")
            await stream.send(b"message %d" % index, timeout=30)
            echoed.append(await stream.receive(timeout=30))

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                for index in range(count):
                    tg.start_soon(one, index)
        assert sorted(echoed) == sorted(b"message %d" % i for i in range(count))
        sessions = server.get_stats()
        assert sessions is not None


async def test_16_mib_through_a_relay_dropping_5_percent() -> None:
    size = 16 * 1024 * 1024
    data = os.urandom(size)
    async with open_node(node_id=b"server", shared_seed=SEED) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False) as client, \
            anyio.create_task_group() as relay_tasks:
        relay = await LossyRelay.open(server.local_address, loss=0.05, seed=7)
        relay_tasks.start_soon(relay.run)
        session = await client.connect(relay.address, timeout=10)
        server_session = await server.accept(timeout=10)

        async def receive_all() -> None:
            stream = await server_session.accept_stream(timeout=10)
            hasher, received = hashlib.sha256(), 0
            async for message in stream:
                hasher.update(message)
                received += len(message)
            assert received == size
            assert hasher.digest() == hashlib.sha256(data).digest()
            await stream.send(b"verified", timeout=10)

        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all)
                stream = session.open_stream("bulk")
                for offset in range(0, size, 64_000):
                    await stream.write(data[offset:offset + 64_000])
                await stream.close()
                assert await stream.receive(timeout=60) == b"verified"
        assert relay.stats.dropped > 10  # 64 KiB datagrams on loopback: few, large packets
        assert session.stats.packets_lost > 0 and session.stats.retransmitted_bytes > 0
        await relay.aclose()
        relay_tasks.cancel_scope.cancel()
