"""Write the seed corpus of every fuzz target from real, deterministic sessions.

Owns ``fuzz/corpus/<target>/``: each file is one input for that target,
named ``<what>-<sha1 prefix>``. Everything is produced by running the real
endpoints with seeded randomness (the same seeds the targets use), so the
seeds are valid messages for the exact handshakes the targets replay: a
fuzzer starts from inputs that pass authentication and mutates from there.

It must not hand-write any packet bytes: messages come from the endpoints, and
frame payloads from the endpoints or the ``stt_core.wire`` encoders.

Usage: ``python -m fuzz.make_corpus`` (from the repository root). The result
is small (well under 2 MB) and committed.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from stt_core import Endpoint, ResumeTokenReceived
from stt_core.crypto import PacketProtection
from stt_core.events import SessionRef
from stt_core.wire import (
    AckFrame,
    AppFrame,
    CloseFrame,
    DataFrame,
    FrameType,
    LimitFrame,
    NackFrame,
    PathFrame,
    ResumeTokenFrame,
    SimpleFrame,
    StreamCloseFrame,
    StreamFinFrame,
    StreamOpenFrame,
    encode_varint,
)

from . import fuzz_datagram, fuzz_handshake
from .harness import CLIENT_ADDR, SERVER_ADDR, SPLIT, Net, establish, make_config, seeded_random

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
KEPT_PREFIXES = ("found-", "regression-")


class Corpus:
    """Collects the files of one target."""

    def __init__(self, target: str) -> None:
        self.dir = ROOT / target
        self.files: dict[str, bytes] = {}

    def add(self, what: str, data: bytes) -> None:
        """Keep ``data`` under a name that says what it is (duplicates collapse)."""
        digest = hashlib.sha1(data).hexdigest()[:12]
        self.files[f"{what}-{digest}"] = data

    def write(self) -> int:
        """Replace the target's generated files; returns their bytes.

        Inputs the fuzzers found (``found-*``) and crash regressions
        (``regression-*``) are kept: they are not reproducible from sessions.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.iterdir():
            if not old.name.startswith(KEPT_PREFIXES):
                old.unlink()
        for name, data in sorted(self.files.items()):
            (self.dir / name).write_bytes(data)
        return sum(len(d) for d in self.files.values())


def _transfer(net: Net, client: Endpoint, sref: SessionRef) -> None:
    """A short exchange touching most frame types: streams, messages, FIN, close."""
    stream = client.open_stream(sref, purpose="chat", priority=3)
    for size in (0, 5, 1500, 40_000):
        client.send_message(sref, stream, bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    client.close_stream(sref, stream)
    net.run(2.0)
    client.close_session(sref, code=0, reason="bye", now=net.now)
    net.run(2.0)


def datagram_corpus() -> Corpus:
    """Real datagrams to and from the exact endpoints ``fuzz_datagram`` builds."""
    corpus = Corpus("datagram")
    attacker = fuzz_datagram.ATTACKER
    net = Net()
    server, client = fuzz_datagram.fresh_endpoints()
    # The target's client connected to ATTACKER; put its server there.
    net.add(attacker, server)
    net.add(CLIENT_ADDR, client)
    net.flush()  # nothing yet: the connect's HELLO was already taken by fresh_endpoints
    client_session = next(iter(client.sessions.values()))
    client_session.hs_send_due = True
    client.touch(client_session)
    net.run(1.0)
    _transfer(net, client, client_session.ref)
    log = [d for _, _, d in net.log]
    for i, datagram in enumerate(log[:48]):
        corpus.add(f"single{i:02d}-type{datagram[0]:02x}", datagram)
    corpus.add("session-all", SPLIT.join(log[:32]))
    corpus.add("handshake", SPLIT.join(log[:4]))
    corpus.add("replayed-twice", SPLIT.join(log[:8] + log[:8]))
    # REJECT (wrong seed) and RETRY (cookie demanded) answers to the same client.
    for name, overrides in (("reject", {"shared_seed": b"another-seed-entirely"}),
                            ("retry", {"cookie_threshold": 0})):
        other = Net()
        _, fresh_client = fuzz_datagram.fresh_endpoints()
        answerer = Endpoint(make_config(b"server", server=True, **overrides), now=other.now,
                            random_bytes=seeded_random(fuzz_datagram.SERVER_SEED))
        other.add(attacker, answerer)
        other.add(CLIENT_ADDR, fresh_client)
        session = next(iter(fresh_client.sessions.values()))
        session.hs_send_due = True
        fresh_client.touch(session)
        other.run(1.0)
        for i, (_, _, datagram) in enumerate(other.log[:6]):
            corpus.add(f"{name}{i}-type{datagram[0]:02x}", datagram)
    corpus.add("empty", b"")
    corpus.add("short", b"\x08\x01")
    return corpus


@contextmanager
def capture_plaintexts() -> Iterator[list[bytes]]:
    """Record the plaintext of every packet sealed while the context is open."""
    original: Callable[[PacketProtection, int, bytes, bytes], bytes] = PacketProtection.seal
    seen: list[bytes] = []

    def seal(self: PacketProtection, packet_number: int, header: bytes,
             plaintext: bytes) -> bytes:
        seen.append(bytes(plaintext))
        return original(self, packet_number, header, plaintext)

    setattr(PacketProtection, "seal", seal)  # noqa: B010 (mypy refuses a method assignment)
    try:
        yield seen
    finally:
        setattr(PacketProtection, "seal", original)  # noqa: B010


def _crafted_frames() -> list[tuple[str, bytes]]:
    """Frames an honest peer rarely sends, built with the wire encoders."""
    big = 1 << 40
    return [
        ("nack", NackFrame([range(0, 3), range(10, 12)]).encode()),
        ("ack-wild", AckFrame([range(100, 200), range(0, 50)], 0.5).encode()),
        ("path-challenge", PathFrame(FrameType.PATH_CHALLENGE, b"12345678").encode()),
        ("path-response", PathFrame(FrameType.PATH_RESPONSE, b"12345678").encode()),
        ("resume-token", ResumeTokenFrame(3600, b"t" * 40).encode()),
        ("app", AppFrame(0x80, b"app payload").encode()),
        ("error", CloseFrame(FrameType.ERROR, 2, "protocol violation").encode()),
        ("session-close", CloseFrame(FrameType.SESSION_CLOSE, 0, "bye").encode()),
        ("stream-open", StreamOpenFrame(7, 1, 1024, "purpose").encode()),
        ("stream-close", StreamCloseFrame(7, 16, 0).encode()),
        ("stream-fin", StreamFinFrame(7, 0).encode()),
        ("max-data", LimitFrame(FrameType.MAX_DATA, -1, big).encode()),
        ("max-stream-data", LimitFrame(FrameType.MAX_STREAM_DATA, 7, big).encode()),
        ("keep-alive", SimpleFrame(FrameType.KEEP_ALIVE).encode()),
        ("huge-message", DataFrame(9, 0, encode_varint(big) + b"x" * 16).encode()),
        ("past-window", DataFrame(9, 4 << 20, b"y" * 32).encode()),
        ("message", DataFrame(9, 0, encode_varint(5) + b"hello", True).encode()
         + StreamOpenFrame(9, 0, 1024, "m").encode()),
        ("padding", bytes(40) + SimpleFrame(FrameType.KEEP_ALIVE).encode()),
    ]


def session_corpus() -> Corpus:
    """Plaintext frame payloads of a real session, plus crafted frames."""
    corpus = Corpus("session")
    with capture_plaintexts() as seen:
        pair = establish(seed=7)
        _transfer(pair.net, pair.client, pair.client_ref)
    payloads = list(seen)
    for i, payload in enumerate(payloads[:40]):
        corpus.add(f"real{i:02d}", b"\x00" + payload)
        corpus.add(f"real{i:02d}-to-client", b"\x03" + payload)
    corpus.add("real-sequence", SPLIT.join(b"\x02" + p for p in payloads[:32]))
    crafted = _crafted_frames()
    for name, payload in crafted:
        corpus.add(f"crafted-{name}", b"\x02" + payload)
        corpus.add(f"crafted-{name}-to-client", b"\x01" + payload)
    corpus.add("crafted-all", SPLIT.join(b"\x00" + p for _, p in crafted))
    opens = b"".join(StreamOpenFrame(2 * i + 1, 0, 1024, "s").encode() for i in range(60))
    corpus.add("many-streams", b"\x00" + opens)
    return corpus


def handshake_corpus() -> Corpus:
    """Every handshake message of the deterministic runs ``fuzz_handshake`` replays."""
    corpus = Corpus("handshake")
    full = Net()
    full_server = Endpoint(make_config(b"server", server=True), now=full.now,
                           random_bytes=seeded_random(21))
    full_client = Endpoint(make_config(b"client"), now=full.now, random_bytes=seeded_random(22))
    full.add(SERVER_ADDR, full_server)
    full.add(CLIENT_ADDR, full_client)
    full_client.connect(SERVER_ADDR, full.now, timeout=fuzz_handshake.TIMEOUT)
    full.run(1.0)
    pair = establish(seed=23)
    ticket = next(e.token for e in pair.client_events if isinstance(e, ResumeTokenReceived))
    pair.client.close_session(pair.client_ref, now=pair.net.now)
    pair.net.run(1.0)
    mark = len(pair.net.log)
    pair.client.resume(SERVER_ADDR, ticket, pair.net.now, timeout=fuzz_handshake.TIMEOUT)
    pair.net.run(1.0)
    messages = [d for _, _, d in full.log] + [d for _, _, d in pair.net.log[mark:]]
    for slot, packet_type in enumerate(fuzz_handshake.SLOTS):
        for datagram in messages:
            if datagram and datagram[0] == packet_type:
                corpus.add(f"slot{slot}-body", bytes((slot,)) + datagram[10:])
                corpus.add(f"slot{slot}-whole", bytes((0x80 | slot,)) + datagram)
                corpus.add(f"slot{slot}-extra", bytes((0x40 | slot,)) + datagram[10:])
                break
    return corpus


def main() -> None:
    """Regenerate every target's seed corpus."""
    total = 0
    for build in (datagram_corpus, session_corpus, handshake_corpus):
        corpus = build()
        size = corpus.write()
        total += size
        print(f"{corpus.dir.name}: {len(corpus.files)} files, {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
