"""Micro-benchmark: handshakes per second of two in-memory endpoints (no sockets).

Prints the size of each handshake message and how many complete handshakes
(HELLO -> CHALLENGE -> AUTH_PROOF -> FINAL or its stand-in, both sides established) one core
can run per CPU second. Run:

    .venv/bin/python -m tests.benchmarks.core_handshake [--count N]
"""

from __future__ import annotations

import argparse
import time

from stt_core import Config, Endpoint, SessionEstablished
from stt_core.wire import PacketType

CLIENT = ("10.0.0.1", 1)
SERVER = ("10.0.0.2", 2)
NAMES = {PacketType.HELLO: "HELLO", PacketType.CHALLENGE: "CHALLENGE",
         PacketType.AUTH_PROOF: "AUTH_PROOF", PacketType.FINAL: "FINAL"}


def handshake(client: Endpoint, server: Endpoint, now: float,
              sizes: dict[str, int] | None = None) -> None:
    """Run one handshake by shuttling datagrams by hand, until both sides are established.

    What follows establishment (path MTU probes, credit, resume token) is left
    out: this measures connect-to-established.
    """
    client.connect(SERVER, now)
    established = 0
    for _ in range(8):
        for source, sink, source_addr in ((client, server, CLIENT), (server, client, SERVER)):
            for datagram, _ in source.datagrams_to_send(now):
                if sizes is not None and datagram[0] in NAMES:
                    sizes[NAMES[datagram[0]]] = len(datagram)
                sink.receive_datagram(datagram, source_addr, now)
            while (event := sink.next_event()) is not None:
                established += isinstance(event, SessionEstablished)
        if established == 2:
            return
    raise RuntimeError("handshake did not complete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    seed = b"benchmark-shared-seed"
    client = Endpoint(Config(shared_seed=seed, node_id=b"client"), now=0.0)
    server = Endpoint(Config(shared_seed=seed, node_id=b"server", server_mode=True,
                             max_pending_handshakes=args.count + 10,
                             cookie_threshold=args.count + 10), now=0.0)
    sizes: dict[str, int] = {}
    handshake(client, server, 0.0, sizes)
    for name in ("HELLO", "CHALLENGE", "AUTH_PROOF", "FINAL"):
        # FINAL is normally not sent: the server's first session packet stands in.
        size = f"{sizes[name]:5d} bytes" if name in sizes else "  not sent"
        print(f"{name:<11} {size}")
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    for i in range(args.count):
        handshake(client, server, 1.0 + i * 1e-3)
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start_wall
    print(f"{args.count} handshakes: {args.count / cpu:,.0f} per CPU second "
          f"({cpu / args.count * 1e6:,.0f} us CPU each, both sides; wall {wall:.2f} s)")


if __name__ == "__main__":
    main()
