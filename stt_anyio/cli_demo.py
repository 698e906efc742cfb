"""``stt demo``: two nodes in one process exchange messages and a verified file.

Owns the demo's script: a server node and a client node on 127.0.0.1
(free ports), optionally a :class:`~stt_anyio.cli_relay.LossyRelay` between
them, the handshake, a few messages on a ``chat`` stream, ``telemetry``
readings sent while a multi-megabyte ``file`` transfer runs (the protocol of
:mod:`stt_anyio.cli_transfer`, checked by SHA-256 on the receiving side), a
live progress bar and a summary table.

It must not know about click, the shared-seed rules or exit codes (the
command in :mod:`stt_anyio.cli` decides those from :class:`DemoResult`); it
uses only the public node API, like any application.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from stt_core import SessionStats
from stt_core.errors import SessionClosedError, STTError

from . import clock
from .cli_relay import LossyRelay, RelayStats
from .cli_transfer import (
    CHUNK_SIZE,
    FILE_PURPOSE,
    FileHeader,
    HashSink,
    Receipt,
    TransferError,
    receive_file,
    send_file,
)
from .node import Node, TransportName, open_node
from .session import Session, Stream

__all__ = ["MB", "DemoOptions", "DemoResult", "run_demo", "summary_table"]

MB = 1_000_000
"""One megabyte as the CLI counts it (``--megabytes``, MB/s): 10**6 bytes."""
SERVER_ID = b"demo-server"
CLIENT_ID = b"demo-client"
LOOPBACK_OVERRIDES = {"max_datagram_size": 1452, "close_timeout": 1.0}
"""Ethernet-sized datagrams (what a LAN would carry) and a short close."""
CHAT_LINES = ("hello from the client", "how is the link?", "sending you a file now")
TELEMETRY_READINGS = 5
TELEMETRY_INTERVAL = 0.05
"""Seconds between telemetry readings (they interleave with the file)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """What ``stt demo`` was asked to do."""

    shared_seed: bytes = field(repr=False)
    """The secret both nodes share."""
    megabytes: float = 8.0
    """Size of the file transfer in MB (10**6 bytes)."""
    loss: float = 0.0
    """Probability that the relay drops a datagram (0: no relay)."""
    loss_seed: int = 1
    """Seed of the relay's drop decisions (not a secret)."""
    transport: TransportName = "udp"
    timeout: float = 120.0
    """Seconds the whole demo may take before it is declared failed."""
    random_bytes: Callable[[int], bytes] = os.urandom
    """Source of the file's contents."""


@dataclass(slots=True, kw_only=True)
class DemoResult:
    """What happened; the command turns it into the summary and the exit code."""

    nbytes: int = 0
    expected_sha256: str = ""
    received: Receipt | None = None
    """What the server-side receiver computed and answered."""
    sender_verified: bool = False
    """The client got a receipt repeating its own digest."""
    handshake_time: float = 0.0
    transfer_time: float = 0.0
    client_stats: SessionStats = field(default_factory=SessionStats)
    server_stats: SessionStats = field(default_factory=SessionStats)
    node_drops: int = 0
    """Datagrams both endpoints dropped (bad, late or duplicate input)."""
    relay: RelayStats | None = None
    messages_exchanged: int = 0
    """Chat and telemetry messages that went out and came back."""
    errors: list[str] = field(default_factory=list)

    @property
    def sha256_ok(self) -> bool:
        """True only if the receiver's digest matched and the sender saw it say so."""
        return (self.received is not None and self.received.ok and self.sender_verified
                and self.received.sha256 == self.expected_sha256)

    @property
    def throughput(self) -> float:
        """File bytes per second, from the first byte queued to the receipt."""
        return self.nbytes / self.transfer_time if self.transfer_time > 0 else 0.0


class _ServerSide:
    """The server node's application: answer chat and telemetry, verify the file."""

    def __init__(self, result: DemoResult, console: Console,
                 on_received: Callable[[int], None]) -> None:
        self.result = result
        self.console = console
        self.on_received = on_received
        self.session: Session | None = None
        self.established = anyio.Event()

    async def run(self, node: Node) -> None:
        self.session = session = await node.accept()
        self.established.set()
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await session.accept_stream()
                except SessionClosedError:
                    return
                tg.start_soon(self._serve, stream)

    async def _serve(self, stream: Stream) -> None:
        try:
            if stream.purpose == FILE_PURPOSE:
                _, receipt = await receive_file(stream, HashSink(),
                                                on_progress=self.on_received)
                self.result.received = receipt
            elif stream.purpose == "chat":
                async for line in stream:
                    await stream.send(b"echo: " + line)
            else:
                async for reading in stream:
                    seq = json.loads(reading)["seq"]
                    await stream.send(f"ok {seq}".encode())
        except (STTError, TransferError, ValueError, KeyError) as exc:
            self.result.errors.append(f"server {stream.purpose} stream: {exc}")


async def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    """Run the whole demo on the current event loop; never raises for a failed transfer.

    Raises:
        STTError: the nodes could not connect (e.g. an authentication failure).
        TimeoutError: the demo took longer than ``options.timeout``.
    """
    result = DemoResult(nbytes=int(options.megabytes * MB))
    try:
        await _run(options, result, console)
    except TimeoutError:
        raise TimeoutError(f"the demo did not finish within {options.timeout:g} s") from None
    return result


async def _run(options: DemoOptions, result: DemoResult, console: Console) -> None:
    with anyio.fail_after(options.timeout):
        async with _node(options, server=True) as server, \
                _node(options, server=False) as client, anyio.create_task_group() as tg:
            target = server.local_addresses[options.transport]
            relay: LossyRelay | None = None
            if options.loss > 0:
                relay = await LossyRelay.open(target, loss=options.loss,
                                              seed=options.loss_seed)
                tg.start_soon(relay.run)
                console.print(f"impairment: UDP relay on {_fmt(relay.address)} drops "
                              f"{options.loss:.1%} of datagrams each way "
                              f"(loss seed {options.loss_seed})", soft_wrap=True)
                target = relay.address
            progress = _progress(console)
            receiving = progress.add_task("server receives", total=result.nbytes)
            server_side = _ServerSide(result, console,
                                      lambda n: progress.advance(receiving, n))
            tg.start_soon(server_side.run, server)
            session = await _connect(client, target, options, result, console)
            await server_side.established.wait()
            await _chat(session, result, console)
            with progress:
                await _file_and_telemetry(session, options, result, progress)
            _collect(result, session, server_side.session, server, client, relay)
            await session.close()
            if relay is not None:
                await relay.aclose()
            tg.cancel_scope.cancel()


def _node(options: DemoOptions, *, server: bool) -> AbstractAsyncContextManager[Node]:
    return open_node(node_id=SERVER_ID if server else CLIENT_ID,
                     shared_seed=options.shared_seed, host="127.0.0.1", port=0,
                     transport=options.transport, server_mode=server,
                     config_overrides=LOOPBACK_OVERRIDES)


async def _connect(client: Node, target: tuple[str, int], options: DemoOptions,
                   result: DemoResult, console: Console) -> Session:
    start = clock.now()
    session = await client.connect(target, peer_node_id=SERVER_ID,
                                   transport=options.transport)
    result.handshake_time = clock.now() - start
    console.print(f"handshake: {CLIENT_ID.decode()} -> {SERVER_ID.decode()} over "
                  f"{options.transport} in {result.handshake_time * 1000:.2f} ms, "
                  f"session {session.session_id.hex()}, peer identity verified",
                  soft_wrap=True)
    return session


async def _chat(session: Session, result: DemoResult, console: Console) -> None:
    """A few confirmed messages on ``chat``, each answered by the server."""
    stream = session.open_stream("chat")
    for line in CHAT_LINES:
        await stream.send(line.encode())
        reply = await stream.receive()
        result.messages_exchanged += 2
        console.print(f"[cyan]chat[/]      client: {escape(repr(line))}  "
                      f"server: {escape(repr(reply.decode()))}", soft_wrap=True)
    await stream.close()


async def _telemetry(session: Session, result: DemoResult, progress: Progress) -> None:
    """Readings on their own stream while the file is in flight (multiplexing)."""
    stream = session.open_stream("telemetry")
    for seq in range(TELEMETRY_READINGS):
        stats = session.stats
        reading = {"seq": seq, "srtt_ms": round(stats.smoothed_rtt * 1000, 3),
                   "cwnd": stats.congestion_window, "in_flight": stats.bytes_in_flight}
        await stream.send(json.dumps(reading).encode())
        answer = await stream.receive()
        result.messages_exchanged += 2
        progress.console.print(
            f"[magenta]telemetry[/] #{seq} srtt {reading['srtt_ms']} ms, cwnd "
            f"{stats.congestion_window:,} B, in flight {stats.bytes_in_flight:,} B  "
            f"server: {escape(repr(answer.decode()))}", soft_wrap=True)
        await anyio.sleep(TELEMETRY_INTERVAL)
    await stream.close()


async def _file_and_telemetry(session: Session, options: DemoOptions, result: DemoResult,
                              progress: Progress) -> None:
    data = options.random_bytes(result.nbytes)
    result.expected_sha256 = hashlib.sha256(data).hexdigest()
    header = FileHeader(name="demo.bin", size=len(data), sha256=result.expected_sha256)
    sending = progress.add_task("client sends", total=len(data))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_telemetry, session, result, progress)
        stream = session.open_stream(FILE_PURPOSE)
        start = clock.now()
        try:
            await send_file(stream, header, _chunks(data),
                            on_progress=lambda n: progress.advance(sending, n),
                            receipt_timeout=options.timeout)
        except (TransferError, STTError) as exc:
            result.errors.append(f"client file transfer: {exc}")
        else:
            result.sender_verified = True
        result.transfer_time = clock.now() - start


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for offset in range(0, len(data), CHUNK_SIZE):
        yield bytes(view[offset:offset + CHUNK_SIZE])


def _collect(result: DemoResult, session: Session, server_session: Session | None,
             server: Node, client: Node, relay: LossyRelay | None) -> None:
    result.client_stats = session.stats
    if server_session is not None:
        result.server_stats = server_session.stats
    result.node_drops = sum(sum(node.endpoint.stats.drops.values())
                            for node in (server, client))
    result.relay = relay.stats if relay is not None else None


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console)


def _fmt(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def summary_table(result: DemoResult, *, transport: str, backend: str) -> Table:
    """The final table: handshake, RTT, throughput, repair work and drops."""
    client, server = result.client_stats, result.server_stats
    table = Table(title="STT demo summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("transport / backend", f"{transport} / {backend}")
    table.add_row("handshake time", f"{result.handshake_time * 1000:.2f} ms")
    table.add_row("RTT min / smoothed",
                  f"{client.min_rtt * 1000:.3f} / {client.smoothed_rtt * 1000:.3f} ms")
    table.add_row("file size", f"{result.nbytes / MB:.2f} MB ({result.nbytes:,} bytes)")
    table.add_row("transfer time", f"{result.transfer_time:.3f} s")
    table.add_row("throughput", f"{result.throughput / MB:.2f} MB/s")
    table.add_row("messages (chat + telemetry)", str(result.messages_exchanged))
    table.add_row("retransmitted bytes (client / server)",
                  f"{client.retransmitted_bytes:,} / {server.retransmitted_bytes:,}")
    table.add_row("packets lost (client / server)",
                  f"{client.packets_lost:,} / {server.packets_lost:,}")
    if result.relay is not None:
        table.add_row("relay drops (to server / to client)",
                      f"{result.relay.dropped_to_server:,} / {result.relay.dropped_to_client:,}")
    table.add_row("datagrams dropped by the nodes", f"{result.node_drops:,}")
    table.add_row("SHA-256", "OK" if result.sha256_ok else "MISMATCH")
    return table
