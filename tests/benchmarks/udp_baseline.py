"""Bare-UDP echo: the floor the small-message round trip is compared against, per event loop.

This module owns the baseline of the rtt case only: an echo server and a client that sends
``message_size`` bytes and awaits the echo, on the event loop the STT column it is compared
with runs on ("on the same event loop", as the performance issue puts it). On asyncio and
uvloop a plain ``DatagramProtocol``; on trio a ``trio.socket`` loop. No encryption, no
reliability, no framing: the target is an STT round trip within 1.5x of this. It must not
know about STT or aioquic.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any, cast

from .common import (
    BenchError,
    Link,
    Metrics,
    ServerInfo,
    Workload,
    asyncio_wait_command,
    pattern_bytes,
    percentile,
    run_on_asyncio_loop,
)

SUPPORTED_CASES = frozenset({"rtt"})
HOST = "127.0.0.1"


def run_role(
    role: str, backend: str, workload: Workload, link: Link, server: ServerInfo | None
) -> None:
    """Entry point called by ``common.child_entry`` in a fresh process."""
    if workload.case not in SUPPORTED_CASES:
        raise BenchError(f"bare UDP has no {workload.case!r} case")
    if role not in ("server", "client") or (role == "client" and server is None):
        raise BenchError(f"bad role {role!r} or missing server address")
    if backend == "trio":
        trio: Any = importlib.import_module("trio")
        if role == "server":
            trio.run(_trio_server, link)
        else:
            trio.run(_trio_client, workload, link, server)
        return
    main = _server(link) if role == "server" else _client(workload, link, cast(ServerInfo, server))
    run_on_asyncio_loop(backend, main, "the bare UDP baseline")


class _Echo(asyncio.DatagramProtocol):
    """Sends every datagram back where it came from."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Loop-specific transport classes need not subclass DatagramTransport: trust the loop.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


class _Waiter(asyncio.DatagramProtocol):
    """Hands each received datagram to whoever awaits ``reply``."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(data)


async def _server(link: Link) -> None:
    """Echo until the parent says stop."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
    port: int = transport.get_extra_info("sockname")[1]
    link.send_ready(ServerInfo((HOST, port)))
    await asyncio_wait_command(link)
    link.send_result({})
    transport.close()


async def _client(workload: Workload, link: Link, server: ServerInfo) -> None:
    """Round trips of ``message_size`` bytes.

    A lost datagram (unlikely on loopback) stalls the client until the parent's timeout fails
    the run: a retry timer here would cost the floor we are measuring.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Waiter, remote_addr=server.address
    )
    request = pattern_bytes(workload.message_size)
    samples: list[float] = []
    for i in range(workload.warmup + workload.iterations):
        protocol.reply = loop.create_future()
        start = time.perf_counter()
        transport.sendto(request)
        reply = await protocol.reply  # no wait_for: its extra task would slow the floor
        elapsed = time.perf_counter() - start
        if reply != request:
            raise BenchError("udp rtt: the echo differs from the request")
        if i >= workload.warmup:
            samples.append(elapsed)
    metrics: Metrics = {
        "rtt_p50_us": percentile(samples, 0.5) * 1e6,
        "rtt_p99_us": percentile(samples, 0.99) * 1e6,
    }
    link.send_result(metrics)
    await asyncio_wait_command(link)
    transport.close()


async def _trio_wait_command(link: Link) -> str:
    """Wait, without blocking trio, for the parent's next command."""
    trio: Any = importlib.import_module("trio")
    await trio.lowlevel.wait_readable(link.fileno())
    return link.recv_command()


async def _trio_server(link: Link) -> None:
    """Echo with ``trio.socket`` until the parent says stop."""
    trio: Any = importlib.import_module("trio")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((HOST, 0))
    port: int = sock.getsockname()[1]
    link.send_ready(ServerInfo((HOST, port)))

    async def echo() -> None:
        while True:
            data, addr = await sock.recvfrom(65536)
            await sock.sendto(data, addr)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        await _trio_wait_command(link)
        nursery.cancel_scope.cancel()
    link.send_result({})
    sock.close()


async def _trio_client(workload: Workload, link: Link, server: ServerInfo) -> None:
    """The asyncio client's round trips, with ``trio.socket``.

    The loop repeats the asyncio client's on purpose: sharing it would put one
    more ``await`` of a helper into every round trip of the floor being measured.
    """
    trio: Any = importlib.import_module("trio")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.connect(server.address)
    request = pattern_bytes(workload.message_size)
    samples: list[float] = []
    for i in range(workload.warmup + workload.iterations):
        start = time.perf_counter()
        await sock.send(request)
        reply = await sock.recv(65536)
        elapsed = time.perf_counter() - start
        if reply != request:
            raise BenchError("udp rtt: the echo differs from the request")
        if i >= workload.warmup:
            samples.append(elapsed)
    metrics: Metrics = {
        "rtt_p50_us": percentile(samples, 0.5) * 1e6,
        "rtt_p99_us": percentile(samples, 0.99) * 1e6,
    }
    link.send_result(metrics)
    await _trio_wait_command(link)
    sock.close()
