"""File transfer with an end-to-end SHA-256 check, on stt_anyio.

Run::

    python docs/examples/file_transfer.py                  # sends 4 MiB of random bytes
    python docs/examples/file_transfer.py some/file.bin    # sends that file
    python docs/examples/file_transfer.py --backend trio   # same code under trio

Sender and receiver run in one program on free loopback ports; the received
copy goes to a temporary directory. The little protocol on one stream:

1. the sender opens a stream with purpose ``"file"`` and writes a JSON header
   (``name``, ``size``), then the file in 64 KiB messages with the *buffered*
   ``write`` (it returns once the data is queued and waits while the send
   buffer is full: backpressure, not unbounded memory);
2. the sender closes its side of the stream: the receiver's ``async for``
   ends after the last message;
3. the receiver hashes what it wrote and answers on the same stream with a
   JSON receipt (``size``, ``sha256``), which the sender compares with its
   own hash.

STT already guarantees that every byte arrives intact and in order; the
receipt proves it end to end and tells the sender the file is on disk, which
an acknowledgement at the transport level cannot.

``main()`` returns a :class:`TransferResult`; the docs test checks that the
two hashes and the two files are equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio

from stt_anyio import Node, Stream, open_node

SHARED_SEED = b"docs example shared seed"
CHUNK_SIZE = 64 * 1024
"""Bytes per message; STT splits each into frames and reassembles it."""
LOOPBACK = {"max_datagram_size": 1452}
"""Bigger datagrams than the 1200-byte default: fine on loopback and most LANs."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What a transfer produced, as the sender and the receiver saw it."""

    size: int
    """Bytes sent."""
    sent_sha256: str
    """The sender's hash of the file."""
    received_sha256: str
    """The hash the receiver reported in its receipt."""
    received_path: Path
    """Where the receiver stored the copy."""


# --8<-- [start:send]
async def send_file(stream: Stream, path: Path, *, timeout: float) -> tuple[str, str]:
    """Send ``path`` on ``stream``; returns (our SHA-256, the receiver's SHA-256)."""
    digest = hashlib.sha256()
    header = {"name": path.name, "size": path.stat().st_size}
    await stream.write(json.dumps(header).encode(), timeout=timeout)
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
            await stream.write(chunk, timeout=timeout)  # waits while the buffer is full
    await stream.close()  # end of file: the receiver's loop ends after the last chunk
    receipt = json.loads(await stream.receive(timeout=timeout))
    return digest.hexdigest(), str(receipt["sha256"])
# --8<-- [end:send]


# --8<-- [start:receive]
async def receive_file(stream: Stream, out_dir: Path) -> Path:
    """Store the file arriving on ``stream`` in ``out_dir`` and send the receipt."""
    header = json.loads(await stream.receive())
    target = out_dir / Path(header["name"]).name  # never trust a peer's path
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as sink:
        async for chunk in stream:  # ends when the sender closes its side
            digest.update(chunk)
            sink.write(chunk)
            size += len(chunk)
    receipt = {"size": size, "sha256": digest.hexdigest()}
    await stream.send(json.dumps(receipt).encode())  # confirmed: the sender has it
    return target
# --8<-- [end:receive]


async def serve_one(node: Node, out_dir: Path, received: list[Path]) -> None:
    """Accept one session and one file on it."""
    session = await node.accept()
    stream = await session.accept_stream()
    received.append(await receive_file(stream, out_dir))


async def transfer(path: Path, out_dir: Path, *, timeout: float) -> TransferResult:
    """Send ``path`` between two nodes on loopback; the copy lands in ``out_dir``."""
    received: list[Path] = []
    async with open_node(node_id=b"receiver", shared_seed=SHARED_SEED,
                         config_overrides=LOOPBACK) as receiver, \
            open_node(node_id=b"sender", shared_seed=SHARED_SEED, server_mode=False,
                      config_overrides=LOOPBACK) as sender, \
            anyio.create_task_group() as tasks:
        tasks.start_soon(serve_one, receiver, out_dir, received)
        session = await sender.connect(receiver.local_address, peer_node_id=b"receiver",
                                       timeout=timeout)
        stream = session.open_stream("file")
        ours, theirs = await send_file(stream, path, timeout=timeout)
        await session.close()
    return TransferResult(size=path.stat().st_size, sent_sha256=ours,
                          received_sha256=theirs, received_path=received[0])


def main(path: Path | None = None, *, size: int = 4 * 1024 * 1024,
         out_dir: Path | None = None, backend: str = "asyncio",
         timeout: float = 20.0) -> TransferResult:
    """Transfer ``path`` (default: ``size`` random bytes in a temporary file).

    The copy goes to ``out_dir`` (default: a new temporary directory, left in
    place so the caller can inspect it; the random source file is deleted).
    """
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="stt-received-"))
    target = out_dir

    async def bounded(source: Path) -> TransferResult:
        with anyio.fail_after(timeout):
            return await transfer(source, target, timeout=timeout)

    if path is not None:
        return anyio.run(bounded, path, backend=backend)
    with tempfile.TemporaryDirectory(prefix="stt-send-") as scratch:
        source = Path(scratch) / "random.bin"
        source.write_bytes(os.urandom(size))
        return anyio.run(bounded, source, backend=backend)


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", type=Path, help="file to send (default: random)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    result = main(args.path, backend=args.backend)
    verdict = "OK" if result.sent_sha256 == result.received_sha256 else "MISMATCH"
    print(f"{result.size} bytes -> {result.received_path}")
    print(f"sent     sha256 {result.sent_sha256}")
    print(f"received sha256 {result.received_sha256}  {verdict}")


if __name__ == "__main__":
    _cli()
