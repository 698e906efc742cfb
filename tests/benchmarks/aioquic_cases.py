"""The aioquic side of the side-by-side benchmark: every case, on aioquic's asyncio API.

This module owns how each workload of ``common.Workload`` is carried out with
``aioquic.asyncio.connect``/``serve``: a self-signed certificate made at server start (the
client trusts exactly that certificate and verifies it, as a real client would), ALPN
``bench``, one QUIC stream per logical stream, and byte counts checked at both ends. It must
not know about STT or about how processes are started and measured (``common`` does that).

Settings that differ from aioquic's defaults, and why:

- ``max_data`` is 16 MiB and ``max_stream_data`` 1 MiB, STT's default session and stream
  receive windows, so that flow control does not decide the comparison;
- ``max_datagram_size`` follows the case (1200 bytes or the largest the path allows), but
  never above ``AIOQUIC_MAX_DATAGRAM``: aioquic writes STREAM and CRYPTO frame lengths as
  2-byte varints (``push_uint16(len | 0x4000)`` in ``quic/connection.py``), so a frame's data
  must stay under 16384 bytes; with larger datagrams the peer fails to parse the frame and
  closes the connection (observed with aioquic 1.2-1.7 from 16416 bytes up);
- ``idle_timeout`` follows the case (raised for the memory case, whose connects take a while).

aioquic's stream writer has no backpressure (its send buffer grows without limit), so the
bulk cases hand it the data in ``chunk_size`` pieces, yielding to the loop between pieces.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .common import (
    BenchError,
    Link,
    Metrics,
    MiB,
    Progress,
    ServerInfo,
    Workload,
    asyncio_guard,
    asyncio_wait_command,
    check_count,
    cpu_seconds,
    pattern_bytes,
    percentile,
    rss_bytes,
    run_on_asyncio_loop,
    server_metrics,
)

SUPPORTED_CASES = frozenset({"handshake", "bulk", "streams", "rtt", "memory"})
ALPN = "bench"
HOST = "127.0.0.1"
SERVER_NAME = "localhost"
MAX_DATA = 16 * MiB
MAX_STREAM_DATA = 1 * MiB
AIOQUIC_MAX_DATAGRAM = 16384
"""Largest datagram aioquic handles (see the module docstring)."""


def run_role(
    role: str, backend: str, workload: Workload, link: Link, server: ServerInfo | None
) -> None:
    """Entry point called by ``common.child_entry`` in a fresh process."""
    if workload.case not in SUPPORTED_CASES:
        raise BenchError(f"aioquic: unknown case {workload.case!r}")
    if role == "server":
        run_on_asyncio_loop(backend, _server(workload, link), "aioquic")
    elif role == "client":
        if server is None:
            raise BenchError("aioquic client started without a server address")
        run_on_asyncio_loop(backend, _client(workload, link, server), "aioquic")
    else:
        raise BenchError(f"unknown role {role!r}")


# --------------------------------------------------------------------------- credentials


def make_certificate() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 key and a one-day self-signed certificate for localhost/127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _configuration(workload: Workload, *, is_client: bool) -> QuicConfiguration:
    """The QUIC settings both ends share for this workload (see the module docstring)."""
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        max_datagram_size=datagram_size(workload),
        idle_timeout=workload.idle_timeout,
        max_data=MAX_DATA,
        max_stream_data=MAX_STREAM_DATA,
    )


def datagram_size(workload: Workload) -> int:
    """The datagram size aioquic actually uses for this workload."""
    return min(workload.datagram_size, AIOQUIC_MAX_DATAGRAM)


def _free_udp_port() -> int:
    """A loopback UDP port nobody uses now (``serve`` takes a port, not a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- server


class _HandshakeCounter:
    """Counts completed handshakes, so the server can check it saw every session."""

    __slots__ = ("completed",)

    def __init__(self) -> None:
        self.completed = 0

    def protocol_factory(self) -> Callable[..., QuicConnectionProtocol]:
        """A ``create_protocol`` for ``serve`` whose connections report to this counter."""
        counter = self

        class CountingProtocol(QuicConnectionProtocol):
            def quic_event_received(self, event: QuicEvent) -> None:
                if isinstance(event, HandshakeCompleted):
                    counter.completed += 1
                super().quic_event_received(event)

        return CountingProtocol


async def _serve_stream(
    workload: Workload, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Echo fixed-size requests (rtt) or count bytes to EOF and reply with the count."""
    if workload.case == "rtt":
        while True:
            try:
                request = await reader.readexactly(workload.message_size)
            except asyncio.IncompleteReadError:
                break
            writer.write(request)
    else:
        count = 0
        while chunk := await reader.read(MiB):
            count += len(chunk)
        writer.write(count.to_bytes(8, "big"))
    writer.write_eof()


async def _await_handshakes(counter: _HandshakeCounter, expected: int) -> None:
    """Give the last handshakes a moment to finish on this side.

    Why: the client counts a session up when it has sent its Finished; the server counts it
    when that Finished arrives, and a Finished lost on loopback (a full receive buffer) is
    only repeated after a probe timeout.
    """
    deadline = time.monotonic() + 5.0
    while counter.completed < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _server(workload: Workload, link: Link) -> None:
    """Serve until the parent says stop; measure CPU and memory between ready and stop."""
    key, cert = make_certificate()
    config = _configuration(workload, is_client=False)
    config.certificate = cert
    config.private_key = key
    counter = _HandshakeCounter()
    tasks: set[asyncio.Task[None]] = set()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(_serve_stream(workload, reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    port = _free_udp_port()
    quic_server = await serve(
        HOST,
        port,
        configuration=config,
        create_protocol=counter.protocol_factory(),
        stream_handler=on_stream,
    )
    if workload.tracemalloc:
        tracemalloc.start()
    gc.collect()
    rss0, traced0, cpu0 = rss_bytes(), tracemalloc.get_traced_memory()[0], cpu_seconds()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    link.send_ready(ServerInfo((HOST, port), cert_pem))
    await asyncio_wait_command(link)
    if workload.case in ("handshake", "memory"):
        await _await_handshakes(counter, workload.sessions)
    cpu = cpu_seconds() - cpu0
    gc.collect()
    rss_delta = rss_bytes() - rss0
    traced_delta = tracemalloc.get_traced_memory()[0] - traced0
    link.send_result(server_metrics(workload, cpu, rss_delta, traced_delta, counter.completed))
    quic_server.close()


# --------------------------------------------------------------------------- client


def _client_configuration(workload: Workload, server: ServerInfo) -> QuicConfiguration:
    """Client settings: trust exactly the server's fresh certificate, and verify it."""
    config = _configuration(workload, is_client=True)
    config.server_name = SERVER_NAME
    config.verify_mode = ssl.CERT_REQUIRED
    config.cadata = server.extra
    return config


async def _client(workload: Workload, link: Link, server: ServerInfo) -> None:
    """Run the workload, report, then hold everything open until the parent says stop."""
    config = _client_configuration(workload, server)
    host, port = server.address
    if workload.case == "memory":
        await _client_memory(workload, link, config, host, port)
        return
    if workload.case == "handshake":
        metrics = await _client_handshakes(workload, config, host, port)
    else:
        async with connect(host, port, configuration=config) as conn:
            progress = Progress(f"aioquic {workload.case}")
            if workload.case == "rtt":
                work = _client_rtt(workload, conn, progress)
            else:
                work = _client_bulk(workload, conn, progress)
            metrics = await asyncio_guard(work, progress)
    link.send_result(metrics)
    await asyncio_wait_command(link)


async def _client_handshakes(
    workload: Workload, config: QuicConfiguration, host: str, port: int
) -> Metrics:
    """Sequential connects; each session is closed in the background once established.

    Why in the background: aioquic's close waits out a draining period of three PTOs, which
    is idle time and not part of the handshake.
    """
    latencies: list[float] = []
    closing: set[asyncio.Future[bool | None]] = set()
    cpu0 = cpu_seconds()
    for _ in range(workload.sessions):
        start = time.perf_counter()
        context = connect(host, port, configuration=config)
        await context.__aenter__()
        latencies.append(time.perf_counter() - start)
        closing.add(asyncio.ensure_future(context.__aexit__(None, None, None)))
    await asyncio.gather(*closing)
    cpu = cpu_seconds() - cpu0
    return {
        "handshake_ms": percentile(latencies, 0.5) * 1000,
        "handshake_p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_ms_per_handshake": cpu * 1000 / workload.sessions,
    }


async def _send_counted(
    conn: QuicConnectionProtocol, nbytes: int, payload: bytes, progress: Progress
) -> int:
    """Send ``nbytes`` on a new stream, close it, return the count the server replies."""
    reader, writer = await conn.create_stream()
    view = memoryview(payload)
    remaining = nbytes
    while remaining > 0:
        n = min(remaining, len(view))
        writer.write(view[:n])
        remaining -= n
        await asyncio.sleep(0)
    writer.write_eof()
    reply = await reader.read()
    progress.done += 1  # the writes only queue (no backpressure): count the replies
    return int.from_bytes(reply, "big")


async def _client_bulk(
    workload: Workload, conn: QuicConnectionProtocol, progress: Progress
) -> Metrics:
    """Goodput and sender CPU of ``total_bytes`` over ``streams`` parallel streams."""
    per_stream, rest = divmod(workload.total_bytes, workload.streams)
    if rest:
        raise BenchError("total_bytes must divide evenly between the streams")
    payload = pattern_bytes(min(workload.chunk_size, per_stream))
    cpu0, start = cpu_seconds(), time.perf_counter()
    counts = await asyncio.gather(
        *(_send_counted(conn, per_stream, payload, progress) for _ in range(workload.streams))
    )
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    check_count("bytes acknowledged by the receiver", workload.total_bytes, sum(counts))
    mib = workload.total_bytes / MiB
    return {
        "goodput_mib_s": mib / elapsed,
        "client_cpu_ms_per_mib": cpu * 1000 / mib,
        "datagram_bytes": float(datagram_size(workload)),
    }


async def _client_rtt(
    workload: Workload, conn: QuicConnectionProtocol, progress: Progress
) -> Metrics:
    """Request/response round trips of ``message_size`` bytes on one stream."""
    reader, writer = await conn.create_stream()
    request = pattern_bytes(workload.message_size)
    samples: list[float] = []
    for i in range(workload.warmup + workload.iterations):
        start = time.perf_counter()
        writer.write(request)
        reply = await reader.readexactly(workload.message_size)
        elapsed = time.perf_counter() - start
        if reply != request:
            raise BenchError("rtt: the echo differs from the request")
        if i >= workload.warmup:
            samples.append(elapsed)
        progress.done = i + 1
    writer.write_eof()
    return {
        "rtt_p50_us": percentile(samples, 0.5) * 1e6,
        "rtt_p99_us": percentile(samples, 0.99) * 1e6,
    }


async def _client_memory(
    workload: Workload, link: Link, config: QuicConfiguration, host: str, port: int
) -> None:
    """Open ``sessions`` connections, keep them idle until stop, then close them."""
    gate = asyncio.Semaphore(workload.connect_concurrency)
    all_up, stop = asyncio.Event(), asyncio.Event()
    up = 0

    async def hold() -> None:
        nonlocal up
        async with gate:
            context = connect(host, port, configuration=config)
            await context.__aenter__()
        try:
            up += 1
            if up == workload.sessions:
                all_up.set()
            await stop.wait()
        finally:
            await context.__aexit__(None, None, None)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(workload.sessions):
            group.create_task(hold())
        await all_up.wait()
        link.send_result({"connect_all_s": time.perf_counter() - start})
        await asyncio_wait_command(link)
        stop.set()
