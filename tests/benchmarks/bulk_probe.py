"""Two-process bulk probe: one stream over loopback, CPU per MiB on each side.

Smaller than the side-by-side suite (``run.py``) and meant for profiling one
change at a time: the sender and the receiver run in separate processes,
pinned to different cores when there are two, and each reports the CPU time
(``time.process_time()``) and the minor page faults it took per MiB, the UDP
carrier's counters and the session's loss figures. ``--profile client|server`` wraps that side in
pyinstrument (whole thread, not just the task) and prints the tree.

    .venv/bin/python -m tests.benchmarks.bulk_probe --megabytes 32 --datagram 1200
    .venv/bin/python -m tests.benchmarks.bulk_probe --datagram 65507 --profile server
    .venv/bin/python -m tests.benchmarks.bulk_probe --no-offload     # one datagram per system call
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import anyio

from stt_anyio import open_node

from .probe_support import pin_to_core

SEED = b"bulk probe shared seed"
MESSAGE_SIZE = 256 * 1024


@dataclass(frozen=True)
class Options:
    megabytes: int
    datagram: int
    backend: str
    profile: str
    offload: bool
    window: int

    def overrides(self) -> dict[str, int]:
        settings = {"max_datagram_size": self.datagram, "pmtu_probe_limit": self.datagram}
        if self.window:
            settings.update(stream_receive_window=self.window,
                            stream_send_buffer_bytes=self.window)
        return settings


def _minor_faults() -> int:
    """Minor page faults of this process so far: pages the allocator took fresh from
    the kernel (each one a fault and a zeroed page on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _profiler(options: Options, role: str) -> Any:
    if options.profile != role:
        return None
    import pyinstrument

    profiler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def _server(options: Options, queue: Queue[Any]) -> None:
    pin_to_core(1)

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"probe-server",
                             config_overrides=options.overrides(),
                             udp_offload=options.offload) as node:
            queue.put(node.local_address)
            session = await node.accept()
            stream = await session.accept_stream()
            profiler = _profiler(options, "server")
            start, faults = time.process_time(), _minor_faults()
            total = options.megabytes * 1024 * 1024
            received = 0
            while received < total:
                received += len(await stream.receive())
            cpu, faults = time.process_time() - start, _minor_faults() - faults
            await stream.write(b"done")
            if profiler is not None:
                profiler.stop()
                profiler.print(show_all=False)
            queue.put((cpu, faults, node.get_stats()["udp"]))
            await anyio.sleep(0.5)  # let the reply's acknowledgement arrive

    anyio.run(main, backend=options.backend)


def _client(options: Options, address: tuple[str, int]) -> tuple[float, float, int,
                                                                   dict[str, Any], dict[str, Any]]:
    pin_to_core(0)
    result: list[Any] = []

    async def main() -> None:
        async with open_node(shared_seed=SEED, node_id=b"probe-client",
                             config_overrides=options.overrides(),
                             udp_offload=options.offload) as node:
            session = await node.connect(address)
            stream = session.open_stream(purpose="bulk")
            message = b"\x5a" * MESSAGE_SIZE
            profiler = _profiler(options, "client")
            wall, cpu, faults = time.perf_counter(), time.process_time(), _minor_faults()
            for _ in range(options.megabytes * 1024 * 1024 // MESSAGE_SIZE):
                await stream.write(message)
            await stream.receive()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            faults = _minor_faults() - faults
            if profiler is not None:
                profiler.stop()
                profiler.print(show_all=False)
            stats = session.stats
            result.extend([wall, cpu, faults, node.get_stats()["udp"], {
                "packets_lost": stats.packets_lost, "spurious_losses": stats.spurious_losses,
                "min_rtt_ms": round(stats.min_rtt * 1000, 3),
                "smoothed_rtt_ms": round(stats.smoothed_rtt * 1000, 3)}])

    anyio.run(main, backend=options.backend)
    return result[0], result[1], result[2], result[3], result[4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--datagram", type=int, default=1200)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--profile", choices=("client", "server"), default="")
    parser.add_argument("--no-offload", action="store_true", help="no UDP GSO/GRO")
    parser.add_argument("--window", type=int, default=0,
                        help="stream receive window and send buffer, bytes (default: Config's)")
    args = parser.parse_args()
    options = Options(args.megabytes, args.datagram, args.backend, args.profile,
                      not args.no_offload, args.window)
    context = multiprocessing.get_context("spawn")
    queue: Queue[Any] = context.Queue()
    server = context.Process(target=_server, args=(options, queue))
    server.start()
    try:
        wall, client_cpu, client_faults, client_udp, session = _client(
            options, queue.get(timeout=30))
        server_cpu, server_faults, server_udp = queue.get(timeout=60)
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
    mib = options.megabytes
    print(f"{mib} MiB at {options.datagram} B on {options.backend}"
          f"{'' if options.offload else ' without offload'}: {mib / wall:.1f} MiB/s; "
          f"CPU per MiB: sender {1000 * client_cpu / mib:.2f} ms, "
          f"receiver {1000 * server_cpu / mib:.2f} ms; minor page faults per MiB: "
          f"sender {client_faults / mib:.0f}, receiver {server_faults / mib:.0f}")
    print(f"session: {session}")
    for name, udp in (("sender", client_udp), ("receiver", server_udp)):
        print(f"{name} udp: {udp}")


if __name__ == "__main__":
    main()
