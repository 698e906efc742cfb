"""UDP segmentation and receive offload (GSO/GRO) in the carrier, on real loopback sockets."""

from __future__ import annotations

import errno
import socket
from typing import Any

import anyio
import pytest

from stt_anyio.udp import GSO_MAX_SEGMENTS, UdpAddress, UdpCarrier
from tests.stt_anyio.test_udp import Inbox

pytestmark = pytest.mark.anyio

A: UdpAddress = ("127.0.0.1", 1)
B: UdpAddress = ("127.0.0.1", 2)


def _payloads() -> list[bytes]:
    """A mixed batch: a long run of equal sizes, a shorter tail, other sizes, one large."""
    run = [bytes([i % 251]) * 1200 for i in range(120)]
    return run + [b"tail" * 100] + [bytes([i]) * 1452 for i in range(30)] + [b"z" * 60000, b"."]


async def _exchange(*, gso: bool, gro: bool) -> tuple[UdpCarrier, UdpCarrier, Inbox]:
    inbox = Inbox()
    receiver = await UdpCarrier.bind(on_datagram=inbox.on_datagram, on_drained=inbox.on_drained)
    sender = await UdpCarrier.bind(on_datagram=Inbox().on_datagram)
    receiver.set_offload(gro=gro)
    sender.set_offload(gso=gso)
    payloads = _payloads()
    source = sender.local_address
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver.run)
        await sender.send_batch([(p, receiver.local_address) for p in payloads])
        with anyio.fail_after(5):
            await inbox.wait_for(len(payloads))
        tg.cancel_scope.cancel()
    await receiver.aclose()
    await sender.aclose()
    assert [data for data, _ in inbox.items] == payloads  # same datagrams, same order
    assert {addr for _, addr in inbox.items} == {source}
    assert receiver.stats.datagrams_received == len(payloads)
    assert receiver.stats.bytes_received == sum(map(len, payloads))
    assert sender.stats.datagrams_sent == len(payloads)
    return sender, receiver, inbox


def _kernel_offers_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.getsockopt(17, 103)
        except OSError:
            return False
    return True


needs_gso = pytest.mark.skipif(not _kernel_offers_gso(), reason="kernel without UDP GSO")


@needs_gso
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
async def test_segmented_sends_deliver_the_same_datagrams(gro: bool) -> None:
    sender, receiver, _ = await _exchange(gso=True, gro=gro)
    # 120 x 1200 B + tail: runs of at most 54 (64 KiB / 1200); 30 x 1452 B: one run.
    assert sender.stats.segmented_sends >= 4
    if gro:
        # Loopback hands a segmented send whole to a socket that asked for GRO.
        assert receiver.stats.coalesced_reads >= 1
    else:
        assert receiver.stats.coalesced_reads == 0


async def test_offload_off_sends_one_datagram_per_call() -> None:
    sender, receiver, _ = await _exchange(gso=False, gro=False)
    assert sender.stats.segmented_sends == 0
    assert receiver.stats.coalesced_reads == 0
    assert not sender.gso_enabled and not receiver.gro_enabled


def _run_lengths(batch: list[tuple[bytes, UdpAddress]]) -> list[int]:
    lengths, index = [], 0
    while index < len(batch):
        end = UdpCarrier._gso_run_end(batch, index)
        lengths.append(end - index)
        index = end
    return lengths


def test_runs_follow_the_kernel_rules() -> None:
    def d(size: int, addr: UdpAddress = A) -> tuple[bytes, UdpAddress]:
        return (b"x" * size, addr)

    # Equal sizes to one address form a run; a shorter datagram ends it, included.
    assert _run_lengths([d(100)] * 5 + [d(40)] + [d(100)] * 2) == [6, 2]
    # A larger datagram cannot join (segments after the first may not grow).
    assert _run_lengths([d(100), d(100), d(200), d(200)]) == [2, 2]
    # A new address starts a new run.
    assert _run_lengths([d(100), d(100), d(100, B), d(100, B)]) == [2, 2]
    # At most GSO_MAX_SEGMENTS datagrams, and at most 64 KiB, per run.
    assert _run_lengths([d(10)] * (GSO_MAX_SEGMENTS + 3)) == [GSO_MAX_SEGMENTS, 3]
    assert _run_lengths([d(1200)] * 60) == [54, 6]
    assert _run_lengths([d(40000), d(40000)]) == [1, 1]


class _RefusingSocket(socket.socket):
    """A real UDP socket whose segmented sends fail with a chosen errno."""

    refusal = errno.EIO
    refused = 0

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        self.refused += 1
        raise OSError(self.refusal, "refused for the test")


async def _send_through_refusing_socket(refusal: int) -> tuple[UdpCarrier, Inbox, int]:
    inbox = Inbox()
    receiver = await UdpCarrier.bind(on_datagram=inbox.on_datagram, on_drained=inbox.on_drained)
    sock = _RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.refusal = refusal
    sock.bind(("127.0.0.1", 0))
    sender = UdpCarrier(sock, on_datagram=Inbox().on_datagram)
    sender.set_offload(gso=True)
    assert sender.gso_enabled
    payloads = [bytes([i]) * 1000 for i in range(20)] + [bytes([i]) * 1000 for i in range(20)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver.run)
        await sender.send_batch([(p, receiver.local_address) for p in payloads[:20]])
        await sender.send_batch([(p, receiver.local_address) for p in payloads[20:]])
        with anyio.fail_after(5):
            await inbox.wait_for(len(payloads))
        tg.cancel_scope.cancel()
    await receiver.aclose()
    await sender.aclose()
    assert [data for data, _ in inbox.items] == payloads
    assert sender.stats.datagrams_sent == len(payloads)
    assert sender.stats.segmented_sends == 0 and sender.stats.send_errors == 0
    return sender, inbox, sock.refused


@needs_gso
async def test_eio_switches_segmentation_off_and_nothing_is_lost() -> None:
    sender, _, refused = await _send_through_refusing_socket(errno.EIO)
    assert refused == 1  # tried once, then never again
    assert not sender.gso_enabled


@needs_gso
async def test_einval_resends_the_run_one_by_one_and_keeps_segmentation() -> None:
    sender, _, refused = await _send_through_refusing_socket(errno.EINVAL)
    assert refused == 2  # each batch's run was tried segmented first
    assert sender.gso_enabled
