"""Throughput through ``stt_asyncio_compat.STTNode`` versus ``stt_anyio`` directly, on loopback.

What it answers: how much the compat layer (the manual's API) costs on top of
the binding it wraps. Both variants run the same workload in one asyncio
event loop and one process (server and client nodes side by side), with the
same core configuration, so the difference is the compat layer and nothing
else: the client writes ``--mib`` MiB as ``--message-size`` messages on one
stream (buffered writes, then one confirmed send so the clock stops when the
peer has acknowledged everything), the server reads every message.

It is a script, not a test (``tests/benchmarks/conftest.py`` keeps pytest away):

    .venv/bin/python tests/benchmarks/compat_overhead.py --mib 64 --repeats 5

Numbers are printed as a Markdown table (median and best MiB/s per variant);
docs/compat.md quotes a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import stt_anyio
from stt_asyncio_compat import STTNode

SEED = b"compat-overhead-bench"
HOST = "127.0.0.1"
MiB = 1024 * 1024

Variant = Callable[[int, int, dict[str, Any]], Coroutine[Any, Any, float]]


async def _pump(write: Callable[[bytes], Awaitable[object]],
                send: Callable[[bytes], Awaitable[None]],
                receive: Callable[[], Awaitable[bytes]], total: int, size: int) -> float:
    """Move ``total`` bytes as ``size``-byte messages; seconds until the last ack."""
    message = bytes(size)
    count = total // size

    async def reader() -> int:
        received = 0
        for _ in range(count):
            received += len(await receive())
        return received

    started = time.perf_counter()
    reading = asyncio.ensure_future(reader())
    for _ in range(count - 1):
        await write(message)
    await send(message)  # confirmed: returns when the peer acknowledged everything
    received = await reading
    elapsed = time.perf_counter() - started
    if received != count * size:
        raise RuntimeError(f"received {received} bytes, expected {count * size}")
    return elapsed


async def run_anyio(total: int, size: int, overrides: dict[str, Any]) -> float:
    """The workload on ``stt_anyio.open_node`` directly."""
    async with stt_anyio.open_node(node_id=b"server", shared_seed=SEED, host=HOST,
                                   config_overrides=overrides) as server, \
            stt_anyio.open_node(node_id=b"client", shared_seed=SEED, host=HOST,
                                server_mode=False, config_overrides=overrides) as client:
        session = await client.connect(server.local_address, timeout=10)
        stream = session.open_stream("bulk")
        await stream.send(b"hello", timeout=10)
        incoming = await (await server.accept(timeout=10)).accept_stream(timeout=10)
        await incoming.receive(timeout=10)
        return await _pump(stream.write, stream.send, incoming.receive, total, size)


async def run_compat(total: int, size: int, overrides: dict[str, Any]) -> float:
    """The same workload through the manual's API (``STTNode``)."""
    server = STTNode(node_id=b"server", bind_address=HOST, shared_seed=SEED, **overrides)
    client = STTNode(node_id=b"client", bind_address=HOST, shared_seed=SEED, **overrides)
    try:
        await server.start(server_mode=True)
        await client.start(server_mode=False)
        session = await client.connect(server.local_address, b"server", timeout=10)
        stream = session.open_stream(purpose="bulk")
        await stream.send(b"hello", timeout=10)
        incoming = await (await server.accept(timeout=10)).accept_stream(timeout=10)
        await incoming.receive(timeout=10)
        return await _pump(stream.write, stream.send, incoming.receive, total, size)
    finally:
        await client.stop()
        await server.stop()


def measure(variant: Variant, args: argparse.Namespace, overrides: dict[str, Any]) -> float:
    """The rate in MiB/s of one run, in a fresh event loop."""
    total = int(args.mib) * MiB
    seconds = asyncio.run(variant(total, args.message_size, overrides))
    return total / MiB / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=32, help="MiB per run (default 32)")
    parser.add_argument("--message-size", type=int, default=64 * 1024,
                        help="bytes per message (default 65536)")
    parser.add_argument("--datagram-size", type=int, default=1452,
                        help="max_datagram_size for both nodes (default 1452)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant (default 5)")
    args = parser.parse_args()
    overrides = {"max_datagram_size": args.datagram_size}
    print(f"{args.mib} MiB in {args.message_size}-byte messages, "
          f"max_datagram_size={args.datagram_size}, {args.repeats} runs each (alternating)")
    variants: dict[str, Variant] = {"stt_anyio": run_anyio, "STTNode (compat)": run_compat}
    results: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.repeats):
        # Alternate the variants so drift (thermal, other load) hits both alike.
        for name, variant in variants.items():
            results[name].append(measure(variant, args, overrides))
            print(f"  run {run + 1} {name}: {results[name][-1]:.1f} MiB/s")
    base = statistics.median(results["stt_anyio"])
    print("\n| variant | median MiB/s | best MiB/s | vs stt_anyio |")
    print("|---|---:|---:|---:|")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"| {name} | {median:.1f} | {max(rates):.1f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
