"""Harness shared by the fuzz targets and the hardening tests.

Owns three small things the fuzzers and ``tests/stt_core/test_security.py``
both need, none of which belongs in the core:

* ``Net``: a zero-configuration pump that moves datagrams between real
  ``Endpoint`` objects by address, with a fake clock, and keeps every
  datagram it carried (for replay and corpus building).
* ``establish``: a deterministic client/server pair with an established
  session, built from seeded randomness so that every run is byte-identical
  (a crashing fuzz input reproduces exactly).
* ``RawPeer``: a "malicious peer that holds the seed". It drives a real
  client endpoint through the handshake, then seals frames of its own choice
  with that session's send keys and next packet number, so crafted frames
  reach the server's frame handlers as if a real peer had sent them.

It must not know anything about the core's internals beyond what a peer
holding the seed legitimately has: the client's own send keys (reached
through the client session object) and the wire encoders.
"""

from __future__ import annotations

import gc
import importlib
import random
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from stt_core import Config, Endpoint, Event, ResumeTokenReceived, SessionClosed, SessionEstablished
from stt_core.events import Address, SessionRef
from stt_core.session import Session
from stt_core.wire import encode_session_header

__all__ = [
    "CLIENT_ADDR",
    "SEED",
    "SERVER_ADDR",
    "SPLIT",
    "Established",
    "Net",
    "RawPeer",
    "establish",
    "make_config",
    "seeded_random",
    "split_input",
]

SEED = b"fuzzing-shared-seed-0123456789"
CLIENT_ADDR: Address = ("192.0.2.1", 40000)
SERVER_ADDR: Address = ("192.0.2.2", 9000)
START = 1000.0

Filter = Callable[[bytes, Address, Address], bool]
Rewrite = Callable[[bytes, Address, Address], bytes | None]
SPLIT = b"|STT|"
"""Separates the datagrams (or packets) of one fuzz input."""
MAX_PIECES = 32
"""Pieces of one fuzz input that are used; the rest is ignored (keeps runs short)."""


def split_input(data: bytes) -> list[bytes]:
    """Cut a fuzz input into at most ``MAX_PIECES`` pieces at ``SPLIT``."""
    return data.split(SPLIT, MAX_PIECES)[:MAX_PIECES]


def seeded_random(seed: int) -> Callable[[int], bytes]:
    """A deterministic ``random_bytes`` so a run is reproducible from its seed."""
    return random.Random(seed).randbytes


def make_config(node_id: bytes, *, server: bool = False, **overrides: Any) -> Config:
    """A config under the fuzzing seed; ``overrides`` (Config fields, each of its own
    type) go through ``dataclasses.replace``."""
    config = Config(shared_seed=SEED, node_id=node_id, server_mode=server)
    return replace(config, **overrides) if overrides else config


@dataclass
class Net:
    """Endpoints joined by instant links; time moves only when the net moves it.

    ``drop`` (if set) sees ``(datagram, source, destination)`` and returns True
    to lose it; ``rewrite`` (if set) may return other bytes to deliver instead,
    or None to lose it. Every carried datagram is kept in ``log`` as
    ``(source, destination, bytes)``.
    """

    now: float = START
    endpoints: dict[Address, Endpoint] = field(default_factory=dict)
    events: dict[Address, list[Event]] = field(default_factory=dict)
    log: list[tuple[Address, Address, bytes]] = field(default_factory=list)
    sent_to: dict[Address, int] = field(default_factory=dict)
    drop: Filter | None = None
    rewrite: Rewrite | None = None
    step: float = 0.001

    def add(self, addr: Address, endpoint: Endpoint) -> Endpoint:
        """Attach ``endpoint`` at ``addr``."""
        self.endpoints[addr] = endpoint
        self.events[addr] = []
        return endpoint

    def drain(self) -> None:
        """Collect pending events of every endpoint."""
        for addr, endpoint in self.endpoints.items():
            sink = self.events[addr]
            while (event := endpoint.next_event()) is not None:
                sink.append(event)

    def flush(self) -> int:
        """Deliver everything every endpoint wants to send now; returns the count."""
        moved = 0
        for source, endpoint in list(self.endpoints.items()):
            for datagram, destination in endpoint.datagrams_to_send(self.now):
                self.sent_to[destination] = self.sent_to.get(destination, 0) + len(datagram)
                self.log.append((source, destination, datagram))
                target = self.endpoints.get(destination)
                if target is None:
                    continue
                if self.drop is not None and self.drop(datagram, source, destination):
                    continue
                if self.rewrite is not None:
                    rewritten = self.rewrite(datagram, source, destination)
                    if rewritten is None:
                        continue
                    datagram = rewritten
                target.receive_datagram(datagram, source, self.now)
                moved += 1
        self.drain()
        return moved

    def run(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        """Pump for ``seconds`` of fake time (or until ``stop()``); True if stopped."""
        until = self.now + seconds
        self.drain()
        while True:
            if stop is not None and stop():
                return True
            moved = self.flush()
            if stop is not None and stop():
                return True
            timers = [t for t in (e.next_timer() for e in self.endpoints.values())
                      if t is not None]
            nxt = self.now + self.step if moved else min(timers, default=until + 1)
            if nxt > until:
                self.now = until
                return False
            self.now = max(self.now, nxt)
            for endpoint in self.endpoints.values():
                timer = endpoint.next_timer()
                if timer is not None and timer <= self.now:
                    endpoint.handle_timer(self.now)

    def inject(self, datagram: bytes, source: Address, destination: Address) -> None:
        """Deliver a datagram of our own making, as if it came from ``source``
        (lost if no endpoint is at ``destination`` any more, as on a network)."""
        target = self.endpoints.get(destination)
        if target is None:
            return
        target.receive_datagram(datagram, source, self.now)
        self.drain()


@dataclass
class Established:
    """A client/server pair with one established session."""

    net: Net
    client: Endpoint
    server: Endpoint
    client_ref: SessionRef
    server_ref: SessionRef
    client_addr: Address = CLIENT_ADDR

    @property
    def client_events(self) -> list[Event]:
        """Events the client endpoint produced so far."""
        return self.net.events[self.client_addr]

    @property
    def server_events(self) -> list[Event]:
        """Events the server endpoint produced so far."""
        return self.net.events[SERVER_ADDR]


def establish(*, seed: int = 7, client: Config | None = None, server: Config | None = None,
              client_addr: Address = CLIENT_ADDR, net: Net | None = None) -> Established:
    """Run a deterministic handshake and return the established pair.

    Raises:
        RuntimeError: the handshake did not complete (a harness bug, not an input).
    """
    net = net if net is not None else Net()
    server_ep = net.endpoints.get(SERVER_ADDR) or net.add(SERVER_ADDR, Endpoint(
        server or make_config(b"server", server=True), now=net.now,
        random_bytes=seeded_random(seed + 1)))
    client_ep = net.add(client_addr, Endpoint(client or make_config(b"client"), now=net.now,
                                              random_bytes=seeded_random(seed)))
    client_ref = client_ep.connect(SERVER_ADDR, net.now)
    server_ref = _await_both_established(net, net.events[client_addr], 0,
                                         net.events[SERVER_ADDR], len(net.events[SERVER_ADDR]))
    if server_ref is None:
        raise RuntimeError("handshake did not complete")
    net.run(0.05)  # let the first flow-control updates settle
    return Established(net, client_ep, server_ep, client_ref, server_ref, client_addr)


def _established_ref(events: list[Event], start: int) -> SessionRef | None:
    """The ref of the first ``SessionEstablished`` in ``events[start:]``, if any."""
    return next((e.ref for e in events[start:] if isinstance(e, SessionEstablished)), None)


def _await_both_established(net: Net, client_events: list[Event], client_start: int,
                            server_events: list[Event], server_start: int) -> SessionRef | None:
    """Run ``net`` (5 s at most) until both sides report a session established
    after the given marks; the server's ref, or None if they did not."""

    def both_up() -> bool:
        return _established_ref(client_events, client_start) is not None \
            and _established_ref(server_events, server_start) is not None

    if not net.run(5.0, stop=both_up):
        return None
    return _established_ref(server_events, server_start)


def resume(pair: Established) -> Established:
    """Close the pair's session and resume it from the client's resume token.

    Returns the pair of the resumed session, on the same network and endpoints.

    Raises:
        RuntimeError: no token arrived, or the resumption did not complete (a
            harness bug, not an input).
    """
    net, client, server = pair.net, pair.client, pair.server

    def token_of(ref: SessionRef) -> bytes | None:
        return next((e.token for e in pair.client_events
                     if isinstance(e, ResumeTokenReceived) and e.ref == ref), None)

    if token_of(pair.client_ref) is None:
        net.run(2.0, stop=lambda: token_of(pair.client_ref) is not None)
    token = token_of(pair.client_ref)
    if token is None:
        raise RuntimeError("no resume token arrived")
    client.close_session(pair.client_ref, now=net.now)
    net.run(5.0, stop=lambda: any(isinstance(e, SessionClosed) and e.ref == pair.server_ref
                                  for e in pair.server_events))
    client_before, server_before = len(pair.client_events), len(pair.server_events)
    client_ref = client.resume(SERVER_ADDR, token, net.now)
    server_ref = _await_both_established(net, pair.client_events, client_before,
                                         pair.server_events, server_before)
    if server_ref is None:
        raise RuntimeError("resumption did not complete")
    net.run(0.05)
    return Established(net, client, server, client_ref, server_ref, pair.client_addr)


class RawPeer:
    """A peer that holds the seed and sends frames of its choice on a real session.

    Built on an established client session: ``packet(payload)`` seals raw frame
    bytes under the client's current send key with its next packet number, so
    the server authenticates the packet exactly as it would a real one.
    """

    def __init__(self, pair: Established) -> None:
        self.pair = pair
        session = pair.client.sessions.get(pair.client_ref)
        if session is None or session.send_protection is None:
            raise RuntimeError("the client session is not established")
        self.session: Session = session

    def packet(self, payload: bytes, *, packet_number: int | None = None) -> bytes:
        """A sealed session packet carrying ``payload`` (encoded frames) as plaintext."""
        session = self.session
        protection = session.send_protection
        if protection is None:
            raise RuntimeError("the client session lost its keys")
        if packet_number is None:
            packet_number = session.next_packet_number
            session.next_packet_number += 1
        header = encode_session_header(session.send_phase, session.session_id, packet_number)
        return header + protection.seal(packet_number, header, payload)

    def send(self, payload: bytes, *, source: Address | None = None) -> bytes:
        """Seal ``payload`` and deliver it to the server now; returns the datagram."""
        datagram = self.packet(payload)
        self.pair.net.inject(datagram, source if source is not None else self.pair.client_addr,
                             SERVER_ADDR)
        return datagram


def _instrument_core(atheris: Any) -> None:
    """Give coverage feedback for ``stt_core`` only.

    ``atheris.instrument_all()`` would also instrument this harness, the
    ``cryptography`` wrappers and the standard library, which makes every run
    several times slower without telling the fuzzer anything about the core.
    """
    functions = [obj for obj in gc.get_objects() if isinstance(obj, types.FunctionType)
                 and (obj.__module__ or "").startswith("stt_core")]
    for function in functions:
        atheris.instrument_func(function)
    print(f"INFO: instrumented {len(functions)} stt_core functions", file=sys.stderr)


def run_fuzzer(check: Callable[[bytes], None], argv: list[str]) -> None:
    """Entry point of every target: libFuzzer via atheris, or a plain replay.

    With atheris installed, ``argv`` goes to libFuzzer (corpus directories,
    ``-max_total_time=N`` ...). Without it, every file named in ``argv`` is
    run once through ``check``, which is enough to reproduce a crash.
    """
    try:
        atheris = importlib.import_module("atheris")
    except ImportError:
        import pathlib
        files = [p for arg in argv[1:] if not arg.startswith("-")
                 for p in (sorted(pathlib.Path(arg).iterdir()) if pathlib.Path(arg).is_dir()
                           else [pathlib.Path(arg)])]
        for path in files:
            check(path.read_bytes())
        print(f"atheris is not installed: replayed {len(files)} inputs without error")
        return
    _instrument_core(atheris)
    atheris.Setup(argv, lambda data: check(bytes(data)))
    atheris.Fuzz()
