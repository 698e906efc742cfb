"""The handshake floor probe does the work it claims: a working key exchange with
the per-side cryptography an STT lifecycle does, in six datagrams of STT's sizes.

Runs the probe's two protocol objects against each other in one process, with
transports that hand each datagram straight to the other side.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.benchmarks import handshake_floor as floor

# Per side and lifecycle, as counted on the core by wrapping each primitive
# (docs/performance.md, "The floor of the shape: six datagrams ...").
EXPECTED = {
    "client": {"hmac": 15, "sha256": 3, "aead_context": 5, "seal": 3, "open": 3,
               "x25519_key": 1, "x25519_exchange": 1},
    "server": {"hmac": 15, "sha256": 4, "aead_context": 5, "seal": 4, "open": 3,
               "x25519_key": 1, "x25519_exchange": 1},
}


class _Wire(asyncio.DatagramTransport):
    """A transport whose ``sendto`` runs the peer's ``datagram_received`` at once
    (or, with no peer, only records the datagram)."""

    def __init__(self, name: str, peer: asyncio.DatagramProtocol | None,
                 log: list[tuple[str, bytes]], side: list[str]) -> None:
        super().__init__()
        self.name, self.peer, self.log, self.side = name, peer, log, side

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        self.log.append((self.name, bytes(data)))
        self.side[0] = "server" if self.name == "client" else "client"
        if self.peer is not None:
            self.peer.datagram_received(bytes(data), ("127.0.0.1", 1))


Run = tuple[floor._Client, floor._Server, Counter[tuple[str, str]], list[tuple[str, bytes]]]


def _run(crypto: bool, closing: bool, lifecycles: int, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``lifecycles`` lifecycles, the primitives each side called counted by name."""
    server, client = floor._Server(crypto), floor._Client(crypto)  # the token key: once
    counts: Counter[tuple[str, str]] = Counter()
    side = ["client"]

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            counts[side[0], name] += 1
            return function(*args)
        return wrapper

    class CountingAESGCM:
        def __init__(self, key: bytes, made: AESGCM | None = None) -> None:
            if made is None:
                counts[side[0], "aead_context"] += 1
            self.aead = made or AESGCM(key)

        def encrypt(self, *args: Any) -> bytes:
            counts[side[0], "seal"] += 1
            return self.aead.encrypt(*args)

        def decrypt(self, *args: Any) -> bytes:
            counts[side[0], "open"] += 1
            return self.aead.decrypt(*args)

    for name in ("hkdf_extract", "hkdf_expand_label", "hmac_sha256"):
        monkeypatch.setattr(floor, name, counted("hmac", getattr(floor, name)))
    monkeypatch.setattr(floor, "_sha256", counted("sha256", floor._sha256))
    monkeypatch.setattr(floor, "AESGCM", CountingAESGCM)
    monkeypatch.setattr(server, "token_aead", CountingAESGCM(b"", server.token_aead))

    class CountingPrivateKey:
        @staticmethod
        def from_private_bytes(data: bytes) -> Any:
            counts[side[0], "x25519_key"] += 1
            key = X25519PrivateKey.from_private_bytes(data)

            class Key:
                public_key = key.public_key

                @staticmethod
                def exchange(peer: Any) -> bytes:
                    counts[side[0], "x25519_exchange"] += 1
                    return key.exchange(peer)
            return Key()

    monkeypatch.setattr(floor, "X25519PrivateKey", CountingPrivateKey)
    log: list[tuple[str, bytes]] = []
    server.connection_made(_Wire("server", client, log, side))
    client.connection_made(_Wire("client", server, log, side))
    client.expected, client.closing = lifecycles, closing
    loop = asyncio.new_event_loop()
    try:
        client.all_done = loop.create_future()
        for number in range(lifecycles):
            client.established = loop.create_future()
            side[0] = "client"
            client.hello(number)
            sid = client.established.result()
            side[0] = "client"
            if closing:
                client.close(sid)
        assert client.all_done.done()
    finally:
        loop.close()
    return client, server, counts, log


def test_a_lifecycle_is_six_datagrams_of_stt_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    for crypto in (False, True):
        client, server, _, log = _run(crypto, True, 3, monkeypatch)
        assert [(who, len(data)) for who, data in log[:6]] == [
            ("client", 1200), ("server", 101), ("client", 58),
            ("server", 120), ("client", 30), ("server", 30)]
        assert len(log) == 18
        assert not server.sessions and not client.sessions


def test_each_side_does_the_cryptography_of_an_stt_side(monkeypatch: pytest.MonkeyPatch) -> None:
    lifecycles = 4
    _, _, counts, _ = _run(True, True, lifecycles, monkeypatch)
    for who, expected in EXPECTED.items():
        got = {name: counts[who, name] / lifecycles for name in expected}
        assert got == expected, who


def test_the_key_exchange_works_and_a_forged_proof_fails() -> None:
    log: list[tuple[str, bytes]] = []
    side = ["client"]
    server, client = floor._Server(True), floor._Client(True)
    server.connection_made(_Wire("server", None, log, side))
    client.connection_made(_Wire("client", None, log, side))
    loop = asyncio.new_event_loop()
    try:
        client.established = loop.create_future()
        client.hello(7)
        server.datagram_received(log[-1][1], None)  # HELLO, answered with CHALLENGE
        client.datagram_received(log[-1][1], None)  # CHALLENGE, answered with AUTH_PROOF
        assert client.established.result() == (7).to_bytes(8, "big")
        proof = log[-1][1]
        forged = proof[:-1] + bytes([proof[-1] ^ 1])
        with pytest.raises(InvalidTag):
            server.datagram_received(forged, None)
        server.datagram_received(proof, None)  # the real one opens the session
        session_packet = log[-1][1]
        assert session_packet[0] == floor.SESSION and len(session_packet) == 120
        client.datagram_received(session_packet, None)  # opens under the derived keys
    finally:
        loop.close()
