"""Two-process probe: what a round trip costs before any protocol, step by step.

The round-trip target holds STT against a bare UDP echo whose server answers
inside the socket's reader callback. An STT application reads its message in a
task and every message is sealed and opened, so part of the distance is owed to
any design of that shape, in any library. This probe measures the steps on
asyncio (or uvloop), with client and server in separate processes pinned to
different cores, 64-byte messages:

- ``callback``: the bare echo (the server answers in ``datagram_received``);
- ``task``: the server's reader callback hands the datagram to a task, which
  sends the echo (one more turn of the loop on the server, as STT's has);
- ``task+aead``: that, with the client sealing each request and opening each
  echo and the server opening and sealing, AES-256-GCM from ``cryptography``
  with counter nonces, as STT's packets are (no framing, no ACKs, no state).

Each side reads its socket through asyncio's ``DatagramProtocol`` transport, as
the suite's bare echo does; ``--io reader`` reads it as STT's UDP carrier does
(a readiness callback that drains it), which costs less Python per datagram on
asyncio.

The variants take turns, ``--rounds`` times; it prints the median of each
variant's p50, p99 and CPU per round trip of each side, and each p50 as a
multiple of the bare echo's.

    .venv/bin/python -m tests.benchmarks.echo_floor [--count 5000] [--rounds 3] [--backend uvloop] \
        [--io reader]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .common import run_on_asyncio_loop
from .probe_support import (
    floor_arguments,
    open_udp,
    pin_to_core,
    serve_counted,
    server_process,
    take_turns,
)

HOST = "127.0.0.1"
MESSAGE = bytes(range(64))
KEY = bytes(32)  # a probe, not a secret: both processes need the same key
VARIANTS = ("callback", "task", "task+aead")


@dataclass(frozen=True)
class Result:
    """One variant's round trips (client side) and both sides' CPU per round trip."""

    p50_us: float
    p99_us: float
    client_cpu_us: float
    server_cpu_us: float


class _Sealer:
    """AES-256-GCM with a per-direction counter nonce, as a packet protection does."""

    def __init__(self) -> None:
        self._aead = AESGCM(KEY)
        self._sent = 0

    def seal(self, data: bytes) -> bytes:
        self._sent += 1
        return self._aead.encrypt(self._sent.to_bytes(12, "big"), data, None)

    def open(self, data: bytes, counter: int) -> bytes:
        return self._aead.decrypt(counter.to_bytes(12, "big"), data, None)


class _Server(asyncio.DatagramProtocol):
    """The echo server of every variant."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.sealer = _Sealer()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.variant == "callback":
            if self.transport is not None:
                self.transport.sendto(data, addr)
        else:
            self.inbox.put_nowait((data, addr))

    async def answer_forever(self) -> None:
        """The application task of the ``task`` variants."""
        while True:
            data, addr = await self.inbox.get()
            if self.variant == "task+aead":
                self.received += 1
                data = self.sealer.seal(self.sealer.open(data, self.received))
            if self.transport is not None:
                self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(data)


def _server_process(variant: str, io: str, backend: str, pipe: Connection) -> None:
    pin_to_core(1)

    async def serve() -> None:
        protocol = _Server(variant)
        transport = await open_udp(protocol, io, local=(HOST, 0))
        task = asyncio.ensure_future(protocol.answer_forever())
        pipe.send(await serve_counted(pipe, transport.get_extra_info("sockname")[1]))
        task.cancel()
        transport.close()

    run_on_asyncio_loop(backend, serve(), "the echo floor probe")


def _client(variant: str, io: str, backend: str, port: int, count: int, warmup: int,
            pipe: Connection) -> tuple[list[float], float]:
    pin_to_core(0)
    result: list[tuple[list[float], float]] = []

    async def exchange() -> None:
        loop = asyncio.get_running_loop()
        protocol = _Client()
        transport = await open_udp(protocol, io, remote=(HOST, port))
        sealer = _Sealer()
        samples: list[float] = []
        start_cpu = 0.0
        for i in range(warmup + count):
            if i == warmup:
                pipe.send("start")
                start_cpu = time.process_time()
            began = time.perf_counter()
            protocol.reply = loop.create_future()
            request = sealer.seal(MESSAGE) if variant == "task+aead" else MESSAGE
            transport.sendto(request)
            reply = await protocol.reply
            if variant == "task+aead":
                reply = sealer.open(reply, i + 1)
            samples.append(time.perf_counter() - began)
            if reply != MESSAGE:
                raise RuntimeError("the echo differs from the request")
        result.append((sorted(samples[warmup:]),
                       (time.process_time() - start_cpu) * 1e6 / count))
        pipe.send(count)
        transport.close()

    run_on_asyncio_loop(backend, exchange(), "the echo floor probe")
    return result[0]


def measure(variant: str, io: str, backend: str, count: int, warmup: int) -> Result:
    """One variant, server in a child process, client in this one."""
    with server_process(_server_process, variant, io, backend) as pipe:
        port: int = pipe.recv()
        samples, client_cpu = _client(variant, io, backend, port, count, warmup, pipe)
        server_cpu: float = pipe.recv()

    def percentile_us(q: float) -> float:
        return samples[min(len(samples) - 1, int(len(samples) * q))] * 1e6

    return Result(percentile_us(0.5), percentile_us(0.99), client_cpu, server_cpu)


def main() -> None:
    args = floor_arguments(
        __doc__, count=5000, warmup=200, what="round trip", io_default="protocol",
        io_help="how each side reads its socket: asyncio's transport (the suite's bare "
                "echo) or a draining readiness callback (STT's way)").parse_args()
    runs = take_turns(VARIANTS, args.rounds, lambda variant: measure(
        variant, args.io, args.backend, args.count, args.warmup))
    floor = statistics.median(r.p50_us for r in runs["callback"])
    print(f"{args.backend}, {args.io} I/O, medians of {args.rounds} runs of {args.count} "
          "round trips each:")
    for variant, results in runs.items():
        p50 = statistics.median(r.p50_us for r in results)
        print(f"  {variant:<10} p50 {p50:6.1f} us ({p50 / floor:.2f}x the bare echo; "
              f"runs {', '.join(f'{r.p50_us:.0f}' for r in results)}), "
              f"p99 {statistics.median(r.p99_us for r in results):6.1f} us, "
              f"CPU per round trip client "
              f"{statistics.median(r.client_cpu_us for r in results):5.1f} / server "
              f"{statistics.median(r.server_cpu_us for r in results):5.1f} us")


if __name__ == "__main__":
    main()
