"""Node lifecycle: bind at ``start()``, run ``stt_anyio.open_node`` in a task, stop for good.

Owns the part of :class:`~stt_asyncio_compat.node.STTNode` that the manual's
``node.start()`` / ``await node.start(server_mode=True)`` / ``await
node.stop()`` need and stt_anyio does not have: a node object that exists
before any event loop, binds synchronously, and keeps ``open_node`` (an
async context manager) open in a runner task of its own. It must not know
about sessions, callbacks or the manual's API beyond start/stop: subclasses
fill in the hooks (``_prepare``, ``_open_inner``, ``_on_serving``,
``_before_stop``, ``_on_stopped``).

Phases: ``new`` -> ``bound`` (``start()`` bound the sockets) -> ``running``
(the runner entered ``open_node``) -> ``stopped`` (final).

Rules (docs/compat.md, "Starting a node"):

1. ``start()`` binds before it returns; inside a running loop it also spawns
   the runner at once.
2. Outside a loop, the first ``await`` on a node spawns its runner, and every
   other bound-but-idle node joins the same loop (so a node nobody awaits,
   like the manual's Bob, still answers).
3. ``stop()`` lets the subclass close its sessions, leaves ``open_node`` and
   marks the node stopped; it never raises for a runner that was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc

import stt_anyio
from stt_core.errors import InvalidStateError

from ._binding import Reservation

__all__ = ["NodeLifecycle", "StartCall", "bound_or_running"]

_live: weakref.WeakSet[NodeLifecycle] = weakref.WeakSet()


def bound_or_running() -> list[NodeLifecycle]:
    """Nodes that were started and are not stopped yet."""
    return [node for node in list(_live) if node._phase in ("bound", "running")]


class StartCall:
    """What ``start()`` returns: the bind already happened; awaiting waits for the runner.

    Not a coroutine, so a ``start()`` that is never awaited (the manual's
    style) produces no "never awaited" warning.
    """

    __slots__ = ("_node",)

    def __init__(self, node: NodeLifecycle) -> None:
        self._node = node

    def __await__(self) -> Generator[Any, None, tuple[str, int]]:
        return self._node._started().__await__()


class NodeLifecycle:
    """Start/stop machinery shared by the compat node (see the module docstring)."""

    def __init__(self, transports: tuple[str, ...]) -> None:
        self._transports = transports
        self._server_mode = True
        self._phase = "new"
        self._reservation: Reservation | None = None
        self._inner: stt_anyio.Node | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stop_event: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        _live.add(self)

    # -- hooks -----------------------------------------------------------------

    def _prepare(self, server_mode: bool) -> Reservation:
        """Validate for this mode and bind the sockets (called once, by ``start``)."""
        raise NotImplementedError

    def _open_inner(self, reservation: Reservation
                    ) -> AbstractAsyncContextManager[stt_anyio.Node]:
        """The ``stt_anyio.open_node(...)`` call for the reserved addresses."""
        raise NotImplementedError

    def _on_serving(self, inner: stt_anyio.Node, tg: anyio.abc.TaskGroup) -> None:
        """The node runs: start background tasks in ``tg``."""

    async def _before_stop(self) -> None:
        """``stop()`` was called; the node still runs (close sessions here)."""

    def _on_stopped(self) -> None:
        """The runner ended (stop, cancellation or crash)."""

    # -- state -----------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True between the runner's start and ``stop()``."""
        return self._phase == "running"

    @property
    def server_mode(self) -> bool:
        """Whether the node accepts sessions peers open (``start(server_mode=)``)."""
        return self._server_mode

    @property
    def local_addresses(self) -> dict[str, tuple[str, int]]:
        """Bound ``(host, port)`` per transport (known as soon as ``start()`` returned)."""
        if self._inner is not None:
            return dict(self._inner.local_addresses)
        if self._reservation is not None:
            return dict(self._reservation.addresses)
        raise InvalidStateError("the node is not started; call node.start() first")

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound address of the default (first) transport."""
        addresses = self.local_addresses
        return addresses.get(self._transports[0]) or next(iter(addresses.values()))

    # -- start -------------------------------------------------------------------

    def start(self, server_mode: bool = True) -> StartCall:
        """Bind now and start the node; optionally ``await`` the result.

        Called plainly (the manual's ``alice_node.start()``) it binds the
        sockets before returning, so the port is taken and known. Awaited
        (``await node.start(server_mode=True)``) it also waits until the node
        runs, and returns the local address.

        Args:
            server_mode: accept sessions that peers open (default True: the
                manual's started node "is now listening for incoming
                connections"). False makes a client-only node.

        Raises:
            OSError: the address cannot be bound.
            InvalidStateError: the node was stopped, or started before with
                another ``server_mode``.
        """
        if self._phase == "stopped":
            raise InvalidStateError("this node was stopped; create a new STTNode")
        if self._phase == "new":
            self._reservation = self._prepare(server_mode)
            self._server_mode = server_mode
            self._phase = "bound"
        elif server_mode != self._server_mode:
            raise InvalidStateError(f"the node already started with server_mode="
                                    f"{self._server_mode}")
        with contextlib.suppress(RuntimeError):  # no running loop: spawn on first await
            asyncio.get_running_loop()
            self._spawn_runner()
        return StartCall(self)

    def _spawn_runner(self) -> None:
        """Spawn this node's runner in the running loop, and every node still waiting."""
        loop = asyncio.get_running_loop()
        if self._runner is not None:
            if self._runner.get_loop() is not loop:
                raise InvalidStateError("this node runs in another event loop")
            return
        self._ready = loop.create_future()
        self._runner = loop.create_task(self._run(), name=f"{self!r} runner")
        for other in bound_or_running():
            if other._phase == "bound" and other._runner is None:
                other._spawn_runner()

    async def _started(self) -> tuple[str, int]:
        """Start if needed, spawn the runner if needed, wait until it runs."""
        if self._phase == "new":
            self.start()
        if self._phase == "stopped":
            raise InvalidStateError("this node was stopped; create a new STTNode")
        self._spawn_runner()
        if self._ready is None:
            raise InvalidStateError("the node's runner did not start")
        await asyncio.shield(self._ready)
        return self.local_address

    async def _running(self) -> stt_anyio.Node:
        """The running stt_anyio node, starting this node first if needed."""
        await self._started()
        if self._inner is None:
            raise InvalidStateError("the node is not running (it was stopped)")
        return self._inner

    # -- the runner ----------------------------------------------------------------

    async def _run(self) -> None:
        """The runner task: keep ``open_node`` open until ``stop()``.

        A failure to start (the port was taken in the re-bind gap, see
        ``_binding``) goes to whoever awaits the start, not to the task.
        """
        if self._ready is None or self._reservation is None:
            raise InvalidStateError("the node's runner started before start()")
        ready, reservation = self._ready, self._reservation
        reservation.release()
        try:
            async with self._open_inner(reservation) as inner:
                await self._serve(inner, ready)
        except Exception as exc:
            if ready.done():
                raise
            ready.set_exception(exc)
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        finally:
            self._finish()

    async def _serve(self, inner: stt_anyio.Node, ready: asyncio.Future[None]) -> None:
        stop = self._stop_event = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._inner, self._tg = inner, tg
            self._phase = "running"
            self._on_serving(inner, tg)
            ready.set_result(None)
            await stop.wait()
            await self._before_stop()
            tg.cancel_scope.cancel()

    def _finish(self) -> None:
        self._phase = "stopped"
        self._inner = self._tg = None
        if self._reservation is not None:
            self._reservation.release()
        self._on_stopped()

    # -- stop -------------------------------------------------------------------

    async def stop(self) -> None:
        """Close every session gracefully, then stop the node (manual: ``node.stop()``).

        Bounded by the config's ``close_timeout``. Idempotent. A stopped node
        cannot be started again; create a new one.
        """
        if self._runner is None:
            self._phase = "stopped"
            if self._reservation is not None:
                self._reservation.release()
            return
        if self._stop_event is not None:
            self._stop_event.set()
        elif not self._runner.done():
            self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._runner)

    async def __aenter__(self) -> Self:
        await self.start(server_mode=self._server_mode)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
