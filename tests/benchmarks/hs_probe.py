"""Two-process handshake probe: CPU, datagrams and loop wake-ups per handshake on each side.

The ``handshake`` case of the side-by-side suite (``run.py``) reports wall-clock
percentiles, which move by 2x between identical runs on a shared machine. This
probe runs the same workload (sequential ``connect``, each session closed in
the background once established) with client and server in separate processes
pinned to different cores, and reports per handshake what changes less with
load: each side's CPU time (``time.process_time()``, closing included) and the
UDP datagrams each side sent and received. The first ``--warmup`` handshakes
are left out. ``--profile client|server`` runs that side under pyinstrument.

``--split`` separates the handshake from the close: the counted sessions are
opened one after another and held, then closed one after another, and each
side's CPU is reported for the two phases apart (connect to established, then
close to closed). Without it, the figures are the whole lifecycle, as in the
suite.

    .venv/bin/python -m tests.benchmarks.hs_probe --backend asyncio --count 1000
    .venv/bin/python -m tests.benchmarks.hs_probe --backend asyncio --count 1000 --split
    .venv/bin/python -m tests.benchmarks.hs_probe --backend trio --profile server
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import anyio

from stt_anyio import open_node

from .probe_support import (
    Side,
    mark,
    pin_to_core,
    print_report,
    probe_arguments,
    run_side,
    server_process,
    since,
)

SEED = b"handshake probe shared seed"


@dataclass(frozen=True)
class Options:
    count: int
    warmup: int
    backend: str
    profile: str
    split: bool = False


async def _command(pipe: Connection) -> str:
    await anyio.wait_readable(pipe.fileno())
    command: str = pipe.recv()
    return command


def _server(options: Options, pipe: Connection) -> None:
    pin_to_core(1)

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"hs-server", host="127.0.0.1") as node, \
                anyio.create_task_group() as tg:

            async def accept_forever() -> None:
                while True:
                    await node.accept()

            tg.start_soon(accept_forever)
            pipe.send(node.local_address)
            await _command(pipe)  # warm-up done
            start = mark(node)
            if options.split:
                await _command(pipe)  # every counted session established
                pipe.send(since(node, start, options.count))
                start = mark(node)
            await _command(pipe)  # every counted session closed
            pipe.send(since(node, start, options.count))
            tg.cancel_scope.cancel()

    run_side(main, options.backend, profiled=options.profile == "server")


def _client(options: Options, pipe: Connection) -> tuple[list[float], Side]:
    pin_to_core(0)
    address = pipe.recv()
    if options.split:
        return _client_split(options, pipe, address)

    async def main() -> tuple[list[float], Side]:
        async with open_node(shared_seed=SEED, node_id=b"hs-client",
                             server_mode=False) as node:
            samples: list[float] = []
            start = mark(node)
            async with anyio.create_task_group() as tg:
                for i in range(options.warmup + options.count):
                    if i == options.warmup:
                        pipe.send("start")
                        start = mark(node)
                    began = time.perf_counter()
                    session = await node.connect(address)
                    samples.append(time.perf_counter() - began)
                    tg.start_soon(session.close)
            side = since(node, start, options.count)
            pipe.send("stop")
            return sorted(samples[options.warmup:]), side

    result: tuple[list[float], Side] = run_side(main, options.backend,
                                                profiled=options.profile == "client")
    return result


def _client_split(options: Options, pipe: Connection,
                  address: tuple[str, int]) -> tuple[list[float], Side]:
    """``--split``: the counted sessions opened and held, then closed one by one;
    the client's CPU per handshake is returned and its CPU per close printed."""

    async def main() -> tuple[list[float], Side]:
        async with open_node(shared_seed=SEED, node_id=b"hs-client",
                             server_mode=False) as node:
            async with anyio.create_task_group() as tg:
                for _ in range(options.warmup):
                    tg.start_soon((await node.connect(address)).close)
            pipe.send("start")
            samples: list[float] = []
            held = []
            start = mark(node)
            for _ in range(options.count):
                began = time.perf_counter()
                held.append(await node.connect(address))
                samples.append(time.perf_counter() - began)
            opened = since(node, start, options.count)
            pipe.send("established")
            start = mark(node)
            for session in held:
                await session.close()
            closed = since(node, start, options.count)
            pipe.send("stop")
            print(f"  client close: {closed.cpu_us:.0f} us CPU per close, datagrams sent "
                  f"{closed.sent:.2f} / received {closed.received:.2f} per close")
            return sorted(samples), opened

    result: tuple[list[float], Side] = run_side(main, options.backend,
                                                profiled=options.profile == "client")
    return result


def main() -> None:
    parser = probe_arguments(__doc__, count=1000, warmup=50, what="handshake")
    parser.add_argument("--split", action="store_true",
                        help="measure the handshakes and the closes apart")
    args = parser.parse_args()
    options = Options(args.count, max(args.warmup, 1), args.backend, args.profile,
                      args.split)
    with server_process(_server, options) as pipe:
        samples, client = _client(options, pipe)
        served: Side = pipe.recv()
        if options.split:
            closed: Side = pipe.recv()
            print(f"  server close: {closed.cpu_us:.0f} us CPU per close, datagrams sent "
                  f"{closed.sent:.2f} / received {closed.received:.2f} per close")
    print_report(options.backend, samples, options.count, "handshake", client, served,
                 in_ms=True)


if __name__ == "__main__":
    main()
