"""The CLI's file-transfer protocol and loss relay, on real loopback nodes and sockets."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_anyio import Session, open_node
from stt_anyio.cli_relay import LossyRelay
from stt_anyio.cli_serve import DirectorySink
from stt_anyio.cli_transfer import (
    FILE_PURPOSE,
    FileHeader,
    HashSink,
    Receipt,
    Sink,
    TransferError,
    receive_file,
    send_file,
)
from stt_core.errors import StreamClosedError

SEED = b"cli transfer test seed"
FAST = {"max_datagram_size": 1452, "close_timeout": 1.0}


# -- messages -------------------------------------------------------------------------

@given(st.text(min_size=1, max_size=100), st.integers(0, 2**53),
       st.binary(min_size=32, max_size=32))
def test_header_round_trips(name: str, size: int, digest: bytes) -> None:
    header = FileHeader(name=name, size=size, sha256=digest.hex())
    assert FileHeader.from_bytes(header.to_bytes()) == header


@given(st.booleans(), st.integers(0, 2**40), st.text(max_size=64), st.text(max_size=64))
def test_receipt_round_trips(ok: bool, nbytes: int, saved_as: str, error: str) -> None:
    receipt = Receipt(ok=ok, nbytes=nbytes, sha256="ab" * 32, saved_as=saved_as, error=error)
    assert Receipt.from_bytes(receipt.to_bytes()) == receipt


def _header_json(**changes: object) -> bytes:
    fields: dict[str, object] = {"type": "stt-file", "version": 1, "name": "a.bin",
                                 "size": 3, "sha256": "00" * 32}
    fields.update(changes)
    return json.dumps(fields).encode()


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"[1, 2]", b"not json",
    _header_json(type="other"), _header_json(version=2), _header_json(name=""),
    _header_json(name=7), _header_json(size=-1), _header_json(size=True),
    _header_json(size="3"), _header_json(sha256="00" * 31), _header_json(sha256="zz" * 32),
    b"{" + b" " * 5000 + b"}",
])
def test_malformed_headers_are_rejected(data: bytes) -> None:
    with pytest.raises(TransferError):
        FileHeader.from_bytes(data)


@pytest.mark.parametrize("data", [b"{}", b'{"ok": 1, "bytes": 1, "sha256": ""}',
                                  b'{"ok": true, "bytes": "1", "sha256": ""}', b"nope"])
def test_malformed_receipts_are_rejected(data: bytes) -> None:
    with pytest.raises(TransferError):
        Receipt.from_bytes(data)


# -- the protocol on real nodes -----------------------------------------------------------

@asynccontextmanager
async def session_pair() -> AsyncIterator[tuple[Session, Session]]:
    """(client session, server session) over UDP on loopback."""
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=FAST) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=FAST) as client:
        with anyio.fail_after(10):
            client_session = await client.connect(server.local_address)
            server_session = await server.accept()
        yield client_session, server_session


async def _chunks(data: bytes, size: int = 50_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def _header(data: bytes, name: str = "data.bin") -> FileHeader:
    return FileHeader(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


async def _transfer(data: bytes, header: FileHeader, sink: Sink,
                    ) -> tuple[Receipt | Exception, Receipt | Exception]:
    """Run both ends; (what the sender got, what the receiver answered), errors included."""
    results: dict[str, Receipt | Exception] = {}
    async with session_pair() as (client_session, server_session):

        async def receiver() -> None:
            stream = await server_session.accept_stream(timeout=5)
            try:
                results["receiver"] = (await receive_file(stream, sink, timeout=5))[1]
            except (TransferError, StreamClosedError) as exc:
                results["receiver"] = exc

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                stream = client_session.open_stream(FILE_PURPOSE)
                try:
                    results["sender"] = await send_file(stream, header, _chunks(data),
                                                        receipt_timeout=5)
                except TransferError as exc:
                    results["sender"] = exc
    return results["sender"], results["receiver"]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 300_001])
async def test_a_file_arrives_verified(size: int) -> None:
    data = os.urandom(size)
    sent, answered = await _transfer(data, _header(data), HashSink())
    assert isinstance(sent, Receipt) and sent.ok
    assert sent == answered
    assert sent.nbytes == size and sent.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.anyio
async def test_a_wrong_digest_is_reported_and_nothing_is_kept(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    lie = FileHeader(name="data.bin", size=len(data), sha256="00" * 32)
    sent, answered = await _transfer(data, lie, DirectorySink(tmp_path))
    assert isinstance(sent, TransferError) and "SHA-256 mismatch" in str(sent)
    assert isinstance(answered, Receipt) and not answered.ok
    assert answered.sha256 == hashlib.sha256(data).hexdigest()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_short_source_is_caught_by_the_sender() -> None:
    data = os.urandom(10_000)
    header = FileHeader(name="x", size=len(data) + 1, sha256=hashlib.sha256(data).hexdigest())
    sent, answered = await _transfer(data, header, HashSink())
    assert isinstance(sent, TransferError) and "yielded 10000 bytes" in str(sent)
    assert not isinstance(answered, Receipt) or not answered.ok


@pytest.mark.anyio
async def test_directory_sink_keeps_names_inside_and_never_overwrites(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "passwd").write_bytes(b"existing")
    sent, _ = await _transfer(data, _header(data, "../../etc/passwd"), DirectorySink(tmp_path))
    assert isinstance(sent, Receipt) and sent.ok
    assert Path(sent.saved_as) == tmp_path / "passwd.1"
    assert (tmp_path / "passwd.1").read_bytes() == data
    assert (tmp_path / "passwd").read_bytes() == b"existing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "passwd.1"]


@pytest.mark.anyio
async def test_a_refused_file_stops_the_sender(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    sent, answered = await _transfer(data, _header(data, ".."), DirectorySink(tmp_path))
    assert isinstance(sent, TransferError) and "refused" in str(sent)
    assert isinstance(answered, TransferError)
    assert list(tmp_path.iterdir()) == []


# -- the loss relay -----------------------------------------------------------------------

async def _through_relay(loss: float, seed: int, count: int) -> tuple[int, int, int]:
    """Send ``count`` datagrams each way through a relay; (to_server, to_client, echoed)."""
    server = await anyio.create_udp_socket(local_host="127.0.0.1", local_port=0)
    local = server.extra(anyio.abc.SocketAttribute.local_address)
    assert isinstance(local, tuple)
    relay = await LossyRelay.open((str(local[0]), int(local[1])), loss=loss, seed=seed)
    client = await anyio.create_connected_udp_socket(*relay.address, local_host="127.0.0.1")
    echoed = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)

        async def echo() -> None:
            async for data, addr in server:
                await server.sendto(data, *addr)

        tg.start_soon(echo)
        for i in range(count):
            await client.send(i.to_bytes(4, "big"))
            await anyio.sleep(0.001)
        with anyio.move_on_after(0.3):
            while echoed < count:
                await client.receive()
                echoed += 1
        tg.cancel_scope.cancel()
    await relay.aclose()
    await client.aclose()
    await server.aclose()
    return relay.stats.forwarded_to_server, relay.stats.forwarded_to_client, echoed


@pytest.mark.anyio
async def test_relay_without_loss_forwards_both_ways() -> None:
    to_server, to_client, echoed = await _through_relay(0.0, 1, 20)
    assert (to_server, to_client, echoed) == (20, 20, 20)


@pytest.mark.anyio
async def test_relay_loss_is_real_and_seeded() -> None:
    first = await _through_relay(0.3, 7, 60)
    second = await _through_relay(0.3, 7, 60)
    assert first == second, "the same seed must drop the same datagrams"
    to_server, to_client, echoed = first
    assert 20 <= to_server <= 58 and echoed == to_client < to_server


@pytest.mark.anyio
async def test_relay_rejects_impossible_loss() -> None:
    with pytest.raises(ValueError, match="loss"):
        await LossyRelay.open(("127.0.0.1", 9), loss=1.0, seed=1)


class FailingSink(HashSink):
    """Runs out of space after ``limit`` bytes; records whether it was discarded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stored = 0
        self.discarded = False

    async def write(self, data: bytes) -> None:
        self.stored += len(data)
        if self.stored > self.limit:
            raise TransferError("cannot store the file: No space left on device")

    async def discard(self) -> None:
        self.discarded = True


@pytest.mark.anyio
async def test_a_sink_that_cannot_store_stops_the_sender_early() -> None:
    data = os.urandom(4 * 1024 * 1024)
    sink = FailingSink(limit=200_000)
    sent, answered = await _transfer(data, _header(data), sink)
    assert isinstance(sent, TransferError) and "No space left" in str(sent)
    assert isinstance(answered, Receipt) and not answered.ok
    assert answered.nbytes < len(data) and sink.discarded
