"""How long the cyclic garbage collector stops a server that holds many idle sessions.

A server process accepts ``--sessions`` sessions from a client process and keeps
them open; it then reports how many objects the collector tracks, how many full
collections CPython ran while the sessions were accepted, how long a full
collection takes, and how long it takes after ``gc.freeze()`` (the remedy the
tuning guide recommends, "The garbage collector").

    .venv/bin/python -m tests.benchmarks.gc_probe --sessions 10000
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from typing import Any

import anyio

from stt_anyio import open_node
from stt_core import flavour

from .probe_support import pin_to_core

SEED = b"gc probe shared seed"


def _full_collection_ms(repeats: int = 3) -> float:
    """The fastest of ``repeats`` full collections, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - began)
    return best * 1e3


def _server(count: int, ready: Queue[Any], held: EventType) -> None:
    pin_to_core(1)

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"gc-server", host="127.0.0.1") as node:
            ready.put(node.local_address)
            sessions = [await node.accept() for _ in range(count)]
            await anyio.to_thread.run_sync(held.wait)
            tracked = len(gc.get_objects())
            full_runs = gc.get_stats()[2]["collections"]
            before = _full_collection_ms()
            gc.freeze()
            after = _full_collection_ms()
            gc.unfreeze()
            print(f"stt_core: {flavour.describe()}")
            print(f"server with {count} idle sessions: {tracked} tracked objects "
                  f"({tracked / count:.0f} per session); {full_runs} full collections ran "
                  f"while accepting them")
            print(f"full collection: {before:.1f} ms; after gc.freeze(): {after:.2f} ms")
            del sessions

    anyio.run(main)


def _client(count: int, address: tuple[str, int], held: EventType) -> None:
    pin_to_core(0)

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"gc-client", server_mode=False) as node:
            sessions = [await node.connect(address) for _ in range(count)]
            held.set()
            await anyio.sleep(5.0 + count / 2000)  # the server measures meanwhile
            del sessions

    anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10000)
    args = parser.parse_args()
    ready: Queue[Any] = multiprocessing.Queue()
    held = multiprocessing.Event()
    server = multiprocessing.Process(target=_server, args=(args.sessions, ready, held))
    server.start()
    try:
        _client(args.sessions, tuple(ready.get(timeout=30)), held)
    finally:
        server.join(timeout=30)
        if server.is_alive():
            server.kill()


if __name__ == "__main__":
    main()
