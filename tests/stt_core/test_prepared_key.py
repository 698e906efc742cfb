"""The ephemeral key an endpoint prepares ahead of time is used by one handshake, then gone."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from stt_core import Config, Endpoint, SessionEstablished
from stt_core.crypto import derive_psk
from stt_core.handshake import Responder
from stt_core.wire import PacketType

from .helpers import SEED

CLIENT = ("10.0.0.1", 1)
SERVER = ("10.0.0.2", 2)


class RecordingRandom:
    """os.urandom that remembers every draw, to recompute the keys made from them."""

    def __init__(self) -> None:
        self.draws: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        value = os.urandom(size)
        self.draws.append(value)
        return value


def _public(private_bytes: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_bytes).public_key().public_bytes_raw()


def _hello_ephemeral(datagram: bytes) -> bytes:
    return Responder.read_hello(derive_psk(SEED), datagram[:10], datagram[10:]).ephemeral_public


def test_initiator_uses_the_prepared_key_once_then_draws_its_own() -> None:
    rng = RecordingRandom()
    client = Endpoint(Config(shared_seed=SEED, node_id=b"client"), now=0.0, random_bytes=rng)
    assert not client.handshake_key_wanted  # nothing used yet: no work ahead of time
    client.connect(SERVER, 0.0)
    assert client.handshake_key_wanted
    client.prepare_handshake_key()
    assert not client.handshake_key_wanted
    prepared = _public(rng.draws[-1])
    client.connect(SERVER, 0.0)
    client.connect(SERVER, 0.0)
    hellos = [d for d, _ in client.datagrams_to_send(0.0) if d[0] == PacketType.HELLO]
    keys = [_hello_ephemeral(d) for d in hellos]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert keys.count(prepared) == 1 and keys[1] == prepared


def test_responder_uses_the_prepared_key_and_the_handshake_completes() -> None:
    rng = RecordingRandom()
    client = Endpoint(Config(shared_seed=SEED, node_id=b"client"), now=0.0)
    server = Endpoint(Config(shared_seed=SEED, node_id=b"server", server_mode=True), now=0.0,
                      random_bytes=rng)
    server.take_handshake_key()  # as if an earlier handshake had used one
    server.prepare_handshake_key()
    prepared = _public(rng.draws[-1])
    client.connect(SERVER, 0.0)
    established = 0
    challenges: list[bytes] = []
    for _ in range(4):
        for source, sink, addr in ((client, server, CLIENT), (server, client, SERVER)):
            for datagram, _ in source.datagrams_to_send(0.0):
                if datagram[0] == PacketType.CHALLENGE:
                    challenges.append(datagram)
                sink.receive_datagram(datagram, addr, 0.0)
            while (event := sink.next_event()) is not None:
                established += isinstance(event, SessionEstablished)
    assert established == 2
    (challenge,) = challenges
    assert challenge[10 + 32:10 + 64] == prepared  # e_r_pub follows nonce_r
    assert server.handshake_key_wanted  # used up: the next handshake needs a new one
