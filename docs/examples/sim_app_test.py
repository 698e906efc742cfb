"""Testing an application with the network simulator (``stt_core.sim``).

Run the tests with pytest, or the file directly::

    pytest docs/examples/sim_app_test.py
    python docs/examples/sim_app_test.py          # runs the same checks for 5 seeds

The application is a tiny key-value service written against the sans-I/O
core: it reacts to events (``MessageReceived``) with commands
(``send_message``), so the same classes could run under a real binding. The
tests put it on a simulated network that loses, duplicates, delays and
reorders datagrams, on a virtual clock: a minute of simulated time takes a
fraction of a second, nothing sleeps, and the run is a pure function of the
seed. When a test fails, the seed in its message replays it exactly.

What the tests assert is what an application cares about: every request
gets exactly one reply, in order, with the value a plain ``dict`` would
give, whatever the network did.
"""

from __future__ import annotations

from collections.abc import Callable

from stt_core import (
    Config,
    Endpoint,
    Event,
    MessageReceived,
    SessionEstablished,
)
from stt_core.sim import LinkConfig, Network

SHARED_SEED = b"docs example shared seed"
SERVER_ID = b"kv-server"
CLIENT_ADDR = ("10.0.0.1", 40000)
"""Simulated addresses: opaque to the core, never real sockets."""
SERVER_ADDR = ("10.0.0.2", 9000)
BAD_NETWORK = LinkConfig(delay=0.030, jitter=0.010, loss=0.10, duplicate=0.02,
                         reorder=0.05, corrupt=0.01)
"""30-40 ms one way, 10% loss, some duplicates, reordering and bit flips."""


# --8<-- [start:app]
def answer(store: dict[str, str], request: bytes) -> bytes:
    """The service's logic: ``put key=value`` -> ``ok``, ``get key`` -> the value."""
    op, _, argument = request.decode().partition(" ")
    if op == "put":
        key, _, value = argument.partition("=")
        store[key] = value
        return b"ok"
    if op == "get":
        return store.get(argument, "").encode()
    return b"error: unknown operation"


class KvServer:
    """Server half: answer every request on the stream it came on."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.store: dict[str, str] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            reply = answer(self.store, event.data)
            self.endpoint.send_message(event.ref, event.stream_id, reply)


class KvClient:
    """Client half: once connected, pipeline every request on one stream."""

    def __init__(self, endpoint: Endpoint, requests: list[bytes]) -> None:
        self.endpoint = endpoint
        self.requests = requests
        self.replies: list[bytes] = []

    def on_event(self, event: Event) -> None:
        if isinstance(event, SessionEstablished):
            stream_id = self.endpoint.open_stream(event.ref, purpose="kv")
            for request in self.requests:
                self.endpoint.send_message(event.ref, stream_id, request)
        elif isinstance(event, MessageReceived):
            self.replies.append(event.data)
# --8<-- [end:app]


# --8<-- [start:harness]
def run_service(seed: int, requests: list[bytes], *, link: LinkConfig = BAD_NETWORK,
                timeout: float = 120.0) -> tuple[Network, KvClient]:
    """Client and server on a simulated link; runs until every reply is in (or timeout)."""
    net = Network(seed=seed)
    client_ep = Endpoint(Config(shared_seed=SHARED_SEED, node_id=b"kv-client"),
                         now=net.now, random_bytes=net.random_bytes_for("client"))
    server_ep = Endpoint(Config(shared_seed=SHARED_SEED, node_id=SERVER_ID,
                                server_mode=True),
                         now=net.now, random_bytes=net.random_bytes_for("server"))
    client, server = KvClient(client_ep, requests), KvServer(server_ep)
    net.add_node("client", client_ep, [CLIENT_ADDR], collect_events=False)
    net.add_node("server", server_ep, [SERVER_ADDR], collect_events=False)
    net.on_event("client", client.on_event)  # the apps react inside the simulator's pump
    net.on_event("server", server.on_event)
    net.set_link(CLIENT_ADDR, SERVER_ADDR, link)  # both directions
    net.call("client", lambda: client_ep.connect(SERVER_ADDR, net.now,
                                                 peer_node_id=SERVER_ID))
    net.run_until(lambda: len(client.replies) >= len(requests), timeout=timeout)
    return net, client
# --8<-- [end:harness]


def workload(n: int = 40) -> tuple[list[bytes], list[bytes]]:
    """``n`` puts then ``n`` gets, and the replies a plain dict gives for them."""
    requests = [f"put k{i}={i * i}".encode() for i in range(n)]
    requests += [f"get k{i}".encode() for i in range(n)]
    model: dict[str, str] = {}
    return requests, [answer(model, request) for request in requests]


# --8<-- [start:tests]
def test_every_request_answered_once_in_order(seed: int = 1) -> None:
    requests, expected = workload()
    net, client = run_service(seed, requests)
    assert client.replies == expected, (
        f"seed={seed}: {len(client.replies)}/{len(expected)} replies by t={net.now:.1f}s; "
        f"replay with run_service({seed}, workload()[0])")


def test_same_seed_same_run(seed: int = 2) -> None:
    requests, _ = workload(10)
    first, _ = run_service(seed, requests)
    second, _ = run_service(seed, requests)
    assert first.trace_digest() == second.trace_digest()
    assert first.now == second.now
# --8<-- [end:tests]


TESTS: list[Callable[[int], None]] = [test_every_request_answered_once_in_order,
                                      test_same_seed_same_run]


def main(seeds: range = range(1, 6)) -> int:
    """Run every test for every seed; returns how many runs passed (raises on failure)."""
    runs = 0
    for seed in seeds:
        for test in TESTS:
            test(seed)
            runs += 1
    return runs


if __name__ == "__main__":
    print(f"{main()} simulated test runs passed")
