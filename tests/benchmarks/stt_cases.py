"""The STT side of the side-by-side benchmark: every case, on the public ``stt_anyio`` API.

This module owns how each workload of ``common.Workload`` is carried out with
``stt_anyio.open_node``, ``Node.connect``/``accept``, ``Session.open_stream``/``accept_stream``
and ``Stream.write``/``send``/``receive``, on asyncio, trio or uvloop through anyio. It uses
only public names, so the numbers are what an application gets. It must not know about aioquic
or about how processes are started and measured (``common`` does that).

STT streams carry messages, not bytes, so the bulk protocol is message-framed: the client's
first message on a stream is the 8-byte big-endian count of bytes that follow, then
``chunk_size`` messages; the server replies with one 8-byte message, the count it received.
Settings that differ from the ``Config`` defaults: ``max_datagram_size`` (with
``pmtu_probe_limit`` pinned to it) and ``idle_timeout``
follow the case, exactly as for aioquic.
"""

from __future__ import annotations

import functools
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import anyio
import anyio.abc

from stt_anyio import Node, Session, Stream, open_node
from stt_core.errors import SessionClosedError, StreamClosedError

from .common import (
    BenchError,
    Link,
    Metrics,
    MiB,
    Progress,
    ServerInfo,
    StallWatch,
    Workload,
    check_count,
    cpu_seconds,
    pattern_bytes,
    percentile,
    rss_bytes,
    server_metrics,
)

SUPPORTED_CASES = frozenset({"handshake", "bulk", "streams", "rtt", "memory"})
HOST = "127.0.0.1"
SHARED_SEED = b"bench-seed-1234"
SERVER_ID = b"bench-server"
CLIENT_ID = b"bench-client"
CONNECT_TIMEOUT = 10.0
"""Seconds one connect may take before the run fails."""
COUNT_SIZE = 8
"""Bytes of the count messages of the bulk protocol."""


def run_role(
    role: str, backend: str, workload: Workload, link: Link, server: ServerInfo | None
) -> None:
    """Entry point called by ``common.child_entry`` in a fresh process."""
    if workload.case not in SUPPORTED_CASES:
        raise BenchError(f"stt: unknown case {workload.case!r}")
    main: Callable[[], Awaitable[None]]
    if role == "server":
        main = functools.partial(_server, workload, link)
    elif role == "client" and server is not None:
        main = functools.partial(_client, workload, link, server)
    else:
        raise BenchError(f"bad role {role!r} or missing server address")
    if backend == "uvloop":
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    elif backend in ("asyncio", "trio"):
        anyio.run(main, backend=backend)
    else:
        raise BenchError(f"STT runs on asyncio, trio or uvloop, not {backend!r}")


def _open_node(workload: Workload, *, server_mode: bool) -> AbstractAsyncContextManager[Node]:
    """``stt_anyio.open_node`` with this workload's settings."""
    return open_node(
        node_id=SERVER_ID if server_mode else CLIENT_ID,
        shared_seed=SHARED_SEED,
        host=HOST,
        port=0,
        transport="udp",
        server_mode=server_mode,
        config_overrides={
            "max_datagram_size": workload.datagram_size,
            # Path MTU discovery stays at the case's size: a 1200-byte case
            # compares like with like instead of growing to 64 KiB datagrams.
            "pmtu_probe_limit": workload.datagram_size,
            "idle_timeout": workload.idle_timeout,
        },
    )


async def _wait_command(link: Link) -> str:
    """Wait, on whichever loop anyio runs, for the parent's next command."""
    await anyio.wait_readable(link.fileno())
    return link.recv_command()


# --------------------------------------------------------------------------- server


async def _serve_stream(workload: Workload, stream: Stream) -> None:
    """Echo each message (rtt), or count the announced bytes and reply with the count."""
    try:
        if workload.case == "rtt":
            async for message in stream:
                await stream.write(message)
        else:
            expected = int.from_bytes(await stream.receive(), "big")
            count = 0
            while count < expected:
                count += len(await stream.receive())
            await stream.send(count.to_bytes(COUNT_SIZE, "big"), timeout=60.0)
    except (StreamClosedError, SessionClosedError):
        return


async def _serve_session(workload: Workload, session: Session) -> None:
    """Serve every stream the client opens, until the session ends."""
    try:
        async with anyio.create_task_group() as tg:
            while True:
                stream = await session.accept_stream()
                tg.start_soon(_serve_stream, workload, stream)
    except SessionClosedError:
        return


class _Acceptor:
    """Accepts sessions for the server and counts them."""

    __slots__ = ("accepted", "sessions")

    def __init__(self) -> None:
        self.accepted = 0
        self.sessions: list[Session] = []

    async def run(self, node: Node, workload: Workload, tg: anyio.abc.TaskGroup) -> None:
        """Accept forever; streams get served, idle sessions are kept (memory case)."""
        while True:
            session = await node.accept()
            self.accepted += 1
            if workload.case == "memory":
                self.sessions.append(session)
            elif workload.case != "handshake":
                tg.start_soon(_serve_session, workload, session)

    async def wait_for(self, expected: int, limit: float = 5.0) -> None:
        """Give sessions whose last handshake message is still in flight a moment."""
        with anyio.move_on_after(limit):
            while self.accepted < expected:
                await anyio.sleep(0.05)


async def _server(workload: Workload, link: Link) -> None:
    """Serve until the parent says stop; measure CPU and memory between ready and stop."""
    acceptor = _Acceptor()
    async with _open_node(workload, server_mode=True) as node, anyio.create_task_group() as tg:
        tg.start_soon(acceptor.run, node, workload, tg)
        if workload.tracemalloc:
            tracemalloc.start()
        gc.collect()
        rss0, traced0, cpu0 = rss_bytes(), tracemalloc.get_traced_memory()[0], cpu_seconds()
        link.send_ready(ServerInfo(node.local_address))
        await _wait_command(link)
        if workload.case in ("handshake", "memory"):
            await acceptor.wait_for(workload.sessions)
        cpu = cpu_seconds() - cpu0
        gc.collect()
        rss_delta = rss_bytes() - rss0
        traced_delta = tracemalloc.get_traced_memory()[0] - traced0
        metrics = server_metrics(workload, cpu, rss_delta, traced_delta, acceptor.accepted)
        link.send_result(metrics)
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- client


async def _client(workload: Workload, link: Link, server: ServerInfo) -> None:
    """Run the workload, report, then hold everything open until the parent says stop."""
    async with _open_node(workload, server_mode=False) as node:
        if workload.case == "memory":
            await _client_memory(workload, link, node, server)
            return
        if workload.case == "handshake":
            metrics = await _client_handshakes(workload, node, server)
        else:
            session = await node.connect(server.address, timeout=CONNECT_TIMEOUT)
            progress = Progress(f"stt {workload.case}")
            if workload.case == "rtt":
                work = functools.partial(_client_rtt, workload, session, progress)
            else:
                work = functools.partial(_client_bulk, workload, session, progress)
            metrics = await _guarded(work, progress)
        link.send_result(metrics)
        await _wait_command(link)


async def _guarded(work: Callable[[], Awaitable[Metrics]], progress: Progress) -> Metrics:
    """Run ``work``; fail with a clear error if ``progress`` stalls (see ``common.Progress``)."""
    result: list[Metrics] = []
    watch = StallWatch(progress)
    async with anyio.create_task_group() as tg:

        async def body() -> None:
            result.append(await work())
            tg.cancel_scope.cancel()

        tg.start_soon(body)
        while True:
            await anyio.sleep(1.0)
            watch.check()
    return result[0]


async def _client_handshakes(workload: Workload, node: Node, server: ServerInfo) -> Metrics:
    """Sequential connects; each session is closed in the background once established.

    Why in the background: a graceful close waits for the peer's acknowledgement, which is a
    round trip that is not part of the handshake (aioquic's sessions are closed the same way).
    """
    latencies: list[float] = []
    cpu0 = cpu_seconds()
    async with anyio.create_task_group() as tg:
        for _ in range(workload.sessions):
            start = time.perf_counter()
            session = await node.connect(server.address, timeout=CONNECT_TIMEOUT)
            latencies.append(time.perf_counter() - start)
            tg.start_soon(session.close)
    cpu = cpu_seconds() - cpu0
    return {
        "handshake_ms": percentile(latencies, 0.5) * 1000,
        "handshake_p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_ms_per_handshake": cpu * 1000 / workload.sessions,
    }


async def _send_counted(
    stream: Stream, nbytes: int, payload: bytes, counts: list[int], progress: Progress
) -> None:
    """Announce ``nbytes``, write them as messages, append the count the server replies."""
    await stream.write(nbytes.to_bytes(COUNT_SIZE, "big"))
    view = memoryview(payload)
    remaining = nbytes
    while remaining > 0:
        n = min(remaining, len(view))
        await stream.write(payload if n == len(view) else view[:n].tobytes())
        remaining -= n
        progress.done += n
    reply = await stream.receive()
    counts.append(int.from_bytes(reply, "big"))
    progress.done += 1


async def _client_bulk(workload: Workload, session: Session, progress: Progress) -> Metrics:
    """Goodput and sender CPU of ``total_bytes`` over ``streams`` parallel streams."""
    per_stream, rest = divmod(workload.total_bytes, workload.streams)
    if rest:
        raise BenchError("total_bytes must divide evenly between the streams")
    payload = pattern_bytes(min(workload.chunk_size, per_stream))
    streams = [session.open_stream(purpose="bulk") for _ in range(workload.streams)]
    counts: list[int] = []
    cpu0, start = cpu_seconds(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for stream in streams:
            tg.start_soon(_send_counted, stream, per_stream, payload, counts, progress)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    check_count("bytes acknowledged by the receiver", workload.total_bytes, sum(counts))
    mib = workload.total_bytes / MiB
    stats = session.stats
    return {
        "goodput_mib_s": mib / elapsed,
        "client_cpu_ms_per_mib": cpu * 1000 / mib,
        "datagram_bytes": float(workload.datagram_size),
        "packets_lost": float(stats.packets_lost),
        "spurious_losses": float(stats.spurious_losses),
        "congestion_window_kib": stats.congestion_window / 1024,
    }


async def _client_rtt(workload: Workload, session: Session, progress: Progress) -> Metrics:
    """Request/response round trips of ``message_size`` bytes on one stream."""
    stream = session.open_stream(purpose="rtt")
    request = pattern_bytes(workload.message_size)
    samples: list[float] = []
    for i in range(workload.warmup + workload.iterations):
        start = time.perf_counter()
        await stream.write(request)
        reply = await stream.receive()
        elapsed = time.perf_counter() - start
        if reply != request:
            raise BenchError("rtt: the echo differs from the request")
        if i >= workload.warmup:
            samples.append(elapsed)
        progress.done = i + 1
    return {
        "rtt_p50_us": percentile(samples, 0.5) * 1e6,
        "rtt_p99_us": percentile(samples, 0.99) * 1e6,
    }


async def _client_memory(
    workload: Workload, link: Link, node: Node, server: ServerInfo
) -> None:
    """Open ``sessions`` sessions from one node, keep them idle until stop."""
    limiter = anyio.CapacityLimiter(workload.connect_concurrency)
    sessions: list[Session] = []

    async def open_one() -> None:
        async with limiter:
            sessions.append(await node.connect(server.address, timeout=CONNECT_TIMEOUT))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(workload.sessions):
            tg.start_soon(open_one)
    check_count("client sessions", workload.sessions, len(sessions))
    link.send_result({"connect_all_s": time.perf_counter() - start})
    await _wait_command(link)
