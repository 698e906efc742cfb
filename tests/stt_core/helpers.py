"""Test helpers: a client/server endpoint pair on a scripted link with a fake clock.

``Pair`` is the small, explicit harness for protocol tests (the full network
simulator lives in ``stt_core.sim``). Time only moves when the pair moves it,
so every deadline in a test is exact. A ``drop`` predicate lets a test lose
chosen datagrams.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypedDict

from stt_core import Address, Config, Endpoint, Event

CLIENT_ADDR = ("10.0.0.1", 40000)
SERVER_ADDR = ("10.0.0.2", 9000)
SEED = b"correct-horse-battery-staple"


def seeded_random(seed: int) -> Callable[[int], bytes]:
    """A deterministic random_bytes for reproducible runs."""
    rng = random.Random(seed)
    return rng.randbytes


def make_config(node_id: bytes, **overrides: Any) -> Config:
    """A config with the test seed; overrides (Config fields, each of its own
    type) go through dataclasses.replace."""
    config = Config(shared_seed=SEED, node_id=node_id)
    return replace(config, **overrides) if overrides else config


class PairOptions(TypedDict, total=False):
    """The keyword arguments of ``Pair``, for helpers that pass them on."""

    client: Config | None
    server: Config | None
    delay: float
    seed: int
    now: float


Drop = Callable[[bytes, tuple[str, int], Address], bool]
"""A drop rule: ``drop(datagram, source, destination)`` is True to lose it."""


class Pair:
    """Two endpoints joined by a link with a fixed one-way delay."""

    def __init__(self, *, client: Config | None = None, server: Config | None = None,
                 delay: float = 0.010, seed: int = 1, now: float = 1000.0) -> None:
        self.now = now
        self.delay = delay
        self.client = Endpoint(client or make_config(b"client"), now=now,
                               random_bytes=seeded_random(seed))
        self.server = Endpoint(server or make_config(b"server", server_mode=True), now=now,
                               random_bytes=seeded_random(seed + 1000))
        self.addr = {id(self.client): CLIENT_ADDR, id(self.server): SERVER_ADDR}
        self.by_addr = {CLIENT_ADDR: self.server, SERVER_ADDR: self.client}
        self.in_flight: list[tuple[float, int, bytes, tuple[str, int], Endpoint]] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.drop: Drop | None = None
        self.sent: list[tuple[str, bytes]] = []
        self.last_delivery: dict[str, float] = {}
        self._seq = 0

    def _flush(self, endpoint: Endpoint) -> None:
        source = self.addr[id(endpoint)]
        for datagram, destination in endpoint.datagrams_to_send(self.now):
            self.sent.append(("client" if endpoint is self.client else "server", datagram))
            target = self.client if destination == CLIENT_ADDR else (
                self.server if destination == SERVER_ADDR else None)
            if target is None:
                continue
            if self.drop is not None and self.drop(datagram, source, destination):
                continue
            self._seq += 1
            heapq.heappush(self.in_flight,
                           (self.now + self.delay, self._seq, datagram, source, target))

    def _drain(self) -> None:
        for endpoint, sink in ((self.client, self.client_events),
                               (self.server, self.server_events)):
            while (event := endpoint.next_event()) is not None:
                sink.append(event)

    def flush(self) -> None:
        """Collect events and queue everything both endpoints want to send."""
        self._drain()
        self._flush(self.client)
        self._flush(self.server)
        self._drain()

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Advance the clock to ``until`` (or until ``stop()``); True if stopped."""
        self.flush()
        while True:
            if stop is not None and stop():
                return True
            candidates = [t for t in (self.client.next_timer(), self.server.next_timer())
                          if t is not None]
            if self.in_flight:
                candidates.append(self.in_flight[0][0])
            if not candidates or min(candidates) > until:
                self.now = max(self.now, until)
                return False
            self.now = max(self.now, min(candidates))
            while self.in_flight and self.in_flight[0][0] <= self.now:
                _, _, datagram, source, target = heapq.heappop(self.in_flight)
                target.receive_datagram(datagram, source, self.now)
                self.last_delivery["client" if target is self.client else "server"] = self.now
            for endpoint in (self.client, self.server):
                timer = endpoint.next_timer()
                if timer is not None and timer <= self.now:
                    endpoint.handle_timer(self.now)
            self.flush()

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        """Advance by ``seconds`` of fake time."""
        return self.run(self.now + seconds, stop)
