"""Cross-transport migration (UDP <-> WebSocket) and failover, on real loopback sockets.

The client reaches the server's UDP socket through a relay that the test can
cut; the server also listens on WebSocket. Every test runs under asyncio and
trio (conftest.py).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_anyio import Node, Session, WsPeer, open_node
from stt_anyio.cli_relay import LossyRelay
from stt_anyio.clock import now
from stt_anyio.migration import (
    DEFAULT_FAILOVER_AFTER,
    FailoverPath,
    PathFilter,
    SessionPaths,
    plan_paths,
)
from stt_core.errors import (
    ConnectionRefusedError,
    ConnectionTimeoutError,
    InvalidStateError,
)

SEED = b"migration test seed 0123456789"
FAST = {"close_timeout": 1.0}
FAILOVER_AFTER = 1.0
MESSAGE_BYTES = 32 * 1024
SEQ = struct.Struct("!Q")


class CuttableRelay(LossyRelay):
    """The CLI's relay without random loss, plus a switch that cuts it both ways."""

    forwarding = True

    def _keep(self, rng: random.Random) -> bool:
        return self.forwarding and super()._keep(rng)


@dataclass
class Rig:
    """A server listening on UDP and WebSocket, a client, and the relay between them."""

    server: Node
    client: Node
    relay: CuttableRelay
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ws_address(self) -> tuple[str, int]:
        return self.server.local_addresses["websocket"]


@asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    """Server, relay, client; torn down in reverse so the client closes through the relay."""
    async with open_node(node_id=b"server", shared_seed=SEED, transport=("udp", "websocket"),
                         config_overrides=FAST) as server:
        relay = await CuttableRelay.open(server.local_addresses["udp"], loss=0.0, seed=0)
        if not isinstance(relay, CuttableRelay):
            raise TypeError("LossyRelay.open did not build the subclass")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                try:
                    async with open_node(node_id=b"client", shared_seed=SEED,
                                         transport=("udp", "websocket"), server_mode=False,
                                         config_overrides=FAST) as client:
                        yield Rig(server, client, relay)
                finally:
                    tg.cancel_scope.cancel()  # before closing: a send in progress would fail
        finally:
            await relay.aclose()


class PathOptions(TypedDict, total=False):
    """The path arguments of ``Node.connect`` that the tests pass on."""

    paths: Mapping[str, tuple[str, int]] | None
    failover: Sequence[FailoverPath] | None
    failover_after: float | None


async def connect_pair(r: Rig, **kwargs: Unpack[PathOptions]) -> tuple[Session, Session]:
    session = await r.client.connect(r.relay.address, timeout=5, **kwargs)
    peer = await r.server.accept(timeout=5)
    assert peer.session_id == session.session_id
    return session, peer


def on_websocket(session: Session) -> bool:
    """True while the session sends over WebSocket (a function: no type narrowing)."""
    return isinstance(session.peer_address, WsPeer)


def on_udp(session: Session) -> bool:
    return isinstance(session.peer_address, tuple)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def exchange(session: Session, peer: Session, label: str, count: int) -> None:
    """``count`` confirmed messages on a new stream; the peer gets them all, in order."""
    stream = session.open_stream(label)
    expected = [f"{label} {i}".encode() for i in range(count)]
    for message in expected:
        await stream.send(message, timeout=5)
    incoming = await peer.accept_stream(timeout=5)
    assert incoming.purpose == label
    assert [await incoming.receive(timeout=5) for _ in expected] == expected


# -- the bulk transfer that fails over and comes back ------------------------


def message(seq: int, rng: random.Random) -> bytes:
    return SEQ.pack(seq) + rng.randbytes(MESSAGE_BYTES - SEQ.size)


async def failover_transfer(total_bytes: int) -> dict[str, float]:
    """Start over UDP, cut the relay after a quarter, finish over WebSocket, come back."""
    async with rig() as r:
        session, peer = await connect_pair(
            r, failover=[("websocket", r.ws_address)], failover_after=FAILOVER_AFTER)
        session_id = session.session_id
        count = total_bytes // MESSAGE_BYTES
        sent, got = hashlib.sha256(), hashlib.sha256()
        seqs: list[int] = []
        times: dict[str, float] = {}
        stream = session.open_stream("bulk")

        async def send_all() -> None:
            rng = random.Random(7)
            for seq in range(count):
                data = message(seq, rng)
                sent.update(data)
                await stream.write(data, timeout=60)
            await stream.close()

        async def receive_all() -> None:
            incoming = await peer.accept_stream(timeout=5)
            async for data in incoming:
                seqs.append(SEQ.unpack_from(data)[0])
                got.update(data)
                if len(seqs) == count // 4:
                    r.relay.forwarding = False
                    times["cut"] = now()

        async def note_server_move() -> None:
            await wait_until(lambda: on_websocket(peer), timeout=60)
            times["server_moved"] = now()

        times["start"] = now()
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                tg.start_soon(note_server_move)
                await receive_all()
        times["done"] = now()

        assert seqs == list(range(count))  # nothing lost, duplicated or reordered
        assert got.hexdigest() == sent.hexdigest()
        assert on_websocket(session)
        assert on_websocket(peer)
        paths = r.client.paths_of(session)
        assert paths is not None and paths.failovers == 1
        assert paths.last_silence >= FAILOVER_AFTER

        # Back to UDP once the relay forwards again; traffic then flows over UDP.
        r.relay.forwarding = True
        before = r.relay.stats.forwarded_to_server
        started = now()
        await session.migrate("udp", timeout=5)
        times["back_to_udp"] = now() - started
        await wait_until(lambda: on_udp(peer))
        await exchange(session, peer, "after", 20)
        assert r.relay.stats.forwarded_to_server >= before + 20
        assert session.peer_address == r.relay.address
        assert paths.migrations == 2
        await anyio.sleep(0.2)  # no ping-pong between the paths afterwards
        assert on_udp(peer)
        assert peer.stats.path_changes == 2  # PathChanged: UDP -> WebSocket -> UDP
        assert session.session_id == peer.session_id == session_id
        await wait_until(lambda: r.client.get_stats()["websocket"]["connections_closed"] == 1)
        return {
            "transfer_s": times["done"] - times["start"],
            "failover_s": times["server_moved"] - times["cut"],
            "move_s": paths.last_move_duration,
            "back_to_udp_s": times["back_to_udp"],
        }


@pytest.mark.anyio
async def test_transfer_survives_failover_to_websocket_and_comes_back_4mib() -> None:
    numbers = await failover_transfer(4 * 1024 * 1024)
    print(f"4 MiB failover transfer: {numbers}")
    assert numbers["failover_s"] >= FAILOVER_AFTER


@pytest.mark.slow
@pytest.mark.anyio
async def test_transfer_survives_failover_to_websocket_and_comes_back_32mib() -> None:
    numbers = await failover_transfer(32 * 1024 * 1024)
    print(f"32 MiB failover transfer: {numbers}")
    assert numbers["failover_s"] >= FAILOVER_AFTER


# -- manual moves --------------------------------------------------------------


@pytest.mark.anyio
async def test_migrate_there_and_back_keeps_streams_and_session_id() -> None:
    async with rig() as r:
        session, peer = await connect_pair(r, paths={"websocket": r.ws_address})
        stream = session.open_stream("long-lived")
        await stream.send(b"before", timeout=5)
        incoming = await peer.accept_stream(timeout=5)
        await session.migrate("websocket", timeout=5)
        assert on_websocket(session)
        await wait_until(lambda: on_websocket(peer))
        await stream.send(b"over websocket", timeout=5)
        await anyio.sleep(0.2)  # the healthy UDP path must not pull the session back
        assert on_websocket(session)
        assert on_websocket(peer)
        await session.migrate("udp", timeout=5)
        await wait_until(lambda: on_udp(peer))
        await stream.send(b"over udp again", timeout=5)
        assert [await incoming.receive(timeout=5) for _ in range(3)] == [
            b"before", b"over websocket", b"over udp again"]
        assert peer.stats.path_changes == 2
        assert session.session_id == peer.session_id
        await session.migrate("udp", timeout=5)  # already there: nothing happens
        await session.migrate("websocket", timeout=5)
        await session.migrate("websocket", timeout=5)  # no second WebSocket either
        await wait_until(lambda: peer.stats.path_changes == 3)
        assert r.client.get_stats()["websocket"]["connections_opened"] == 2


@pytest.mark.anyio
async def test_migrate_takes_the_address_as_an_argument_and_remembers_it() -> None:
    async with rig() as r:
        session, peer = await connect_pair(r)
        with pytest.raises(ValueError, match="no websocket address"):
            await session.migrate("websocket")
        await session.migrate("websocket", r.ws_address, timeout=5)
        paths = r.client.paths_of(session)
        assert paths is not None and paths.known["websocket"] == r.ws_address
        await exchange(session, peer, "ws", 3)


@pytest.mark.anyio
async def test_only_the_connecting_side_migrates() -> None:
    async with rig() as r:
        _, peer = await connect_pair(r, paths={"websocket": r.ws_address})
        with pytest.raises(InvalidStateError, match="only the side that opened"):
            await peer.migrate("websocket", ("127.0.0.1", 1))
        assert r.server.paths_of(peer) is None


@pytest.mark.anyio
async def test_a_refused_websocket_leaves_the_session_where_it_was() -> None:
    async with rig() as r:
        session, peer = await connect_pair(r)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # a port where nothing listens
        with pytest.raises(ConnectionRefusedError):
            await session.migrate("websocket", ("127.0.0.1", port), timeout=2)
        assert session.peer_address == r.relay.address
        await exchange(session, peer, "still-udp", 3)


@pytest.mark.anyio
async def test_an_unacknowledged_move_times_out_and_is_undone() -> None:
    async with rig() as r, open_node(node_id=b"stranger", shared_seed=SEED,
                                     transport="websocket", config_overrides=FAST) as other:
        session, peer = await connect_pair(r)
        # Another node knows nothing of this session: it never validates the path.
        with pytest.raises(ConnectionTimeoutError, match="did not acknowledge"):
            await session.migrate("websocket", other.local_address, timeout=0.5)
        assert session.peer_address == r.relay.address
        await exchange(session, peer, "undone", 3)
        assert peer.stats.path_changes == 0
        await wait_until(lambda: r.client.get_stats()["websocket"]["connections_closed"] == 1)


# -- the failover policy -------------------------------------------------------


@pytest.mark.anyio
async def test_failover_waits_for_outstanding_data() -> None:
    async with rig() as r:
        session, peer = await connect_pair(r, failover=[("websocket", r.ws_address)],
                                           failover_after=0.3)
        await exchange(session, peer, "warm-up", 2)
        # Nothing outstanding: no data in flight, and the path MTU probes that
        # the client's first message started are all answered.
        core = r.client._endpoint.sessions[session.ref]
        await wait_until(lambda: session.stats.bytes_in_flight == 0
                         and not core.pmtu_probe_size and not core.pmtu_candidates)
        r.relay.forwarding = False
        await anyio.sleep(1.0)  # silent, but nothing is outstanding: stay
        assert session.peer_address == r.relay.address
        cut = now()
        stream = session.open_stream("wakes it")
        await stream.send(b"sent into the cut", timeout=10)
        assert on_websocket(session)
        incoming = await peer.accept_stream(timeout=5)
        assert await incoming.receive(timeout=5) == b"sent into the cut"
        assert now() - cut >= 0.3
        paths = r.client.paths_of(session)
        assert paths is not None
        await wait_until(lambda: paths.failovers == 1)  # the move ends after the send


@pytest.mark.anyio
async def test_without_failover_a_cut_path_is_not_left() -> None:
    async with rig() as r:
        session, peer = await connect_pair(r, paths={"websocket": r.ws_address})
        paths = r.client.paths_of(session)
        assert paths is not None and paths.failover_after is None
        r.relay.forwarding = False
        stream = session.open_stream("stuck")
        await stream.write(b"x" * 1000)
        await anyio.sleep(DEFAULT_FAILOVER_AFTER / 4)
        assert session.peer_address == r.relay.address
        await session.migrate("websocket", timeout=5)  # the application decides
        await stream.send(b"y", timeout=5)
        incoming = await peer.accept_stream(timeout=5)
        assert [await incoming.receive(timeout=5) for _ in range(2)] == [b"x" * 1000, b"y"]


# -- plan_paths and PathFilter, without sockets --------------------------------

UDP = ("127.0.0.1", 9000)
WS = ("127.0.0.1", 9001)
BOTH = ("udp", "websocket")


def plan(**kwargs: object) -> SessionPaths:
    """plan_paths with defaults; the kwargs stay untyped because
    test_plan_rejects_bad_paths passes ill-typed paths on purpose."""
    options: dict[str, object] = {"paths": None, "failover": None, "failover_after": None,
                                  "idle_timeout": 30.0, "ws_options": (None, None, None),
                                  "available": BOTH}
    options.update(kwargs)
    return plan_paths("udp", UDP, **options)  # type: ignore[arg-type]


def test_plan_puts_the_connect_path_first_and_defaults_failover_after() -> None:
    paths = plan(failover=[("websocket", WS), ("udp", ("127.0.0.1", 9002))])
    assert paths.ring == [("udp", UDP), ("websocket", WS),
                          ("udp", ("127.0.0.1", 9002))]
    assert paths.known == {"udp": UDP, "websocket": WS}
    assert paths.failover_after == DEFAULT_FAILOVER_AFTER
    assert plan(paths={"websocket": WS}).failover_after is None
    assert plan(failover=[]).failover_after is None


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"paths": {"websocket": WS}, "failover": [("websocket", ("127.0.0.1", 1))]},
     None, None),
    ({"paths": {"udp": ("127.0.0.1", 1)}}, ValueError, "two udp addresses"),
    ({"paths": {"quic": WS}}, ValueError, "unknown transport"),
    ({"failover": [("websocket", "host:1")]}, ValueError, "address must be"),
    ({"failover": [("websocket", WS)], "failover_after": 0.0}, ValueError, "failover_after"),
    ({"failover": [("websocket", WS)], "failover_after": 30.0}, ValueError, "failover_after"),
    ({"failover": [("websocket", WS)], "available": ("udp",)}, InvalidStateError, "no 'web"),
])
def test_plan_rejects_bad_paths(kwargs: dict[str, object], error: type[Exception] | None,
                                match: str | None) -> None:
    if error is None:
        plan(**kwargs)
        return
    with pytest.raises(error, match=match):
        plan(**kwargs)


def header(session_id: bytes) -> bytes:
    """The clear header of a session packet (type, version, id, packet number 0)."""
    return bytes([0x08, 0x01]) + session_id + b"\x00" + bytes(20)


def filtering(left: PathFilter) -> bool:
    return left.active


def test_path_filter_drops_only_the_sessions_that_left_the_address() -> None:
    left = PathFilter()
    a, b = b"A" * 8, b"B" * 8
    assert not filtering(left) and not left.drops(header(a), UDP)
    left.leave(UDP, a)
    assert filtering(left)
    assert left.drops(header(a), UDP)
    assert not left.drops(header(b), UDP)
    assert not left.drops(header(a), WS)
    left.leave(WS, a)
    left.rejoin(UDP, a)
    assert not left.drops(header(a), UDP) and left.drops(header(a), WS)
    left.forget(a)
    assert not filtering(left) and not left.drops(header(a), WS)
    left.leave(WS, a)
    left.leave(WS, b)
    left.discard_address(WS)
    assert not filtering(left) and not left.drops(header(b), WS)


@given(st.binary(max_size=64))
def test_path_filter_never_raises_on_garbage(data: bytes) -> None:
    left = PathFilter()
    left.leave(UDP, b"A" * 8)
    assert left.drops(data, UDP) in (True, False)
