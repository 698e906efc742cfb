"""Micro-benchmark: how the core's CPU cost grows with sessions, streams and message size.

Two endpoints in one process, no sockets, no loss, a virtual clock (as in
``core_throughput.py``); every figure is CPU time (``time.process_time()``)
for both sides together. Three sweeps:

- message size: one stream carrying messages of 64 B to 4 MiB; CPU per MiB
  and per message;
- streams: one session moving the same bytes over 1 to 256 streams at once;
- sessions: 1 to 1,000 established sessions between the two endpoints,
  either one of them busy and the rest idle, or all of them sending a share.

    .venv/bin/python -m tests.benchmarks.core_scaling [--megabytes 16] [--datagram 1200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from stt_core import (
    Config,
    Endpoint,
    HandshakeConfirmed,
    MessageReceived,
    SessionEstablished,
)
from stt_core.events import SessionRef

CLIENT = ("10.0.0.1", 1)
SERVER = ("10.0.0.2", 2)
SEED = b"scaling benchmark seed"
STEP = 0.0005
"""Virtual seconds per shuttle round (a 1 ms round trip)."""
QUIET_STEPS = 130
"""Shuttle rounds after the last confirmation: 50 ms for the handshakes' last packets and ACKs."""


def _endpoints(datagram: int) -> tuple[Endpoint, Endpoint]:
    def config(node_id: bytes, server_mode: bool = False) -> Config:
        return Config(node_id=node_id, server_mode=server_mode, shared_seed=SEED,
                      max_datagram_size=datagram, pmtu_probe_limit=datagram,
                      stream_send_buffer_bytes=8 * 1024 * 1024, idle_timeout=3600.0)

    client = Endpoint(config(b"client"), now=0.0)
    server = Endpoint(config(b"server", server_mode=True), now=0.0)
    return client, server


class Link:
    """Shuttles datagrams between the two endpoints and counts delivered bytes."""

    def __init__(self, client: Endpoint, server: Endpoint) -> None:
        self.client, self.server = client, server
        self.now = 0.0
        self.delivered = 0
        self.messages = 0

    def step(self) -> None:
        self._shuttle()
        while (event := self.server.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self.delivered += len(event.data)
                self.messages += 1
        while self.client.next_event() is not None:
            pass
        self._fire_timers()

    def _shuttle(self) -> None:
        self.now += STEP
        for source, sink, addr in ((self.client, self.server, CLIENT),
                                   (self.server, self.client, SERVER)):
            for datagram, _ in source.datagrams_to_send(self.now):
                sink.receive_datagram(datagram, addr, self.now)

    def _fire_timers(self) -> None:
        for endpoint in (self.client, self.server):
            timer = endpoint.next_timer()
            if timer is not None and timer <= self.now:
                endpoint.handle_timer(self.now)

    def connect(self, count: int) -> list[SessionRef]:
        """Open ``count`` sessions (not measured); returns their client-side refs.

        Waits for every handshake to be confirmed (the initiator is established
        on CHALLENGE, before the server has its AUTH_PROOF) and then for the
        link to fall quiet, so no handshake work is left for the measured part.
        """
        refs = [self.client.connect(SERVER, self.now) for _ in range(count)]
        confirmed = 0
        while confirmed < count:
            self._shuttle()
            while (event := self.client.next_event()) is not None:
                if isinstance(event, HandshakeConfirmed) \
                        or (isinstance(event, SessionEstablished) and event.confirmed):
                    confirmed += 1
            self._fire_timers()
        for _ in range(QUIET_STEPS):
            self.step()
        return refs


def _drive(link: Link, senders: list[tuple[SessionRef, int, bytes, int]], total: int) -> float:
    """Send every (ref, stream, message, count) until ``total`` bytes arrived; CPU seconds."""
    left = [count for _, _, _, count in senders]
    start = time.process_time()
    while link.delivered < total:
        for index, (ref, stream, message, _) in enumerate(senders):
            count = left[index]
            while count and link.client.can_send(ref, stream):
                link.client.send_message(ref, stream, message)
                count -= 1
            left[index] = count
        link.step()
    return time.process_time() - start


def message_sizes(megabytes: int, datagram: int) -> list[tuple[str, float, float]]:
    rows = []
    for size in (64, 1024, 16 * 1024, 256 * 1024, 4 * 1024 * 1024):
        link = Link(*_endpoints(datagram))
        (ref,) = link.connect(1)
        stream = link.client.open_stream(ref, purpose="sizes")
        count = max(1, megabytes * 1024 * 1024 // size // (16 if size <= 1024 else 1))
        cpu = _drive(link, [(ref, stream, b"m" * size, count)], count * size)
        mib = count * size / 2**20
        rows.append((f"{size:,} B", cpu / mib * 1000, cpu / count * 1e6))
    return rows


def stream_counts(megabytes: int, datagram: int) -> list[tuple[str, float]]:
    rows = []
    total = megabytes * 1024 * 1024
    for streams in (1, 16, 256):
        link = Link(*_endpoints(datagram))
        (ref,) = link.connect(1)
        message = b"s" * (64 * 1024)
        per_stream = max(1, total // streams // len(message))
        senders = [(ref, link.client.open_stream(ref, purpose=f"s{i}"), message, per_stream)
                   for i in range(streams)]
        moved = per_stream * streams * len(message)
        cpu = _drive(link, senders, moved)
        label = f"{streams} stream{'' if streams == 1 else 's'}"
        rows.append((label, cpu / (moved / 2**20) * 1000))
    return rows


def session_counts(megabytes: int, datagram: int) -> list[tuple[str, float, float]]:
    rows = []
    total = megabytes * 1024 * 1024
    message = b"x" * (64 * 1024)
    for sessions in (1, 100, 1000):
        figures = []
        for busy in (1, sessions):
            link = Link(*_endpoints(datagram))
            refs = link.connect(sessions)
            per_session = max(1, total // busy // len(message))
            senders = [(ref, link.client.open_stream(ref, purpose="bulk"), message, per_session)
                       for ref in refs[:busy]]
            cpu = _drive(link, senders, per_session * busy * len(message))
            figures.append(cpu / (per_session * busy * len(message) / 2**20) * 1000)
        label = f"{sessions:,} session{'' if sessions == 1 else 's'}"
        rows.append((label, figures[0], figures[1]))
    return rows


def _table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]],
           fmt: Callable[[object], str]) -> None:
    print(f"\n{title}")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join([str(row[0])] + [fmt(cell) for cell in row[1:]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=16)
    parser.add_argument("--datagram", type=int, default=1200)
    args = parser.parse_args()

    def fmt(value: object) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    print(f"core only, {args.datagram}-byte datagrams, {args.megabytes} MiB per case, "
          "CPU of both sides together")
    _table("message size", ("message", "ms CPU per MiB", "us CPU per message"),
           list(message_sizes(args.megabytes, args.datagram)), fmt)
    _table("streams (one session, 64 KiB messages)", ("streams", "ms CPU per MiB"),
           list(stream_counts(args.megabytes, args.datagram)), fmt)
    _table("sessions (64 KiB messages)",
           ("sessions", "ms CPU per MiB, one busy", "ms CPU per MiB, all busy"),
           list(session_counts(args.megabytes, args.datagram)), fmt)


if __name__ == "__main__":
    main()
