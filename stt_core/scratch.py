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
copies the sealed bytes out before it returns the packet, unless its caller
borrows packets for one flush (:class:`PacketPool`).

One set serves one endpoint, which is single-threaded by design; two
endpoints never share one, so threads driving separate endpoints cannot
overwrite each other's packets.
"""

from __future__ import annotations

__all__ = ["LENT_PACKETS_MAX", "SCRATCH_MIN_PLAINTEXT", "PacketPool", "Scratch",
           "ScratchBuffers"]

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


LENT_PACKETS_MAX = 64
"""Large packets one flush may seal into lent buffers; later ones are ``bytes``.

64 datagrams of 64 KiB (4 MiB, more than a loopback congestion window holds)
cover a whole flush of a bulk sender; the cap bounds what an endpoint keeps.
"""


class PacketPool:
    """Buffers for the sealed large packets of one flush, lent to the caller.

    Why: a bulk sender's flush is tens of 64 KiB packets. As ``bytes`` each
    was a fresh block, the whole flush was freed at once after sending, glibc
    trimmed its heap, and the next flush faulted the pages in again (about 40
    faults per MiB on the sender; docs/performance.md, "Lent packet
    buffers"). Lent buffers are written anew by every flush instead.

    The contract: a packet from :meth:`take` is valid until :meth:`restart`,
    which the endpoint calls at the start of the next
    ``datagrams_to_send(..., lend=True)``. The caller sends or copies every
    lent packet before that.
    """

    __slots__ = ("_buffers", "_next")

    def __init__(self) -> None:
        self._buffers: list[Scratch] = []  # one per packet of the largest flush so far
        self._next = 0

    def restart(self) -> None:
        """A new flush: every buffer may be written again."""
        self._next = 0

    def take(self, size: int) -> memoryview | None:
        """A writable view of ``size`` bytes for one packet, or None past the cap."""
        index = self._next
        if index >= LENT_PACKETS_MAX:
            return None
        self._next = index + 1
        if index == len(self._buffers):
            self._buffers.append(Scratch())
        return self._buffers[index].view(size)

    @property
    def capacity(self) -> int:
        """Bytes held by the pool."""
        return sum(buffer.capacity for buffer in self._buffers)


class ScratchBuffers:
    """The buffers of one endpoint: a large packet opened, one being assembled
    and sealed (each used within one call and never across two), and the
    sealed packets lent to the caller of one flush (:class:`PacketPool`)."""

    __slots__ = ("lending", "opened", "packets", "plaintext", "sealed")

    def __init__(self) -> None:
        self.opened = Scratch()
        self.plaintext = Scratch()
        self.sealed = Scratch()
        self.packets = PacketPool()
        self.lending = False
        """True during a ``datagrams_to_send(..., lend=True)``."""
