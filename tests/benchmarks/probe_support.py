"""What the two-process probes share: pinning a side to a core, running a side
under pyinstrument when it is the one being profiled, measuring and reporting
a side's CPU and datagrams per operation, and, for the floor probes, a UDP
socket on asyncio read either through asyncio's transport or as STT reads it.

Used by ``bulk_probe``, ``hs_probe``, ``rtt_probe``, ``echo_floor`` and
``handshake_floor``; it must not know what a probe measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import anyio

from .common import asyncio_wait_readable

Mark = tuple[float, int, int]
"""CPU time and UDP datagrams sent and received at one moment (:func:`mark`)."""


@dataclass(frozen=True)
class Side:
    """What one process measured per counted operation."""

    cpu_us: float
    sent: float
    received: float


def mark(node: Any) -> Mark:
    """This process's CPU time and the node's UDP datagram counts, now."""
    stats = node.get_stats()["udp"]
    return time.process_time(), stats["datagrams_sent"], stats["datagrams_received"]


def since(node: Any, start: Mark, count: int) -> Side:
    """CPU and datagrams per operation over the ``count`` operations since ``start``."""
    now = mark(node)
    return Side((now[0] - start[0]) * 1e6 / count, (now[1] - start[1]) / count,
                (now[2] - start[2]) / count)


def probe_arguments(doc: str | None, *, count: int, warmup: int,
                    what: str) -> argparse.ArgumentParser:
    """The options every latency probe takes: how many operations, how many to
    leave out first, the backend, and which side to profile."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=count, help=f"{what}s measured")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"{what}s left out first")
    parser.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), default="asyncio")
    parser.add_argument("--profile", choices=("", "client", "server"), default="")
    return parser


def print_report(backend: str, samples: list[float], count: int, what: str,
                 client: Side, server: Side, *, in_ms: bool = False) -> None:
    """The percentiles of sorted ``samples`` (seconds) and each side's figures."""
    scale, unit, digits = (1e3, "ms", 3) if in_ms else (1e6, "us", 0)
    p50 = samples[len(samples) // 2] * scale
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * scale
    print(f"{backend}: p50 {p50:.{digits}f} {unit}, p99 {p99:.{digits}f} {unit} "
          f"over {count} {what}s")
    for name, side in (("client", client), ("server", server)):
        print(f"  {name}: {side.cpu_us:.0f} us CPU per {what}, datagrams sent "
              f"{side.sent:.2f} / received {side.received:.2f} per {what}")


def pin_to_core(core: int) -> None:
    """Keep this process on ``core`` when the machine has two or more to choose from,
    so the two sides of a probe do not share one.

    Asks the machine, not this process's current set: a child forked by a process
    that already pinned itself inherits a set of one core, and must still move to
    its own (sharing a core makes a round trip about three times faster on the
    development machine, which would compare unlike with like).
    """
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    # A CPU set that excludes ``core`` (a container) raises: stay where we are then.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {core})


def run_side(main: Callable[[], Awaitable[Any]], backend: str, *, profiled: bool) -> Any:
    """``anyio.run(main)`` on ``backend``; with ``profiled``, under pyinstrument
    (the whole thread, so the loop's own work shows too), printing the tree after."""
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    backend = "asyncio" if backend == "uvloop" else backend
    if not profiled:
        return anyio.run(main, backend=backend, backend_options=options)
    import pyinstrument

    profiler = pyinstrument.Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        return anyio.run(main, backend=backend, backend_options=options)
    finally:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))


IO_STYLES = ("reader", "protocol")
"""How a floor probe reads its sockets: see :func:`open_udp`."""

R = TypeVar("R")


def floor_arguments(doc: str | None, *, count: int, warmup: int, what: str,
                    io_default: str, io_help: str) -> argparse.ArgumentParser:
    """The options every floor probe takes: how many operations, how many to leave
    out first, how many turns, the loop, and how the sockets are read."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=count, help=f"{what}s measured")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"{what}s left out first")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each variant runs, the variants taking turns")
    parser.add_argument("--backend", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--io", choices=IO_STYLES, default=io_default, help=io_help)
    return parser


def take_turns(variants: Sequence[str], rounds: int,
               measure: Callable[[str], R]) -> dict[str, list[R]]:
    """Each variant measured ``rounds`` times, the variants taking turns, so that a slow
    spell of the machine falls on all of them alike."""
    runs: dict[str, list[R]] = {variant: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            runs[variant].append(measure(variant))
    return runs


@contextlib.contextmanager
def server_process(target: Callable[..., None], *args: Any) -> Iterator[Connection]:
    """``target(*args, pipe)`` in a child process; yields this side's end of the pipe and
    reaps the child on the way out, killing it if it has not finished in 10 s."""
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.Process(target=target, args=(*args, theirs))
    server.start()
    try:
        yield ours
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.kill()


class ReaderTransport(asyncio.DatagramTransport):
    """A socket read as STT's UDP carrier reads it: a readiness callback that drains it.

    asyncio's own ``DatagramProtocol`` transport runs more Python per datagram
    (about 17 us more CPU per echoed datagram on this machine; on uvloop the two
    cost the same), so the floor probes use the cheaper path by default.
    """

    def __init__(self, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__(extra={"sockname": sock.getsockname()})
        self._sock = sock
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(2048)
            except BlockingIOError:
                return
            self._protocol.datagram_received(data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if addr is None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


async def open_udp(protocol: asyncio.DatagramProtocol, io: str, *,
                   local: tuple[str, int] | None = None,
                   remote: tuple[str, int] | None = None) -> asyncio.DatagramTransport:
    """A UDP socket bound to ``local`` or connected to ``remote``, read the ``io`` way."""
    if io == "protocol":
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: protocol, local_addr=local, remote_addr=remote)
        return transport
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if local is not None:
        sock.bind(local)
    if remote is not None:
        sock.connect(remote)
    transport = ReaderTransport(sock, protocol)
    protocol.connection_made(transport)
    return transport


async def serve_counted(pipe: Connection, port: int) -> float:
    """A floor probe's server half of the handshake over ``pipe``: send ``port``, wait for
    the client's warm-up to end, then for its count; returns this process's CPU per
    counted operation in microseconds."""
    pipe.send(port)
    await asyncio_wait_readable(pipe.fileno())
    pipe.recv()  # the client's warm-up is over
    start = time.process_time()
    await asyncio_wait_readable(pipe.fileno())
    count: int = pipe.recv()
    return (time.process_time() - start) * 1e6 / count
