"""Two-process probe: what a session's lifecycle costs before any protocol logic.

The handshake-CPU target asks for at most 0.5 ms of CPU for both sides
together per handshake, measured through the bindings with sessions closed
once established (the suite's ``handshake`` case, ``hs_probe``). This probe
measures the cheapest program of that shape on asyncio (or uvloop): client and
server in separate processes pinned to different cores, the client's task
awaiting each session's establishment as ``connect`` does, everything else
answered inside the sockets' reader callbacks. Each side reads its socket as
STT's UDP carrier does (a readiness callback that drains it), which costs
less than asyncio's ``DatagramProtocol`` transport; ``--io protocol`` measures
with that transport instead. A lifecycle is the six
datagrams an STT lifecycle sends (HELLO padded to 1,200 bytes, CHALLENGE,
AUTH_PROOF, the server's first session packet, the close and its
acknowledgement, at STT's sizes) and nothing else: no framing, no
retransmission state, no timers, no streams.

- ``datagrams``: the six datagrams alone;
- ``datagrams+crypto``: each side also does the cryptography an STT side does
  per lifecycle, counted on the real core: one X25519 key generation, public
  key, parse and exchange, 15 HMAC-SHA256s (the key schedule), 3 or 4 SHA-256
  transcript hashes, 5 AES-256-GCM contexts (three for handshake messages, two
  packet protections) and 6 or 7 seals and opens. It is a working key exchange
  (each side opens what the other sealed under keys both derived from the
  exchange), not an imitation, so none of the work can be skipped.
- ``handshake+crypto``: that, without the close: the client holds every
  session, so each lifecycle is four datagrams (the ``hs_probe --split``
  workload's handshake half).

The variants take turns ``--rounds`` times; it prints the median of each
variant's CPU per lifecycle on each side and their sum, which is what the
target's 0.5 ms would have to cover.

    .venv/bin/python -m tests.benchmarks.handshake_floor [--count 2000] [--rounds 3] \
        [--backend uvloop] [--io protocol]
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stt_core.crypto import hkdf_expand_label, hkdf_extract, hmac_sha256

from .common import run_on_asyncio_loop
from .probe_support import (
    floor_arguments,
    open_udp,
    pin_to_core,
    serve_counted,
    server_process,
    take_turns,
)

HOST = "127.0.0.1"
VARIANTS = ("datagrams", "datagrams+crypto", "handshake+crypto")
PSK = bytes(range(32))  # a probe, not a secret: both processes need the same key
NONCE = bytes(12)

# Message types (first byte) and the sizes STT's datagrams have in this workload.
HELLO, CHALLENGE, PROOF, SESSION, CLOSE, CLOSE_ACK = range(1, 7)
HELLO_SIZE, CHALLENGE_SIZE, PROOF_SIZE, SESSION_SIZE, CLOSE_SIZE = 1200, 101, 58, 120, 30


def _hmacs(key: bytes, count: int) -> bytes:
    """``count`` chained HMAC-SHA256s under ``key``, for the key schedule's remainder."""
    out = key
    for _ in range(count):
        out = hmac_sha256(key, out)
    return out


def _protection(secret: bytes) -> AESGCM:
    """A packet protection: key and IV derived from ``secret`` (two HMACs), one context."""
    _hmacs(secret, 1)  # the IV's derivation; the probe seals with a zero nonce
    return AESGCM(hkdf_expand_label(secret, "key", b"", 32))


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _pad(head: bytes, size: int) -> bytes:
    return head + bytes(max(0, size - len(head)))


@dataclass
class _Keys:
    """What both sides derive from the exchange, per session."""

    c_hs: bytes
    s_hs: bytes
    transcript: bytes


def _schedule(shared: bytes, transcript: bytes) -> _Keys:
    """Handshake secrets from the X25519 output: three HMACs and one hash."""
    hs = hkdf_extract(PSK, shared)
    return _Keys(hkdf_expand_label(hs, "c hs", transcript, 32),
                 hkdf_expand_label(hs, "s hs", transcript, 32),
                 _sha256(transcript))


def _traffic(keys: _Keys) -> tuple[AESGCM, AESGCM]:
    """Traffic protections after AUTH_PROOF: master secret, three secrets, two contexts
    (10 HMACs with the contexts' key and IV derivations)."""
    master = hkdf_extract(bytes(32), keys.c_hs + keys.s_hs)
    c_ap = hkdf_expand_label(master, "c ap", keys.transcript, 32)
    s_ap = hkdf_expand_label(master, "s ap", keys.transcript, 32)
    hkdf_expand_label(master, "res", keys.transcript, 32)
    return _protection(c_ap), _protection(s_ap)


class _Server(asyncio.DatagramProtocol):
    """Answers every message inside ``datagram_received``; one dict entry per session."""

    def __init__(self, crypto: bool) -> None:
        self.crypto = crypto
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[bytes, Any] = {}
        self.token_aead = AESGCM(bytes(32))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        kind, sid = data[0], data[1:9]
        reply: bytes
        if not self.crypto:
            reply_kind, size = _REPLIES[kind]
            reply = _pad(bytes([reply_kind]) + sid, size)
            if kind == CLOSE:
                self.sessions.pop(sid, None)
            else:
                self.sessions[sid] = kind
        elif kind == HELLO:
            nonce, public_c = data[9:41], data[41:73]
            hello_key = hkdf_expand_label(hkdf_extract(nonce, PSK), "hello", b"", 32)
            AESGCM(hello_key).decrypt(NONCE, data[73:], data[:73])
            private = X25519PrivateKey.from_private_bytes(os.urandom(32))
            public_s = private.public_key().public_bytes_raw()
            shared = private.exchange(X25519PublicKey.from_public_bytes(public_c))
            keys = _schedule(shared, data[:73] + public_s)
            head = bytes([CHALLENGE]) + sid + public_s
            sealed = AESGCM(keys.s_hs).encrypt(NONCE, bytes(CHALLENGE_SIZE - len(head) - 16), head)
            keys.transcript = _sha256(keys.transcript + sealed)
            self.sessions[sid] = keys
            reply = head + sealed
        elif kind == PROOF:
            keys = self.sessions[sid]
            mac = hmac_sha256(hkdf_expand_label(keys.c_hs, "finished", b"", 32), keys.transcript)
            if AESGCM(keys.c_hs).decrypt(NONCE, data[9:], data[:9])[:32] != mac:
                raise RuntimeError("AUTH_PROOF does not verify")
            keys.transcript = _sha256(keys.transcript + data)
            c_ap, s_ap = _traffic(keys)
            self.sessions[sid] = (c_ap, s_ap)
            token = self.token_aead.encrypt(NONCE, _sha256(keys.transcript + sid), sid)
            head = bytes([SESSION]) + sid
            reply = head + s_ap.encrypt(NONCE, _pad(token, SESSION_SIZE - 25), head)
        else:  # CLOSE
            c_ap, s_ap = self.sessions.pop(sid)
            c_ap.decrypt(NONCE, data[9:], data[:9])
            head = bytes([CLOSE_ACK]) + sid
            reply = head + s_ap.encrypt(NONCE, bytes(CLOSE_SIZE - 25), head)
        self.transport.sendto(reply, addr)


_REPLIES = {HELLO: (CHALLENGE, CHALLENGE_SIZE), PROOF: (SESSION, SESSION_SIZE),
            CLOSE: (CLOSE_ACK, CLOSE_SIZE)}


class _Client(asyncio.DatagramProtocol):
    """Sends HELLO and the close from the task, AUTH_PROOF from the reader callback."""

    def __init__(self, crypto: bool) -> None:
        self.crypto = crypto
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[bytes, Any] = {}
        self.established: asyncio.Future[bytes] | None = None
        self.all_done: asyncio.Future[None] | None = None
        self.done = 0
        self.expected = 0
        self.closing = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def hello(self, number: int) -> None:
        assert self.transport is not None
        sid = number.to_bytes(8, "big")
        head = bytes([HELLO]) + sid
        if not self.crypto:
            self.transport.sendto(_pad(head, HELLO_SIZE))
            return
        nonce = os.urandom(32)
        private = X25519PrivateKey.from_private_bytes(os.urandom(32))
        head += nonce + private.public_key().public_bytes_raw()
        hello_key = hkdf_expand_label(hkdf_extract(nonce, PSK), "hello", b"", 32)
        self.sessions[sid] = (private, head)
        self.transport.sendto(head + AESGCM(hello_key).encrypt(
            NONCE, bytes(HELLO_SIZE - len(head) - 16), head))

    def close(self, sid: bytes) -> None:
        assert self.transport is not None
        head = bytes([CLOSE]) + sid
        if not self.crypto:
            self.transport.sendto(_pad(head, CLOSE_SIZE))
            return
        c_ap, _ = self.sessions[sid]
        self.transport.sendto(head + c_ap.encrypt(NONCE, bytes(CLOSE_SIZE - 25), head))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None and self.established is not None
        kind, sid = data[0], data[1:9]
        if kind == CHALLENGE:
            if self.crypto:
                self._challenge(sid, data)
            else:
                self.transport.sendto(_pad(bytes([PROOF]) + sid, PROOF_SIZE))
            self.established.set_result(sid)
        elif kind == SESSION:
            if self.crypto:
                _, s_ap = self.sessions[sid]
                s_ap.decrypt(NONCE, data[9:], data[:9])
            if not self.closing:
                self._count_done()
        elif kind == CLOSE_ACK:
            if self.crypto:
                _, s_ap = self.sessions.pop(sid)
                s_ap.decrypt(NONCE, data[9:], data[:9])
            self._count_done()

    def _count_done(self) -> None:
        """One more lifecycle over: its session packet or, when closing, its close's ACK."""
        self.done += 1
        if self.done == self.expected and self.all_done is not None:
            self.all_done.set_result(None)

    def _challenge(self, sid: bytes, data: bytes) -> None:
        assert self.transport is not None
        private, hello_head = self.sessions[sid]
        public_s = data[9:41]
        shared = private.exchange(X25519PublicKey.from_public_bytes(public_s))
        keys = _schedule(shared, hello_head + public_s)
        AESGCM(keys.s_hs).decrypt(NONCE, data[41:], data[:41])
        keys.transcript = _sha256(keys.transcript + data[41:])
        mac = hmac_sha256(hkdf_expand_label(keys.c_hs, "finished", b"", 32), keys.transcript)
        head = bytes([PROOF]) + sid
        proof = head + AESGCM(keys.c_hs).encrypt(
            NONCE, _pad(mac, PROOF_SIZE - len(head) - 16), head)
        keys.transcript = _sha256(keys.transcript + proof)
        self.sessions[sid] = _traffic(keys)
        self.transport.sendto(proof)


@dataclass(frozen=True)
class Result:
    """One variant's CPU per lifecycle on each side."""

    client_cpu_us: float
    server_cpu_us: float


def _server_process(crypto: bool, io: str, backend: str, pipe: Connection) -> None:
    pin_to_core(1)

    async def serve() -> None:
        protocol = _Server(crypto)
        transport = await open_udp(protocol, io, local=(HOST, 0))
        cpu_us = await serve_counted(pipe, transport.get_extra_info("sockname")[1])
        pipe.send((cpu_us, len(protocol.sessions)))
        transport.close()

    run_on_asyncio_loop(backend, serve(), "the handshake floor probe")


def _client(crypto: bool, closing: bool, io: str, backend: str, port: int, count: int,
            warmup: int, pipe: Connection) -> float:
    pin_to_core(0)
    result: list[float] = []

    async def lifecycles() -> None:
        loop = asyncio.get_running_loop()
        protocol = _Client(crypto)
        transport = await open_udp(protocol, io, remote=(HOST, port))
        protocol.expected = warmup + count
        protocol.all_done = loop.create_future()
        protocol.closing = closing
        start_cpu = 0.0
        for number in range(warmup + count):
            if number == warmup:
                pipe.send("start")
                start_cpu = time.process_time()
            protocol.established = loop.create_future()
            protocol.hello(number)
            sid = await protocol.established
            if closing:
                protocol.close(sid)
        await protocol.all_done  # the last close's ACK, or the last session packet
        result.append((time.process_time() - start_cpu) * 1e6 / count)
        pipe.send(count)
        transport.close()

    run_on_asyncio_loop(backend, lifecycles(), "the handshake floor probe")
    return result[0]


def measure(variant: str, io: str, backend: str, count: int, warmup: int) -> Result:
    """One variant, server in a child process, client in this one."""
    crypto = variant.endswith("+crypto")
    closing = variant != "handshake+crypto"
    with server_process(_server_process, crypto, io, backend) as pipe:
        port: int = pipe.recv()
        client_cpu = _client(crypto, closing, io, backend, port, count, warmup, pipe)
        server_cpu, left_open = pipe.recv()
    if left_open != (0 if closing else warmup + count):
        raise RuntimeError(f"the server holds {left_open} sessions at the end")
    return Result(client_cpu, server_cpu)


def main() -> None:
    args = floor_arguments(
        __doc__, count=2000, warmup=100, what="lifecycle", io_default="reader",
        io_help="how each side reads its socket (default: the cheaper, as STT's carrier "
                "does)").parse_args()
    runs = take_turns(VARIANTS, args.rounds, lambda variant: measure(
        variant, args.io, args.backend, args.count, args.warmup))
    print(f"{args.backend}, {args.io} I/O, medians of {args.rounds} runs of {args.count} "
          "lifecycles each:")
    for variant, results in runs.items():
        client = statistics.median(r.client_cpu_us for r in results)
        server = statistics.median(r.server_cpu_us for r in results)
        both = statistics.median(r.client_cpu_us + r.server_cpu_us for r in results)
        print(f"  {variant:<17} CPU per lifecycle client {client:5.0f} / server {server:5.0f} us, "
              f"both {both:5.0f} us (runs "
              f"{', '.join(f'{r.client_cpu_us + r.server_cpu_us:.0f}' for r in results)})")


if __name__ == "__main__":
    main()
