"""Two-process round-trip probe: 64-byte request/response, CPU per round trip on each side.

The ``rtt`` case of the side-by-side suite (``run.py``) reports wall-clock
percentiles, which on a shared machine move by 2x between identical runs. This
probe runs the same exchange (the client writes on one stream, the server
echoes, the client waits for the echo) with client and server in separate
processes pinned to different cores, and also reports what changes less with
load: each side's CPU time (``time.process_time()``) per round trip and the
UDP datagrams each side sent and received per round trip (1.00 means every
ACK rode on a data packet). The first ``--warmup`` round trips are left out.

    .venv/bin/python -m tests.benchmarks.rtt_probe --backend asyncio --count 3000
    .venv/bin/python -m tests.benchmarks.rtt_probe --backend trio --profile server
    .venv/bin/python -m tests.benchmarks.rtt_probe --bytecodes --count 1000

``--bytecodes`` counts the Python bytecodes the server executes per round trip
(``sys.settrace`` with opcode events: slow, so the timings it prints are
meaningless, but the counts do not depend on the machine's load), in all and
from the moment its socket is read to the ``sendto`` of the echo.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from types import FrameType
from typing import Any

from stt_anyio import open_node
from stt_core.errors import STTError

from .probe_support import (
    Mark,
    Side,
    mark,
    pin_to_core,
    print_report,
    probe_arguments,
    run_side,
    since,
)

SEED = b"rtt probe shared seed"
REQUEST = bytes(range(64))


@dataclass(frozen=True)
class Options:
    count: int
    warmup: int
    backend: str
    profile: str
    bytecodes: bool = False


class BytecodeCounter:
    """Counts executed bytecodes, in all and from each socket read to the next send."""

    def __init__(self, node: Any) -> None:
        self.total = 0
        self.critical = 0
        self._read_at: int | None = None
        carrier = node._udp
        read_batch, try_send = carrier._read_batch, carrier.try_send

        def counted_read() -> int:
            if self._read_at is None:
                self._read_at = self.total
            return int(read_batch())

        def counted_send(data: bytes, addr: tuple[str, int]) -> bool:
            if self._read_at is not None:
                self.critical += self.total - self._read_at
                self._read_at = None
            return bool(try_send(data, addr))

        carrier._read_batch, carrier.try_send = counted_read, counted_send

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.total += 1
        return self._trace

    def start(self) -> None:
        self.total = self.critical = 0
        sys.settrace(self._trace)

    def stop(self, count: int) -> None:
        sys.settrace(None)
        print(f"server: {self.total / count:.0f} bytecodes per round trip, "
              f"{self.critical / count:.0f} of them from the socket read to the echo's sendto",
              flush=True)


def _server(options: Options, ready: Queue[Any], results: Queue[Any]) -> None:
    pin_to_core(1)

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"rtt-server", host="127.0.0.1") as node:
            ready.put(node.local_address)
            session = await node.accept()
            stream = await session.accept_stream()
            start: Mark = (0.0, 0, 0)
            echoed = 0
            counter = BytecodeCounter(node) if options.bytecodes else None
            try:
                async for message in stream:
                    await stream.write(message)
                    echoed += 1
                    if echoed == options.warmup:
                        if counter is not None:
                            counter.start()
                        start = mark(node)
                    elif echoed == options.warmup + options.count:
                        if counter is not None:
                            counter.stop(options.count)
                        results.put(since(node, start, options.count))
            except STTError:
                return

    run_side(main, options.backend, profiled=options.profile == "server")


def _client(options: Options, address: tuple[str, int]) -> tuple[list[float], Side]:
    pin_to_core(0)

    async def main() -> tuple[list[float], Side]:
        async with open_node(shared_seed=SEED, node_id=b"rtt-client",
                             server_mode=False) as node:
            session = await node.connect(address)
            stream = session.open_stream(purpose="rtt")
            samples: list[float] = []
            start: Mark = (0.0, 0, 0)
            for i in range(options.warmup + options.count):
                if i == options.warmup:
                    start = mark(node)
                began = time.perf_counter()
                await stream.write(REQUEST)
                reply = await stream.receive()
                samples.append(time.perf_counter() - began)
                if reply != REQUEST:
                    raise RuntimeError("the echo differs from the request")
            return sorted(samples[options.warmup:]), since(node, start, options.count)

    result: tuple[list[float], Side] = run_side(main, options.backend,
                                                profiled=options.profile == "client")
    return result


def main() -> None:
    parser = probe_arguments(__doc__, count=3000, warmup=200, what="round trip")
    parser.add_argument("--bytecodes", action="store_true",
                        help="count the server's bytecodes per round trip (slow)")
    args = parser.parse_args()
    options = Options(args.count, max(args.warmup, 1), args.backend, args.profile,
                      args.bytecodes)
    ready: Queue[Any] = multiprocessing.Queue()
    results: Queue[Any] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_server, args=(options, ready, results))
    server.start()
    try:
        samples, client = _client(options, tuple(ready.get(timeout=30)))
        served: Side = results.get(timeout=30)
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    print_report(options.backend, samples, options.count, "round trip", client, served)


if __name__ == "__main__":
    main()
