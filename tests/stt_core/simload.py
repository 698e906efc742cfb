"""Workload drivers for simulator tests: bulk transfers and message mixes.

A driver feeds an application's messages into a client endpoint as fast as
backpressure allows and records what the peer receives, so tests can assert
exactly-once, in-order, byte-identical delivery and measure goodput.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stt_core import (
    Config,
    Endpoint,
    Event,
    MessageDelivered,
    MessageReceived,
    SessionEstablished,
    SessionRef,
    StreamWritable,
)
from stt_core.sim import LinkConfig, Network

SECRET = b"simulated-shared-seed"
UNCONNECTED = SessionRef(0)
"""A flow's ref until ``add_flow`` connects it."""


@dataclass
class Flow:
    """One client session sending a list of messages per stream to the server."""

    name: str
    address: tuple[str, int]
    endpoint: Endpoint
    ref: SessionRef = UNCONNECTED
    established_at: float | None = None
    queues: dict[int, list[bytes]] = field(default_factory=dict)
    sent: dict[int, list[bytes]] = field(default_factory=dict)
    confirmed: dict[int, list[int]] = field(default_factory=dict)
    message_ids: dict[int, list[int]] = field(default_factory=dict)
    finished_at: float | None = None


def make_endpoint(net: Network, name: str, *, server: bool = False,
                  **overrides: Any) -> Endpoint:
    config = Config(shared_seed=SECRET, node_id=name.encode(), server_mode=server)
    if overrides:
        config = replace(config, **overrides)
    return Endpoint(config, now=net.now, random_bytes=net.random_bytes_for(name))


SERVER_ADDR = ("10.0.0.100", 9000)


class Scenario:
    """A server and any number of client flows on one simulated network."""

    def __init__(self, seed: int, *, server_overrides: Mapping[str, Any] | None = None) -> None:
        self.net = Network(seed=seed)
        self.server = make_endpoint(self.net, "server", server=True,
                                    **(server_overrides or {}))
        self.net.add_node("server", self.server, [SERVER_ADDR])
        self.flows: list[Flow] = []
        self.received: dict[tuple[SessionRef, int], list[bytes]] = {}
        self.server_refs: dict[bytes, SessionRef] = {}
        self.net.on_event("server", self._on_server_event)

    def _on_server_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.received.setdefault((event.ref, event.stream_id), []).append(event.data)
        elif isinstance(event, SessionEstablished):
            self.server_refs[event.session_id] = event.ref

    def add_flow(self, name: str, link: LinkConfig, **overrides: Any) -> Flow:
        address = (f"10.0.1.{len(self.flows) + 1}", 40000)
        endpoint = make_endpoint(self.net, name, **overrides)
        self.net.add_node(name, endpoint, [address])
        self.net.set_link(address, SERVER_ADDR, link)
        flow = Flow(name, address, endpoint)
        self.flows.append(flow)
        self.net.on_event(name, lambda event: self._on_client_event(flow, event))
        flow.ref = self.net.call(name, lambda: endpoint.connect(SERVER_ADDR, self.net.now))
        return flow

    def _on_client_event(self, flow: Flow, event: Event) -> None:
        if isinstance(event, SessionEstablished):
            flow.established_at = self.net.now
            self.net.call_at(self.net.now, lambda: self._feed(flow))
        elif isinstance(event, MessageDelivered):
            flow.confirmed.setdefault(event.stream_id, []).append(event.message_id)
            self.net.call_at(self.net.now, lambda: self._feed(flow))
        elif isinstance(event, StreamWritable):
            self.net.call_at(self.net.now, lambda: self._feed(flow))

    def queue(self, flow: Flow, stream_purpose: str, messages: list[bytes],
              priority: int = 0) -> None:
        """Messages to send on a new stream once the session is up."""
        flow.queues.setdefault(-len(flow.queues) - 1, [])
        key = min(flow.queues)
        flow.queues[key] = list(messages)
        flow.sent.setdefault(key, [])
        _ = (stream_purpose, priority)

    def _feed(self, flow: Flow) -> None:
        if flow.established_at is None:
            return
        endpoint = flow.endpoint
        for key in list(flow.queues):
            if key < 0:
                stream_id = endpoint.open_stream(flow.ref, purpose=f"s{-key}")
                flow.queues[stream_id] = flow.queues.pop(key)
                flow.sent[stream_id] = flow.sent.pop(key)
        for stream_id, pending in flow.queues.items():
            while pending and endpoint.can_send(flow.ref, stream_id):
                message = pending.pop(0)
                message_id = endpoint.send_message(flow.ref, stream_id, message)
                flow.sent[stream_id].append(message)
                flow.message_ids.setdefault(stream_id, []).append(message_id)
        self.net.flush(flow.name)

    def all_confirmed(self) -> bool:
        for flow in self.flows:
            for stream_id, pending in flow.queues.items():
                if pending:
                    return False
                if len(flow.confirmed.get(stream_id, [])) != len(flow.sent.get(stream_id, [])):
                    return False
        return bool(self.flows)

    def run(self, timeout: float, until: Callable[[], bool] | None = None) -> bool:
        return self.net.run_until(until or self.all_confirmed, timeout=timeout)

    def received_for(self, flow: Flow, stream_id: int) -> list[bytes]:
        """What the server received from ``flow`` on ``stream_id``."""
        session_id = flow.endpoint.session_id(flow.ref)
        server_ref = self.server_refs.get(session_id or b"")
        if server_ref is None:
            return []
        return self.received.get((server_ref, stream_id), [])
