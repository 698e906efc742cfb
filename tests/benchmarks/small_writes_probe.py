"""Probe: many small messages written back to back (telemetry, chat, game state).

The client writes ``--count`` messages of ``--size`` bytes on one stream with
``Stream.write`` (no await of anything else in between) and the server reads
them all; both nodes run in this process over loopback. Prints messages per
second, the UDP send calls the client made, and the CPU per message of the
whole process (both nodes). On asyncio the writes of one turn of the event
loop share packets; on trio each write flushes on its own.

    .venv/bin/python -m tests.benchmarks.small_writes_probe [--count 50000] [--size 64]
"""

from __future__ import annotations

import argparse
import time

import anyio

from stt_anyio import open_node

SEED = b"small writes probe shared seed"


async def _run(count: int, size: int) -> tuple[float, float, int]:
    """Seconds and CPU seconds for the whole transfer, and the client's UDP send calls."""
    async with open_node(shared_seed=SEED, node_id=b"writes-server", host="127.0.0.1") as server, \
            open_node(shared_seed=SEED, node_id=b"writes-client", server_mode=False) as client, \
            anyio.create_task_group() as tg:
        finished = anyio.Event()

        async def read_all() -> None:
            session = await server.accept()
            stream = await session.accept_stream()
            for _ in range(count + 1):
                await stream.receive()
            finished.set()

        tg.start_soon(read_all)
        session = await client.connect(server.local_address)
        stream = session.open_stream(purpose="small writes")
        await stream.send(b"start")  # the stream's start-up is behind us
        message = bytes(size)
        sends_before = client.get_stats()["udp"]["datagrams_sent"]
        began, cpu_began = time.perf_counter(), time.process_time()
        for _ in range(count):
            await stream.write(message)
        await finished.wait()
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        sends = client.get_stats()["udp"]["datagrams_sent"] - sends_before
        tg.cancel_scope.cancel()
    return elapsed, cpu, sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50000, help="messages written")
    parser.add_argument("--size", type=int, default=64, help="message size, bytes")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    elapsed, cpu, sends = anyio.run(_run, args.count, args.size, backend=args.backend)
    print(f"{args.backend}: {args.count} writes of {args.size} B: "
          f"{args.count / elapsed:,.0f} messages/s, {sends} UDP sends by the client, "
          f"{cpu / args.count * 1e6:.1f} us CPU per message (both nodes)")


if __name__ == "__main__":
    main()
