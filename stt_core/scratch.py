"""Scratch: reusable buffers for the plaintext and ciphertext of large packets.

A 64 KiB datagram decrypted into a fresh ``bytes`` costs a 64 KiB allocation
per packet, and sealing one cost three (the DATA frame, the ciphertext, the
header joined to it). glibc serves and returns such blocks at the top of its
heap, and each time it trims the heap the next block's pages fault in anew:
page faults were a quarter of a bulk receiver's CPU (docs/performance.md,
"The bulk path"). Opening every large packet into the same buffer, and
assembling and sealing every large packet in two more, takes those
allocations off the hot path; a sealed packet is then one ``bytes``, the
header joined to the sealed buffer's contents.

The contract that makes reuse safe: a view :meth:`Scratch.view` returns is
valid only until the next call, so nothing made from it may outlive the
packet. Frame parsing copies every field it keeps into ``bytes``; the one
exception, a large DATA payload, is a view that the stream receiver copies
into its reassembly buffer before the packet's processing ends
(``tests/stt_core/test_scratch.py`` holds both to that). The send side
copies the sealed bytes out before it returns the packet.

One set serves one endpoint, which is single-threaded by design; two
endpoints never share one, so threads driving separate endpoints cannot
overwrite each other's packets.
"""

from __future__ import annotations

__all__ = ["SCRATCH_MIN_PLAINTEXT", "Scratch", "ScratchBuffers"]

SCRATCH_MIN_PLAINTEXT = 4096
"""Plaintexts at least this long open into the scratch; shorter ones into ``bytes``.

Small blocks come from Python's and glibc's small-object pools, which never
return pages to the kernel, so for them a fresh object is as cheap as a reused
one and keeps the small-packet path exactly as it was. The figure matches the
size from which DATA payloads are parsed as views (``wire._VIEW_THRESHOLD``).
"""


class Scratch:
    """A buffer that grows to the largest size asked for and is then reused."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        # Empty until the first large packet: an endpoint that only ever sees
        # small packets (or a session built alone in a test) pays nothing.
        self._buffer = bytearray()

    def view(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes, valid until the next call.

        The contents are whatever the last user left there; the caller
        overwrites all of it.
        """
        buffer = self._buffer
        if len(buffer) < size:
            # A fresh buffer rather than a resize: a view of the old one may
            # still be alive in a caller's frame (harmless, it is never
            # written again), and resizing an exported bytearray would fail.
            buffer = self._buffer = bytearray(size)
        return memoryview(buffer)[:size]

    @property
    def capacity(self) -> int:
        """Bytes held (0 until the first use)."""
        return len(self._buffer)


class ScratchBuffers:
    """The three buffers of one endpoint: a large packet opened, and one being
    assembled and sealed. Each is used within one call and never across two."""

    __slots__ = ("opened", "plaintext", "sealed")

    def __init__(self) -> None:
        self.opened = Scratch()
        self.plaintext = Scratch()
        self.sealed = Scratch()
