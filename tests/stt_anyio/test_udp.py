"""UDP carrier on real loopback sockets, under asyncio and trio."""

from __future__ import annotations

import errno
import socket
from typing import TypedDict, Unpack

import anyio
import pytest

from stt_anyio.udp import MAX_BATCH, VIEW_MIN_BYTES, UdpAddress, UdpCarrier

pytestmark = pytest.mark.anyio


class Inbox:
    """Collects datagrams and lets a test wait for a count."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | memoryview, UdpAddress]] = []
        self.batches = 0
        self.unreachable: list[tuple[UdpAddress | None, int]] = []
        self._changed = anyio.Event()

    def on_datagram(self, data: bytes | memoryview, addr: UdpAddress) -> None:
        self.items.append((data, addr))

    def on_drained(self) -> None:
        self.batches += 1
        self._changed.set()
        self._changed = anyio.Event()

    def on_unreachable(self, addr: UdpAddress | None, code: int) -> None:
        self.unreachable.append((addr, code))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.items) < count:
            await self._changed.wait()

    async def wait_unreachable(self) -> None:
        while not self.unreachable:
            await self._changed.wait()


class BindOptions(TypedDict, total=False):
    """The UdpCarrier.bind keyword arguments a test may set besides the callbacks."""

    recv_buffer_size: int
    send_buffer_size: int
    reuse_port: bool
    views: bool


async def _bind(inbox: Inbox, **kwargs: Unpack[BindOptions]) -> UdpCarrier:
    return await UdpCarrier.bind(
        "127.0.0.1", 0, on_datagram=inbox.on_datagram, on_drained=inbox.on_drained,
        on_unreachable=inbox.on_unreachable, **kwargs,
    )


async def test_echo_many_datagrams_in_batches() -> None:
    """Both directions, ordered batches larger than one drain cap."""
    server_in, client_in = Inbox(), Inbox()
    server = await _bind(server_in)
    client = await _bind(client_in)
    count = MAX_BATCH * 3
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run)
        tg.start_soon(client.run)

        payloads = [i.to_bytes(4, "big") * (1 + i % 300) for i in range(count)]
        with anyio.fail_after(10):
            # Send in windows so the loopback receive buffer never overflows.
            for start in range(0, count, 200):
                await client.send_batch([(p, server.local_address)
                                         for p in payloads[start:start + 200]])
                await server_in.wait_for(start + len(payloads[start:start + 200]))
            assert [d for d, _ in server_in.items] == payloads
            assert {a for _, a in server_in.items} == {client.local_address}
            # Echo everything back in one batch.
            await server.send_batch(server_in.items[:200])
            await client_in.wait_for(200)
        assert [d for d, _ in client_in.items] == payloads[:200]
        assert server.stats.datagrams_received == count
        assert client.stats.datagrams_sent == count
        assert server.stats.batches >= 1
        # on_drained runs after each batch and inside long ones (DRAIN_FLUSH_INTERVAL).
        assert server_in.batches >= server.stats.batches
        await server.aclose()
        await client.aclose()


async def test_views_are_of_one_reused_buffer_and_read_correctly_during_the_call() -> None:
    """With ``views=True`` each datagram arrives as a view of the carrier's one
    receive buffer: right while the callback runs, overwritten by later reads."""
    seen: list[memoryview] = []
    copies: list[bytes] = []
    small: list[bytes | memoryview] = []

    def on_datagram(data: bytes | memoryview, addr: UdpAddress) -> None:
        if len(data) < VIEW_MIN_BYTES:
            small.append(data)  # a copy is cheaper than a view for small ones
            return
        assert isinstance(data, memoryview)
        seen.append(data)
        copies.append(bytes(data))  # what an owner must do with what it keeps

    inbox = Inbox()
    server = await UdpCarrier.bind("127.0.0.1", 0, on_datagram=on_datagram,
                                   on_drained=inbox.on_drained, views=True)
    client = await _bind(Inbox())
    payloads = [bytes([i]) * (60_000 - 997 * i) for i in range(20)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run)
        with anyio.fail_after(10):
            await client.send_batch([(p, server.local_address) for p in payloads])
            await client.send_batch([(b"small", server.local_address)])
            while len(copies) < len(payloads) or not small:
                await anyio.sleep(0.01)
        assert copies == payloads
        assert small == [b"small"] and type(small[0]) is bytes
        assert len({id(view.obj) for view in seen}) == 1  # no buffer per datagram
        # The views were not copies: later reads overwrote the first one's bytes.
        assert seen[0][0] != payloads[0][0]
        tg.cancel_scope.cancel()
    await server.aclose()
    await client.aclose()


async def test_large_datagram_round_trip() -> None:
    """A 60 000-byte datagram arrives whole (the buffer is reused, the copy is not)."""
    inbox = Inbox()
    receiver = await _bind(inbox)
    sender = await _bind(Inbox())
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver.run)
        big = bytes(range(256)) * 234 + b"x" * 96
        small = b"small"
        await sender.send(big, receiver.local_address)
        await sender.send(small, receiver.local_address)
        with anyio.fail_after(5):
            await inbox.wait_for(2)
        assert inbox.items[0][0] == big
        assert inbox.items[1][0] == small
        await receiver.aclose()
        await sender.aclose()


async def test_buffer_sizes_reported_and_reuse_port() -> None:
    inbox = Inbox()
    first = await _bind(inbox, recv_buffer_size=1 << 20, send_buffer_size=1 << 20,
                        reuse_port=True)
    try:
        assert first.recv_buffer_size > 0
        assert first.send_buffer_size > 0
        host, port = first.local_address
        assert host == "127.0.0.1" and port > 0
        second = await UdpCarrier.bind(host, port, on_datagram=inbox.on_datagram,
                                       reuse_port=True)
        assert second.local_address == first.local_address
        await second.aclose()
        assert isinstance(first.gso_enabled, bool)
    finally:
        await first.aclose()


async def test_bad_buffer_size_rejected() -> None:
    with pytest.raises(ValueError):
        await UdpCarrier.bind(on_datagram=Inbox().on_datagram, recv_buffer_size=0)


async def test_port_unreachable_is_reported_with_address() -> None:
    """ICMP port unreachable (Linux, IP_RECVERR) names the failed destination."""
    inbox = Inbox()
    carrier = await _bind(inbox)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    dead: UdpAddress = probe.getsockname()
    probe.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(carrier.run)
        await carrier.send(b"anyone?", dead)
        with anyio.fail_after(5):
            await inbox.wait_unreachable()
        assert inbox.unreachable[0] in ((dead, errno.ECONNREFUSED), (None, errno.ECONNREFUSED))
        assert carrier.stats.unreachable_reports >= 1
        # The carrier keeps working afterwards.
        peer_inbox = Inbox()
        peer = await _bind(peer_inbox)
        tg.start_soon(peer.run)
        await carrier.send(b"still alive", peer.local_address)
        with anyio.fail_after(5):
            await peer_inbox.wait_for(1)
        await peer.aclose()
        await carrier.aclose()


async def test_aclose_ends_run_and_is_idempotent() -> None:
    carrier = await _bind(Inbox())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(carrier.run)
            await anyio.sleep(0.01)
            await carrier.aclose()
    await carrier.aclose()
    assert carrier.closed
    # Sending on a closed carrier is a silent no-op, never an exception.
    assert carrier.try_send(b"x", ("127.0.0.1", 9))
    await carrier.send(b"x", ("127.0.0.1", 9))


async def test_callback_error_ends_run_with_that_error() -> None:
    """A bug in the owner's callback is not swallowed, whichever way readiness arrives."""

    def broken(data: bytes | memoryview, addr: UdpAddress) -> None:
        raise LookupError(data)

    carrier = await UdpCarrier.bind("127.0.0.1", 0, on_datagram=broken)
    sender = await _bind(Inbox())
    try:
        with anyio.fail_after(5), pytest.raises(ExceptionGroup) as caught:
            async with anyio.create_task_group() as tg:
                tg.start_soon(carrier.run)
                await anyio.sleep(0.01)
                await sender.send(b"boom", carrier.local_address)
        assert caught.group_contains(LookupError, match="boom")
    finally:
        await sender.aclose()
        await carrier.aclose()


async def test_run_again_after_cancellation_still_receives() -> None:
    """A cancelled ``run`` leaves the socket usable by the next one (no stale registration)."""
    inbox = Inbox()
    carrier = await _bind(inbox)
    sender = await _bind(Inbox())
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(carrier.run)
                await sender.send(b"one", carrier.local_address)
                await inbox.wait_for(1)
                tg.cancel_scope.cancel()
            async with anyio.create_task_group() as tg:
                tg.start_soon(carrier.run)
                await sender.send(b"two", carrier.local_address)
                await inbox.wait_for(2)
                tg.cancel_scope.cancel()
        assert [data for data, _ in inbox.items] == [b"one", b"two"]
    finally:
        await sender.aclose()
        await carrier.aclose()


async def test_send_to_invalid_address_is_counted_not_raised() -> None:
    carrier = await _bind(Inbox())
    try:
        await carrier.send(b"x", ("256.1.1.1", 1))
        assert carrier.stats.send_errors == 1
    finally:
        await carrier.aclose()


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    inbox = Inbox()
    try:
        receiver = await UdpCarrier.bind("::1", 0, on_datagram=inbox.on_datagram,
                                         on_drained=inbox.on_drained)
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    sender = await UdpCarrier.bind("::1", 0, on_datagram=Inbox().on_datagram)
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver.run)
        await sender.send(b"v6", receiver.local_address)
        with anyio.fail_after(5):
            await inbox.wait_for(1)
        assert inbox.items == [(b"v6", sender.local_address)]
        await receiver.aclose()
        await sender.aclose()
