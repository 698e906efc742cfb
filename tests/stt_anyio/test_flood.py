"""Loopback flood: live sessions keep their data and most of their throughput.

One server node (stt_anyio, UDP on 127.0.0.1) carries 50 live sessions from
a client node in this process, each streaming numbered messages. Throughput
is measured first without a flood, then while another process sends the
server 200 000 hostile datagrams (garbage, session packets with made-up ids,
replays of the live sessions' own packets, truncated and bit-flipped copies
of them) and 20 000 HELLOs under random seeds.

Claims checked (docs/security.md §3.6):

* no data lost: every message every session wrote arrives, in order, intact;
* the sessions keep at least half their no-flood throughput;
* the server's memory stays bounded (RSS growth during the flood) and its
  session table does not grow;
* the core's counters account for every datagram: whatever reached the
  endpoint and was not an authenticated packet of a live session was counted
  under a drop reason.

Marked slow: it runs for about a minute and a half. The figures are printed (run
with ``-s`` to see them) and attached to the test report.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from stt_anyio import Node, Session, open_node
from stt_anyio.udp import Datagrams
from stt_core import Config, Endpoint

SEED = b"flood test shared seed 0123"
SESSIONS = 50
MESSAGE_SIZE = 4096
BASELINE_SECONDS = 4.0
FLOOD_DATAGRAMS = 200_000
FLOOD_HELLOS = 20_000
FLOOD_RATE = int(os.environ.get("STT_FLOOD_RATE", "5000"))
"""Hostile datagrams per second the flooder aims for (set STT_FLOOD_RATE to try
others). Each costs the Python endpoint 8-50 us, and past the server's reading
rate the kernel drops datagrams from its full socket buffer, the live
sessions' among them. Measured on the 2-core CI machine (other work running):
5000/s kept 55-105 % of the throughput (two runs), 10000/s 18-52 %
(depending on the machine's other load), 25000/s 14 %; docs/security.md §3.6."""
OVERRIDES = {"max_datagram_size": 1452, "close_timeout": 1.0}

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


# ---------------------------------------------------------------- the flooder (child process)


def _hello_under_random_seed(server: tuple[str, int], rng: random.Random) -> bytes:
    endpoint = Endpoint(Config(shared_seed=rng.randbytes(16), node_id=b"flood"),
                        now=0.0, random_bytes=rng.randbytes)
    endpoint.connect(server, 0.0)
    ((hello, _),) = endpoint.datagrams_to_send(0.0)
    return hello


def _hostile(kind: int, captured: list[bytes], rng: random.Random) -> bytes:
    """One hostile datagram of the given kind (0-4)."""
    if kind == 0:  # garbage
        return rng.randbytes(rng.randrange(1, 1400))
    if kind == 1:  # a session packet for a session that does not exist
        return bytes((0x08, 0x01)) + rng.randbytes(8) + bytes((rng.randrange(64),)) \
            + rng.randbytes(rng.randrange(17, 1200))
    packet = captured[rng.randrange(len(captured))]
    if kind == 2:  # replay
        return packet
    if kind == 3:  # truncation
        return packet[:rng.randrange(1, len(packet))]
    flipped = bytearray(packet)  # bit flip
    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def flood(server: tuple[str, int], captured: list[bytes], started: Any, done: Any,
          results: Any) -> None:
    """Child process: build the hostile datagrams, then send them at FLOOD_RATE."""
    rng = random.Random(1234)
    hellos = [_hello_under_random_seed(server, rng) for _ in range(FLOOD_HELLOS)]
    datagrams = [_hostile(i % 5, captured, rng) for i in range(FLOOD_DATAGRAMS)]
    every = FLOOD_DATAGRAMS // FLOOD_HELLOS
    plan: list[bytes] = []
    for index, datagram in enumerate(datagrams):
        plan.append(datagram)
        if index % every == 0:
            plan.append(hellos[index // every])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # we ignore the REJECTs
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    started.set()
    start = time.perf_counter()
    sent = 0
    for index, datagram in enumerate(plan):
        due = start + index / FLOOD_RATE
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        try:
            sock.sendto(datagram, server)
            sent += 1
        except OSError:
            pass
    results.put({"sent": sent, "planned": len(plan), "seconds": time.perf_counter() - start})
    done.set()
    sock.close()


# ---------------------------------------------------------------- the live sessions


@dataclass
class Traffic:
    """Bytes and messages per session, and the stop flag for writers."""

    written: list[int] = field(default_factory=lambda: [0] * SESSIONS)
    received: list[int] = field(default_factory=lambda: [0] * SESSIONS)
    received_bytes: int = 0
    stop: bool = False
    errors: list[str] = field(default_factory=list)


def message(session_index: int, number: int) -> bytes:
    head = session_index.to_bytes(2, "big") + number.to_bytes(6, "big")
    return head + bytes([(session_index + number) & 0xFF]) * (MESSAGE_SIZE - len(head))


async def writer(index: int, session: Session, traffic: Traffic) -> None:
    stream = session.open_stream(purpose=f"live{index}")
    while not traffic.stop:
        await stream.write(message(index, traffic.written[index]))
        traffic.written[index] += 1


async def reader(session: Session, traffic: Traffic) -> None:
    stream = await session.accept_stream()
    while True:
        data = await stream.receive()
        index = int.from_bytes(data[:2], "big")
        expected = message(index, traffic.received[index])
        if data != expected:
            traffic.errors.append(f"session {index}: message {traffic.received[index]} "
                                  "corrupted or out of order")
        traffic.received[index] += 1
        traffic.received_bytes += len(data)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(traffic: Traffic, seconds: float,
                  sample: Callable[[], None]) -> tuple[float, float]:
    """Delivered bytes per second over ``seconds``, and this process's CPU share."""
    before = traffic.received_bytes
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        await anyio.sleep(0.25)
        sample()
    elapsed = time.perf_counter() - start
    return (traffic.received_bytes - before) / elapsed, (time.process_time() - cpu) / elapsed


def capture_outgoing(node: Node, into: list[bytes], limit: int) -> None:
    """Keep a copy of the first ``limit`` session packets the node sends over UDP."""
    carrier = node._udp
    assert carrier is not None
    original = carrier.try_send_many

    def wrapper(datagrams: Datagrams, start: int = 0) -> int:
        stopped = original(datagrams, start)
        for datagram, _ in datagrams[start:stopped]:
            if len(into) < limit and datagram[0] in (0x08, 0x09):
                into.append(bytes(datagram))  # a lent datagram's buffer is reused
        return stopped

    # Only this carrier's method is wrapped, for the test's lifetime: no public hook.
    carrier.try_send_many = wrapper  # type: ignore[method-assign]


def accepted_packets(server: Node) -> int:
    return sum(s.stats.packets_received for s in server.sessions)


def lost_packets(client: Node) -> int:
    """Packets the clients declared lost (on loopback: dropped by a full socket buffer)."""
    return sum(s.stats.packets_lost for s in client.sessions)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_flood_does_not_hurt_live_sessions(anyio_backend: str) -> None:
    traffic = Traffic()
    captured: list[bytes] = []
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=OVERRIDES) \
            as server, open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                                 config_overrides=OVERRIDES) as client, \
            anyio.create_task_group() as tg:
        capture_outgoing(client, captured, 2000)
        for index in range(SESSIONS):
            session = await client.connect(server.local_address, timeout=10)
            peer = await server.accept(timeout=10)
            tg.start_soon(reader, peer, traffic)
            tg.start_soon(writer, index, session, traffic)
        await anyio.sleep(1.0)  # warm up: windows open, congestion windows grow
        peak = [rss_bytes()]

        def sample() -> None:
            peak[0] = max(peak[0], rss_bytes())

        lost_start = lost_packets(client)
        baseline, baseline_cpu = await measure(traffic, BASELINE_SECONDS, sample)
        lost_baseline = lost_packets(client) - lost_start

        context = multiprocessing.get_context("spawn")
        started, done, results = context.Event(), context.Event(), context.Queue()
        child = context.Process(target=flood, args=(server.local_address, captured[:1000],
                                                    started, done, results))
        child.start()
        while not started.is_set():
            await anyio.sleep(0.05)
        rss_before, peak[0] = rss_bytes(), rss_bytes()
        core = server.endpoint.stats
        received_before, drops_before = core.datagrams_received, core.datagrams_dropped
        accepted_before = accepted_packets(server)
        udp_before = server.get_stats()["udp"]["datagrams_received"]
        sessions_before = len(server.endpoint.sessions)
        await anyio.sleep(0.5)
        lost_start = lost_packets(client)
        under_flood, flood_cpu = await measure(
            traffic, min(8.0, 0.6 * FLOOD_DATAGRAMS / FLOOD_RATE), sample)
        lost_flood = lost_packets(client) - lost_start
        while not done.is_set():
            await anyio.sleep(0.1)
            sample()
        flood_report = results.get(timeout=10)
        child.join(timeout=10)
        await anyio.sleep(1.0)  # let the last hostile datagrams be read
        received_delta = core.datagrams_received - received_before
        drops_delta = core.datagrams_dropped - drops_before
        accepted_delta = accepted_packets(server) - accepted_before
        udp_delta = server.get_stats()["udp"]["datagrams_received"] - udp_before
        sessions_after = len(server.endpoint.sessions)

        traffic.stop = True
        with anyio.fail_after(30):  # every written message must arrive
            while traffic.received != traffic.written:
                await anyio.sleep(0.1)
        tg.cancel_scope.cancel()

    figures = {
        "baseline_MBps": round(baseline / 1e6, 2),
        "under_flood_MBps": round(under_flood / 1e6, 2),
        "cpu_share_baseline": round(baseline_cpu, 2),
        "cpu_share_under_flood": round(flood_cpu, 2),
        "flood_rate": FLOOD_RATE,
        "packets_lost_baseline": lost_baseline,
        "packets_lost_under_flood": lost_flood,
        "flood_sent": flood_report["sent"],
        "flood_seconds": round(flood_report["seconds"], 2),
        "udp_datagrams_read": udp_delta,
        "core_datagrams_received": received_delta,
        "core_drops": drops_delta,
        "session_packets_accepted": accepted_delta,
        "drops_by_reason": dict(core.drops),
        "rss_growth_MB": round((peak[0] - rss_before) / 1e6, 1),
        "messages": sum(traffic.received),
    }
    print("flood figures:", figures)
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.received == traffic.written
    assert under_flood >= 0.5 * baseline, figures
    assert sessions_after <= sessions_before, figures
    assert peak[0] - rss_before < 200 * 1024 * 1024, figures
    # Every datagram the core saw is either an accepted packet of a live session
    # or counted under a drop reason; the flood's share reached the core.
    assert received_delta == accepted_delta + drops_delta, figures
    assert drops_delta >= 0.5 * flood_report["sent"], figures
