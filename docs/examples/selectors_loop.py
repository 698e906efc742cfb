"""The sans-I/O core driven by a hand-written ``selectors`` loop (no anyio, no asyncio).

Run::

    python docs/examples/selectors_loop.py                     # server + client, one loop
    python docs/examples/selectors_loop.py --serve 9000        # only the echo server
    python docs/examples/selectors_loop.py --connect 127.0.0.1:9000 "some text"

``stt_core.Endpoint`` never touches a socket or a clock. This program is a
complete binding in about a hundred lines: a non-blocking UDP socket, a
``selectors`` loop and ``time.monotonic()``. It follows the pump contract
from ``stt_core.endpoint``:

1. feed input: every datagram the socket has (``receive_datagram``), and
   ``handle_timer`` once the deadline ``next_timer()`` gave has passed;
2. drain ``next_event()`` until it returns None, reacting to each event
   (reactions are commands, which only queue);
3. send everything ``datagrams_to_send(now)`` returns;
4. sleep in ``select`` until a datagram arrives or the next deadline.

The server echoes every message on the stream it came on; the client opens a
stream, sends a message, waits for the echo and closes the session
gracefully. ``main()`` runs both endpoints in one loop on loopback and
returns the echo, which is what the docs test checks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import selectors
import socket
import time
from collections.abc import Callable
from typing import cast

from stt_core import (
    Config,
    Endpoint,
    Event,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
)

SHARED_SEED = b"docs example shared seed"
SERVER_ID = b"echo-server"
MAX_UDP_PAYLOAD = 65535


# --8<-- [start:driver]
class Driver:
    """One endpoint on one non-blocking UDP socket: everything a binding does."""

    def __init__(self, config: Config, sock: socket.socket,
                 react: Callable[[Endpoint, Event], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.endpoint = Endpoint(config, now=time.monotonic())
        self.react = react
        self.deadline: float | None = None

    def read(self, now: float) -> None:
        """Step 1: feed every waiting datagram (bad ones are counted, never raised)."""
        while True:
            try:
                data, addr = self.sock.recvfrom(MAX_UDP_PAYLOAD)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier send; the core retransmits
            self.endpoint.receive_datagram(data, addr, now)

    def pump(self, now: float) -> None:
        """Steps 1-4 after input: timers, events, datagrams, the next deadline."""
        if self.deadline is not None and now >= self.deadline:
            self.endpoint.handle_timer(now)
        while (event := self.endpoint.next_event()) is not None:
            self.react(self.endpoint, event)  # commands only queue...
        for datagram, addr in self.endpoint.datagrams_to_send(now):  # ...and leave here
            # Addresses are opaque to the core: it hands back the (host, port)
            # tuples this binding fed in with receive_datagram or connect.
            # A full socket buffer loses the datagram, which the core repairs.
            with contextlib.suppress(BlockingIOError):
                self.sock.sendto(datagram, cast(tuple[str, int], addr))
        self.deadline = self.endpoint.next_timer()


def run_until(drivers: list[Driver], done: Callable[[], bool], timeout: float) -> bool:
    """Run the drivers in one loop until ``done()`` or ``timeout`` seconds passed."""
    selector = selectors.DefaultSelector()
    for driver in drivers:
        selector.register(driver.sock, selectors.EVENT_READ, driver)
    give_up = time.monotonic() + timeout
    try:
        for driver in drivers:
            driver.pump(time.monotonic())  # flush what connect() etc. queued
        while not done():
            now = time.monotonic()
            if now >= give_up:
                return False
            wake = min([d.deadline for d in drivers if d.deadline is not None] + [give_up])
            wait = None if math.isinf(wake) else max(wake - now, 0.0)
            for key, _ in selector.select(wait):
                key.data.read(time.monotonic())
            now = time.monotonic()
            for driver in drivers:
                driver.pump(now)
        return True
    finally:
        selector.close()
# --8<-- [end:driver]


# --8<-- [start:apps]
def echo_server(endpoint: Endpoint, event: Event) -> None:
    """Server reaction: send every message back on its stream."""
    if isinstance(event, MessageReceived):
        endpoint.send_message(event.ref, event.stream_id, event.data)


class EchoClient:
    """Client reactions: once connected send the message; on the echo, close."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.reply: bytes | None = None
        self.closed: SessionClosed | None = None

    def __call__(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, SessionEstablished):
            stream_id = endpoint.open_stream(event.ref, purpose="echo")
            endpoint.send_message(event.ref, stream_id, self.message)
        elif isinstance(event, MessageReceived):
            self.reply = event.data
            endpoint.close_session(event.ref, now=time.monotonic())
        elif isinstance(event, SessionClosed):
            self.closed = event
# --8<-- [end:apps]


def udp_socket(host: str, port: int) -> socket.socket:
    """A UDP socket bound to ``(host, port)``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    return sock


def server_driver(host: str = "127.0.0.1", port: int = 0) -> Driver:
    """The echo server's endpoint on its socket."""
    config = Config(shared_seed=SHARED_SEED, node_id=SERVER_ID, server_mode=True)
    return Driver(config, udp_socket(host, port), echo_server)


def client_driver(address: tuple[str, int], message: bytes) -> tuple[Driver, EchoClient]:
    """A client endpoint that has started connecting to ``address``."""
    app = EchoClient(message)
    driver = Driver(Config(shared_seed=SHARED_SEED, node_id=b"echo-client"),
                    udp_socket("127.0.0.1", 0), app)
    driver.endpoint.connect(address, time.monotonic(), peer_node_id=SERVER_ID)
    return driver, app


def main(message: bytes = b"hello from a select loop", *, timeout: float = 5.0) -> bytes:
    """Run the echo server and a client in one loop on loopback; returns the echo."""
    server = server_driver()
    client, app = client_driver(server.sock.getsockname(), message)
    try:
        if not run_until([server, client], lambda: app.closed is not None, timeout):
            raise TimeoutError(f"no echo within {timeout} s")
    finally:
        server.sock.close()
        client.sock.close()
    if app.reply is None:
        reason = app.closed.reason if app.closed is not None else "unknown"
        raise ConnectionError(f"session ended without an echo: {reason}")
    return app.reply


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("message", nargs="?", default="hello from a select loop")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--serve", type=int, metavar="PORT", help="run only the server")
    group.add_argument("--connect", metavar="HOST:PORT", help="run only the client")
    args = parser.parse_args()
    if args.serve is not None:
        print(f"echo server on UDP 0.0.0.0:{args.serve}")
        run_until([server_driver("0.0.0.0", args.serve)], lambda: False, math.inf)
    elif args.connect:
        host, _, port = args.connect.rpartition(":")
        # The core matches replies by address, so use the IP the socket will report.
        address = (socket.gethostbyname(host), int(port))
        client, app = client_driver(address, args.message.encode())
        run_until([client], lambda: app.closed is not None, 5.0)
        print(app.reply if app.reply is not None else f"failed: {app.closed}")
    else:
        print(main(args.message.encode()))


if __name__ == "__main__":
    _cli()
