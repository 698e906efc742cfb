"""Micro-benchmark: the core's work per 64-byte round trip (two endpoints in one process).

Repeats the ``rtt`` exchange (the client writes one message, the server takes
it and writes it back, the client takes the echo) with the same calls the
anyio binding makes, in the same order, shuttling datagrams by hand with a
virtual clock, and prints each side's time per round trip split into the
binding's phases:

- ``receive``: ``receive_datagram`` of the peer's packet;
- ``flush after receive``: the dispatch and flush that follow a receive batch;
- ``take``: the application takes the message (``consume``, and the flush when
  it queued a credit update);
- ``write``: ``send_message``, and the flush that builds and seals the packet;
- ``timer``: ``next_timer`` after the write.

``--gap 200`` waits 200 us between round trips, asleep (``--gap-mode sleep``,
as the two-process probe's processes are between packets) or spinning
(``spin``), outside the timed phases: it shows what sleeping costs the next
round trip's work (caches and the core's idle state), not the work itself.

``--profile`` prints a cProfile table instead (per side and round trip);
``--bytecodes`` counts the Python calls and bytecodes executed per side and
round trip (``sys.settrace`` with opcode events): slow, but the same on a
loaded machine as on an idle one, so it tells small changes apart where the
timings cannot.

    .venv/bin/python -m tests.benchmarks.core_rtt [--count 20000] [--profile | --bytecodes]
    .venv/bin/python -m tests.benchmarks.core_rtt --count 5000 --gap 200 [--gap-mode spin]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
from collections import defaultdict
from types import FrameType
from typing import Any

from stt_core import Config, Endpoint, MessageReceived, SessionEstablished
from stt_core.events import Address, SessionRef

CLIENT = ("10.0.0.1", 1)
SERVER = ("10.0.0.2", 2)
REQUEST = bytes(range(64))
PHASES = ("receive", "flush after receive", "take", "write", "timer")


class Side:
    """One endpoint and what the binding would do with it."""

    def __init__(self, endpoint: Endpoint, address: tuple[str, int]) -> None:
        self.endpoint = endpoint
        self.address = address
        self.ref = SessionRef(0)
        self.spent: defaultdict[str, float] = defaultdict(float)

    def receive(self, datagrams: list[tuple[bytes, Address]], source: tuple[str, int],
                now: float) -> tuple[MessageReceived | None, list[tuple[bytes, Address]]]:
        """One receive batch, its flush, and the application taking the message."""
        clock = time.perf_counter
        endpoint = self.endpoint
        began = clock()
        for data, _ in datagrams:
            endpoint.receive_datagram(data, source, now)
        received = clock()
        message = None
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                message = event
        out = endpoint.datagrams_to_send(now)
        while endpoint.next_event() is not None:
            pass
        endpoint.next_timer()
        flushed = clock()
        if message is not None:
            endpoint.consume(self.ref, message.stream_id, len(message.data))
            if endpoint.flush_needed:
                out += endpoint.datagrams_to_send(now)
            endpoint.next_timer()
        taken = clock()
        spent = self.spent
        spent["receive"] += received - began
        spent["flush after receive"] += flushed - received
        spent["take"] += taken - flushed
        return message, out

    def write(self, stream_id: int, data: bytes, now: float) -> list[tuple[bytes, Address]]:
        """``Stream.write``: queue the message and flush it inline."""
        clock = time.perf_counter
        endpoint = self.endpoint
        began = clock()
        endpoint.send_message(self.ref, stream_id, data)
        out: list[tuple[bytes, Address]] = []
        if endpoint.flush_needed:
            while endpoint.next_event() is not None:
                pass
            out = endpoint.datagrams_to_send(now)
        written = clock()
        endpoint.next_timer()
        self.spent["write"] += written - began
        self.spent["timer"] += clock() - written
        return out


def connected_pair() -> tuple[Side, Side, int]:
    """A client and a server side with an established session and one client stream."""
    seed = b"core rtt benchmark seed"
    client = Side(Endpoint(Config(shared_seed=seed, node_id=b"client", auto_consume=False),
                           now=0.0), CLIENT)
    server = Side(Endpoint(Config(shared_seed=seed, node_id=b"server", server_mode=True,
                                  auto_consume=False), now=0.0), SERVER)
    client.ref = client.endpoint.connect(SERVER, 0.0)
    for _ in range(6):
        for data, _ in client.endpoint.datagrams_to_send(0.0):
            server.endpoint.receive_datagram(data, CLIENT, 0.0)
        for data, _ in server.endpoint.datagrams_to_send(0.0):
            client.endpoint.receive_datagram(data, SERVER, 0.0)
    for side in (client, server):
        while (event := side.endpoint.next_event()) is not None:
            if isinstance(event, SessionEstablished):
                side.ref = event.ref
    stream_id = client.endpoint.open_stream(client.ref, purpose="rtt")
    return client, server, stream_id


def pause(gap: float, how: str) -> None:
    """Wait ``gap`` seconds between round trips, asleep or spinning (see ``--gap``)."""
    if how == "sleep":
        time.sleep(gap)
        return
    until = time.perf_counter() + gap
    while time.perf_counter() < until:
        pass


def run(count: int, profiler: cProfile.Profile | None = None, *, gap: float = 0.0,
        how: str = "sleep") -> tuple[Side, Side]:
    """``count`` round trips; returns both sides with their time per phase."""
    client, server, stream_id = connected_pair()
    now = 0.0
    if profiler is not None:
        profiler.enable()
    for i in range(count):
        if gap:
            pause(gap, how)  # outside every timed phase
        now += 0.0002
        request = client.write(stream_id, REQUEST, now)
        now += 0.0001
        message, extra = server.receive(request, CLIENT, now)
        if message is None:
            raise RuntimeError("the request did not arrive")
        reply = extra + server.write(message.stream_id, message.data, now)
        now += 0.0001
        echo, extra = client.receive(reply, SERVER, now)
        if echo is None or echo.data != REQUEST:
            raise RuntimeError("the echo differs from the request")
        for data, _ in extra:
            server.endpoint.receive_datagram(data, CLIENT, now)
        if i % 64 == 0:  # the binding's timer fires now and then (ACK delay, PTO)
            client.endpoint.handle_timer(now)
            server.endpoint.handle_timer(now)
    if profiler is not None:
        profiler.disable()
    return client, server


def _print_profile(profiler: cProfile.Profile, count: int) -> None:
    profiler.create_stats()  # fills profiler.stats, the table pstats.Stats(profiler) reads
    rows = []
    for (path, line, name), (_, calls, own, total, _) in profiler.stats.items():
        rows.append((own, calls, total, f"{os.path.basename(path)}:{line}({name})"))
    rows.sort(reverse=True)
    sides = 2 * count
    print(f"{sum(r[1] for r in rows) / sides:.0f} calls per side and round trip "
          "(us are under the profiler)")
    for own, calls, total, name in rows[:50]:
        print(f"{own / sides * 1e6:7.2f} us own {total / sides * 1e6:7.1f} us cumulative "
              f"{calls / sides:6.2f} calls  {name}")


def count_bytecodes(count: int) -> tuple[float, float]:
    """Python calls and bytecodes per side and round trip, over ``count`` round trips."""
    counted = [0, 0]

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            counted[0] += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            counted[1] += 1
        return trace

    sys.settrace(trace)
    try:
        run(count)
    finally:
        sys.settrace(None)
    return counted[0] / (2 * count), counted[1] / (2 * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="round trips per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bytecodes", action="store_true")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="microseconds to wait between round trips")
    parser.add_argument("--gap-mode", choices=("sleep", "spin"), default="sleep")
    args = parser.parse_args()
    run(500)  # warm up
    if args.bytecodes:
        calls, bytecodes = count_bytecodes(min(args.count, 2000))
        print(f"{calls:.0f} Python calls, {bytecodes:.0f} bytecodes per side and round trip "
              "(the benchmark's own loop included)")
        return
    if args.profile:
        profiler = cProfile.Profile()
        run(args.count, profiler)
        _print_profile(profiler, args.count)
        return
    for _ in range(args.runs):
        client, server = run(args.count, gap=args.gap / 1e6, how=args.gap_mode)
        for name, side in (("client", client), ("server", server)):
            per = {phase: side.spent[phase] / args.count * 1e6 for phase in PHASES}
            print(f"{name}: {sum(per.values()):5.1f} us per round trip = "
                  + ", ".join(f"{phase} {value:.1f}" for phase, value in per.items()))


if __name__ == "__main__":
    main()
