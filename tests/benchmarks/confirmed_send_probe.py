"""Probe: how long a confirmed send takes (``Stream.send``, which waits for the ACK).

The manual's API sends with ``await stream.send(data)``, which returns when the
peer has acknowledged the message. A peer holds the ACK of a lone packet for
its ``max_ack_delay`` (25 ms) unless the packet asks for it at once
(IMMEDIATE_ACK, protocol.md §4.5), so this probe shows whether a loop of
confirmed sends runs at the path's pace or at one message per ACK delay.

For each of ``--count`` messages of ``--size`` bytes on one stream it times
``send`` from call to return, over loopback, both nodes in this process (the
peer only reads). Prints the median and p99 per send and the sends per second.
With ``--reply`` the peer answers each message with a confirmed send of its
own, and the probe times ``send`` plus ``receive`` of the answer: the manual's
request/response pattern, where the answer could carry the ACK by itself.

    .venv/bin/python -m tests.benchmarks.confirmed_send_probe [--count 500] [--size 100] [--reply]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import anyio

from stt_anyio import open_node
from stt_core.errors import SessionClosedError, StreamClosedError

SEED = b"confirmed send probe shared seed"


async def _run(count: int, size: int, reply: bool) -> list[float]:
    async with open_node(shared_seed=SEED, node_id=b"send-server", host="127.0.0.1") as server, \
            open_node(shared_seed=SEED, node_id=b"send-client", server_mode=False) as client, \
            anyio.create_task_group() as tg:

        async def drain() -> None:
            session = await server.accept()
            stream = await session.accept_stream()
            with contextlib.suppress(SessionClosedError, StreamClosedError):
                async for message in stream:
                    if reply:
                        await stream.send(message)

        tg.start_soon(drain)
        session = await client.connect(server.local_address)
        stream = session.open_stream(purpose="confirmed")
        payload = bytes(size)
        await stream.send(payload)  # the stream's first message, not timed
        if reply:
            await stream.receive()
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            await stream.send(payload)
            if reply:
                await stream.receive()
            samples.append(time.perf_counter() - began)
        await session.close()
        tg.cancel_scope.cancel()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, help="confirmed sends timed")
    parser.add_argument("--size", type=int, default=100, help="message size, bytes")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--reply", action="store_true",
                        help="the peer answers each message with a confirmed send")
    args = parser.parse_args()
    samples = sorted(anyio.run(_run, args.count, args.size, args.reply, backend=args.backend))
    p50 = samples[len(samples) // 2] * 1e3
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3
    what = "request/response pairs" if args.reply else "confirmed sends"
    print(f"{args.backend}: {args.count} {what} of {args.size} B: median {p50:.3f} ms, "
          f"p99 {p99:.3f} ms, {len(samples) / sum(samples):,.0f} per second")


if __name__ == "__main__":
    main()
