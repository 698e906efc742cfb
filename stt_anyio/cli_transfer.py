"""The CLI's file-transfer protocol over one STT stream (``stt send``/``listen``/``demo``).

Owns the messages of a transfer and their order, on a stream opened with
purpose ``"file"``:

1. sender -> receiver: a header message, UTF-8 JSON
   ``{"type": "stt-file", "version": 1, "name": ..., "size": ..., "sha256": ...}``
   of at most :data:`MAX_HEADER_BYTES`;
2. sender -> receiver: the file as messages of at most :data:`CHUNK_SIZE`
   bytes, ``size`` bytes in all, through the buffered write path
   (``Stream.write``) except the last, which is a confirmed send
   (``Stream.send``). The core reports a message delivered only once the
   acknowledged *prefix* of the stream covers it (``stt_core.stream_send``),
   so that one confirmation means every byte of the file is acknowledged;
3. receiver -> sender: a receipt, UTF-8 JSON
   ``{"ok": ..., "bytes": ..., "sha256": ..., "saved_as": ..., "error": ...}``,
   sent only after the receiver counted every byte and computed the digest.

The sender trusts nothing but the receipt: the transfer succeeded only if the
receipt says ok *and* repeats the digest the sender computed.

It must not know about the command line, rich or the file system layout of
the listener: data comes from an async chunk iterator and goes to a
:class:`Sink`; progress goes to a plain callback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from stt_core.errors import STTError

from .session import Stream

__all__ = [
    "CHUNK_SIZE",
    "FILE_PURPOSE",
    "FileHeader",
    "HashSink",
    "Receipt",
    "Sink",
    "TransferError",
    "receive_file",
    "send_file",
]

FILE_PURPOSE = "file"
"""Stream purpose of a file transfer; the listener routes streams on it."""
CHUNK_SIZE = 64 * 1024
"""Bytes per data message: four default-size frames, few enough awaits per MB."""
MAX_HEADER_BYTES = 4096
"""Header and receipt messages larger than this are a protocol violation."""
HEADER_TYPE = "stt-file"
VERSION = 1


class TransferError(Exception):
    """The transfer failed: bad header, wrong byte count, digest mismatch, refusal."""


def _no_progress(nbytes: int) -> None:
    """Progress callback that ignores progress (null object)."""


@dataclass(frozen=True, slots=True)
class FileHeader:
    """What the sender announces before the data."""

    name: str
    """File name only (no directories); the receiver decides where it goes."""
    size: int
    """Exact number of data bytes that follow."""
    sha256: str
    """Lower-case hex SHA-256 of the data."""

    def to_bytes(self) -> bytes:
        """The header message (protocol step 1)."""
        return json.dumps({"type": HEADER_TYPE, "version": VERSION, "name": self.name,
                           "size": self.size, "sha256": self.sha256}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FileHeader:
        """Parse and validate a header message.

        Raises:
            TransferError: not a version-1 header with a name, a size >= 0
                and a 64-digit hex digest.
        """
        fields = _load_json(data, "header")
        if fields.get("type") != HEADER_TYPE or fields.get("version") != VERSION:
            raise TransferError("not an stt-file version 1 header")
        name, size, digest = fields.get("name"), fields.get("size"), fields.get("sha256")
        if not isinstance(name, str) or not name:
            raise TransferError("header has no file name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TransferError("header size must be an integer >= 0")
        if not isinstance(digest, str) or not _is_sha256_hex(digest):
            raise TransferError("header sha256 must be 64 hex digits")
        return cls(name=name, size=size, sha256=digest.lower())


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the receiver answers once it has every byte (or gave up)."""

    ok: bool
    """True only if the byte count and the SHA-256 matched the header."""
    nbytes: int
    """Bytes the receiver counted."""
    sha256: str
    """Hex SHA-256 the receiver computed (empty if it never got that far)."""
    saved_as: str = ""
    """Where the receiver stored the file, as it wants to report it."""
    error: str = ""
    """Why the transfer failed, if it did."""

    def to_bytes(self) -> bytes:
        """The receipt message (protocol step 3)."""
        return json.dumps({"ok": self.ok, "bytes": self.nbytes, "sha256": self.sha256,
                           "saved_as": self.saved_as, "error": self.error}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        """Parse a receipt message.

        Raises:
            TransferError: not a receipt.
        """
        fields = _load_json(data, "receipt")
        ok, nbytes, digest = fields.get("ok"), fields.get("bytes"), fields.get("sha256")
        saved_as, error = fields.get("saved_as", ""), fields.get("error", "")
        if not isinstance(ok, bool) or not isinstance(nbytes, int) \
                or not isinstance(digest, str) or not isinstance(saved_as, str) \
                or not isinstance(error, str):
            raise TransferError("malformed receipt")
        return cls(ok=ok, nbytes=nbytes, sha256=digest, saved_as=saved_as, error=error)


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_HEADER_BYTES:
        raise TransferError(f"{what} larger than {MAX_HEADER_BYTES} bytes")
    try:
        fields = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransferError(f"{what} is not UTF-8 JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise TransferError(f"{what} is not a JSON object")
    return fields


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


async def send_file(stream: Stream, header: FileHeader, chunks: AsyncIterator[bytes], *,
                    on_progress: Callable[[int], None] = _no_progress,
                    receipt_timeout: float | None = None) -> Receipt:
    """Send a whole file on ``stream`` and return the receiver's verified receipt.

    The receipt is awaited from the start, so a receiver that refuses the
    file (its receipt arrives early) stops the sending at once.

    Args:
        stream: a fresh stream, opened with purpose :data:`FILE_PURPOSE`.
        header: name, size and digest of what ``chunks`` yields.
        chunks: the data, in pieces of at most :data:`CHUNK_SIZE` bytes.
        on_progress: called with the number of bytes each time a chunk is
            queued (the progress of the buffered write path).
        receipt_timeout: seconds to wait for the receipt once every byte is
            acknowledged (None: until the session ends).

    Raises:
        TransferError: ``chunks`` did not yield exactly ``header.size`` bytes,
            no receipt came in time, or it refuses or names another digest.
        SessionClosedError, StreamClosedError: the peer went away.
    """
    waiter = _ReceiptWaiter(stream)
    sent = -1  # stays -1 if an early refusal cancels the sending
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run, tg.cancel_scope)
        sent = await _send_data(stream, header, chunks, on_progress)
        if sent == header.size:
            with anyio.move_on_after(receipt_timeout):
                await waiter.done.wait()
        tg.cancel_scope.cancel()
    if waiter.error is not None:
        raise waiter.error
    receipt = waiter.receipt
    if receipt is not None and not receipt.ok:
        raise TransferError(f"the receiver refused the file: {receipt.error or 'no reason'}")
    if sent != header.size:
        await stream.reset()
        raise TransferError(f"the source yielded {sent} bytes, the header says {header.size}")
    if receipt is None:
        raise TransferError(f"no receipt within {receipt_timeout} s of the last acknowledgement")
    if receipt.sha256 != header.sha256 or receipt.nbytes != header.size:
        raise TransferError(f"the receiver got {receipt.nbytes} bytes with SHA-256 "
                            f"{receipt.sha256}, expected {header.size} with {header.sha256}")
    return receipt


async def _send_data(stream: Stream, header: FileHeader, chunks: AsyncIterator[bytes],
                     on_progress: Callable[[int], None]) -> int:
    """Protocol steps 1-2; the number of data bytes the source yielded.

    One chunk is held back so the last goes through the confirmed send; a
    source that yields the wrong amount is detected before that send, so
    the receiver never sees a complete-looking wrong file.
    """
    await stream.write(header.to_bytes())
    sent = 0
    pending: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        if pending is not None:
            await stream.write(pending)
            on_progress(len(pending))
        pending = chunk
        sent += len(chunk)
    if sent != header.size:
        return sent
    # An empty file still ends with one (empty) confirmed message.
    await stream.send(pending or b"")
    on_progress(len(pending or b""))
    return sent


class _ReceiptWaiter:
    """Reads the receipt concurrently with the sending (protocol step 3)."""

    __slots__ = ("done", "error", "receipt", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.done = anyio.Event()
        self.receipt: Receipt | None = None
        self.error: Exception | None = None

    async def run(self, sending: anyio.CancelScope) -> None:
        """Wait for the receipt; stop the sending if it arrives early or the stream dies."""
        try:
            self.receipt = Receipt.from_bytes(await self.stream.receive())
        except (TransferError, STTError) as exc:
            self.error = exc
        if self.error is not None or not (self.receipt and self.receipt.ok):
            sending.cancel()
        self.done.set()


class Sink(Protocol):
    """Where received data goes; the receiver decides whether to keep it."""

    async def begin(self, header: FileHeader) -> None:
        """Prepare for this file; raise :class:`TransferError` to refuse it."""

    async def write(self, data: bytes) -> None:
        """Store the next piece; raise :class:`TransferError` if it cannot."""

    async def commit(self) -> str:
        """Keep the verified file; return where it went (for the receipt).

        Raise :class:`TransferError` if it cannot be kept.
        """

    async def discard(self) -> None:
        """Forget a file that failed verification (or never completed); never raises."""


class HashSink:
    """A sink that keeps nothing (the demo): the digest is all that matters."""

    async def begin(self, header: FileHeader) -> None:
        """Accept any file."""

    async def write(self, data: bytes) -> None:
        """Drop the data (the receiver hashes it before the sink sees it)."""

    async def commit(self) -> str:
        """Nothing was stored."""
        return "(memory)"

    async def discard(self) -> None:
        """Nothing was stored."""


async def receive_file(stream: Stream, sink: Sink, *,
                       on_header: Callable[[FileHeader], None] | None = None,
                       on_progress: Callable[[int], None] = _no_progress,
                       timeout: float | None = None) -> tuple[FileHeader, Receipt]:
    """Receive one file from ``stream`` into ``sink``, verify it and answer with a receipt.

    Args:
        stream: a stream the peer opened with purpose :data:`FILE_PURPOSE`.
        sink: where the data goes; committed only after verification.
        on_header: called once the header is known (e.g. to size a progress bar).
        on_progress: called with the size of each data message received.
        timeout: seconds between two messages before giving up (None: forever).

    Returns:
        The header and the receipt that was sent; ``receipt.ok`` says whether
        the byte count and the SHA-256 matched.

    Raises:
        TransferError: the header is malformed (the stream is reset) or the
            stream ended early (nothing is kept).
        SessionClosedError, StreamClosedError: the peer went away.
    """
    try:
        header = FileHeader.from_bytes(await stream.receive(timeout=timeout))
    except TransferError:
        await stream.reset()
        raise
    if on_header is not None:
        on_header(header)
    try:
        await sink.begin(header)
    except TransferError as exc:
        await _answer(stream, Receipt(ok=False, nbytes=0, sha256="", error=str(exc)))
        raise
    receipt = await _receive_data(stream, sink, header, on_progress, timeout)
    await _answer(stream, receipt)
    return header, receipt


async def _receive_data(stream: Stream, sink: Sink, header: FileHeader,
                        on_progress: Callable[[int], None],
                        timeout: float | None) -> Receipt:
    """Count, hash and store the data messages; commit or discard; the receipt to send.

    A sink that cannot store (it raises :class:`TransferError`) ends the
    transfer with a refusing receipt, which stops the sender early.
    """
    hasher = hashlib.sha256()
    received = 0
    error = ""
    try:
        while received < header.size:
            data = await stream.receive(timeout=timeout)
            received += len(data)
            if received > header.size:
                error = f"received more than the announced {header.size} bytes"
                break
            hasher.update(data)
            await sink.write(data)
            on_progress(len(data))
        if header.size == 0:
            await stream.receive(timeout=timeout)  # the empty confirmed message
        if not error and hasher.hexdigest() != header.sha256:
            error = "SHA-256 mismatch"
        if not error:
            return Receipt(ok=True, nbytes=received, sha256=hasher.hexdigest(),
                           saved_as=await sink.commit())
    except TransferError as exc:
        error = str(exc)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await sink.discard()
        raise
    await sink.discard()
    return Receipt(ok=False, nbytes=received, sha256=hasher.hexdigest(), error=error)


async def _answer(stream: Stream, receipt: Receipt) -> None:
    """Send the receipt (confirmed) and end our direction of the stream."""
    await stream.send(receipt.to_bytes())
    await stream.close()
