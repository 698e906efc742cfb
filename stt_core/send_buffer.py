"""The bytes a stream has written and the peer has not yet acknowledged.

Owns storage only: append at the end, read any range back (first send or
retransmission), free everything below an offset once it is acknowledged.
It must not know about messages, frames or credit (``stream_send`` does).

Why a list of immutable chunks rather than one ``bytearray``: a bulk sender
keeps megabytes here, appending at one end while acknowledgements free the
other. A ``bytearray`` then pays twice: cutting the acknowledged prefix and
growing for the next write move the live bytes around (CPython compacts or
reallocates the whole buffer), which measured 1 ms of CPU per MiB moved, as
much as sealing and sending it. Chunks are never moved: a large write is kept
as the caller's own ``bytes`` object (no copy at all), acknowledged chunks
are dropped by reference, and a read inside one chunk is a ``memoryview`` of
it (safe, since ``bytes`` cannot change or be resized under the view).

Small writes (a length prefix, short messages) go to an open ``bytearray``
tail, sealed into a chunk when it grows past :data:`TAIL_CHUNK` bytes or when
a read reaches it, so a stream of tiny messages does not become a list of
tiny chunks.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["SMALL_WRITE", "TAIL_CHUNK", "SendBuffer"]

SMALL_WRITE = 2048
"""Writes shorter than this are copied into the open tail instead of kept whole."""
TAIL_CHUNK = 16384
"""The open tail becomes a chunk once it holds this many bytes."""
_COMPACT_AFTER = 32
"""Dropped chunk slots tolerated at the head of the list before it is trimmed."""
_NO_CHUNKS: list[bytes] = []
_NO_STARTS: list[int] = []
"""Shared placeholders of a buffer never written to; never appended to (see _add_chunk)."""


class SendBuffer:
    """Bytes from stream offset ``start`` up to :attr:`end`, readable by range."""

    __slots__ = ("_chunks", "_head", "_held", "_starts", "_tail", "_tail_start")

    def __init__(self, start: int = 0) -> None:
        # Every stream has one of these, most never written to: the lists and
        # the tail are created on first use (about 190 bytes per idle stream).
        self._chunks: list[bytes] = _NO_CHUNKS
        self._starts: list[int] = _NO_STARTS  # stream offset of each chunk's first byte
        self._head = 0  # index of the first chunk still held
        self._tail: bytearray | None = None
        self._tail_start = start  # offset of _tail[0], i.e. the end of the chunks
        self._held = 0

    @property
    def end(self) -> int:
        """Stream offset just past the last byte appended."""
        return self._tail_start + (len(self._tail) if self._tail else 0)

    @property
    def held(self) -> int:
        """Bytes kept in memory (whole chunks: a partly acknowledged chunk counts fully)."""
        return self._held

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes at the end. A ``bytes`` write of SMALL_WRITE or more is kept, not copied."""
        size = len(data)
        if size < SMALL_WRITE:
            tail = self._tail
            if tail is None:
                tail = self._tail = bytearray()
            tail += data
            if len(tail) >= TAIL_CHUNK:
                self._seal_tail()
        else:
            self._seal_tail()
            self._add_chunk(data if isinstance(data, bytes) else bytes(data))
        self._held += size

    def _add_chunk(self, chunk: bytes) -> None:
        if self._chunks is _NO_CHUNKS:
            self._chunks = []
            self._starts = []
        self._chunks.append(chunk)
        self._starts.append(self._tail_start)
        self._tail_start += len(chunk)

    def _seal_tail(self) -> None:
        tail = self._tail
        if tail:
            self._add_chunk(bytes(tail))
            self._tail = None

    def read(self, start: int, end: int) -> bytes | memoryview:
        """The bytes of ``[start, end)``; they must be held (not freed, not past :attr:`end`).

        A range inside one chunk comes back as a view (no copy); one that
        spans chunks is joined.
        """
        if start >= end:
            return b""
        if end > self._tail_start:
            self._seal_tail()
        chunks, starts = self._chunks, self._starts
        index = bisect_right(starts, start, self._head) - 1
        chunk = chunks[index]
        base = starts[index]
        if end - base <= len(chunk):
            return memoryview(chunk)[start - base:end - base]
        pieces: list[bytes | memoryview] = []
        while start < end:
            chunk = chunks[index]
            base = starts[index]
            stop = min(end, base + len(chunk))
            pieces.append(memoryview(chunk)[start - base:stop - base])
            start = stop
            index += 1
        return b"".join(pieces)

    def free_below(self, offset: int) -> None:
        """Drop every chunk that ends at or below ``offset`` (acknowledged bytes)."""
        chunks, starts = self._chunks, self._starts
        head = self._head
        count = len(chunks)
        while head < count and starts[head] + len(chunks[head]) <= offset:
            self._held -= len(chunks[head])
            chunks[head] = b""
            head += 1
        if head > _COMPACT_AFTER and head * 2 > count:
            del chunks[:head]
            del starts[:head]
            head = 0
        self._head = head

    def clear(self, offset: int) -> None:
        """Drop everything; the next append starts at ``offset``."""
        self._chunks = _NO_CHUNKS
        self._starts = _NO_STARTS
        self._head = 0
        self._tail = None
        self._tail_start = offset
        self._held = 0
