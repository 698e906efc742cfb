"""Micro-benchmark: core-only throughput (two endpoints in one process, no sockets, no loss).

Moves ``--megabytes`` of application data on one stream from a client to a
server endpoint, shuttling datagrams by hand with a virtual clock, and prints
MB of application data per CPU second and the CPU cost per packet (both sides
together: seal + open + framing + recovery). Run:

    .venv/bin/python -m tests.benchmarks.core_throughput [--megabytes 64] [--datagram 1200]
    .venv/bin/python -m tests.benchmarks.core_throughput --profile   # pyinstrument
"""

from __future__ import annotations

import argparse
import time

from stt_core import Config, Endpoint, MessageReceived, SessionEstablished

CLIENT = ("10.0.0.1", 1)
SERVER = ("10.0.0.2", 2)
MESSAGE_SIZE = 256 * 1024


def _pump(source: Endpoint, sink: Endpoint, source_addr: object, now: float) -> int:
    count = 0
    for datagram, _ in source.datagrams_to_send(now):
        sink.receive_datagram(datagram, source_addr, now)
        count += 1
    return count


def transfer(megabytes: int, datagram_size: int) -> tuple[float, int, int]:
    """Returns (cpu seconds, packets moved, bytes delivered)."""
    seed = b"benchmark-shared-seed"
    client = Endpoint(Config(shared_seed=seed, node_id=b"client",
                             max_datagram_size=datagram_size,
                             pmtu_probe_limit=datagram_size,
                             stream_send_buffer_bytes=4 * 1024 * 1024), now=0.0)
    server = Endpoint(Config(shared_seed=seed, node_id=b"server", server_mode=True,
                             max_datagram_size=datagram_size,
                             pmtu_probe_limit=datagram_size), now=0.0)
    now = 0.0
    ref = client.connect(SERVER, now)
    for _ in range(6):
        _pump(client, server, CLIENT, now)
        _pump(server, client, SERVER, now)
    while (event := client.next_event()) is not None:
        if isinstance(event, SessionEstablished):
            break
    stream = client.open_stream(ref, purpose="bulk")
    message = b"\x5a" * MESSAGE_SIZE
    to_send = megabytes * 1024 * 1024 // MESSAGE_SIZE
    total = to_send * MESSAGE_SIZE
    delivered = 0
    packets = 0
    start = time.process_time()
    while delivered < total:
        while to_send and client.can_send(ref, stream):
            client.send_message(ref, stream, message)
            to_send -= 1
        now += 0.0005  # a 1 ms round trip in virtual time
        packets += _pump(client, server, CLIENT, now)
        packets += _pump(server, client, SERVER, now)
        while (event := server.next_event()) is not None:
            if isinstance(event, MessageReceived):
                delivered += len(event.data)
        while client.next_event() is not None:
            pass
        timer = client.next_timer()
        if timer is not None and timer <= now:
            client.handle_timer(now)
    return time.process_time() - start, packets, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--datagram", type=int, default=1200)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        from pyinstrument import Profiler
        profiler = Profiler()
        profiler.start()
    cpu, packets, delivered = transfer(args.megabytes, args.datagram)
    if args.profile:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    mb = delivered / 1e6
    print(f"datagram {args.datagram} B: {mb:.1f} MB in {cpu:.2f} CPU s = {mb / cpu:.1f} MB/s "
          f"per CPU second; {packets} packets, {cpu / packets * 1e6:.1f} us CPU per packet "
          f"(both sides)")


if __name__ == "__main__":
    main()
