"""The node puts a session's packets on the wire in packet-number order.

Two tasks flush: the pump, and whichever task ran a command or drained the
socket (the inline flush). If one of them sealed a batch and then yielded
before sending it, the other could send later packet numbers first; the peer
then sees holes, reports them (NACK) and the sender resends data that was never
lost. These tests record every datagram the client's socket accepts, in order.
"""

from __future__ import annotations

import hashlib
import itertools
import socket
from typing import Any

import anyio
import pytest

from stt_anyio import Node, Session, open_node
from stt_anyio.udp import UdpAddress, UdpCarrier
from stt_core.wire import PacketType, parse_header

pytestmark = pytest.mark.anyio

SEED = b"send order test seed 0123"
OVERRIDES = {"max_datagram_size": 1200, "pmtu_probe_limit": 1200}


class _RecordingSocket:
    """Stands in for the carrier's socket and logs the packet numbers it sends."""

    def __init__(self, sock: socket.socket, numbers: list[int]) -> None:
        self._sock = sock
        self._numbers = numbers

    def _log(self, data: bytes) -> None:
        header = parse_header(bytes(data))
        if header.packet_type in (PacketType.SESSION, PacketType.SESSION_KEY_PHASE_1):
            self._numbers.append(header.packet_number)

    def sendto(self, data: bytes, addr: UdpAddress) -> int:
        sent = self._sock.sendto(data, addr)
        self._log(data)
        return sent

    def sendmsg(self, buffers: list[bytes], *args: Any) -> int:
        sent = self._sock.sendmsg(buffers, *args)
        for data in buffers:
            self._log(data)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _record_sends(carrier: UdpCarrier, numbers: list[int]) -> None:
    # A stand-in that forwards to the real socket, not a socket.socket itself.
    carrier._sock = _RecordingSocket(carrier._sock, numbers)  # type: ignore[assignment]


async def _transfer(client: Node, server: Node, *, count: int, deadline: float) -> Session:
    """Connect, send ``count`` messages of 256 KiB on one stream with buffered
    writes, and check by SHA-256 that the server read exactly them."""
    payload = bytes(range(256)) * 1024
    with anyio.fail_after(deadline):
        session = await client.connect(server.local_address)
        peer = await server.accept()
        stream = session.open_stream(purpose="bulk")
        digest = hashlib.sha256()
        async with anyio.create_task_group() as tg:
            async def read() -> None:
                inbound = await peer.accept_stream()
                for _ in range(count):
                    digest.update(await inbound.receive())
            tg.start_soon(read)
            for _ in range(count):
                await stream.write(payload)
    assert digest.digest() == hashlib.sha256(payload * count).digest()
    return session


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
async def test_bulk_transfer_sends_packet_numbers_in_order(offload: bool) -> None:
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=OVERRIDES,
                         udp_offload=offload) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=OVERRIDES, udp_offload=offload) as client:
        numbers: list[int] = []
        assert client._udp is not None
        _record_sends(client._udp, numbers)
        session = await _transfer(client, server, count=16, deadline=30)
        assert len(numbers) > 3000  # 4 MiB at 1200-byte datagrams
        out_of_order = sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
        assert out_of_order == 0
        assert session.stats.spurious_losses == 0


class _RefusingSocket(_RecordingSocket):
    """Refuses every third send as a full kernel buffer would, so datagrams wait
    in the node's backlog; records the bytes of those it accepts."""

    def __init__(self, sock: socket.socket, numbers: list[int]) -> None:
        super().__init__(sock, numbers)
        self._calls = 0

    def _refuse(self) -> None:
        self._calls += 1
        if self._calls % 3 == 0:
            raise BlockingIOError

    def sendto(self, data: bytes, addr: UdpAddress) -> int:
        self._refuse()
        return super().sendto(data, addr)

    def sendmsg(self, buffers: list[bytes], *args: Any) -> int:
        self._refuse()
        return super().sendmsg(buffers, *args)


async def test_lent_large_datagrams_that_wait_in_the_backlog_arrive_intact() -> None:
    """The node borrows large datagrams from the core for one flush; those the
    socket refuses are copied into the backlog before the next flush writes
    their buffers again."""
    big = {"max_datagram_size": 65_507, "pmtu_probe_limit": 65_507}
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=big) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=big) as client:
        numbers: list[int] = []
        assert client._udp is not None
        # The stand-in socket again (see _record_sends).
        client._udp._sock = _RefusingSocket(client._udp._sock, numbers)  # type: ignore[assignment]
        session = await _transfer(client, server, count=32, deadline=60)
        assert client.get_stats()["udp"]["send_blocked"] > 0  # the backlog was used
        assert client._endpoint.scratch.packets.capacity > 0  # and packets were lent
        assert session.stats.packets_lost == 0
