"""UDP carrier: moves datagrams between one UDP socket and callbacks.

Owns the socket: binding, buffer sizes, draining it in batches, sending with
backpressure, and turning ICMP errors into ``on_unreachable`` reports. It must
not know what the datagrams mean: it never imports ``stt_core`` and never
decides anything about sessions. The node wires it to the core.

Receive path. One task (:meth:`UdpCarrier.run`) waits for readiness with
``anyio.wait_readable`` (on asyncio a persistent reader callback instead, which
saves a task wake-up and two ``epoll_ctl`` calls per datagram), then loops
``recvfrom_into`` into one reused buffer until ``BlockingIOError`` and hands
every datagram to ``on_datagram(bytes, addr)`` (or, for an owner that asked
for views, ``on_datagram(memoryview, addr)``: a view of that buffer, valid
only during the call, which saves a copy and an allocation per datagram:
64 KiB each on loopback). After each batch it calls
``on_drained()`` so the owner can process all of the batch's consequences at
once (one flush per batch rather than per datagram). A batch is capped at
:data:`MAX_BATCH` datagrams so a flood cannot starve the other tasks. Within a
long batch ``on_drained()`` also runs every :data:`DRAIN_FLUSH_INTERVAL`
datagrams: the owner's flush is where acknowledgements leave, and holding them
until the end of a 512-datagram batch (several milliseconds of work) would
inflate the peer's RTT samples and stall its window.

Send path. ``sendto`` directly on the non-blocking socket; on
``BlockingIOError`` :meth:`UdpCarrier.send_batch` waits for writability and
retries, which is the backpressure: the pump that calls it is paused until the
kernel has room.

ICMP errors (our choice, documented here). Linux reports ICMP errors (port or
host unreachable) on an *unconnected* UDP socket only when ``IP_RECVERR`` /
``IPV6_RECVERR`` is set. We set it rather than open one connected socket per
outgoing connect: one socket keeps the local address stable (a session may
move between paths, and the peer sees one address per node), and the error
queue tells us *which* destination failed (``msg_name`` of
``recvmsg(MSG_ERRQUEUE)`` is the original destination). With the option set,
the pending error also surfaces once as ``ConnectionRefusedError`` from
``recvfrom``/``sendto``; we then drain the error queue and report each
destination to ``on_unreachable(addr, errno)``. Where the option does not
exist (non-Linux), ICMP errors surfacing from ``recvfrom`` are reported with
``addr=None``.

Segmentation offload (our choice, documented here). Linux >= 4.18 offers UDP
generic segmentation offload: one ``sendmsg`` with a ``UDP_SEGMENT`` control
message carries a run of datagrams to one destination, all of one size except
a shorter last one, and the kernel cuts them apart (on loopback it may even
deliver them whole to a receiver that asked for GRO). :meth:`UdpCarrier.try_send_many`
coalesces such runs, up to :data:`GSO_MAX_SEGMENTS` datagrams and 64 KiB per
call, passing the datagrams as a scatter list (no joined copy). The wire is
unchanged: the peer receives the same datagrams as without offload. One
system call then moves dozens of datagrams, which is most of a Python
sender's per-datagram cost. Where the option is missing the carrier sends one
datagram per ``sendto``; if the kernel refuses a segmented send (``EIO``: the
device cannot checksum, or a driver quirk) the carrier switches offload off for
good and resends the run datagram by datagram; ``EINVAL``/``EMSGSIZE`` (a run
larger than the device allows, such as a path MTU probe) resend that run
datagram by datagram and keep offload on.

Receive offload (GRO). With ``UDP_GRO`` set, the kernel may hand one read a
run of same-sized datagrams from one sender, with the segment size in a
control message; :meth:`UdpCarrier.run` splits it and reports each datagram
separately, so the owner sees exactly what the peer sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from .clock import running_asyncio_loop

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "MAX_BATCH",
    "UdpAddress",
    "UdpCarrier",
    "UdpStats",
]

UdpAddress = tuple[str, int]
"""A UDP peer address as the carrier reports and accepts it: ``(host, port)``."""

Datagrams = Sequence[tuple[bytes | memoryview, UdpAddress]]
"""Datagrams to send in order, each with its destination (``bytes`` or a view)."""

DEFAULT_BUFFER_SIZE = 4 * 1024 * 1024
"""Default SO_RCVBUF/SO_SNDBUF request (bytes): room for bursts at high rates."""
MAX_BATCH = 512
"""Datagrams read per readiness wake-up before yielding to other tasks."""
DRAIN_FLUSH_INTERVAL = 64
"""Datagrams delivered between two ``on_drained`` calls inside one long batch."""
RECEIVE_BUFFER_BYTES = 65536 + 4096
"""Size of the reused receive buffer: more than any UDP payload (65535 - headers),
also when GRO coalesces a run of datagrams into one read."""
GSO_MAX_SEGMENTS = 64
"""Datagrams per segmented send (the kernel's ``UDP_MAX_SEGMENTS`` is 64 or more)."""
GSO_MAX_BYTES = 65507
"""Payload bytes per segmented send: one IPv4 UDP datagram's limit, also safe for IPv6."""

# Linux values; the socket module does not export them on Python 3.11.
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_UDP_GRO = getattr(socket, "UDP_GRO", 104)
_SEGMENT_SIZE = struct.Struct("=H")
"""``UDP_SEGMENT`` control message payload: the segment size, a native u16."""
_GRO_SIZE = struct.Struct("=i")
"""``UDP_GRO`` control message payload: the segment size, a native int."""
_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size) if hasattr(socket, "CMSG_SPACE") else 0
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", None)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", None)
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""``struct sock_extended_err``: errno, origin, type, code, pad, info, data."""
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)
_MAX_SEND_RETRIES = 8
"""Attempts to send one datagram when pending ICMP errors keep surfacing."""

DatagramCallback = Callable[[bytes | memoryview, UdpAddress], None]

VIEW_MIN_BYTES = 4096
"""With ``views``, datagrams shorter than this still arrive as ``bytes``: copying a
1200-byte datagram is cheaper than what a view costs its reader (slicing and
indexing a view are slower than doing so on ``bytes``), which measured 2-3 %
of a 1200-byte bulk receiver's CPU."""
UnreachableCallback = Callable[["UdpAddress | None", int], None]


@dataclass(slots=True)
class UdpStats:
    """Counters of one carrier, for diagnostics and tests."""

    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    batches: int = 0
    """Readiness wake-ups that yielded at least one datagram."""
    segmented_sends: int = 0
    """``sendmsg`` calls that carried several datagrams through GSO."""
    coalesced_reads: int = 0
    """Reads that returned several datagrams through GRO."""
    send_blocked: int = 0
    """Times a send found the kernel buffer full and waited for writability."""
    send_errors: int = 0
    """Datagrams dropped because ``sendto`` failed for a non-transient reason."""
    receive_errors: int = 0
    """Errors from ``recvfrom`` other than would-block and ICMP reports."""
    unreachable_reports: int = 0
    """ICMP unreachable errors passed to ``on_unreachable``."""


def _ignore_unreachable(addr: UdpAddress | None, code: int) -> None:
    """Null-object default for ``on_unreachable``."""


def _ignore_drained() -> None:
    """Null-object default for ``on_drained``."""


class UdpCarrier:
    """One bound, non-blocking UDP socket plus the tasks' logic around it.

    Create with :meth:`bind`, run :meth:`run` in a task, send with
    :meth:`send_batch` (or :meth:`try_send`), and finish with :meth:`aclose`.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_datagram: DatagramCallback,
        on_drained: Callable[[], None] | None = None,
        on_unreachable: UnreachableCallback | None = None,
        views: bool = False,
    ) -> None:
        """Wrap an already bound datagram socket (it is made non-blocking).

        Prefer :meth:`bind`, which also sets buffer sizes and ``IP_RECVERR``.
        With ``views``, ``on_datagram`` gets a view of the reused receive
        buffer instead of ``bytes`` for datagrams of :data:`VIEW_MIN_BYTES` or
        more: it must copy whatever it keeps before it returns, because the
        next read overwrites the buffer.
        """
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UdpCarrier needs a SOCK_DGRAM socket")
        sock.setblocking(False)
        self._sock = sock
        self._on_datagram = on_datagram
        self._views = views
        self._on_drained = on_drained or _ignore_drained
        self._on_unreachable = on_unreachable or _ignore_unreachable
        self._buffer = bytearray(RECEIVE_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._send_lock = anyio.Lock()
        self._closed = False
        self._recverr = False
        self._stop_reader: Callable[[], None] | None = None
        self._gso = False
        self._gro = False
        self._unflushed = 0
        self.stats = UdpStats()

    @classmethod
    async def bind(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_datagram: DatagramCallback,
        on_drained: Callable[[], None] | None = None,
        on_unreachable: UnreachableCallback | None = None,
        recv_buffer_size: int = DEFAULT_BUFFER_SIZE,
        send_buffer_size: int = DEFAULT_BUFFER_SIZE,
        reuse_port: bool = False,
        views: bool = False,
    ) -> UdpCarrier:
        """Create a socket bound to ``host:port`` (port 0 picks a free one).

        Args:
            host: IPv4/IPv6 literal or a name (resolved once, first result).
            recv_buffer_size, send_buffer_size: requested kernel buffer sizes
                in bytes; the kernel may cap them (see :attr:`recv_buffer_size`
                for what was granted).
            reuse_port: set ``SO_REUSEPORT`` so several sockets share the port.
            views: hand ``on_datagram`` views of the receive buffer, valid
                during the call only (see the constructor).

        Raises:
            OSError: the address cannot be bound.
            ValueError: a buffer size is not positive.
        """
        if recv_buffer_size < 1 or send_buffer_size < 1:
            raise ValueError("buffer sizes must be positive")
        family = await _family_for(host, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise OSError("SO_REUSEPORT is not available on this platform")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _set_buffer(sock, socket.SO_RCVBUF, _SO_RCVBUFFORCE, recv_buffer_size)
            _set_buffer(sock, socket.SO_SNDBUF, _SO_SNDBUFFORCE, send_buffer_size)
            sock.bind((host, port))
            carrier = cls(sock, on_datagram=on_datagram, on_drained=on_drained,
                          on_unreachable=on_unreachable, views=views)
            carrier._enable_recverr()
            carrier._enable_offload()
        except BaseException:
            sock.close()
            raise
        return carrier

    # -- properties ---------------------------------------------------------

    @property
    def local_address(self) -> UdpAddress:
        """The bound ``(host, port)``."""
        name = self._sock.getsockname()
        return (str(name[0]), int(name[1]))

    @property
    def recv_buffer_size(self) -> int:
        """SO_RCVBUF as the kernel reports it (Linux reports double the usable size)."""
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    @property
    def send_buffer_size(self) -> int:
        """SO_SNDBUF as the kernel reports it (Linux reports double the usable size)."""
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))

    @property
    def gso_enabled(self) -> bool:
        """Whether sends coalesce runs of datagrams with ``UDP_SEGMENT`` (see module doc)."""
        return self._gso

    @property
    def gro_enabled(self) -> bool:
        """Whether the kernel may coalesce received datagrams (``UDP_GRO``)."""
        return self._gro

    def set_offload(self, *, gso: bool | None = None, gro: bool | None = None) -> None:
        """Switch segmentation (send) or coalescing (receive) offload off, or back on.

        Turning one on has no effect where the kernel does not offer it. Meant
        for tests and for comparing both paths; :meth:`bind` enables what the
        kernel supports.
        """
        if gso is not None:
            self._gso = gso and _supports(self._sock, _UDP_SEGMENT)
        if gro is not None:
            want = gro and _GRO_CMSG_SPACE > 0
            try:
                self._sock.setsockopt(_SOL_UDP, _UDP_GRO, int(want))
            except OSError:
                want = False
            self._gro = want

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    def _is_open(self) -> bool:
        # A method, not an attribute read, so type narrowing survives no await.
        return not self._closed

    # -- receiving ------------------------------------------------------------

    async def run(self) -> None:
        """Receive until :meth:`aclose`; callbacks run in this task.

        Never raises because of network input or transient socket errors;
        returns when the carrier is closed. Exceptions raised by the callbacks
        propagate (they are the owner's bugs, not the network's).
        """
        loop = running_asyncio_loop()
        if loop is not None and await self._run_in_reader(loop):
            return
        wait_readable, closed = _readiness_wait(loop is None)
        while self._is_open():
            try:
                await wait_readable(self._sock)
            except closed:
                return
            if not self._is_open():  # closed while we waited
                return
            if self._read_batch() >= MAX_BATCH:
                # More may be waiting; let other tasks run before reading on.
                await anyio.lowlevel.checkpoint()

    async def _run_in_reader(self, loop: asyncio.AbstractEventLoop) -> bool:
        """asyncio: read from a persistent reader callback; False if the loop has none.

        ``anyio.wait_readable`` registers and unregisters the socket and wakes
        this task through a future for every readiness, which on a
        request/response exchange is two ``epoll_ctl`` calls and one extra
        event-loop iteration per datagram. A reader callback registered once
        runs the batch straight from the loop's poll. A batch still ends at
        :data:`MAX_BATCH`; the loop calls again on its next poll, after other
        ready callbacks. The task only waits for the close, and re-raises what
        a callback raised (the owner's bug, as on the generic path).
        """
        fd = self._sock.fileno()
        finished: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            try:
                self._read_batch()
            except BaseException as exc:
                loop.remove_reader(fd)
                if not finished.done():
                    finished.set_exception(exc)

        try:
            loop.add_reader(fd, on_readable)
        except NotImplementedError:
            return False
        self._stop_reader = functools.partial(_stop_reader, loop, fd, finished)
        try:
            await finished
        finally:
            self._stop_reader = None
            if not self._closed:
                loop.remove_reader(fd)
        return True

    def _read_batch(self) -> int:
        """Read one batch and let the owner flush; returns the datagrams read."""
        if self._closed:
            return 0
        count = self._drain()
        if count:
            self.stats.batches += 1
            if self._unflushed:
                self._unflushed = 0
                self._on_drained()
        elif self._recverr:
            # Woken with nothing to read: only the error queue can be why.
            self._report_icmp(0)
        return count

    def _drain(self) -> int:
        """Read up to MAX_BATCH datagrams; returns how many were delivered."""
        count = 0
        gro = self._gro
        sock = self._sock
        flushed = 0
        while count < MAX_BATCH and not self._closed:
            if count - flushed >= DRAIN_FLUSH_INTERVAL:
                flushed = count
                self._on_drained()
            try:
                if gro:
                    size, ancdata, _, addr = sock.recvmsg_into((self._buffer,), _GRO_CMSG_SPACE)
                    segment = _gro_segment(ancdata, size)
                else:
                    size, addr = sock.recvfrom_into(self._buffer)
                    segment = size
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                self._report_icmp(errno.ECONNREFUSED)
                continue
            except OSError as exc:
                if exc.errno in _UNREACHABLE_ERRNOS:
                    self._report_icmp(exc.errno or 0)
                    continue
                # Other ICMP errors (EMSGSIZE from path MTU discovery...) sit
                # in the error queue too; drain it or the socket stays
                # readable forever and this task spins.
                self.stats.receive_errors += 1
                if self._recverr:
                    self._report_icmp(exc.errno or 0)
                break
            count += self._deliver(size, segment, addr)
        self._unflushed = count - flushed
        return count

    def _deliver(self, size: int, segment: int, addr: UdpAddress) -> int:
        """Report the ``size`` bytes read as datagrams of ``segment`` bytes (the
        last may be shorter); returns how many. One datagram unless GRO coalesced."""
        peer = (str(addr[0]), int(addr[1]))
        stats = self.stats
        stats.bytes_received += size
        view = self._view
        if segment >= size:
            stats.datagrams_received += 1
            piece = view[:size]
            self._on_datagram(piece if self._views and size >= VIEW_MIN_BYTES
                              else bytes(piece), peer)
            return 1
        deliver = self._on_datagram
        views = self._views and segment >= VIEW_MIN_BYTES
        count = 0
        for start in range(0, size, segment):
            piece = view[start:min(start + segment, size)]
            deliver(piece if views else bytes(piece), peer)
            count += 1
        stats.datagrams_received += count
        stats.coalesced_reads += 1
        return count

    # -- ICMP errors ----------------------------------------------------------

    def _enable_offload(self) -> None:
        """Use GSO and GRO where the kernel offers them (see module doc)."""
        self.set_offload(gso=True, gro=True)

    def _enable_recverr(self) -> None:
        """Ask Linux to report ICMP errors on this unconnected socket (see module doc)."""
        if self._sock.family == socket.AF_INET6:
            level, option = socket.IPPROTO_IPV6, _IPV6_RECVERR
        else:
            level, option = socket.IPPROTO_IP, _IP_RECVERR
        try:
            self._sock.setsockopt(level, option, 1)
        except OSError:
            self._recverr = False
        else:
            self._recverr = hasattr(socket, "MSG_ERRQUEUE")

    def _report_icmp(self, fallback_errno: int) -> None:
        """Drain the error queue and report each failed destination.

        Called when a pending socket error surfaced. Without an error queue
        we only know *that* something was unreachable, so report ``None``.
        """
        if not self._recverr:
            self.stats.unreachable_reports += 1
            self._on_unreachable(None, fallback_errno)
            return
        for _ in range(MAX_BATCH):
            try:
                _, ancdata, _, addr = self._sock.recvmsg(1, 1024, socket.MSG_ERRQUEUE)
            except OSError:
                return
            code = _extended_errno(ancdata)
            if code in _UNREACHABLE_ERRNOS and addr:
                self.stats.unreachable_reports += 1
                self._on_unreachable((str(addr[0]), int(addr[1])), code)

    # -- sending --------------------------------------------------------------

    def try_send(self, data: bytes | memoryview, addr: UdpAddress) -> bool:
        """Send one datagram without waiting.

        Returns:
            False if the kernel buffer is full (retry after writability);
            True if the datagram was sent or dropped for good (a non-transient
            error such as an unreachable network, counted in ``send_errors``).
        """
        if self._closed:
            return True
        for _ in range(_MAX_SEND_RETRIES):
            try:
                sent = self._sock.sendto(data, addr)
            except BlockingIOError:
                return False
            except ConnectionRefusedError:
                # A pending ICMP error from an earlier datagram surfaced here;
                # this datagram was not sent. Report it and retry.
                self._report_icmp(errno.ECONNREFUSED)
                continue
            except (OSError, TypeError, ValueError):
                self.stats.send_errors += 1
                return True
            self.stats.datagrams_sent += 1
            self.stats.bytes_sent += sent
            return True
        self.stats.send_errors += 1
        return True

    def try_send_many(self, datagrams: Datagrams,
                      start: int = 0) -> int:
        """Send ``datagrams[start:]`` in order without waiting; GSO where possible.

        Returns:
            The index of the first datagram not sent (``len(datagrams)`` when
            all were sent or dropped for good); the caller retries from there
            once the socket is writable.
        """
        end = len(datagrams)
        if end - start == 1:  # the common case of a request or reply: no run to look for
            data, addr = datagrams[start]
            return end if self.try_send(data, addr) else start
        index = start
        while index < end:
            if self._closed:
                return end
            run_end = self._gso_run_end(datagrams, index) if self._gso else index + 1
            outcome = run_end - index > 1 and self._send_segmented(datagrams, index, run_end)
            if outcome is None:
                return index
            if not outcome:  # a single datagram, or a run refused as a run
                stopped = self._send_each(datagrams, index, run_end)
                if stopped < run_end:
                    return stopped
            index = run_end
        return end

    def _send_each(self, datagrams: Datagrams,
                   index: int, end: int) -> int:
        """``try_send`` each of ``datagrams[index:end]``; returns where it had to stop."""
        for position in range(index, end):
            data, addr = datagrams[position]
            if not self.try_send(data, addr):
                return position
        return end

    @staticmethod
    def _gso_run_end(datagrams: Datagrams, index: int) -> int:
        """End of the run starting at ``index`` that one segmented send may carry.

        A run goes to one address; every datagram but the last has the first
        one's size, and the last may be shorter (the kernel's rule).
        """
        first, addr = datagrams[index]
        segment = len(first)
        limit = min(len(datagrams), index + GSO_MAX_SEGMENTS, index + GSO_MAX_BYTES // segment)
        position = index + 1
        while position < limit:
            data, other = datagrams[position]
            if other != addr:
                break
            size = len(data)
            if size == segment:
                position += 1
                continue
            if size < segment:
                position += 1  # a shorter datagram ends the run
            break
        return position

    def _send_segmented(self, datagrams: Datagrams,
                        index: int, end: int) -> bool | None:
        """One ``sendmsg`` with ``UDP_SEGMENT`` for ``datagrams[index:end]``.

        Returns True when sent (or dropped for good), None when the kernel
        buffer is full, False when the kernel refused the run as a run (the
        caller then sends the datagrams one by one).
        """
        first, addr = datagrams[index]
        buffers = [data for data, _ in datagrams[index:end]]
        control = [(_SOL_UDP, _UDP_SEGMENT, _SEGMENT_SIZE.pack(len(first)))]
        for _ in range(_MAX_SEND_RETRIES):
            try:
                sent = self._sock.sendmsg(buffers, control, 0, addr)
            except BlockingIOError:
                return None
            except ConnectionRefusedError:
                self._report_icmp(errno.ECONNREFUSED)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    self._gso = False  # the device cannot segment: never try again
                    return False
                if exc.errno in (errno.EINVAL, errno.EMSGSIZE):
                    return False
                self.stats.send_errors += end - index
                return True
            except (TypeError, ValueError):
                self.stats.send_errors += end - index
                return True
            stats = self.stats
            stats.datagrams_sent += end - index
            stats.bytes_sent += sent
            stats.segmented_sends += 1
            return True
        self.stats.send_errors += end - index
        return True

    async def wait_writable(self) -> bool:
        """Wait until the kernel takes datagrams again; False once the socket is closed."""
        self.stats.send_blocked += 1
        try:
            await anyio.wait_writable(self._sock)
        except (anyio.ClosedResourceError, OSError):
            return False
        return not self._closed

    async def send_batch(self, datagrams: Datagrams) -> None:
        """Send datagrams in order, waiting for writability when the kernel is full.

        Runs of same-destination datagrams go out segmented (see module doc).
        Safe to call from several tasks: they take turns. A datagram that
        cannot be sent for a non-transient reason is dropped and counted.
        """
        async with self._send_lock:
            index = 0
            while (index := self.try_send_many(datagrams, index)) < len(datagrams):
                if not await self.wait_writable():
                    return

    async def send(self, data: bytes, addr: UdpAddress) -> None:
        """Send one datagram (see :meth:`send_batch`)."""
        await self.send_batch(((data, addr),))

    # -- closing --------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the socket; :meth:`run` and waiting sends return. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stop_reader is not None:
            self._stop_reader()
        anyio.notify_closing(self._sock)
        self._sock.close()
        await anyio.lowlevel.checkpoint()


def _stop_reader(loop: asyncio.AbstractEventLoop, fd: int,
                 finished: asyncio.Future[None]) -> None:
    """Unregister the reader callback before the socket closes; end :meth:`UdpCarrier.run`."""
    loop.remove_reader(fd)
    if not finished.done():
        finished.set_result(None)


async def _family_for(host: str, port: int) -> socket.AddressFamily:
    """Address family for ``host``: literals directly, names through the resolver."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}") from None
        return socket.AddressFamily(infos[0][0])
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _set_buffer(sock: socket.socket, option: int, force: int | None, size: int) -> None:
    """Request a buffer size, bypassing the sysctl cap when we are allowed to.

    ``SO_*BUFFORCE`` needs CAP_NET_ADMIN; without it fall back to the capped
    option. A refused request is not fatal: the kernel default still works.
    """
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def _gro_segment(ancdata: list[tuple[int, int, bytes]], size: int) -> int:
    """The segment size of a GRO read from its control data, or ``size`` (one datagram)."""
    for level, kind, payload in ancdata:
        if level == _SOL_UDP and kind == _UDP_GRO and len(payload) >= _GRO_SIZE.size:
            segment = int(_GRO_SIZE.unpack_from(payload)[0])
            if segment > 0:
                return segment
    return size


def _supports(sock: socket.socket, option: int) -> bool:
    """Whether the UDP-level socket option exists on this kernel."""
    try:
        sock.getsockopt(_SOL_UDP, option)
    except OSError:
        return False
    return True


def _extended_errno(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The ``ee_errno`` of the first ``sock_extended_err`` in control data, or 0."""
    for level, kind, payload in ancdata:
        if ((level, kind) in ((socket.IPPROTO_IP, _IP_RECVERR),
                              (socket.IPPROTO_IPV6, _IPV6_RECVERR))
                and len(payload) >= _SOCK_EXTENDED_ERR.size):
            return int(_SOCK_EXTENDED_ERR.unpack_from(payload)[0])
    return 0


def _readiness_wait(
    on_trio: bool,
) -> tuple[Callable[[socket.socket], Awaitable[None]], tuple[type[BaseException], ...]]:
    """The readiness wait of the generic receive loop, and the errors that mean closed.

    On trio, trio's own ``wait_readable``: anyio's looks its backend up and
    re-raises trio's ``ClosedResourceError`` as its own, about 40 bytecodes per
    datagram on a request/response exchange. Elsewhere anyio's.
    """
    trio: Any = sys.modules.get("trio") if on_trio else None
    if trio is None:
        return anyio.wait_readable, (anyio.ClosedResourceError, OSError)
    return trio.lowlevel.wait_readable, (trio.ClosedResourceError, anyio.ClosedResourceError,
                                         OSError)
