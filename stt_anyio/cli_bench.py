"""``stt bench``: loopback throughput and handshake latency, per transport and backend.

Owns one benchmark case (a transport on a backend, run inside one
``anyio.run``): a server node and a client node on 127.0.0.1, ``connects``
timed handshakes (each a fresh session, closed before the next; the median
is reported because the first connect pays for imports and caches), then one
bulk transfer on a fresh session, timed from the first byte queued until the
server's byte count comes back. And the table that compares the cases.

The bulk protocol is message-framed, as STT streams are: the client writes
:data:`CHUNK_SIZE`-byte messages (buffered path) for a size or a duration,
ends its direction of the stream, and the server answers with one 8-byte
big-endian count of the bytes it received. The throughput is that count over
the elapsed time, so it counts only data that arrived.

It must not know about click or the shared-seed rules; the tests in
``tests/benchmarks`` (a side-by-side comparison with other stacks) are
separate and heavier.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import anyio
import anyio.abc
from rich.table import Table

from stt_core import flavour
from stt_core.errors import SessionClosedError, StreamClosedError

from . import clock
from .node import Node, TransportName, open_node
from .session import Session, Stream

__all__ = [
    "DEFAULT_CONNECTS",
    "DEFAULT_MEGABYTES",
    "BenchCase",
    "BenchPlan",
    "BenchRow",
    "results_table",
    "run_case",
]

MB = 1_000_000
DEFAULT_MEGABYTES = 16.0
DEFAULT_CONNECTS = 20
QUICK_MEGABYTES = 2.0
QUICK_CONNECTS = 5
CHUNK_SIZE = 64 * 1024
COUNT_SIZE = 8
OVERRIDES = {"max_datagram_size": 1452, "close_timeout": 1.0}
"""Same loopback settings as ``stt demo``: Ethernet-sized datagrams, a short close."""
CASE_TIMEOUT = 300.0
"""Seconds one case may take before it is reported as failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchPlan:
    """How much work each case does."""

    nbytes: int | None
    """Bulk size in bytes, or None when ``seconds`` limits the bulk phase."""
    seconds: float | None
    connects: int

    @classmethod
    def build(cls, *, seconds: float | None, megabytes: float | None,
              connects: int | None, quick: bool) -> BenchPlan:
        """The plan from the command's options; ``quick`` shrinks the defaults only.

        Raises:
            ValueError: both ``seconds`` and ``megabytes`` given, or a value <= 0.
        """
        if seconds is not None and megabytes is not None:
            raise ValueError("give seconds or megabytes, not both")
        if (seconds is not None and seconds <= 0) or (megabytes is not None and megabytes <= 0) \
                or (connects is not None and connects < 1):
            raise ValueError("seconds and megabytes must be > 0, connects >= 1")
        if connects is None:
            connects = QUICK_CONNECTS if quick else DEFAULT_CONNECTS
        if seconds is not None:
            return cls(nbytes=None, seconds=seconds, connects=connects)
        if megabytes is None:
            megabytes = QUICK_MEGABYTES if quick else DEFAULT_MEGABYTES
        return cls(nbytes=max(1, int(megabytes * MB)), seconds=None, connects=connects)

    def describe(self) -> str:
        """One line for the table caption."""
        bulk = (f"{self.seconds:g} s" if self.seconds is not None
                else f"{(self.nbytes or 0) / MB:g} MB")
        return (f"bulk: {bulk} per case; handshake: median of {self.connects} connects; "
                f"stt_core: {flavour.describe()}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchCase:
    """One cell of the comparison."""

    transport: TransportName
    backend: str
    plan: BenchPlan
    shared_seed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchRow:
    """What one case measured."""

    transport: str
    backend: str
    handshake_median: float
    """Seconds, median over the plan's connects."""
    handshake_min: float
    nbytes: int
    """Bytes the server counted in the bulk phase."""
    elapsed: float
    """Seconds from the first byte queued to the count's arrival."""
    retransmitted_bytes: int

    @property
    def throughput(self) -> float:
        """Bytes per second of the bulk phase."""
        return self.nbytes / self.elapsed if self.elapsed > 0 else 0.0


async def _count_stream(stream: Stream) -> None:
    """Server side of the bulk protocol (a vanished client just ends it)."""
    count = 0
    try:
        async for message in stream:
            count += len(message)
        await stream.send(count.to_bytes(COUNT_SIZE, "big"))
    except (SessionClosedError, StreamClosedError):
        return


async def _serve(node: Node) -> None:
    """Accept every session; count the bytes of every stream it opens."""

    async def serve_session(session: Session) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await session.accept_stream()
                except SessionClosedError:
                    return
                tg.start_soon(_count_stream, stream)

    async with anyio.create_task_group() as tg:
        while True:
            tg.start_soon(serve_session, await node.accept())


async def _handshakes(client: Node, target: tuple[str, int], case: BenchCase) -> list[float]:
    times: list[float] = []
    for _ in range(case.plan.connects):
        start = clock.now()
        session = await client.connect(target, transport=case.transport)
        times.append(clock.now() - start)
        await session.close()
    return times


async def _bulk(client: Node, target: tuple[str, int],
                case: BenchCase) -> tuple[int, float, int]:
    """``(bytes counted by the server, elapsed seconds, retransmitted bytes)``."""
    session = await client.connect(target, transport=case.transport)
    stream = session.open_stream("bench")
    chunk = os.urandom(CHUNK_SIZE)
    plan = case.plan
    start = clock.now()
    sent = 0
    while True:
        if plan.nbytes is not None:
            if sent >= plan.nbytes:
                break
            piece = chunk[:plan.nbytes - sent]
        elif clock.now() - start >= (plan.seconds or 0.0):
            break
        else:
            piece = chunk
        await stream.write(piece)
        sent += len(piece)
    await stream.close()
    count = int.from_bytes(await stream.receive(), "big")
    elapsed = clock.now() - start
    retransmitted = session.stats.retransmitted_bytes
    await session.close()
    return count, elapsed, retransmitted


async def run_case(case: BenchCase) -> BenchRow:
    """Run one case on the current event loop (its backend is ``case.backend``).

    Raises:
        STTError: a connect failed.
        TimeoutError: the case took longer than :data:`CASE_TIMEOUT`.
    """
    with anyio.fail_after(CASE_TIMEOUT):
        async with open_node(node_id=b"bench-server", shared_seed=case.shared_seed,
                             transport=case.transport, config_overrides=OVERRIDES) as server, \
                open_node(node_id=b"bench-client", shared_seed=case.shared_seed,
                          transport=case.transport, server_mode=False,
                          config_overrides=OVERRIDES) as client, \
                anyio.create_task_group() as tg:
            tg.start_soon(_serve, server)
            target = server.local_addresses[case.transport]
            times = await _handshakes(client, target, case)
            nbytes, elapsed, retransmitted = await _bulk(client, target, case)
            tg.cancel_scope.cancel()
    return BenchRow(transport=case.transport, backend=case.backend,
                    handshake_median=statistics.median(times), handshake_min=min(times),
                    nbytes=nbytes, elapsed=elapsed, retransmitted_bytes=retransmitted)


def results_table(rows: list[BenchRow], plan: BenchPlan) -> Table:
    """The comparison: one row per case."""
    table = Table(title="STT loopback benchmark", caption=plan.describe())
    table.add_column("backend")
    table.add_column("transport")
    table.add_column("handshake ms\nmedian / min", justify="right")
    table.add_column("bulk MB", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("resent\nbytes", justify="right")
    for row in rows:
        table.add_row(row.backend, row.transport,
                      f"{row.handshake_median * 1000:.2f} / {row.handshake_min * 1000:.2f}",
                      f"{row.nbytes / MB:.1f}", f"{row.elapsed:.2f}",
                      f"{row.throughput / MB:.2f}", f"{row.retransmitted_bytes:,}")
    return table
