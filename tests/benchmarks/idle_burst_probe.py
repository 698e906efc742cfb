"""Probe: how long one message takes when it is sent a while after the handshake.

A session that connects, stays quiet, then sends a burst (a telemetry upload,
a file-sync delta, a game state snapshot) is paced by the RTT it learned in
its first moments. This probe measures that case over loopback: for each of
``--repeat`` sessions it connects, waits for the handshake's confirmation,
sleeps ``--idle`` seconds, writes one ``--size``-byte message on a new
stream and times it from ``write`` to the server's ``receive``. Both nodes
run in this process on one event loop: the figure is dominated by pacing and
round trips, not by CPU.

``--datagram 1200`` (the default) turns path MTU discovery off so that the
message needs many packets, as on a real LAN or WAN path; on loopback with
64 KiB datagrams the whole message fits in the initial window and nothing is
paced.

    .venv/bin/python -m tests.benchmarks.idle_burst_probe [--size 262144] [--idle 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from stt_anyio import Node, open_node

SEED = b"idle burst probe shared seed"


async def _one_burst(server: Node, client: Node, size: int, idle: float) -> float:
    """Connect, idle, send ``size`` bytes; seconds from ``write`` to delivery."""
    delivered = anyio.Event()
    arrival = [0.0]

    async def serve() -> None:
        session = await server.accept()
        stream = await session.accept_stream()
        message = await stream.receive()
        arrival[0] = time.perf_counter()
        if len(message) != size:
            raise RuntimeError(f"received {len(message)} bytes, sent {size}")
        delivered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        session = await client.connect(server.local_address)
        await session.wait_confirmed()
        await anyio.sleep(idle)
        stream = session.open_stream(purpose="burst")
        began = time.perf_counter()
        await stream.write(b"b" * size)
        await delivered.wait()
        await session.close()
    return arrival[0] - began


async def _run(args: argparse.Namespace) -> list[float]:
    overrides = {"max_datagram_size": args.datagram, "pmtu_probe_limit": args.datagram,
                 "congestion_control": args.congestion}
    async with open_node(shared_seed=SEED, node_id=b"burst-server", host="127.0.0.1",
                         config_overrides=overrides) as server, \
            open_node(shared_seed=SEED, node_id=b"burst-client", server_mode=False,
                      config_overrides=overrides) as client:
        return [await _one_burst(server, client, args.size, args.idle)
                for _ in range(args.repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256 * 1024, help="message size, bytes")
    parser.add_argument("--idle", type=float, default=0.2,
                        help="seconds between confirmation and the write")
    parser.add_argument("--datagram", type=int, default=1200, help="largest datagram, bytes")
    parser.add_argument("--repeat", type=int, default=9, help="sessions, one burst each")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--congestion", choices=("newreno", "cubic", "bbr"), default="newreno")
    args = parser.parse_args()
    samples = anyio.run(_run, args, backend=args.backend)
    ms = sorted(s * 1000 for s in samples)
    print(f"{args.backend}, {args.congestion}: {args.size:,} B after {args.idle} s idle "
          f"at {args.datagram}-byte datagrams: median {statistics.median(ms):.2f} ms "
          f"(min {ms[0]:.2f}, max {ms[-1]:.2f}) over {len(ms)} sessions")


if __name__ == "__main__":
    main()
